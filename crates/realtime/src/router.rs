//! The routes an application mounts: client endpoints (token credentials, CORS for the
//! configured origins) and the application API (API key).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::Error;
use crate::limit::Limits;
use crate::{api, transport, Realtime};

/// The browser client, embedded in the binary: the one-file bundle that `clients/js/build.mjs`
/// generates from `clients/js/src/` and that is checked in, so the crate builds without Node.
pub const REALTIME_JS: &str = include_str!("../../../clients/js/realtime.js");

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
}

async fn realtime_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        REALTIME_JS,
    )
}

async fn not_found() -> Error {
    Error::NotFound("no such endpoint".into())
}

pub(crate) fn router(rt: Realtime) -> Router {
    let limit = rt.config().limits.request_bytes;
    // The connection and rate limits of this router, shared by its handlers. `validate` has
    // checked the proxies at start; a bad entry here trusts none rather than failing.
    let limits = Limits::from_config(rt.config()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "server.trusted_proxies ignored");
        let mut c = rt.config().clone();
        c.server.trusted_proxies.clear();
        Limits::from_config(&c).expect("invariant: no proxies, nothing to parse")
    });
    // Only enabled transports are mounted: a disabled one answers 404, as a proxy that blocks
    // it would, and clients fall back.
    let enabled = |t: &str| rt.config().transports.enabled.iter().any(|e| e == t);
    let mut client = Router::new()
        .route("/send", post(transport::send::send))
        .route("/realtime.js", get(realtime_js));
    if enabled("poll") {
        client = client.route("/poll", post(transport::poll::poll));
    }
    if enabled("websocket") {
        client = client.route("/ws", get(transport::ws::upgrade));
    }
    if enabled("sse") {
        client = client.route("/sse", get(transport::sse::sse));
    }
    let client = client.layer(cors(&rt.config().server.allowed_origins));
    let app_api = Router::new()
        .route("/api/subscribe", post(api::subscribe))
        .route("/api/page", post(api::page))
        .route("/api/notify", post(api::notify))
        .route("/api/status", get(api::status))
        .route("/healthz", get(api::healthz));
    Router::new()
        .merge(client)
        .merge(app_api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(Arc::new(limits)))
        .with_state(rt)
}
