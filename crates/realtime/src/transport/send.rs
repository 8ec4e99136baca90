//! Send to server over HTTP, `POST /send`: `{component, payload}` in, `{response}` out. The
//! WebSocket carries the same message as a `send` frame when it is open.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::Result;
use crate::extract::{JsonBody, User};
use crate::Realtime;

/// The body of `POST /send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The component whose handler answers.
    pub component: String,
    /// Any JSON (absent means `null`).
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
}

/// The answer of `POST /send`.
#[derive(Debug, Serialize)]
pub struct SendResponse {
    /// The handler's answer.
    pub response: Box<RawValue>,
}

/// `POST /send`, with `Authorization: Bearer <usertoken>`.
pub async fn send(
    User(user): User,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<SendRequest>,
) -> Result<Json<SendResponse>> {
    let payload = req.payload.unwrap_or_else(null);
    let response = rt.send_to_server(user, &req.component, &payload).await;
    crate::telemetry::send("http", response.is_ok());
    let response = response?;
    Ok(Json(SendResponse { response }))
}

/// A JSON `null`.
pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("invariant: null is JSON")
}
