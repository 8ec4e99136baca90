//! WebSocket, `GET /ws`: JSON text frames with a `type`.
//!
//! Client → server: `subscribe` (`usertoken`, `subscriptions`, `cursor`; the first frame, and
//! later ones, with an optional `id`, add subscriptions or renew their tokens), `unsubscribe`
//! (`id`, `channels`), `send` (`id`, `component`, `payload`), `ping`.
//! Server → client: `recovered` / `not_recovered` (with the cursor the stream continues from),
//! `event` (`cursor`, `event`), `reply` (`id`, `response` or `error`), `subscribed` /
//! `unsubscribed` (`id`, `channels`: the connection's channels now), `error` (with the `id` of
//! the frame it answers, when that had one), `pong`.
//!
//! A later `subscribe` is checked as the first was (each token for this connection's user), but a
//! refusal is an `error` frame, not a close: the channels already there go on. Its `cursor`, when
//! it is of the same epoch and behind the connection's, moves the connection back to it, so that
//! an added channel's events since that cursor (the one the application minted with its token)
//! are delivered; the client drops the repeats of the other channels. A `usertoken` in it, and
//! tokens for channels already there, renew them: the connection ends when the first of its
//! tokens expires (`error` `token_expired`, then close 4010), so renewing before then keeps it.
//!
//! Delivery pulls from the hub by cursor: a connection keeps no queue of its own. When its
//! channels get an event the hub wakes it; it reads everything after its cursor from the hub's
//! cache (the engine only when the cursor is older than the cache) and writes the frames, which
//! are made once per event and shared by every connection. A client that stops reading blocks
//! that write; after `websocket.write_timeout_ms` it is cut off with close code 4008 and resumes
//! from its cursor when it reconnects. Memory per connection is therefore one batch at most,
//! whatever the client does.
//!
//! A batch of frames is cut at `limits.batch_bytes` of events (the rest follows in the next).
//! Limits: a client address over `limits.connections_per_ip` is refused with 429 before the
//! upgrade; a user over `limits.connections_per_user` gets an `error` frame and close 1013
//! after the subscribe frame; a `send` over `rate.send_per_sec` gets a `reply` with error
//! `rate_limited` (the connection stays).
//!
//! Close codes: 1000 normal; 1002 protocol error (unmasked frame, reserved bits, bad opcode);
//! 1007 invalid payload (a text frame that is not UTF-8); 1009 frame too large; 1012 server
//! draining (reconnect at once, to any node; sent before any `recovered` to a connection
//! that had not subscribed yet when the drain began); 1013 try again later (too many connections, or
//! a transient failure such as the engine unavailable while subscribing);
//! 4001 credential refused (do not retry); 4002 bad subscribe (do not retry); 4008 slow
//! consumer (resume from the cursor); 4009 no heartbeat (reconnect with backoff); 4010 token
//! expired (renew the credentials, then reconnect from the cursor).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::{authorize_expiring, check_origin, cut_to_bytes, expiry_instant, SubscriptionRef};
use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::event::Cursor;
use crate::hub::{ListenGuard, Wake};
use crate::limit::{ClientIp, ConnectionPermits, Limits};
use crate::token::UserId;
use crate::Realtime;
use std::net::IpAddr;

/// Close code: the credential was refused; the client must not retry.
pub(crate) const CLOSE_CREDENTIAL_REFUSED: u16 = 4001;
/// Close code: the subscribe frame was malformed or missing; the client must not retry.
pub(crate) const CLOSE_BAD_SUBSCRIBE: u16 = 4002;
/// Close code: the client did not read fast enough; resume from the cursor.
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code: nothing was heard from the client within the dead-peer timeout.
pub(crate) const CLOSE_NO_HEARTBEAT: u16 = 4009;
/// Close code: the first of the connection's tokens expired; renew, then reconnect.
pub(crate) const CLOSE_TOKEN_EXPIRED: u16 = 4010;
/// Close code: the server is draining; reconnect at once (another node will answer).
pub(crate) const CLOSE_DRAINING: u16 = 1012;
/// Close code: a frame over the size limit.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: the client broke the WebSocket protocol (RFC 6455: unmasked frame, reserved
/// bits, unknown opcode).
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text frame that is not UTF-8 (RFC 6455 "invalid frame payload data").
pub(crate) const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: over a limit (too many connections of this user); reconnect later, with
/// backoff.
pub(crate) const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// A frame a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientFrame {
    Subscribe {
        /// Answered by `subscribed` or an `error` with this id (later frames only).
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        usertoken: Option<String>,
        subscriptions: Vec<SubscriptionRef>,
        #[serde(default)]
        cursor: Option<Cursor>,
    },
    Unsubscribe {
        #[serde(default)]
        id: Option<Value>,
        channels: Vec<ChannelHash>,
    },
    Send {
        id: Value,
        component: String,
        #[serde(default)]
        payload: Value,
    },
    Ping,
}

