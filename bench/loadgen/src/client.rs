//! The clients: one task per connection, on a socket bound to 127.0.0.x so that thousands of
//! them do not run out of ephemeral ports. Each speaks one protocol, tells when it is ready
//! (subscribed, so that nothing published afterwards can be missed), then records every
//! benchmark payload it receives until the run stops.
//!
//! - ours, WebSocket: `GET /ws`, the `subscribe` frame, `recovered`, then `event` frames;
//! - ours, SSE: `GET /sse?usertoken=…&channel=…&token=…&cursor=…`, chunked `text/event-stream`;
//! - ours, poll: `POST /poll` in a keep-alive loop, with the cursor of each answer;
//! - Socket.IO: Engine.IO v4 over WebSocket (`0{…}` → `40` → `40{…}`, pings `2` answered `3`,
//!   events `42["ev",PAYLOAD]`);
//! - raw loop: `GET /sub?room=…`, `{"type":"ready"}`, then the payloads as they were published.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::http1::Conn;
use crate::stats::{new_histogram, now_ns, Stats};
use crate::{Target, Transport};

/// What a client subscribes to.
#[derive(Debug, Clone)]
pub(crate) enum Subscription {
    /// Our server: credentials from a page config (`POST /api/page`).
    Ours {
        usertoken: Arc<str>,
        channel: Arc<str>,
        token: Arc<str>,
        cursor: Arc<str>,
    },
    /// Socket.IO or the raw loop: a room by name.
    Room(String),
}

/// What every client of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) transport: Transport,
    /// The server's address.
    pub(crate) server: SocketAddr,
    /// `host:port`, for `Host` headers and URLs.
    pub(crate) host: String,
    /// Clients are spread over 127.0.0.2 ..= 127.0.0.(1 + source_ips).
    pub(crate) source_ips: u8,
    pub(crate) stats: Arc<Stats>,
    pub(crate) polls: PollStats,
    pub(crate) stop: CancellationToken,
}

/// Long-poll round trips.
#[derive(Debug)]
pub(crate) struct PollStats {
    /// Answered polls.
    pub(crate) polls: AtomicU64,
    /// Answered polls that carried no event.
    pub(crate) empty: AtomicU64,
    /// Round trip of each poll, µs.
    pub(crate) rtt: Mutex<Histogram<u64>>,
}

