//! Send to server over HTTP, `POST /send`: `{component, payload}` in, `{response}` out. The
//! WebSocket carries the same message as a `send` frame when it is open.
//!
//! Sends are counted per user (HTTP and WebSocket together): over `rate.send_per_sec` the
//! answer is 429 `rate_limited` with `Retry-After`, and the handler is not called.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::Result;
use crate::extract::{JsonBody, User};
use crate::limit::{ClientIp, Limits};
use crate::Realtime;

/// The body of `POST /send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// The component whose handler answers.
    pub component: String,
    /// Any JSON (absent means `null`).
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
}

/// The answer of `POST /send`.
#[derive(Debug, Serialize)]
pub(crate) struct SendResponse {
    /// The handler's answer.
    pub response: Box<RawValue>,
}

/// `POST /send`, with `Authorization: Bearer <usertoken>`.
pub(crate) async fn send(
    User(user): User,
    _: SendRate,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<SendRequest>,
) -> Result<Json<SendResponse>> {
    let payload = req.payload.unwrap_or_else(null);
    let response = rt.send_to_server(user, &req.component, &payload).await;
    crate::telemetry::send("http", response.is_ok());
    let response = response?;
    Ok(Json(SendResponse { response }))
}

/// Proof that this send is within its user's rate: taken after the credential and before the
/// body is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendRate;

impl axum::extract::FromRequestParts<Realtime> for SendRate {
    type Rejection = crate::error::Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        rt: &Realtime,
    ) -> Result<Self, Self::Rejection> {
        let Some(limits) = parts.extensions.get::<Arc<Limits>>().cloned() else {
            return Ok(SendRate);
        };
        let User(user) = User::from_request_parts(parts, rt).await?;
        let ClientIp(ip) = match ClientIp::from_request_parts(parts, rt).await {
            Ok(ip) => ip,
            Err(never) => match never {},
        };
        if let Err(e) = limits.send(user, ip) {
            crate::telemetry::send("http", false);
            return Err(e);
        }
        Ok(SendRate)
    }
}

/// A JSON `null`.
pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("invariant: null is JSON")
}
