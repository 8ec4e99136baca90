//! Server-Sent Events, `GET /sse`.
//!
//! `EventSource` cannot send a body or headers, so everything is in the query string:
//! `?usertoken=T&channel=H1&token=T1&channel=H2&token=T2&cursor=C` (each `channel` followed by
//! its `token`). The `Last-Event-ID` header, which the browser sends when it reconnects by
//! itself, wins over `cursor`.
//!
//! The stream opens with `retry:` and a comment, then:
//! - one record per event, `id: <cursor>` and `data: <event JSON>` (so `Last-Event-ID` resumes);
//! - `event: not_recovered` with `id:` and `data: {"cursor": C}` when events were missed;
//! - a comment line every `sse.heartbeat_ms` while idle, so that proxies keep the stream open;
//! - `event: token_expired` with `data: {"error": …}` when the first of the stream's tokens (the
//!   user token or a subscription token) expires; the stream then ends. The client renews its
//!   credentials and reconnects from its cursor.
//!
//! A refused credential is an ordinary HTTP error (401/403 with the error body) before any
//! stream starts, as is 429 `too_many_connections` (the stream counts as an open connection of
//! its user and address). The stream is pulled by the HTTP connection: a client that does not
//! read holds at most one batch, which is cut at `limits.batch_bytes`, and is written in chunks
//! of at most [`CHUNK_BYTES`] (a larger event is its own chunk, shared, not copied). A client
//! that takes no bytes for `limits.write_timeout_ms` is dropped by the listener
//! ([`super::WriteTimeoutListener`]) and resumes by `Last-Event-ID`. The stream ends on server
//! shutdown; the browser reconnects (to any node).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{authorize_expiring, check_origin, cut_to_bytes, expiry_instant, SubscriptionRef};
use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::event::Cursor;
use crate::hub::{ListenGuard, Wake};
use crate::limit::{ClientIp, ConnectionPermits, Limits};
use crate::Realtime;

/// Events are written in chunks of about this many bytes: small events are gathered into one
/// chunk (one copy of a few KiB), a larger event is sent as its own shared bytes.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// The record that ends a stream whose tokens expired (no `id:`: the client keeps its cursor).
const TOKEN_EXPIRED_RECORD: &[u8] = b"event: token_expired\ndata: {\"error\":{\"code\":\"token_expired\",\"message\":\"the token has expired; renew it and reconnect\"}}\n\n";

/// What the query string says.
pub(crate) struct SseRequest {
    pub(crate) usertoken: String,
    pub(crate) subscriptions: Vec<SubscriptionRef>,
    pub(crate) cursor: Option<Cursor>,
}

/// Reads the query string (the fuzz targets call this too).
pub(crate) fn parse_query(query: Option<&str>) -> Result<SseRequest> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| Error::bad_request("invalid_request", format!("bad query string: {e}")))?;
    let mut usertoken = None;
    let mut cursor = None;
    let mut subscriptions = Vec::new();
    let mut pending: Option<ChannelHash> = None;
    for (k, v) in pairs {
        match k.as_str() {
            "usertoken" => usertoken = Some(v),
            "cursor" => cursor = Some(Cursor::parse(&v)?),
            "channel" => {
                if pending.is_some() {
                    return Err(Error::bad_request(
                        "invalid_request",
                        "each `channel` must be followed by its `token`",
                    ));
                }
                pending = Some(ChannelHash::parse(&v)?);
            }
            "token" => {
                let channel = pending.take().ok_or_else(|| {
                    Error::bad_request("invalid_request", "a `token` must follow its `channel`")
                })?;
                subscriptions.push(SubscriptionRef { channel, token: v });
            }
            other => {
                return Err(Error::bad_request(
                    "invalid_request",
                    format!("unknown query parameter `{other}`"),
                ));
            }
        }
    }
    if pending.is_some() {
        return Err(Error::bad_request(
            "invalid_request",
            "the last `channel` has no `token`",
        ));
    }
    let usertoken = usertoken.ok_or_else(|| {
        Error::unauthorized(
            "unauthorized",
            "`usertoken` is required in the query string",
        )
    })?;
    Ok(SseRequest {
        usertoken,
        subscriptions,
        cursor,
    })
}

