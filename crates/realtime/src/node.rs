//! [`Realtime`]: the node. It wires the engine, the hub, the handlers and the background tasks,
//! and is the one way in for an embedding application and for the HTTP layer alike.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{Channel, ChannelHash};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Cursor, EventId, NewEvent};
use crate::handlers::{HandlerError, Handlers, SendContext};
use crate::hub::Hub;
use crate::secret::Secret;
use crate::token::{self, now_secs, TokenKind, UserId};

/// What a page needs to receive one channel: its hash, a token for it, and the cursor at
/// render time (so that nothing notified between render and the first poll is missed).
#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    /// The channel's public name.
    pub channel: ChannelHash,
    /// The subscription token, bound to channel + user + expiry.
    pub token: String,
    /// When the token expires (Unix seconds).
    pub expires: i64,
    /// Where the stream stood at render time.
    pub cursor: Cursor,
    /// The channel's fields, so that the page knows what it subscribed to.
    #[serde(flatten)]
    pub fields: Channel,
}

/// One subscription inside a page config.
#[derive(Debug, Clone, Serialize)]
pub struct PageSubscription {
    /// The channel's public name.
    pub channel: ChannelHash,
    /// The subscription token.
    pub token: String,
    /// The channel's fields.
    #[serde(flatten)]
    pub fields: Channel,
}

/// The object a page embeds and hands to the browser client's `init` as it is.
#[derive(Debug, Clone, Serialize)]
pub struct PageConfig {
    /// Where the client endpoints are (no trailing slash).
    pub url: String,
    /// Who the page is for.
    pub user: UserId,
    /// The user token: identifies the page's user on polls and sends.
    pub usertoken: String,
    /// When the tokens expire (Unix seconds).
    pub expires: i64,
    /// Where the stream stood at render time.
    pub cursor: Cursor,
    /// One per channel.
    pub subscriptions: Vec<PageSubscription>,
    /// Transports to try, in order.
    pub transports: Vec<String>,
}

struct Inner {
    config: Config,
    secret: Secret,
    engine: Arc<dyn Engine>,
    hub: Arc<Hub>,
    handlers: Handlers,
    api_keys: Vec<[u8; 32]>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Connection and rate limits, shared by every router of this node.
    limits: Arc<crate::limit::Limits>,
}

