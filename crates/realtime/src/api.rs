//! The application-facing API (`/api/*`), for applications in any language. Every route needs
//! `Authorization: Bearer <api key>`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::extract::{bearer, ApiKey, JsonBody};
use crate::limit::{FromTrustedProxy, Limits};
use crate::node::{PageConfig, Subscription};
use crate::token::UserId;
use crate::transport::send::null;
use crate::Realtime;

/// The body of `POST /api/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeRequest {
    /// The channel's fields.
    pub channel: Channel,
    /// Who may receive it.
    pub user: UserId,
}

/// `POST /api/subscribe`: one subscription for one user.
pub(crate) async fn subscribe(
    _: ApiKey,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<SubscribeRequest>,
) -> Result<Json<Subscription>> {
    Ok(Json(rt.subscribe(&req.channel, req.user).await?))
}

/// The body of `POST /api/page`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageRequest {
    /// Who the page is for.
    pub user: UserId,
    /// The channels the page receives.
    pub channels: Vec<Channel>,
}

/// `POST /api/page`: the config object the page hands to the client's `init`.
pub(crate) async fn page(
    _: ApiKey,
    State(rt): State<Realtime>,
    FromTrustedProxy(trusted): FromTrustedProxy,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PageRequest>,
) -> Result<Json<PageConfig>> {
    let max = rt.config().limits.subscriptions;
    if req.channels.len() > max {
        return Err(Error::bad_request(
            "too_many_subscriptions",
            format!("at most {max} channels per page"),
        ));
    }
    let url = base_url_via(&rt, &headers, trusted);
    Ok(Json(rt.page(req.user, &req.channels, url).await?))
}

/// The base URL of the client endpoints for a request that did not come through a trusted
/// proxy: `server.public_url`, else `http://` and the request's `Host`. Forwarding headers are
/// ignored (anyone can send them); see [`base_url_via`].
pub(crate) fn base_url(rt: &Realtime, headers: &HeaderMap) -> String {
    base_url_via(rt, headers, false)
}

/// The base URL of the client endpoints: `server.public_url`, else the scheme and `Host` of
/// the request, where `X-Forwarded-Proto` and `X-Forwarded-Host` count only when
/// `from_trusted_proxy` (the peer is one of `server.trusted_proxies`: see
/// [`crate::limit::FromTrustedProxy`]).
pub(crate) fn base_url_via(rt: &Realtime, headers: &HeaderMap, from_trusted_proxy: bool) -> String {
    let public = rt.config().server.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return public.to_string();
    }
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // A proxy chain appends: the first value is the one the client's side saw.
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let forwarded = |name: &str| if from_trusted_proxy { get(name) } else { None };
    let proto = forwarded("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let host = forwarded("x-forwarded-host")
        .or_else(|| get(header::HOST.as_str()))
        .unwrap_or_else(|| rt.config().server.listen.clone());
    format!("{proto}://{host}")
}

/// One event to notify.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyItem {
    /// The channel's fields.
    pub channel: Channel,
    /// Any JSON (absent means `null`).
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
}

/// The body of `POST /api/notify`: either one event (`channel`, `payload`) or a batch
/// (`events`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyRequest {
    /// The single form's channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// The single form's payload.
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// The batch form.
    #[serde(default)]
    pub events: Option<Vec<NotifyItem>>,
}

/// `POST /api/notify`: answers `{id}` (or `{ids}` for a batch) once the events are durable.
/// Requests are counted per API key (a batch is one request): over `rate.notify_per_sec`, 429
/// `rate_limited` with `Retry-After`, before the body is read.
pub(crate) async fn notify(
    _: ApiKey,
    _: NotifyRate,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<NotifyRequest>,
) -> Result<Json<serde_json::Value>> {
    match (req.channel, req.events) {
        (Some(channel), None) => {
            let ids = rt
                .notify_many(vec![(channel, req.payload.unwrap_or_else(null))])
                .await?;
            let id = ids
                .first()
                .ok_or_else(|| Error::Internal("no id for one event".into()))?;
            Ok(Json(json!({"id": id})))
        }
        (None, Some(events)) if req.payload.is_none() => {
            if events.is_empty() {
                return Err(Error::bad_request(
                    "invalid_request",
                    "`events` must not be empty",
                ));
            }
            let items = events
                .into_iter()
                .map(|i| (i.channel, i.payload.unwrap_or_else(null)))
                .collect();
            let ids = rt.notify_many(items).await?;
            Ok(Json(json!({"ids": ids})))
        }
        _ => Err(Error::bad_request(
            "invalid_request",
            "give either `channel` and `payload` (one event) or `events` (a batch)",
        )),
    }
}

/// Proof that this request is within its API key's rate of notifies: taken before the body is
/// read, so a refused request costs no more than its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotifyRate;

impl axum::extract::FromRequestParts<Realtime> for NotifyRate {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &Realtime,
    ) -> Result<Self, Self::Rejection> {
        let Some(limits) = parts.extensions.get::<Arc<Limits>>() else {
            return Ok(NotifyRate);
        };
        limits.notify.check(&bearer(&parts.headers)?.to_string())?;
        Ok(NotifyRate)
    }
}

/// `GET /api/status`: what this node is and how it is doing.
pub(crate) async fn status(
    _: ApiKey,
    State(rt): State<Realtime>,
) -> Result<Json<serde_json::Value>> {
    let hub = rt.hub();
    let pos = rt.engine().position().await;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "engine": rt.engine().name(),
        "healthy": hub.is_healthy() && pos.is_ok(),
        "epoch": hub.epoch(),
        "head": pos.as_ref().map(|p| p.head.0).ok(),
        "floor": pos.as_ref().map(|p| p.floor.0).ok(),
        "hub": {"head": hub.head(), "cached_events": hub.cached(), "channels": hub.channels()},
        "transports": rt.config().page_transports(),
    })))
}

/// `GET /healthz`: 200 when the engine answers, 503 when not. No credential.
pub(crate) async fn healthz(State(rt): State<Realtime>) -> Response {
    match rt.engine().position().await {
        Ok(_) if rt.hub().is_healthy() => {
            (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
        }
        Ok(_) => Error::EngineUnavailable("the engine tail is failing".into()).into_response(),
        Err(e) => e.into_response(),
    }
}
