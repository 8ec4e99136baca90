//! The demo page, `/demo`: the original's test page (`test_settings.php`). It proves that
//! real-time delivery works on this server and shows its latency, over each transport.
//!
//! - `GET /demo` renders the page with a page config for the demo user, subscribed to the demo
//!   channel `(1, tool_realtime, test, 0)`.
//! - `POST /demo/events` (the page's user token) starts a background job that notifies `count`
//!   events `delay_ms` apart; the request answers at once (202), as the original queued a task.
//! - `GET /time` answers the server's clock for the page's calibration.
//! - Send to server for `tool_realtime` is answered by a built-in handler: `{receivedtime, echo}`.
//!
//! Served when `server.demo` is `on`, or `auto` (the default) and the listener is on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use realtime::extract::{JsonBody, User};
use realtime::{Channel, Error, Realtime, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

/// The demo user: a demo page acts as this user.
const DEMO_USER: UserId = UserId(1);
/// Most events one run may ask for.
const MAX_COUNT: u32 = 1_000;
/// Longest delay between two events of a run.
const MAX_DELAY_MS: u64 = 10_000;

const PAGE: &str = include_str!("../assets/demo.html");
const SCRIPT: &str = include_str!("../assets/demo.js");
const STYLE: &str = include_str!("../assets/demo.css");

/// Whether the demo is served for this setting and listener.
pub(crate) fn enabled(setting: &str, addr: &SocketAddr) -> bool {
    match setting {
        "on" => true,
        "off" => false,
        _ => addr.ip().is_loopback(),
    }
}

fn demo_channel() -> Channel {
    Channel::new(1, "tool_realtime", "test", 0, "").expect("invariant: the demo channel is valid")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Registers the demo handler and returns the demo routes.
pub(crate) fn router(rt: &Realtime) -> Router {
    rt.handle("tool_realtime", |_ctx, payload| async move {
        Ok(json!({"receivedtime": now_ms(), "echo": payload}))
    });
    Router::new()
        .route("/demo", get(page))
        .route(
            "/demo/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/demo/events", post(events))
        .route("/time", get(|| async { Json(json!({"time": now_ms()})) }))
        .with_state(rt.clone())
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page(State(rt): State<Realtime>, headers: HeaderMap) -> Result<Response, Error> {
    // As `POST /api/page` does: `server.public_url`, else the scheme and host a proxy says
    // the browser used, else the request's own.
    let url = realtime::api::base_url(&rt, &headers);
    let config = rt.page(DEMO_USER, &[demo_channel()], url).await?;
    let config =
        serde_json::to_string(&config).map_err(|e| Error::Internal(format!("page config: {e}")))?;
    // Inside a <script type="application/json"> nothing but "</" can end the element early.
    let config = config.replace("</", "<\\/");
    Ok(Html(PAGE.replace("{{PAGE_CONFIG}}", &config)).into_response())
}

/// The body of `POST /demo/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// How many events (1..=1000).
    count: u32,
    /// Milliseconds between two events (0..=10000).
    #[serde(default)]
    delay_ms: u64,
    /// The page's name for this run, echoed in every payload.
    runid: String,
}

async fn events(
    User(_user): User,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<RunRequest>,
) -> Result<Response, Error> {
    if req.count == 0 || req.count > MAX_COUNT {
        return Err(Error::bad_request(
            "invalid_request",
            format!("count must be 1..={MAX_COUNT}"),
        ));
    }
    if req.delay_ms > MAX_DELAY_MS {
        return Err(Error::bad_request(
            "invalid_request",
            format!("delay_ms must be at most {MAX_DELAY_MS}"),
        ));
    }
    if req.runid.is_empty() || req.runid.len() > 64 {
        return Err(Error::bad_request(
            "invalid_request",
            "runid must be 1..=64 characters",
        ));
    }
    let answer = json!({"runid": req.runid, "count": req.count, "delay_ms": req.delay_ms});
    let job = rt.clone();
    let cancel = rt.shutdown_token().clone();
    tokio::spawn(async move {
        let channel = demo_channel();
        for seq in 1..=req.count {
            if seq > 1 && req.delay_ms > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(req.delay_ms)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
            let payload: Value =
                json!({"runid": req.runid, "seq": seq, "count": req.count, "senttime": now_ms()});
            if let Err(e) = job.notify(&channel, &payload).await {
                tracing::warn!(error = %e, "demo run stopped");
                return;
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
