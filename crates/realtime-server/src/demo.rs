//! The demo page, `/demo`: the original's test page (`test_settings.php`). It proves that
//! real-time delivery works on this server and shows its latency, over each transport.
//!
//! The demo runs as **a node of its own**, so that nothing it hands out is worth anything
//! elsewhere (issue 9, item 5: it used to give anyone a user-1 token of the real node, good on
//! `/send` — the real webhook received a signed message from user 1 — and on every transport):
//! - its secret is derived from the server's (`Secret::derive("realtime-demo-v1")`): its channel
//!   hashes and tokens are refused by the real endpoints, and the other way round;
//! - it has no webhooks, and enables only the component `tool_realtime`, answered by a built-in
//!   echo handler: demo traffic never reaches the application;
//! - its events live in a store of their own: `demo.db` in the data dir (`memory://` when the
//!   server's engine is memory), never in the application's engine;
//! - its client endpoints are mounted under `/demo`: `/demo/ws`, `/demo/sse`, `/demo/poll`,
//!   `/demo/send`, `/demo/realtime.js` (and `/demo/api/*`, with the server's API keys, so that
//!   an operator or a test can notify the demo channel), and the page config's `url` points
//!   there.
//!
//! The page's own routes:
//! - `GET /demo` renders the page with a page config for the demo user, subscribed to the demo
//!   channel `(1, tool_realtime, test, 0)`.
//! - `POST /demo/events` (the page's user token) starts a background job that notifies `count`
//!   events `delay_ms` apart; the request answers at once (202), as the original queued a task.
//!   Bounded: at most [`MAX_RUNS`] runs at a time and [`EVENTS_PER_MINUTE`] events a minute on
//!   this server; over either, 429 with `Retry-After`.
//! - `GET /demo/time` answers the server's clock for the page's calibration.
//!
//! Exposure (`server.demo`): `on` serves it, `off` does not, and `auto` (the default) serves it
//! when the listener is on loopback **and** the request carries no forwarding header
//! (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`): a developer's browser on the same machine gets
//! it, a request relayed by a reverse proxy (which puts the server on loopback behind a public
//! address) gets 404.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use realtime::engine::{Engine, MemoryEngine};
use realtime::extract::{JsonBody, User};
use realtime::{Channel, Error, Realtime, Secret, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

/// The demo user: a demo page acts as this user (of the demo node only).
const DEMO_USER_ID: i64 = 1;

/// The demo user.
fn demo_user() -> Result<UserId, Error> {
    UserId::new(DEMO_USER_ID)
}
/// The only component the demo node enables.
const DEMO_COMPONENT: &str = "tool_realtime";
/// What the demo node's secret is derived with.
const DEMO_SECRET_PURPOSE: &str = "realtime-demo-v1";
/// Most events one run may ask for.
const MAX_COUNT: u32 = 1_000;
/// Longest delay between two events of a run.
const MAX_DELAY_MS: u64 = 10_000;
/// Most runs going on at once on this server.
pub(crate) const MAX_RUNS: usize = 4;
/// Most events all runs together may ask for in a minute (a bucket refilled continuously).
pub(crate) const EVENTS_PER_MINUTE: u32 = 3_000;
/// Request headers that say a proxy relayed the request.
const FORWARDING_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

const PAGE: &str = include_str!("../assets/demo.html");
const SCRIPT: &str = include_str!("../assets/demo.js");
const STYLE: &str = include_str!("../assets/demo.css");

/// Whether the demo is served at all for this setting and listener (`auto` further refuses
/// proxied requests, see [`router`]).
pub(crate) fn enabled(setting: &str, addr: &SocketAddr) -> bool {
    match setting {
        "on" => true,
        "off" => false,
        _ => addr.ip().is_loopback(),
    }
}

fn demo_channel() -> Channel {
    Channel::new(1, DEMO_COMPONENT, "test", 0, "").expect("invariant: the demo channel is valid")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The running demo node and its routes.
pub(crate) struct Demo {
    /// The demo's own node (shut down after the server's).
    pub(crate) rt: Realtime,
    /// Everything under `/demo`, to merge into the server's router.
    pub(crate) router: Router,
}

/// Starts the demo node beside `main`: its secret derived from `main_secret` (`main`'s), its store `demo.db` in
/// `data_dir` (memory when `main` runs on memory), its settings `main`'s without webhooks and
/// with `tool_realtime` only. It stops when `main` shuts down.
///
/// # Errors
/// When its store cannot be opened or its node started.
pub(crate) async fn start(
    main: &Realtime,
    main_secret: &Secret,
    data_dir: &Path,
    auto: bool,
) -> Result<Demo, String> {
    let mut config = main.config().clone();
    config.webhooks.components.clear();
    config.components.enabled = vec![DEMO_COMPONENT.into()];
    config.auth.allow_guests = false;
    let engine: Arc<dyn Engine> = if main.engine_name() == "memory" {
        Arc::new(MemoryEngine::new())
    } else {
        crate::cli::open_sqlite(data_dir.join("demo.db")).await?
    };
    let secret = main_secret.derive(DEMO_SECRET_PURPOSE);
    let rt = Realtime::start(config, secret, engine)
        .await
        .map_err(|e| format!("starting the demo node: {e}"))?;
    rt.handle(DEMO_COMPONENT, |_ctx, payload| async move {
        Ok(json!({"receivedtime": now_ms(), "echo": payload}))
    });
    // The server's shutdown ends the demo's long-polls, streams and sockets too.
    let (main_cancel, demo_cancel) = (main.shutdown_token().clone(), rt.shutdown_token().clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = main_cancel.cancelled() => demo_cancel.cancel(),
            _ = demo_cancel.cancelled() => {}
        }
    });
    let router = router(&rt, auto);
    Ok(Demo { rt, router })
}

