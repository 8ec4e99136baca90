//! Send to server: component → handler. A handler runs as the sending user and answers JSON
//! for the page (the analogue of `<component>_realtime_event_received`).
//!
//! - In library mode a handler is a Rust async closure registered with
//!   [`crate::Realtime::handle`].
//! - In server mode it is a webhook URL per component (`[webhooks.components]`). The server
//!   POSTs `{"component", "user", "payload"}` with the headers
//!   `X-Realtime-Timestamp: <unix seconds>` and
//!   `X-Realtime-Signature: v1=<hex HMAC-SHA-256(secret, "<timestamp>.<body>")>`,
//!   and relays the JSON answer. Unreachable, non-2xx (a redirect included: redirects are not
//!   followed, so the signed body never goes anywhere but the configured URL), non-JSON or
//!   longer than `webhooks.max_response_bytes` (read as it streams, never buffered past the
//!   cap) → 502; too slow → 504. The page is told only `webhook failed` / `webhook timed
//!   out`; the URL and the cause go to the log.
//!   A Rust handler registered for a component wins over a webhook. Webhooks need the
//!   `webhooks` cargo feature (on by default); without it a configured webhook is a start-up
//!   error ([`crate::config::Config::validate`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::secret::Secret;
#[cfg(feature = "webhooks")]
use crate::token::now_secs;
use crate::token::UserId;

/// Who is sending, to which component.
#[derive(Debug, Clone)]
pub struct SendContext {
    /// The sending user, from their verified user token.
    pub user: UserId,
    /// The component the page addressed.
    pub component: String,
}

/// A handler's refusal or failure, passed to the page as an error.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// HTTP status for the page (400..=599).
    pub status: u16,
    /// A machine word.
    pub code: String,
    /// For people.
    pub message: String,
}

impl HandlerError {
    /// The page sent something the handler refuses (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        HandlerError {
            status: 400,
            code: "handler_refused".into(),
            message: message.into(),
        }
    }

    /// The handler failed (500).
    pub fn internal(message: impl Into<String>) -> Self {
        HandlerError {
            status: 500,
            code: "handler_failed".into(),
            message: message.into(),
        }
    }
}

impl From<HandlerError> for Error {
    fn from(e: HandlerError) -> Self {
        let status = StatusCode::from_u16(e.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Error::Handler {
            status,
            code: e.code,
            message: e.message,
        }
    }
}

/// What a Rust handler returns.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = std::result::Result<Value, HandlerError>> + Send>>;
type HandlerFn = Arc<dyn Fn(SendContext, Value) -> HandlerFuture + Send + Sync>;

/// The registry: Rust handlers and webhook URLs.
pub(crate) struct Handlers {
    rust: RwLock<HashMap<String, HandlerFn>>,
    #[cfg(feature = "webhooks")]
    webhooks: Webhooks,
}

/// The webhook side: URLs per component and the client that calls them.
#[cfg(feature = "webhooks")]
struct Webhooks {
    urls: BTreeMap<String, String>,
    client: reqwest::Client,
    secret: Secret,
    /// Longest webhook answer relayed to a page (`webhooks.max_response_bytes`).
    max_response: usize,
}

impl Handlers {
    /// The registry; `webhooks` must be empty without the `webhooks` feature (the config's
    /// validation says so first).
    #[cfg_attr(not(feature = "webhooks"), allow(unused_variables))]
    pub(crate) fn new(
        webhooks: BTreeMap<String, String>,
        timeout: Duration,
        max_response: usize,
        secret: Secret,
    ) -> Result<Self> {
        #[cfg(not(feature = "webhooks"))]
        if let Some(c) = webhooks.keys().next() {
            return Err(Error::Config(format!(
                "webhooks.components.{c}: this build of realtime has no webhooks (the `webhooks` cargo feature is off)"
            )));
        }
        Ok(Handlers {
            rust: RwLock::new(HashMap::new()),
            #[cfg(feature = "webhooks")]
            webhooks: Webhooks::new(webhooks, timeout, max_response, secret)?,
        })
    }