/// `GET /sse`.
pub(crate) async fn sse(
    State(rt): State<Realtime>,
    Extension(limits): Extension<Arc<Limits>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    check_origin(&rt, &headers)?;
    let req = parse_query(query.as_deref())?;
    let (user, user_expires) = rt.verify_user_token_expiring(&req.usertoken)?;
    let granted = authorize_expiring(&rt, user, &req.subscriptions)?;
    // The stream lives as long as the first of its tokens: then it says `token_expired` and
    // ends, and the client renews its credentials and reconnects from its cursor.
    let expires = granted.values().copied().fold(user_expires, i64::min);
    let hashes: Vec<ChannelHash> = granted.into_keys().collect();
    let permits = limits.connect(user, ip)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(Cursor::parse)
        .transpose()?;
    let hub = rt.hub().clone();
    let cursor = last_event_id.or(req.cursor).unwrap_or_else(|| hub.head());
    let wake = Arc::new(Wake::default());
    let guard = hub.listen(&hashes, wake.clone());
    let cfg = &rt.config().sse;
    let opening = Bytes::from(format!("retry: {}\n: connected\n\n", cfg.retry_ms));
    let state = Stream {
        rt: rt.clone(),
        hashes,
        cursor,
        wake,
        _guard: guard,
        heartbeat: Duration::from_millis(cfg.heartbeat_ms),
        expires_at: expiry_instant(expires),
        expired: false,
        cancel: rt.shutdown_token().clone(),
        opening: Some(opening),
        pending: VecDeque::new(),
        _open: crate::telemetry::Connection::open("sse"),
        _permits: permits,
    };
    let body = Body::from_stream(futures_util::stream::unfold(state, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), s))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

/// One open stream: pulled chunk by chunk by the HTTP connection.
struct Stream {
    rt: Realtime,
    hashes: Vec<ChannelHash>,
    cursor: Cursor,
    wake: Arc<Wake>,
    _guard: ListenGuard,
    heartbeat: Duration,
    /// When the first of the stream's tokens expires.
    expires_at: tokio::time::Instant,
    /// The `token_expired` record has been sent: the stream ends.
    expired: bool,
    cancel: CancellationToken,
    opening: Option<Bytes>,
    /// The records of the batch being written, not yet handed to the connection.
    pending: VecDeque<Bytes>,
    /// Counts this stream in the connections gauge while it lives.
    _open: crate::telemetry::Connection,
    /// Counts this stream against its user's and address's limits while it lives.
    _permits: ConnectionPermits,
}

impl Stream {
    /// The next bytes to send, or `None` to end the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.opening.take() {
            return Some(first);
        }
        if self.cancel.is_cancelled() || self.expired {
            return None;
        }
        if let Some(chunk) = self.next_pending() {
            return Some(chunk);
        }
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            if tokio::time::Instant::now() >= self.expires_at {
                self.expired = true;
                return Some(Bytes::from_static(TOKEN_EXPIRED_RECORD));
            }
            let limits = &self.rt.config().limits;
            let (limit, budget) = (limits.poll_events, limits.batch_bytes);
            let mut batch = match self.rt.hub().fetch(&self.hashes, &self.cursor, limit).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "sse fetch failed; ending the stream so the client resumes");
                    return None;
                }
            };
            if !batch.recovered {
                self.cursor = batch.cursor;
                let data = json!({"cursor": self.cursor});
                return Some(Bytes::from(format!(
                    "event: not_recovered\nid: {}\ndata: {data}\n\n",
                    self.cursor
                )));
            }
            if !batch.events.is_empty() {
                cut_to_bytes(&mut batch, budget);
                let epoch = &batch.cursor.epoch;
                self.pending
                    .extend(batch.events.iter().map(|e| e.sse_frame(epoch)));
                crate::telemetry::delivered("sse", batch.events.len());
                self.cursor = batch.cursor;
                return self.next_pending();
            }
            self.cursor = batch.cursor;
            let until_expiry = self
                .expires_at
                .saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                _ = self.wake.0.notified() => {}
                _ = tokio::time::sleep(self.heartbeat.min(until_expiry)) => {
                    if until_expiry >= self.heartbeat {
                        return Some(Bytes::from_static(b": heartbeat\n\n"));
                    }
                    // The tokens ran out: the loop's top says so.
                }
                _ = self.cancel.cancelled() => return None,
            }
        }
    }

    /// The next chunk of the batch being written: one large record as it is, or small ones
    /// gathered up to [`CHUNK_BYTES`].
    fn next_pending(&mut self) -> Option<Bytes> {
        let first = self.pending.pop_front()?;
        if first.len() >= CHUNK_BYTES
            || self
                .pending
                .front()
                .is_none_or(|next| first.len() + next.len() > CHUNK_BYTES)
        {
            return Some(first);
        }
        let mut out = Vec::with_capacity(CHUNK_BYTES);
        out.extend_from_slice(&first);
        while let Some(next) = self.pending.front() {
            if out.len() + next.len() > CHUNK_BYTES {
                break;
            }
            out.extend_from_slice(next);
            self.pending.pop_front();
        }
        Some(Bytes::from(out))
    }
}