/// The routes: the demo node's client endpoints and API, and the page's own, under `/demo`.
fn router(rt: &Realtime, auto: bool) -> Router {
    let page_routes = Router::new()
        .route("/", get(page))
        .route(
            "/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/demo.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/events", post(events))
        .route("/config", get(fresh_config))
        .route("/time", get(|| async { Json(json!({"time": now_ms()})) }))
        .layer(Extension(Arc::new(Runs::new())))
        .with_state(rt.clone());
    let demo = Router::new().nest("/demo", rt.router().merge(page_routes));
    if auto {
        demo.layer(axum::middleware::from_fn(local_only))
    } else {
        demo
    }
}

/// `server.demo = auto`: a request relayed by a proxy is answered as if there were no demo.
async fn local_only(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h)) {
        return Error::NotFound("no such endpoint".into()).into_response();
    }
    next.run(request).await
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

/// The demo page's config: as `POST /api/page` makes it, for the demo's user and channel.
async fn demo_config(rt: &Realtime, headers: &HeaderMap) -> Result<realtime::PageConfig, Error> {
    // As `POST /api/page` does: `server.public_url`, else the request's host; the demo
    // node's endpoints are under `/demo`.
    let url = format!("{}/demo", rt.public_url(headers));
    rt.page(demo_user()?, &[demo_channel()], url).await
}

/// `GET /demo/config`: a fresh page config, the page's `renew` function (the endpoint an
/// application provides for its pages: here without a login, as the page itself).
async fn fresh_config(State(rt): State<Realtime>, headers: HeaderMap) -> Result<Response, Error> {
    let config = demo_config(&rt, &headers).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(config)).into_response())
}

async fn page(State(rt): State<Realtime>, headers: HeaderMap) -> Result<Response, Error> {
    let config = demo_config(&rt, &headers).await?;
    let config =
        serde_json::to_string(&config).map_err(|e| Error::Internal(format!("page config: {e}")))?;
    // Inside a <script type="application/json"> nothing but "</" can end the element early.
    let config = config.replace("</", "<\\/");
    Ok(Html(PAGE.replace("{{PAGE_CONFIG}}", &config)).into_response())
}

/// What bounds `POST /demo/events`: runs going on, and a bucket of events per minute.
#[derive(Debug)]
struct Runs {
    running: Arc<AtomicUsize>,
    /// Events that may still be asked for, and when the bucket was last refilled.
    budget: Mutex<(f64, Instant)>,
}

/// Decrements the count of runs going on when a run ends, however it ends.
struct RunGuard(Arc<AtomicUsize>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Runs {
    fn new() -> Self {
        Runs {
            running: Arc::new(AtomicUsize::new(0)),
            budget: Mutex::new((f64::from(EVENTS_PER_MINUTE), Instant::now())),
        }
    }

    /// Takes a run of `count` events, or says how many seconds to wait.
    fn take(&self, count: u32) -> Result<RunGuard, (u64, &'static str)> {
        let per_sec = f64::from(EVENTS_PER_MINUTE) / 60.0;
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refilled = (budget.0 + now.duration_since(budget.1).as_secs_f64() * per_sec)
            .min(f64::from(EVENTS_PER_MINUTE));
        *budget = (refilled, now);
        let want = f64::from(count);
        if refilled < want {
            // Whole seconds, rounded up, until the bucket holds `count`.
            let wait = ((want - refilled) / per_sec).ceil().max(1.0);
            return Err((wait as u64, "rate_limited"));
        }
        if self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_RUNS).then_some(n + 1)
            })
            .is_err()
        {
            return Err((1, "demo_busy"));
        }
        budget.0 = refilled - want;
        Ok(RunGuard(self.running.clone()))
    }
}

fn too_many(retry_after: u64, code: &'static str) -> Response {
    let message = match code {
        "demo_busy" => format!("at most {MAX_RUNS} demo runs at a time; try again shortly"),
        _ => format!("the demo sends at most {EVENTS_PER_MINUTE} events a minute; try again in {retry_after} s"),
    };
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    res
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
    Extension(runs): Extension<Arc<Runs>>,
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
    let guard = match runs.take(req.count) {
        Ok(g) => g,
        Err((wait, code)) => return Ok(too_many(wait, code)),
    };
    let answer = json!({"runid": req.runid, "count": req.count, "delay_ms": req.delay_ms});
    let job = rt.clone();
    let cancel = rt.shutdown_token().clone();
    tokio::spawn(async move {
        let _guard = guard;
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