    pub(crate) fn register<F, Fut>(&self, component: &str, f: F)
    where
        F: Fn(SendContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
    {
        let f: HandlerFn = Arc::new(move |ctx, payload| Box::pin(f(ctx, payload)));
        self.rust
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(component.to_string(), f);
    }

    pub(crate) fn has(&self, component: &str) -> bool {
        #[cfg(feature = "webhooks")]
        if self.webhooks.urls.contains_key(component) {
            return true;
        }
        self.rust
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(component)
    }

    /// Runs the component's handler as `ctx.user` and returns its JSON answer.
    pub(crate) async fn dispatch(
        &self,
        ctx: SendContext,
        payload: &RawValue,
    ) -> Result<Box<RawValue>> {
        let rust = self
            .rust
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ctx.component)
            .cloned();
        if let Some(f) = rust {
            let value: Value = serde_json::from_str(payload.get())
                .map_err(|e| Error::Internal(format!("re-reading a validated payload: {e}")))?;
            let answer = f(ctx, value).await?;
            return serde_json::value::to_raw_value(&answer)
                .map_err(|e| Error::Internal(format!("serialising a handler answer: {e}")));
        }
        #[cfg(feature = "webhooks")]
        if let Some(url) = self.webhooks.urls.get(&ctx.component) {
            return self.webhooks.call(url, &ctx, payload).await;
        }
        Err(Error::NotFound(format!(
            "no handler is registered for component {:?}",
            ctx.component
        )))
    }
}

#[cfg(feature = "webhooks")]
impl Webhooks {
    fn new(
        urls: BTreeMap<String, String>,
        timeout: Duration,
        max_response: usize,
        secret: Secret,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would carry the signed body (and the user's payload) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Internal(format!("building the webhook client: {e}")))?;
        Ok(Webhooks {
            urls,
            client,
            secret,
            max_response,
        })
    }

    async fn call(
        &self,
        url: &str,
        ctx: &SendContext,
        payload: &RawValue,
    ) -> Result<Box<RawValue>> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            component: &'a str,
            user: UserId,
            payload: &'a RawValue,
        }
        let body = serde_json::to_vec(&Body {
            component: &ctx.component,
            user: ctx.user,
            payload,
        })
        .map_err(|e| Error::Internal(format!("serialising a webhook body: {e}")))?;
        let result = self.post(url, &ctx.component, body).await;
        if let Err(e) = &result {
            // The page gets a word (`Error::body`); the operator gets the URL and the cause.
            tracing::warn!(component = %ctx.component, url, user = %ctx.user, error = %e, "webhook failed");
        }
        result
    }

    async fn post(&self, url: &str, component: &str, body: Vec<u8>) -> Result<Box<RawValue>> {
        let timestamp = now_secs().to_string();
        let signature = sign_webhook(&self.secret, &timestamp, &body);
        let mut answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-realtime-timestamp", &timestamp)
            .header("x-realtime-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| webhook_error(component, url, e))?;
        let status = answer.status();
        if !status.is_success() {
            // Not read: a redirect or an error page is not relayed, whatever its size.
            return Err(Error::WebhookFailed(format!(
                "the webhook for {component} at {url} answered {status}{}",
                if status.is_redirection() {
                    " (redirects are not followed)"
                } else {
                    ""
                }
            )));
        }
        let too_long = || {
            Error::WebhookFailed(format!(
                "the webhook for {component} at {url} answered more than {} bytes (webhooks.max_response_bytes)",
                self.max_response
            ))
        };
        if answer
            .content_length()
            .is_some_and(|n| n > self.max_response as u64)
        {
            return Err(too_long());
        }
        // Streamed, and cut at the cap: a huge or endless answer costs at most the cap.
        let mut bytes = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| webhook_error(component, url, e))?
        {
            if bytes.len() + chunk.len() > self.max_response {
                return Err(too_long());
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::WebhookFailed(format!(
                "the webhook for {component} at {url} answered non-UTF-8"
            ))
        })?;
        RawValue::from_string(text).map_err(|e| {
            Error::WebhookFailed(format!(
                "the webhook for {component} at {url} answered invalid JSON: {e}"
            ))
        })
    }
}

#[cfg(feature = "webhooks")]
fn webhook_error(component: &str, url: &str, e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::WebhookTimeout(format!(
            "the webhook for {component} at {url} did not answer in time"
        ))
    } else {
        Error::WebhookFailed(format!(
            "the webhook for {component} at {url} could not be reached: {e}"
        ))
    }
}

/// The signature header value for a webhook body: `v1=` + hex HMAC-SHA-256 over
/// `"<timestamp>.<body>"`. Webhooks recompute it and compare, and refuse old timestamps.
pub fn sign_webhook(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}