/// The node: cheap to clone (an `Arc` inside), shared by every request.
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("engine", &self.inner.engine.name())
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Realtime {
    /// Validates `config`, positions a hub on `engine`, and starts the background tasks (the
    /// engine tail and the retention purge) on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting; an engine error when its position cannot be read.
    pub async fn start(config: Config, secret: Secret, engine: Arc<dyn Engine>) -> Result<Self> {
        config.validate()?;
        crate::telemetry::describe();
        let hub = Hub::with_limits(
            engine.clone(),
            config.hub.cache_events,
            config.hub.cache_bytes,
        )
        .await?;
        let handlers = Handlers::new(
            config.webhooks.components.clone(),
            Duration::from_millis(config.webhooks.timeout_ms),
            config.webhooks.max_response_bytes,
            secret.clone(),
        )?;
        let api_keys = config
            .auth
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| digest(k))
            .collect();
        let limits = Arc::new(crate::limit::Limits::from_config(&config).map_err(Error::Config)?);
        let rt = Realtime {
            inner: Arc::new(Inner {
                limits,
                config,
                secret,
                engine,
                hub,
                handlers,
                api_keys,
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        };
        rt.spawn_background();
        Ok(rt)
    }

    fn spawn_background(&self) {
        let i = &self.inner;
        let interval = Duration::from_millis(i.config.engine.check_interval_ms);
        i.tracker
            .spawn(i.hub.clone().run_tail(interval, i.cancel.clone()));
        let (engine, hub, cancel) = (i.engine.clone(), i.hub.clone(), i.cancel.clone());
        let every = Duration::from_secs(i.config.engine.purge_interval_secs);
        let retention = i64::try_from(i.config.engine.retention_secs).unwrap_or(i64::MAX);
        i.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = cancel.cancelled() => return,
                }
                match engine.purge(now_secs().saturating_sub(retention)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(removed = n, "retention purge");
                        if let Ok(pos) = engine.position().await {
                            hub.raise_floor(pos.floor);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "retention purge failed"),
                }
            }
        });
    }

    /// The settings this node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The engine's name (`memory`, `sqlite`, `postgres`, `redis`, or a custom engine's).
    pub fn engine_name(&self) -> &'static str {
        self.inner.engine.name()
    }

    /// Where pages reach this node: `server.public_url`, else `http://` and the `Host` of the
    /// request with `headers` (forwarding headers are ignored here: anyone can send them).
    pub fn public_url(&self, headers: &axum::http::HeaderMap) -> String {
        crate::api::base_url(self, headers)
    }

    /// The signing secret.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn secret(&self) -> &Secret {
        &self.inner.secret
    }

    /// The engine.
    pub(crate) fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// This node's hub.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Tracks the node's tasks (background work, WebSocket connections, sends in flight) so
    /// that shutdown can wait for them.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// Fires when the node shuts down; long-lived requests end on it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Whether `component` may use real-time now: enabled in the configuration, and the engine
    /// reachable (as the original's `manager::is_enabled`, which answers false when real-time
    /// is unavailable).
    pub fn is_enabled(&self, component: &str) -> bool {
        crate::channel::validate_component(component).is_ok()
            && self.inner.config.component_enabled(component)
            && self.inner.hub.is_healthy()
    }

    fn check_component(&self, component: &str) -> Result<()> {
        crate::channel::validate_component(component)?;
        if self.inner.config.component_enabled(component) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "component_disabled",
                format!("real-time is disabled for component {component:?}"),
            ))
        }
    }

    pub(crate) fn check_user(&self, user: UserId) -> Result<()> {
        if user.0 < 0 {
            return Err(Error::bad_request(
                "invalid_user",
                "user ids are 0 (guest) or positive",
            ));
        }
        if user.is_guest() && !self.inner.config.auth.allow_guests {
            return Err(Error::forbidden(
                "guests_not_allowed",
                "guests may not use real-time on this site",
            ));
        }
        Ok(())
    }

    fn expires(&self) -> i64 {
        now_secs().saturating_add(
            i64::try_from(self.inner.config.auth.token_ttl_secs).unwrap_or(i64::MAX),
        )
    }

    /// Authorises `user` to receive `channel`: the hash, a token, and the cursor now.
    /// Nothing is stored.
    ///
    /// # Errors
    /// `component_disabled`, `guests_not_allowed`, or an engine error reading the position.
    pub async fn subscribe(&self, channel: &Channel, user: UserId) -> Result<Subscription> {
        let mut page = self
            .page(user, std::slice::from_ref(channel), String::new())
            .await?;
        let sub = page
            .subscriptions
            .pop()
            .ok_or_else(|| Error::Internal("a page of one channel has one subscription".into()))?;
        Ok(Subscription {
            channel: sub.channel,
            token: sub.token,
            expires: page.expires,
            cursor: page.cursor,
            fields: sub.fields,
        })
    }

    /// The page config for `user` and `channels`, with `url` as the client endpoints' base.
    ///
    /// # Errors
    /// As [`Realtime::subscribe`].
    pub async fn page(
        &self,
        user: UserId,
        channels: &[Channel],
        url: String,
    ) -> Result<PageConfig> {
        self.check_user(user)?;
        for c in channels {
            self.check_component(&c.component)?;
        }
        let pos = self.inner.engine.position().await?;
        let expires = self.expires();
        let secret = &self.inner.secret;
        let subscriptions = channels
            .iter()
            .map(|c| {
                let hash = c.hash(secret);
                let token =
                    token::sign(secret, TokenKind::Subscription, Some(&hash), user, expires);
                PageSubscription {
                    channel: hash,
                    token,
                    fields: c.clone(),
                }
            })
            .collect();
        Ok(PageConfig {
            url,
            user,
            usertoken: token::sign(secret, TokenKind::User, None, user, expires),
            expires,
            cursor: Cursor {
                epoch: pos.epoch,
                id: pos.head,
            },
            subscriptions,
            transports: self.inner.config.page_transports(),
        })
    }

    /// Appends an event with `payload` to `channel`; returns its id once durable.
    ///
    /// # Errors
    /// `component_disabled`, `payload_too_large`, `invalid_payload` (see
    /// [`Realtime::notify_many`]), or the engine's error (then nothing was stored).
    pub async fn notify(&self, channel: &Channel, payload: &impl Serialize) -> Result<EventId> {
        let raw = serde_json::value::to_raw_value(payload).map_err(|e| {
            Error::bad_request(
                "invalid_payload",
                format!("the payload is not JSON-serialisable: {e}"),
            )
        })?;
        let ids = self.notify_many(vec![(channel.clone(), raw)]).await?;
        ids.first()
            .copied()
            .ok_or_else(|| Error::Internal("one event appended, no id returned".into()))
    }

    /// Appends several events in one durable write; ids in the order given. All or nothing.
    ///
    /// Every event is checked against the one rule for what an event may contain (the
    /// channel's by [`Channel::new`], the payload's by its size, depth and strings) before the
    /// engine is touched, so that no engine meets a value another engine accepts and it refuses.
    ///
    /// # Errors
    /// As [`Realtime::notify`], `batch_too_large` over `limits.batch_events`, and
    /// `invalid_payload` for a payload nested deeper than `limits.payload_depth` or holding a
    /// lone surrogate escape.
    pub async fn notify_many(&self, events: Vec<(Channel, Box<RawValue>)>) -> Result<Vec<EventId>> {
        let limits = &self.inner.config.limits;
        if events.len() > limits.batch_events {
            return Err(Error::bad_request(
                "batch_too_large",
                format!("at most {} events per batch", limits.batch_events),
            ));
        }
        let mut batch = Vec::with_capacity(events.len());
        for (channel, payload) in events {
            self.check_component(&channel.component)?;
            check_payload(&payload, limits.payload_bytes, limits.payload_depth)?;
            let hash = channel.hash(&self.inner.secret);
            batch.push(NewEvent {
                channel,
                hash,
                payload,
            });
        }
        let stored = self.inner.engine.append(batch).await?;
        metrics::counter!(crate::telemetry::EVENTS_NOTIFIED).increment(stored.len() as u64);
        Ok(stored.iter().map(|e| e.id).collect())
    }

    /// Registers the Rust handler for messages that pages send to `component`. It runs with the
    /// sender's verified user id and answers the JSON the page receives.
    pub fn handle<F, Fut>(&self, component: &str, f: F)
    where
        F: Fn(SendContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
    {
        self.inner.handlers.register(component, f);
    }

    /// Whether a handler (Rust or webhook) exists for `component`.
    pub fn has_handler(&self, component: &str) -> bool {
        self.inner.handlers.has(component)
    }

    /// Runs `component`'s handler as `user` with `payload` (what `POST /send` does after
    /// checking the user token).
    ///
    /// # Errors
    /// `component_disabled`, `payload_too_large`, 404 without a handler, the handler's own
    /// error, or 502/504 from a webhook.
    pub async fn send_to_server(
        &self,
        user: UserId,
        component: &str,
        payload: &RawValue,
    ) -> Result<Box<RawValue>> {
        self.check_user(user)?;
        self.check_component(component)?;
        let limit = self.inner.config.limits.payload_bytes;
        if payload.get().len() > limit {
            return Err(Error::TooLarge(format!(
                "the payload is over {limit} bytes"
            )));
        }
        self.inner
            .handlers
            .dispatch(
                SendContext {
                    user,
                    component: component.to_string(),
                },
                payload,
            )
            .await
    }

    /// Whether `key` is one of the configured API keys (compared by digest, so the time taken
    /// tells nothing about the keys).
    pub fn check_api_key(&self, key: &str) -> bool {
        let d = digest(key);
        self.inner
            .api_keys
            .iter()
            .fold(false, |found, k| found | (k == &d))
    }

    /// Verifies a user token and returns its user (guests refused unless allowed).
    ///
    /// # Errors
    /// `token_invalid` (403), `token_expired` (401), `guests_not_allowed` (403).
    pub fn verify_user_token(&self, token: &str) -> Result<UserId> {
        self.verify_user_token_expiring(token).map(|(user, _)| user)
    }

    /// As [`Realtime::verify_user_token`], with the token's expiry (Unix seconds).
    ///
    /// # Errors
    /// As [`Realtime::verify_user_token`].
    pub fn verify_user_token_expiring(&self, token: &str) -> Result<(UserId, i64)> {
        let (user, expires) =
            token::verify_expiring(&self.inner.secret, TokenKind::User, None, token)?;
        self.check_user(user)?;
        Ok((user, expires))
    }

    /// Verifies that `token` grants `user` the channel `hash`.
    ///
    /// # Errors
    /// `token_invalid` when forged, for another channel or for another user; `token_expired`.
    pub fn verify_subscription(&self, hash: &ChannelHash, token: &str, user: UserId) -> Result<()> {
        self.verify_subscription_expiring(hash, token, user)
            .map(|_| ())
    }

    /// As [`Realtime::verify_subscription`], and returns when the token expires (Unix seconds).
    ///
    /// # Errors
    /// As [`Realtime::verify_subscription`].
    pub fn verify_subscription_expiring(
        &self,
        hash: &ChannelHash,
        token: &str,
        user: UserId,
    ) -> Result<i64> {
        let (owner, expires) = token::verify_expiring(
            &self.inner.secret,
            TokenKind::Subscription,
            Some(hash),
            token,
        )?;
        if owner != user {
            return Err(Error::forbidden(
                "token_invalid",
                "a subscription token belongs to another user",
            ));
        }
        Ok(expires)
    }

    /// Stops the background tasks and open long-polls, waits for them (at most the drain
    /// timeout), then closes the engine.
    pub async fn shutdown(&self) {
        let i = &self.inner;
        i.cancel.cancel();
        i.tracker.close();
        let drain = Duration::from_millis(i.config.server.drain_timeout_ms);
        if tokio::time::timeout(drain, i.tracker.wait()).await.is_err() {
            tracing::warn!("background tasks did not stop within the drain timeout");
        }
        i.engine.close().await;
    }

    /// The routes to mount: the client endpoints and the application API, together. To mount
    /// and protect them apart (the API on an internal listener, say), use
    /// [`Realtime::client_router`] and [`Realtime::api_router`] instead.
    pub fn router(&self) -> axum::Router {
        crate::router::router(self)
    }

    /// The client endpoints alone, for browser pages: `/ws`, `/sse`, `/poll`, `/send`,
    /// `/realtime.js` (those of `transports.enabled`), with CORS for `server.allowed_origins`.
    /// Credentials are the tokens of the page config.
    pub fn client_router(&self) -> axum::Router {
        crate::router::client_router(self)
    }

    /// The application API alone, for the application's servers: `/api/subscribe`,
    /// `/api/page`, `/api/notify`, `/api/status` (with an API key) and `/healthz`.
    pub fn api_router(&self) -> axum::Router {
        crate::router::api_router(self)
    }

    /// The connection and rate limits of this node, shared by its routers.
    pub(crate) fn limits(&self) -> &Arc<crate::limit::Limits> {
        &self.inner.limits
    }
}

