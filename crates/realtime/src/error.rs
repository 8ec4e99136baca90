//! One error enum for the library, and its mapping to HTTP answers.
//!
//! Clients get a small JSON body `{"error": {"code", "message"}}` with a fitting status;
//! details that only operators need (driver errors, paths) go to the log, not the wire.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Everything that can go wrong in the library, each with an HTTP status and a machine code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong: malformed JSON, a field of the wrong type, a bad channel.
    #[error("{message}")]
    BadRequest {
        /// A machine word such as `bad_json` or `invalid_channel`.
        code: &'static str,
        /// What was wrong, for people.
        message: String,
    },
    /// No credential, or one that has expired.
    #[error("{message}")]
    Unauthorized {
        /// `unauthorized` or `token_expired`.
        code: &'static str,
        /// What was wrong, for people.
        message: String,
    },
    /// A credential that does not grant this request (forged, for another channel or user),
    /// a refused guest, or a disabled component.
    #[error("{message}")]
    Forbidden {
        /// `token_invalid`, `guests_not_allowed`, `component_disabled`, ...
        code: &'static str,
        /// What was wrong, for people.
        message: String,
    },
    /// Nothing is registered for this name.
    #[error("{0}")]
    NotFound(String),
    /// A payload or a request body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A handler (a Rust closure) refused or failed.
    #[error("{message}")]
    Handler {
        /// The status the handler chose.
        status: StatusCode,
        /// The handler's machine word.
        code: String,
        /// The handler's message.
        message: String,
    },
    /// The webhook for a component failed: unreachable, non-2xx or not JSON.
    #[error("webhook failed: {0}")]
    WebhookFailed(String),
    /// The webhook for a component did not answer in time.
    #[error("webhook timed out: {0}")]
    WebhookTimeout(String),
    /// The engine cannot be used right now; nothing was acknowledged.
    #[error("engine unavailable: {0}")]
    EngineUnavailable(String),
    /// Over a connection or rate limit: nothing was done; try again after `retry_after_secs`
    /// (sent as `Retry-After`).
    #[error("{message}")]
    TooMany {
        /// `too_many_connections` or `rate_limited`.
        code: &'static str,
        /// Which limit, for people.
        message: String,
        /// Whole seconds after which a retry may succeed (at least 1).
        retry_after_secs: u64,
    },
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A setting is wrong; found at start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A bug or an unexpected failure inside the process.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400 with a code and a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 401 with a code and a message.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Error::Unauthorized {
            code,
            message: message.into(),
        }
    }

    /// A 403 with a code and a message.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Error::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Handler { status, .. } => *status,
            Error::WebhookFailed(_) => StatusCode::BAD_GATEWAY,
            Error::WebhookTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::EngineUnavailable(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine word clients see in `error.code`.
    pub fn code(&self) -> &str {
        match self {
            Error::BadRequest { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Forbidden { code, .. }
            | Error::TooMany { code, .. } => code,
            Error::NotFound(_) => "not_found",
            Error::TooLarge(_) => "payload_too_large",
            Error::Handler { code, .. } => code,
            Error::WebhookFailed(_) => "webhook_failed",
            Error::WebhookTimeout(_) => "webhook_timeout",
            Error::EngineUnavailable(_) => "engine_unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::Config(_) => "invalid_config",
            Error::Internal(_) => "internal",
        }
    }

    /// The JSON body clients see. Failures whose details are for operators (driver errors,
    /// file paths, webhook URLs) get a generic message; the details go to the log line that
    /// [`IntoResponse`] writes, or to the one written where the failure happened.
    pub fn body(&self) -> serde_json::Value {
        let message = match self {
            Error::Config(_) | Error::Internal(_) => "internal error".to_string(),
            Error::EngineUnavailable(_) => {
                "the event store is unavailable; try again later".to_string()
            }
            Error::WebhookFailed(_) => "webhook failed".to_string(),
            Error::WebhookTimeout(_) => "webhook timed out".to_string(),
            other => other.to_string(),
        };
        serde_json::json!({"error": {"code": self.code(), "message": message}})
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request refused");
        }
        let retry_after = match &self {
            Error::TooMany {
                retry_after_secs, ..
            } => Some(retry_after_secs.max(&1).to_string()),
            _ => None,
        };
        let mut response = (status, Json(self.body())).into_response();
        if let Some(secs) = retry_after.and_then(|s| HeaderValue::from_str(&s).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        response
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::EngineUnavailable(format!("sqlite: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Driver text, file paths and webhook URLs stay in the log: the client's body says only
    /// what failed.
    #[test]
    fn bodies_of_operator_failures_carry_no_details() {
        let secret_details = "/var/lib/realtime/realtime.db: database disk image is malformed";
        for e in [
            Error::EngineUnavailable(format!("sqlite: {secret_details}")),
            Error::WebhookFailed(format!("http://10.0.0.7:9000/hook: {secret_details}")),
            Error::WebhookTimeout(format!("http://10.0.0.7:9000/hook {secret_details}")),
            Error::Internal(secret_details.into()),
            Error::Config(secret_details.into()),
        ] {
            let body = e.body().to_string();
            assert!(!body.contains("/var/lib"), "{body}");
            assert!(!body.contains("10.0.0.7"), "{body}");
            assert!(!body.contains("sqlite"), "{body}");
            assert_eq!(e.body()["error"]["code"], e.code());
            // The log line (Display) keeps them.
            assert!(e.to_string().contains("malformed"));
        }
        assert_eq!(
            Error::WebhookFailed("x".into()).body()["error"]["message"],
            "webhook failed"
        );
        // Refusals keep their message: it tells the client what to fix.
        let bad = Error::bad_request("invalid_channel", "area must not be empty");
        assert_eq!(bad.body()["error"]["message"], "area must not be empty");
    }
}
