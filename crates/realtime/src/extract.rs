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

/// The user of a request, from its `Authorization: Bearer <usertoken>`. Extracted before the
/// body, so a request without a valid credential is refused (401/403) whatever its body.
#[derive(Debug, Clone, Copy)]
pub struct User(pub crate::token::UserId);

impl axum::extract::FromRequestParts<crate::Realtime> for User {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        rt: &crate::Realtime,
    ) -> Result<Self, Self::Rejection> {
        rt.verify_user_token(bearer(&parts.headers)?).map(User)
    }
}

/// Proof that a request carries one of the API keys (`Authorization: Bearer <api key>`).
#[derive(Debug, Clone, Copy)]
pub struct ApiKey;

impl axum::extract::FromRequestParts<crate::Realtime> for ApiKey {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        rt: &crate::Realtime,
    ) -> Result<Self, Self::Rejection> {
        if rt.check_api_key(bearer(&parts.headers)?) {
            Ok(ApiKey)
        } else {
            Err(Error::unauthorized(
                "invalid_api_key",
                "the API key is not valid",
            ))
        }
    }
}