/// The payload half of the one rule for what an event may contain (`docs/protocol.md`, "What
/// an event may contain"): any JSON value of at most `max_bytes` bytes whose arrays and objects
/// nest at most `max_depth` deep, and whose strings hold no lone UTF-16 surrogate escape
/// (`"\ud800"`: valid JSON syntax, but no Unicode text, and PostgreSQL refuses it). Every other
/// escape (`\u0000`, `\"`, `\\`, a surrogate pair) is accepted and stored byte-exact.
///
/// # Errors
/// `payload_too_large` (413) over `max_bytes`; `invalid_payload` (400) too deep or with a lone
/// surrogate.
pub(crate) fn check_payload(payload: &RawValue, max_bytes: usize, max_depth: usize) -> Result<()> {
    let text = payload.get().as_bytes();
    if text.len() > max_bytes {
        return Err(Error::TooLarge(format!(
            "a payload is over {max_bytes} bytes"
        )));
    }
    let too_deep = || {
        Error::bad_request(
            "invalid_payload",
            format!("a payload nests arrays and objects more than {max_depth} deep"),
        )
    };
    let lone = || {
        Error::bad_request(
            "invalid_payload",
            "a payload string holds a lone surrogate escape (\\ud800-\\udfff without its pair)",
        )
    };
    // `text` is valid JSON (a RawValue): brackets outside strings are structure, and inside a
    // string only `\` and `"` matter. Reads go through `get` so that nothing can panic.
    let hex4 = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&b) = text.get(i) {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(too_deep());
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => loop {
                i += 1;
                match text.get(i) {
                    None | Some(b'"') => break,
                    Some(b'\\') if text.get(i + 1) == Some(&b'u') => {
                        let unit = hex4(i + 2).ok_or_else(lone)?;
                        i += 5;
                        if (0xDC00..=0xDFFF).contains(&unit) {
                            return Err(lone());
                        }
                        if (0xD800..=0xDBFF).contains(&unit) {
                            let low = (text.get(i + 1..i + 3) == Some(b"\\u"))
                                .then(|| hex4(i + 3))
                                .flatten();
                            if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                                return Err(lone());
                            }
                            i += 6;
                        }
                    }
                    Some(b'\\') => i += 1,
                    Some(_) => {}
                }
            },
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_payload;

    fn check(text: &str, depth: usize) -> Result<(), String> {
        let raw = serde_json::value::RawValue::from_string(text.to_string()).expect("valid JSON");
        check_payload(&raw, 1_000_000, depth).map_err(|e| e.code().to_string())
    }

    #[test]
    fn depth_counts_nested_arrays_and_objects_outside_strings() {
        assert_eq!(check("1", 0), Ok(()));
        assert_eq!(check("[1]", 1), Ok(()));
        assert_eq!(check(r#"{"a":[1]}"#, 2), Ok(()));
        assert_eq!(check(r#"{"a":[1]}"#, 1), Err("invalid_payload".into()));
        assert_eq!(check(r#"[[],[],{}]"#, 2), Ok(()));
        assert_eq!(check(r#""[[[[{{{{""#, 0), Ok(()), "brackets inside strings");
        assert_eq!(
            check(r#"["\"[[[", "\\", [1]]"#, 2),
            Ok(()),
            "escaped quotes"
        );
        let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(check(&deep, 64), Ok(()));
        let deeper = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
        assert_eq!(check(&deeper, 64), Err("invalid_payload".into()));
    }

    #[test]
    fn escapes_are_accepted_and_lone_surrogates_refused() {
        for ok in [
            r#""\u0000""#,
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00""#,
            r#""\"\\\/\b\f\n\r\t""#,
            r#""C:\\temp""#,
            r#""\uffff\u00e9""#,
        ] {
            assert_eq!(check(ok, 64), Ok(()), "{ok}");
        }
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d""#,
            r#"{"k\ud83dx":1}"#,
            r#"["\ude00\ud83d"]"#,
        ] {
            assert_eq!(check(bad, 64), Err("invalid_payload".into()), "{bad}");
        }
    }

    #[test]
    fn size_is_checked_first() {
        let raw = serde_json::value::RawValue::from_string("[1,2,3]".into()).expect("json");
        assert_eq!(
            check_payload(&raw, 6, 64).map_err(|e| e.code().to_string()),
            Err("payload_too_large".into())
        );
        assert!(check_payload(&raw, 7, 64).is_ok());
    }

    /// Without the `webhooks` feature a configured webhook is refused at start-up, by name,
    /// not ignored (pages would get 404 for a component the operator meant to serve).
    #[cfg(not(feature = "webhooks"))]
    #[tokio::test]
    async fn a_webhook_without_the_webhooks_feature_is_a_start_up_error() {
        let mut config = crate::Config::default();
        config
            .webhooks
            .components
            .insert("mod_chat".into(), "http://127.0.0.1:9/hook".into());
        let engine = std::sync::Arc::new(crate::engine::MemoryEngine::new());
        let secret = crate::Secret::generate().0;
        match super::Realtime::start(config, secret, engine).await {
            Err(crate::Error::Config(message)) => {
                assert!(message.contains("`webhooks` cargo feature"), "{message}");
                assert!(message.contains("mod_chat"), "{message}");
            }
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }
}
