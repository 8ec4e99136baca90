//! The routes an application mounts: client endpoints (token credentials, CORS for the
//! configured origins) and the application API (API key).

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::Error;
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

/// The client endpoints: what browser pages call, with their user and subscription tokens.
/// CORS for `server.allowed_origins`; only the enabled transports are mounted (a disabled one
/// answers 404, as a proxy that blocks it would, and clients fall back).
fn client_routes(rt: &Realtime) -> Router<Realtime> {
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
    client.layer(cors(&rt.config().server.allowed_origins))
}

/// The application API: what the application's servers call, with an API key.
fn api_routes() -> Router<Realtime> {
    Router::new()
        .route("/api/subscribe", post(api::subscribe))
        .route("/api/page", post(api::page))
        .route("/api/notify", post(api::notify))
        .route("/api/status", get(api::status))
        .route("/healthz", get(api::healthz))
}

/// `routes` with what every handler needs: the body limit, the node's limits, the node, and a
/// 404 in the protocol's error shape for anything else.
fn finish(rt: &Realtime, routes: Router<Realtime>) -> Router {
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(rt.config().limits.request_bytes))
        .layer(Extension(rt.limits().clone()))
        .with_state(rt.clone())
}

/// Client endpoints and application API together.
pub(crate) fn router(rt: &Realtime) -> Router {
    finish(rt, client_routes(rt).merge(api_routes()))
}

/// The client endpoints alone.
pub(crate) fn client_router(rt: &Realtime) -> Router {
    finish(rt, client_routes(rt))
}

/// The application API alone.
pub(crate) fn api_router(rt: &Realtime) -> Router {
    finish(rt, api_routes())
}