/// Parses one client text frame (the fuzz targets call this too).
pub(crate) fn parse_client_frame(text: &str) -> serde_json::Result<ClientFrame> {
    serde_json::from_str(text)
}

/// `GET /ws`: checks the origin, then upgrades.
pub(crate) async fn upgrade(
    State(rt): State<Realtime>,
    Extension(limits): Extension<Arc<Limits>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    check_origin(&rt, &headers)?;
    let permits = limits.connect_ip(ip)?;
    let max = rt.config().websocket.max_frame_bytes;
    Ok(ws
        // Clients send little (a subscribe, small sends): a small read buffer keeps an idle
        // connection small; a larger frame is still read whole (tungstenite reserves its length).
        .read_buffer_size(1024)
        // Frames fed in one batch go out in one write (flushed at the end of the batch),
        // instead of one write syscall per frame.
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max.max(64 * 1024) * 4)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let tracker = rt.tracker().clone();
            // Run on the upgrade's own task (tracked): a second task per connection would cost
            // its memory and a wake-up for nothing.
            let peer = Peer {
                limits,
                ip,
                permits,
            };
            tracker
                .track_future(Connection::run(rt, socket, peer))
                .await;
        }))
}

/// Why a connection ends.
struct Close(u16, &'static str);

/// Who is at the other end, for the limits.
struct Peer {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    /// Counts the connection against its address (and, once known, its user) while it lives.
    permits: ConnectionPermits,
}

struct Connection {
    rt: Realtime,
    sink: SplitSink<WebSocket, Message>,
    user: UserId,
    /// When the user token expires (Unix seconds).
    user_expires: i64,
    hashes: Vec<ChannelHash>,
    /// When each channel's token expires (Unix seconds), in the order of `hashes`.
    expiries: Vec<i64>,
    cursor: Cursor,
    wake: Arc<Wake>,
    guard: Option<ListenGuard>,
    write_timeout: Duration,
    peer: Peer,
}

impl Connection {
    async fn run(rt: Realtime, socket: WebSocket, peer: Peer) {
        let _open = crate::telemetry::Connection::open("websocket");
        let (sink, mut stream) = socket.split();
        let cfg = rt.config().websocket.clone();
        // A connection the node has not served yet when it drains (one that arrived with a
        // reconnect storm just before the listener closed) is sent away with 1012 at once: its
        // client backs off and resumes on the next node, instead of subscribing here and being
        // closed again a moment later, or holding the drain until the subscribe timeout.
        let cancel = rt.shutdown_token().clone();
        let first = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            first = timeout(
                Duration::from_millis(cfg.subscribe_timeout_ms),
                next_text(&mut stream),
            ) => Some(first),
        };
        let mut conn = Connection {
            rt,
            sink,
            user: UserId::GUEST,
            user_expires: 0,
            hashes: Vec::new(),
            expiries: Vec::new(),
            cursor: Cursor {
                epoch: crate::event::Epoch(String::new()),
                id: crate::event::EventId(0),
            },
            wake: Arc::new(Wake::default()),
            guard: None,
            write_timeout: Duration::from_millis(cfg.write_timeout_ms),
            peer,
        };
        let outcome = match first {
            None => Err(Close(CLOSE_DRAINING, "server draining")),
            Some(Err(_)) => Err(Close(CLOSE_BAD_SUBSCRIBE, "no subscribe frame in time")),
            Some(Ok(Err(close))) => Err(close),
            Some(Ok(Ok(None))) => return,
            Some(Ok(Ok(Some(_)))) if cancel.is_cancelled() => {
                Err(Close(CLOSE_DRAINING, "server draining"))
            }
            Some(Ok(Ok(Some(text)))) => {
                let started = conn.start(&text).await;
                // The subscribe frame is not needed for the connection's life.
                drop(text);
                match started {
                    Ok(()) => conn.serve(&mut stream, &cfg).await,
                    Err(close) => Err(close),
                }
            }
        };
        let Close(code, reason) = match outcome {
            Ok(()) => {
                // The client closed: flush the close reply tungstenite queued, so that the
                // client sees a clean close.
                let _ = timeout(Duration::from_secs(1), conn.sink.close()).await;
                return;
            }
            Err(close) => close,
        };
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        // The closing handshake, best effort: send our close, then wait briefly for the
        // client's, so that it reads every frame before the connection goes. A client that
        // does not read will not get it, and is dropped anyway.
        let _ = timeout(Duration::from_secs(1), async {
            if conn.sink.send(frame).await.is_ok() {
                while let Some(Ok(msg)) = stream.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            }
            let _ = conn.sink.close().await;
        })
        .await;
    }

    /// Handles the first frame: it must be a valid `subscribe`.
    async fn start(&mut self, text: &str) -> Result<(), Close> {
        let frame = match parse_client_frame(text) {
            Ok(ClientFrame::Subscribe {
                usertoken,
                subscriptions,
                cursor,
                ..
            }) => (usertoken, subscriptions, cursor),
            Ok(_) => {
                return self
                    .refuse(Error::bad_request(
                        "invalid_request",
                        "the first frame must be `subscribe`",
                    ))
                    .await
            }
            Err(e) => {
                return self
                    .refuse(Error::bad_request(
                        "invalid_request",
                        format!("bad subscribe frame: {e}"),
                    ))
                    .await
            }
        };
        let (usertoken, subscriptions, cursor) = frame;
        let Some(usertoken) = usertoken else {
            return self
                .refuse(Error::unauthorized(
                    "unauthorized",
                    "the subscribe frame needs `usertoken`",
                ))
                .await;
        };
        let (user, user_expires) = match self.rt.verify_user_token_expiring(&usertoken) {
            Ok(u) => u,
            Err(e) => return self.refuse(e).await,
        };
        let granted = match authorize_expiring(&self.rt, user, &subscriptions) {
            Ok(h) => h,
            Err(e) => return self.refuse(e).await,
        };
        if let Err(e) = self.peer.limits.connect_user(&mut self.peer.permits, user) {
            self.error_frame(None, e).await?;
            return Err(Close(CLOSE_TRY_AGAIN_LATER, "try again later"));
        }
        self.user = user;
        self.user_expires = user_expires;
        self.listen(granted.into_iter().collect());
        let hub = self.rt.hub();
        self.cursor = cursor.unwrap_or_else(|| hub.head());
        let batch = hub
            .fetch(
                &self.hashes,
                &self.cursor,
                self.rt.config().limits.poll_events,
            )
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => return self.refuse(e).await,
        };
        cut_to_bytes(&mut batch, self.rt.config().limits.batch_bytes);
        let kind = if batch.recovered {
            "recovered"
        } else {
            "not_recovered"
        };
        let head = json!({"type": kind, "cursor": if batch.recovered { self.cursor.clone() } else { batch.cursor.clone() }});
        self.write(vec![Message::Text(head.to_string().into())])
            .await?;
        self.deliver(batch).await?;
        self.pump().await
    }

    /// Sends an error frame, then closes. The failure is classified once, here: 4001 for a
    /// refused credential and 4002 for a malformed subscribe (final: the client must not
    /// retry), 1013 for a transient failure of this server (the engine unavailable or busy, a
    /// 5xx, a 429: the client retries with backoff and resumes from its cursor). An engine that
    /// is down during a rolling restart must not end every page that subscribes meanwhile.
    async fn refuse(&mut self, e: Error) -> Result<(), Close> {
        let (code, reason) = match e.status().as_u16() {
            401 | 403 => (CLOSE_CREDENTIAL_REFUSED, "credential refused"),
            429 | 500..=599 => (CLOSE_TRY_AGAIN_LATER, "try again later"),
            _ => (CLOSE_BAD_SUBSCRIBE, "bad subscribe"),
        };
        let frame = json!({"type": "error", "error": e.body()["error"]});
        self.write(vec![Message::Text(frame.to_string().into())])
            .await?;
        Err(Close(code, reason))
    }

    /// Listens to `channels` (hash and token expiry, sorted by hash) instead of the current ones.
    fn listen(&mut self, channels: Vec<(ChannelHash, i64)>) {
        let (hashes, expiries): (Vec<_>, Vec<_>) = channels.into_iter().unzip();
        // The new guard is registered before the old one is dropped: no moment without one.
        let guard = self.rt.hub().listen(&hashes, self.wake.clone());
        self.guard = Some(guard);
        self.hashes = hashes;
        self.expiries = expiries;
    }

    /// When the first of the connection's tokens expires (Unix seconds).
    fn expires(&self) -> i64 {
        self.expiries
            .iter()
            .copied()
            .fold(self.user_expires, i64::min)
    }

    async fn serve(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        cfg: &crate::config::WebSocketConfig,
    ) -> Result<(), Close> {
        let cancel = self.rt.shutdown_token().clone();
        // The channel of send replies is made on the first send: most connections never send.
        let mut replies: Option<Replies> = None;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut ping = tokio::time::interval(Duration::from_millis(cfg.ping_interval_ms));
        ping.tick().await;
        let dead_after = Duration::from_millis(cfg.dead_peer_timeout_ms);
        let mut last_heard = Instant::now();
        let mut expires = self.expires();
        let expiry = tokio::time::sleep_until(expiry_instant(expires));
        tokio::pin!(expiry);
        loop {
            let now = self.expires();
            if now != expires {
                expires = now;
                expiry.as_mut().reset(expiry_instant(expires));
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Close(CLOSE_DRAINING, "server draining")),
                () = &mut expiry => {
                    self.error_frame(None, Error::unauthorized(
                        "token_expired",
                        "the token has expired; renew it and reconnect",
                    ))
                    .await?;
                    return Err(Close(CLOSE_TOKEN_EXPIRED, "token expired"));
                }
                msg = stream.next() => {
                    last_heard = Instant::now();
                    match msg {
                        None | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Err(e)) => return Err(read_error(&e)),
                        Some(Ok(Message::Text(text))) => self.on_frame(&text, &mut replies, &in_flight, cfg.sends_in_flight).await?,
                        Some(Ok(Message::Binary(_))) => {
                            self.error_frame(None, Error::bad_request("invalid_request", "frames are JSON text")).await?;
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Some(reply) = next_reply(&mut replies) => self.write(vec![Message::Text(reply.into())]).await?,
                _ = self.wake.0.notified() => self.pump().await?,
                _ = ping.tick() => {
                    if last_heard.elapsed() > dead_after {
                        return Err(Close(CLOSE_NO_HEARTBEAT, "no heartbeat"));
                    }
                    self.write(vec![Message::Ping(Default::default())]).await?;
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        text: &str,
        replies: &mut Option<Replies>,
        in_flight: &Arc<AtomicUsize>,
        max: usize,
    ) -> Result<(), Close> {
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .error_frame(
                        None,
                        Error::bad_request("invalid_request", format!("bad frame: {e}")),
                    )
                    .await
            }
        };
        match frame {
            ClientFrame::Ping => {
                self.write(vec![Message::Text(Utf8Bytes::from_static(
                    r#"{"type":"pong"}"#,
                ))])
                .await
            }
            ClientFrame::Subscribe {
                id,
                usertoken,
                subscriptions,
                cursor,
            } => {
                let answer = self.add(usertoken, &subscriptions, cursor);
                self.answer(id, "subscribed", answer).await?;
                // Events of the added channels (and, after a rewind, the repeats the client drops).
                self.pump().await
            }
            ClientFrame::Unsubscribe { id, channels } => {
                let answer = self.remove(&channels);
                self.answer(id, "unsubscribed", answer).await
            }
            ClientFrame::Send {
                id,
                component,
                payload,
            } => {
                if !(id.is_string() || id.is_number()) {
                    return self
                        .error_frame(
                            None,
                            Error::bad_request(
                                "invalid_request",
                                "a send's `id` is a string or a number",
                            ),
                        )
                        .await;
                }
                if let Err(e) = self.peer.limits.send(self.user, self.peer.ip) {
                    crate::telemetry::send("websocket", false);
                    return self
                        .write(vec![Message::Text(reply_frame(&id, Err(e)).into())])
                        .await;
                }
                if in_flight.load(Ordering::Acquire) >= max {
                    let e = Error::bad_request(
                        "too_many_sends",
                        format!("at most {max} sends may wait for answers"),
                    );
                    return self
                        .write(vec![Message::Text(reply_frame(&id, Err(e)).into())])
                        .await;
                }
                in_flight.fetch_add(1, Ordering::AcqRel);
                let (rt, user, replies, in_flight) = (
                    self.rt.clone(),
                    self.user,
                    replies.get_or_insert_with(|| mpsc::channel(max)).0.clone(),
                    in_flight.clone(),
                );
                self.rt.tracker().spawn(async move {
                    let answer = match serde_json::value::to_raw_value(&payload) {
                        Ok(raw) => rt.send_to_server(user, &component, &raw).await,
                        Err(e) => Err(Error::Internal(format!("re-serialising a payload: {e}"))),
                    };
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    crate::telemetry::send("websocket", answer.is_ok());
                    let _ = replies.send(reply_frame(&id, answer)).await;
                });
                Ok(())
            }
        }
    }

    /// A later `subscribe`: checks the tokens, then listens to the channels added too, renews
    /// the expiries of those already there, and moves the cursor back to `cursor` when it is
    /// behind (same epoch). Changes nothing when refused.
    fn add(
        &mut self,
        usertoken: Option<String>,
        subscriptions: &[SubscriptionRef],
        cursor: Option<Cursor>,
    ) -> Result<()> {
        let user_expires = match usertoken {
            Some(t) => {
                let (user, expires) = self.rt.verify_user_token_expiring(&t)?;
                if user != self.user {
                    return Err(Error::forbidden(
                        "token_invalid",
                        "a connection serves one user",
                    ));
                }
                Some(expires)
            }
            None => None,
        };
        let granted = authorize_expiring(&self.rt, self.user, subscriptions)?;
        let mut all: std::collections::BTreeMap<ChannelHash, i64> = self
            .hashes
            .iter()
            .cloned()
            .zip(self.expiries.iter().copied())
            .collect();
        for (hash, expires) in granted {
            let at = all.entry(hash).or_insert(expires);
            *at = (*at).max(expires);
        }
        if all.len() > self.rt.config().limits.subscriptions {
            return Err(Error::bad_request(
                "too_many_subscriptions",
                "too many subscriptions on one connection",
            ));
        }
        if let Some(expires) = user_expires {
            self.user_expires = self.user_expires.max(expires);
        }
        if all.len() != self.hashes.len() {
            self.listen(all.into_iter().collect());
        } else {
            // The same channels: only their expiries changed; the listener stays.
            self.expiries = all.into_values().collect();
        }
        if let Some(c) = cursor {
            if c.epoch == self.cursor.epoch && c.id < self.cursor.id {
                self.cursor = c;
            }
        }
        Ok(())
    }

    /// `unsubscribe`: stops listening to `channels` (those the connection does not have are
    /// ignored). The last channel cannot be dropped: close the connection instead.
    fn remove(&mut self, channels: &[ChannelHash]) -> Result<()> {
        let keep: Vec<(ChannelHash, i64)> = self
            .hashes
            .iter()
            .cloned()
            .zip(self.expiries.iter().copied())
            .filter(|(h, _)| !channels.contains(h))
            .collect();
        if keep.is_empty() {
            return Err(Error::bad_request(
                "invalid_request",
                "a connection keeps at least one channel; close it instead",
            ));
        }
        if keep.len() != self.hashes.len() {
            self.listen(keep);
        }
        Ok(())
    }

    /// Answers a later `subscribe` or an `unsubscribe`: `kind` with the connection's channels,
    /// or an `error` frame (the connection stays either way).
    async fn answer(
        &mut self,
        id: Option<Value>,
        kind: &str,
        answer: Result<()>,
    ) -> Result<(), Close> {
        match answer {
            Ok(()) => {
                let mut frame = json!({"type": kind, "channels": self.hashes});
                if let Some(id) = id {
                    frame["id"] = id;
                }
                self.write(vec![Message::Text(frame.to_string().into())])
                    .await
            }
            Err(e) => self.error_frame(id, e).await,
        }
    }

    /// An `error` frame (with the `id` of the frame it answers, when that had one).
    async fn error_frame(&mut self, id: Option<Value>, e: Error) -> Result<(), Close> {
        let mut frame = json!({"type": "error", "error": e.body()["error"]});
        if let Some(id) = id {
            frame["id"] = id;
        }
        self.write(vec![Message::Text(frame.to_string().into())])
            .await
    }

    /// Writes everything after the cursor, in batches, until caught up.
    async fn pump(&mut self) -> Result<(), Close> {
        let (limit, budget) = {
            let l = &self.rt.config().limits;
            (l.poll_events, l.batch_bytes)
        };
        loop {
            let mut batch = match self.rt.hub().fetch(&self.hashes, &self.cursor, limit).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "websocket fetch failed; the client will resume");
                    return Err(Close(CLOSE_DRAINING, "engine unavailable"));
                }
            };
            if !batch.recovered {
                // Tell the client, then go on from the new cursor: after an engine restart
                // events may already wait there.
                let frame = json!({"type": "not_recovered", "cursor": batch.cursor});
                self.cursor = batch.cursor;
                self.write(vec![Message::Text(frame.to_string().into())])
                    .await?;
                continue;
            }
            let full = cut_to_bytes(&mut batch, budget) || batch.events.len() == limit;
            self.deliver(batch).await?;
            if !full {
                return Ok(());
            }
        }
    }

    async fn deliver(&mut self, batch: crate::hub::Batch) -> Result<(), Close> {
        let frames: Vec<Message> = batch
            .events
            .iter()
            .map(|e| Message::Text(e.ws_frame(&batch.cursor.epoch)))
            .collect();
        self.write(frames).await?;
        crate::telemetry::delivered("websocket", batch.events.len());
        self.cursor = batch.cursor;
        Ok(())
    }

    /// Writes frames and flushes once; a client that does not take them within the write
    /// timeout is a slow consumer.
    async fn write(&mut self, frames: Vec<Message>) -> Result<(), Close> {
        if frames.is_empty() {
            return Ok(());
        }
        let sink = &mut self.sink;
        let written = timeout(self.write_timeout, async move {
            for f in frames {
                sink.feed(f).await?;
            }
            sink.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close(1000, "gone")),
            Err(_) => {
                metrics::counter!(crate::telemetry::SLOW_CONSUMERS).increment(1);
                Err(Close(CLOSE_SLOW_CONSUMER, "slow consumer"))
            }
        }
    }
}

