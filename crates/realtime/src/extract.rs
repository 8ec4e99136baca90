//! Request parts every endpoint shares: a JSON body that fails with our error shape, and the
//! bearer credential.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON body. Unlike `axum::Json` it does not insist on a content type, and every failure is
/// one of ours: 400 `bad_json` (not JSON), 400 `invalid_request` (wrong shape: a missing field,
/// an unknown one, a wrong type), 413 `payload_too_large` (over `limits.request_bytes`).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge("the request body is over the size limit".into())
            } else {
                Error::bad_request("bad_request", r.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => Error::bad_request(
                    "invalid_request",
                    format!("the request has the wrong shape: {e}"),
                ),
                _ => Error::bad_request(
                    "bad_json",
                    format!("the request body is not valid JSON: {e}"),
                ),
            }
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
///
/// # Errors
/// 401 `unauthorized` when the header is missing or has another scheme.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::unauthorized(
                "unauthorized",
                "an `Authorization: Bearer <token>` header is required",
            )
        })
}