impl Default for PollStats {
    fn default() -> Self {
        PollStats {
            polls: AtomicU64::new(0),
            empty: AtomicU64::new(0),
            rtt: Mutex::new(new_histogram()),
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn tcp(shared: &Shared, idx: usize) -> std::io::Result<TcpStream> {
    let last = u8::try_from(idx % usize::from(shared.source_ips.max(1))).unwrap_or(0);
    let ip = Ipv4Addr::new(127, 0, 0, 2 + last);
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip.into(), 0))?;
    let stream = sock.connect(shared.server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn ws_connect(shared: &Shared, idx: usize, path: &str) -> Result<Ws, String> {
    let stream = tcp(shared, idx)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let url = format!("ws://{}{path}", shared.host);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// The next text frame (answering nothing), or an error for a close or the end.
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".into()),
        }
    }
}

fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs client `idx` until the run stops: connects, subscribes, says so on `ready` (true) or
/// reports its failure (false), then records what it receives.
pub(crate) async fn run(
    shared: Arc<Shared>,
    idx: usize,
    sub: Subscription,
    ready: mpsc::UnboundedSender<bool>,
) {
    let outcome = match (shared.target, shared.transport, &sub) {
        (Target::Ours, Transport::Ws, Subscription::Ours { .. }) => {
            ours_ws(&shared, idx, &sub, &ready).await
        }
        (Target::Ours, Transport::Sse, Subscription::Ours { .. }) => {
            ours_sse(&shared, idx, &sub, &ready).await
        }
        (Target::Ours, Transport::Poll, Subscription::Ours { .. }) => {
            ours_poll(&shared, idx, &sub, &ready).await
        }
        (Target::Socketio, Transport::Ws, Subscription::Room(room)) => {
            socketio(&shared, idx, room, &ready).await
        }
        (Target::Raw, Transport::Ws, Subscription::Room(room)) => {
            raw(&shared, idx, room, &ready).await
        }
        _ => Err("this target does not serve this transport".to_string()),
    };
    if let Err((was_ready, e)) = outcome.map_err(|e| (false, e)).and_then(|r| r) {
        shared.stats.error(format!("client {idx}: {e}"));
        if !was_ready {
            let _ = ready.send(false);
        }
    }
}

/// `Ok(Ok(()))`: stopped normally. `Ok(Err((ready, e)))`: failed after saying whether it was
/// ready. `Err(e)`: failed before ready.
type Outcome = Result<Result<(), (bool, String)>, String>;

/// Reads frames until the run stops, recording payloads; `is_error` tells a frame without a
/// payload that means trouble.
async fn ws_loop(
    shared: &Shared,
    idx: usize,
    ws: &mut Ws,
    on_text: impl Fn(&str) -> TextAction,
) -> Result<(), (bool, String)> {
    loop {
        let msg = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(()),
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if shared.stats.record(idx, t.as_bytes()) > 0 {
                    continue;
                }
                match on_text(t.as_str()) {
                    TextAction::Ignore => {}
                    TextAction::Reply(r) => {
                        if let Err(e) = ws.send(Message::text(r)).await {
                            return Err((true, format!("write: {e}")));
                        }
                    }
                    TextAction::Error => {
                        shared
                            .stats
                            .error(format!("client {idx}: frame {}", t.as_str()));
                    }
                }
            }
            Some(Ok(Message::Close(f))) => {
                if shared.stop.is_cancelled() {
                    return Ok(());
                }
                return Err((true, format!("closed by the server: {f:?}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if shared.stop.is_cancelled() {
                    return Ok(());
                }
                return Err((true, format!("read: {e}")));
            }
            None => {
                if shared.stop.is_cancelled() {
                    return Ok(());
                }
                return Err((true, "connection ended".into()));
            }
        }
    }
}

enum TextAction {
    Ignore,
    Reply(&'static str),
    Error,
}

async fn ours_ws(
    shared: &Shared,
    idx: usize,
    sub: &Subscription,
    ready: &mpsc::UnboundedSender<bool>,
) -> Outcome {
    let Subscription::Ours {
        usertoken,
        channel,
        token,
        cursor,
    } = sub
    else {
        return Err("not our subscription".into());
    };
    let mut ws = ws_connect(shared, idx, "/ws").await?;
    let frame = json!({
        "type": "subscribe",
        "usertoken": &**usertoken,
        "subscriptions": [{"channel": &**channel, "token": &**token}],
        "cursor": &**cursor,
    });
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let first = next_text(&mut ws).await?;
    if !first.contains(r#""type":"recovered""#) {
        return Err(format!("expected recovered, got {first}"));
    }
    let _ = ready.send(true);
    Ok(ws_loop(shared, idx, &mut ws, |t| {
        if t.contains(r#""type":"pong""#) {
            TextAction::Ignore
        } else {
            TextAction::Error
        }
    })
    .await)
}

async fn socketio(
    shared: &Shared,
    idx: usize,
    room: &str,
    ready: &mpsc::UnboundedSender<bool>,
) -> Outcome {
    let path = format!("/socket.io/?EIO=4&transport=websocket&room={}", enc(room));
    let mut ws = ws_connect(shared, idx, &path).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("expected the Engine.IO open packet, got {open}"));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("write: {e}"))?;
    loop {
        let t = next_text(&mut ws).await?;
        if t.starts_with("40") {
            break;
        }
        if t == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| format!("write: {e}"))?;
            continue;
        }
        return Err(format!("expected the Socket.IO connect packet, got {t}"));
    }
    let _ = ready.send(true);
    Ok(ws_loop(shared, idx, &mut ws, |t| match t {
        "2" => TextAction::Reply("3"),
        _ => TextAction::Error,
    })
    .await)
}

async fn raw(
    shared: &Shared,
    idx: usize,
    room: &str,
    ready: &mpsc::UnboundedSender<bool>,
) -> Outcome {
    let mut ws = ws_connect(shared, idx, &format!("/sub?room={}", enc(room))).await?;
    let first = next_text(&mut ws).await?;
    if !first.contains("ready") {
        return Err(format!("expected ready, got {first}"));
    }
    let _ = ready.send(true);
    Ok(ws_loop(shared, idx, &mut ws, |_| TextAction::Error).await)
}