/// A connection's send replies: the sender for the handler tasks, the receiver for the loop.
type Replies = (mpsc::Sender<String>, mpsc::Receiver<String>);

/// The next send reply; never, before the first send.
async fn next_reply(replies: &mut Option<Replies>) -> Option<String> {
    match replies {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn reply_frame(id: &Value, answer: Result<Box<serde_json::value::RawValue>>) -> String {
    match answer {
        Ok(response) => json!({"type": "reply", "id": id, "response": response}).to_string(),
        Err(e) => json!({"type": "reply", "id": id, "error": e.body()["error"]}).to_string(),
    }
}

/// The close for a read that failed, as RFC 6455 (section 7.4.1) names the causes.
fn read_error(e: &axum::Error) -> Close {
    let text = e.to_string();
    // tungstenite's errors, by their text (the crate is not a dependency of this one):
    // `Capacity` for a frame or message over the limit, `Utf8` for a text frame that is not
    // UTF-8, `Protocol` for an unmasked frame, reserved bits, a bad opcode or a bad close.
    if text.contains("Space limit exceeded") {
        Close(CLOSE_TOO_BIG, "frame too large")
    } else if text.contains("UTF-8") {
        Close(CLOSE_INVALID_PAYLOAD, "invalid UTF-8")
    } else if text.contains("protocol error") {
        Close(CLOSE_PROTOCOL_ERROR, "protocol error")
    } else {
        Close(1000, "read error")
    }
}

/// The first text frame, or `None` when the client went away.
async fn next_text(stream: &mut SplitStream<WebSocket>) -> Result<Option<String>, Close> {
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Err(e)) => return Err(read_error(&e)),
            Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
            Some(Ok(Message::Binary(_))) => {
                return Err(Close(CLOSE_BAD_SUBSCRIBE, "frames are JSON text"))
            }
            Some(Ok(_)) => {}
        }
    }
}