async fn ours_sse(
    shared: &Shared,
    idx: usize,
    sub: &Subscription,
    ready: &mpsc::UnboundedSender<bool>,
) -> Outcome {
    let Subscription::Ours {
        usertoken,
        channel,
        token,
        cursor,
    } = sub
    else {
        return Err("not our subscription".into());
    };
    let stream = tcp(shared, idx)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = Conn::new(stream);
    let target = format!(
        "/sse?usertoken={}&channel={}&token={}&cursor={}",
        enc(usertoken),
        enc(channel),
        enc(token),
        enc(cursor)
    );
    conn.request(
        "GET",
        &target,
        &shared.host,
        &[("Accept", "text/event-stream")],
        None,
    )
    .await
    .map_err(|e| format!("write: {e}"))?;
    let head = conn.head().await.map_err(|e| format!("head: {e}"))?;
    if head.status != 200 || !head.chunked {
        return Err(format!("SSE answered {head:?}"));
    }
    // The opening `retry:` record: the stream is registered with the hub.
    conn.chunk().await.map_err(|e| format!("read: {e}"))?;
    let _ = ready.send(true);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(Ok(())),
            c = conn.chunk() => c,
        };
        let chunk = match chunk {
            Ok(c) if c.is_empty() => return Ok(Err((true, "stream ended".into()))),
            Ok(c) => c,
            Err(e) => return Ok(Err((true, format!("read: {e}")))),
        };
        pending.extend_from_slice(&chunk);
        // Whole records only: up to the last blank line.
        let Some(end) = memchr::memmem::rfind(&pending, b"\n\n") else {
            continue;
        };
        let records: Vec<u8> = pending.drain(..end + 2).collect();
        if memchr::memmem::find(&records, b"event: not_recovered").is_some() {
            shared.stats.error(format!("client {idx}: not_recovered"));
        }
        shared.stats.record(idx, &records);
    }
}

#[derive(Deserialize)]
struct PollAnswer {
    events: Vec<serde::de::IgnoredAny>,
    cursor: String,
    recovered: bool,
}

async fn ours_poll(
    shared: &Shared,
    idx: usize,
    sub: &Subscription,
    ready: &mpsc::UnboundedSender<bool>,
) -> Outcome {
    let Subscription::Ours {
        usertoken,
        channel,
        token,
        cursor,
    } = sub
    else {
        return Err("not our subscription".into());
    };
    let stream = tcp(shared, idx)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = Conn::new(stream);
    let auth = format!("Bearer {usertoken}");
    let mut cursor = cursor.to_string();
    // The cursor comes from the page config: every event after it is delivered, so the client
    // is ready as soon as it can send.
    let _ = ready.send(true);
    loop {
        let body = json!({
            "subscriptions": [{"channel": &**channel, "token": &**token}],
            "cursor": cursor,
        })
        .to_string();
        let started = now_ns();
        let round_trip = async {
            conn.request(
                "POST",
                "/poll",
                &shared.host,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                Some(body.as_bytes()),
            )
            .await?;
            let head = conn.head().await?;
            let body = conn.body(&head).await?;
            Ok::<_, std::io::Error>((head, body))
        };
        let answer = tokio::select! {
            _ = shared.stop.cancelled() => return Ok(Ok(())),
            a = round_trip => a,
        };
        let (head, body) = match answer {
            Ok(a) => a,
            Err(e) => return Ok(Err((true, format!("poll: {e}")))),
        };
        if head.status != 200 {
            return Ok(Err((
                true,
                format!(
                    "poll answered {}: {}",
                    head.status,
                    String::from_utf8_lossy(&body)
                ),
            )));
        }
        let rtt = (now_ns().saturating_sub(started) / 1000).max(1);
        shared
            .polls
            .rtt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(rtt);
        shared.polls.polls.fetch_add(1, Ordering::Relaxed);
        let parsed: PollAnswer = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return Ok(Err((true, format!("poll answer: {e}")))),
        };
        if parsed.events.is_empty() {
            shared.polls.empty.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.stats.record(idx, &body);
        }
        if !parsed.recovered {
            shared.stats.error(format!("client {idx}: recovered false"));
        }
        cursor = parsed.cursor;
    }
}

/// Waits `d`, or less when the run stops.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
