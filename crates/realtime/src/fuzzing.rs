//! Fuzzing entry points (cargo feature `fuzzing`, not part of the public API).
//!
//! Each `check_*` function takes arbitrary bytes, feeds them to the real code, and panics when
//! a property does not hold. The libFuzzer targets in `fuzz/` call them (coverage-guided, on
//! nightly), and so does the stable test `tests/fuzz_corpus.rs` (the checked-in corpus plus
//! proptest-generated inputs), so that the same properties are checked on any toolchain.
//!
//! Properties, target by target:
//! - `parsers`: [`ChannelHash::parse`], [`Cursor::parse`], token verification with a fixed
//!   secret, [`Channel::new`] on arbitrary fields and a channel deserialised from JSON never
//!   panic; whatever they accept round-trips to the very same text (canonical form), and what
//!   they refuse is a 400 (401/403 for tokens) with a machine code.
//! - `ws_frame`: a client WebSocket text frame is parsed as the connection parses it; an
//!   accepted frame, written back as JSON, parses to the same frame.
//! - `sse_query`: the `/sse` query string is parsed as the handler parses it; an accepted query,
//!   encoded again, parses to the same request.
//! - `http`: a body (or a query string) sent through the real router, in process, to
//!   `/api/notify`, `/api/page`, `/api/subscribe`, `/poll`, `/send` or `/sse`, with a good,
//!   missing or wrong credential; every answer has a status below 500 (503 allowed: the
//!   engine may be busy), and every error answer is `{"error": {"code", "message"}}`.
//! - `ws_session`: text frames sent over a real WebSocket to a real server on a loopback port;
//!   every frame the server sends is a documented one, the connection ends with a documented
//!   close code or answers the final `send`, and no server task panics.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::channel::{validate_component, Channel, ChannelHash, MAX_AREA_LEN, MAX_DETAILS_LEN};
use crate::engine::MemoryEngine;
use crate::event::Cursor;
use crate::token::{self, TokenKind, UserId};
use crate::transport::sse::parse_query;
use crate::transport::ws::{parse_client_frame, ClientFrame};
use crate::{Config, Realtime, Secret};

/// The signing secret of every target: fixed, so that seeds can hold valid tokens.
pub const SECRET: &str = "fuzzing-secret-0123456789abcdef";
/// The API key the `http` target presents.
pub const API_KEY: &str = "fuzzing-api-key";
/// The user of every valid token in the seeds.
pub const USER: UserId = UserId(42);
/// When the seeds' tokens expire: 2100-01-01, so that checked-in seeds stay valid.
pub const EXPIRES: i64 = 4_102_444_800;
/// The component whose handler echoes what a page sends.
pub const ECHO_COMPONENT: &str = "mod_echo";
/// The id of the `send` frame that ends every `ws_session` input.
pub const FINAL_SEND_ID: &str = "fuzz-final";

/// The targets, by name (the names of the corpus directories and of the fuzz targets).
pub const TARGETS: &[&str] = &["parsers", "ws_frame", "sse_query", "http", "ws_session"];

/// Runs target `name` on `data`.
///
/// # Panics
/// When a property does not hold, or for an unknown target name.
pub fn check(name: &str, data: &[u8]) {
    match name {
        "parsers" => check_parsers(data),
        "ws_frame" => check_ws_frame(data),
        "sse_query" => check_sse_query(data),
        "http" => check_http(data),
        "ws_session" => check_ws_session(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}

fn secret() -> Secret {
    Secret::from_bytes(SECRET.as_bytes().to_vec())
}

/// The channel of the seeds.
pub fn seed_channel() -> Channel {
    Channel::new(1, "mod_echo", "room", 7, "details").expect("invariant: the seed channel is valid")
}

/// The hash of [`seed_channel`] under [`SECRET`].
pub fn seed_hash() -> ChannelHash {
    seed_channel().hash(&secret())
}

/// A user token for [`USER`], valid until [`EXPIRES`].
pub fn user_token() -> String {
    token::sign(&secret(), TokenKind::User, None, USER, EXPIRES)
}

/// A subscription token for [`USER`] on [`seed_channel`], valid until [`EXPIRES`].
pub fn subscription_token() -> String {
    token::sign(
        &secret(),
        TokenKind::Subscription,
        Some(&seed_hash()),
        USER,
        EXPIRES,
    )
}

// ---------------------------------------------------------------------------------------------
// parsers

/// Target `parsers`: the first byte picks the parser, the rest is its input.
pub fn check_parsers(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 5 {
        0 => check_channel_hash(&text),
        1 => check_cursor(&text),
        2 => check_token(&text),
        3 => check_channel_fields(rest),
        _ => check_channel_json(rest),
    }
}

/// A hash that parses is exactly the text it came from.
pub fn check_channel_hash(text: &str) {
    match ChannelHash::parse(text) {
        Ok(hash) => {
            assert_eq!(hash.as_str(), text, "a channel hash round-trips");
            assert_eq!(
                hash.to_string(),
                text,
                "a channel hash displays as it was given"
            );
            let json = serde_json::to_string(&hash).expect("invariant: a hash serialises");
            let back: ChannelHash =
                serde_json::from_str(&json).expect("a serialised hash deserialises");
            assert_eq!(back, hash);
        }
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
            assert_eq!(e.code(), "invalid_channel");
        }
    }
}

/// A cursor that parses writes back as exactly the text it came from (canonical form only).
pub fn check_cursor(text: &str) {
    match Cursor::parse(text) {
        Ok(cursor) => {
            assert_eq!(
                cursor.to_string(),
                text,
                "a cursor that parses is in canonical form"
            );
            let json = serde_json::to_string(&cursor).expect("invariant: a cursor serialises");
            let back: Cursor = serde_json::from_str(&json).expect("a serialised cursor parses");
            assert_eq!(back, cursor);
        }
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
            assert_eq!(e.code(), "invalid_cursor");
        }
    }
}

/// A token that verifies (as a user token, or as a subscription token for the seed channel) is
/// exactly the token the signer makes for its user and expiry: no second spelling verifies.
pub fn check_token(text: &str) {
    let secret = secret();
    let hash = seed_hash();
    for (kind, hash) in [
        (TokenKind::User, None),
        (TokenKind::Subscription, Some(&hash)),
    ] {
        match token::verify(&secret, kind, hash, text) {
            Ok(user) => {
                let expires = text
                    .split('.')
                    .nth(2)
                    .and_then(|e| e.parse::<i64>().ok())
                    .expect("a token that verifies has a numeric expiry");
                assert_eq!(
                    token::sign(&secret, kind, hash, user, expires),
                    text,
                    "a token that verifies is in canonical form"
                );
            }
            Err(e) => {
                assert!(
                    matches!(
                        (e.status().as_u16(), e.code()),
                        (403, "token_invalid") | (401, "token_expired")
                    ),
                    "unexpected refusal of a token: {} {e}",
                    e.status()
                );
            }
        }
    }
}

/// [`Channel::new`] on fields cut from the bytes: 8 bytes of contextid, 8 of itemid, then
/// component, area and details separated by `0xFF` (a byte that UTF-8 never has).
pub fn check_channel_fields(data: &[u8]) {
    let mut ids = [0u8; 16];
    let n = data.len().min(16);
    ids[..n].copy_from_slice(&data[..n]);
    let contextid = i64::from_le_bytes(ids[..8].try_into().expect("invariant: 8 bytes"));
    let itemid = i64::from_le_bytes(ids[8..].try_into().expect("invariant: 8 bytes"));
    let mut fields = data[n..]
        .split(|b| *b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let component = fields.next().unwrap_or_default();
    let area = fields.next().unwrap_or_default();
    let details = fields.next().unwrap_or_default();
    match Channel::new(
        contextid,
        component.clone(),
        area.clone(),
        itemid,
        details.clone(),
    ) {
        Ok(channel) => {
            assert_eq!(
                (&channel.component, &channel.area, &channel.details),
                (&component, &area, &details)
            );
            assert_eq!((channel.contextid, channel.itemid), (contextid, itemid));
            check_valid_channel(&channel);
        }
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
            assert_eq!(e.code(), "invalid_channel");
        }
    }
}

/// A channel deserialised from JSON is one that [`Channel::new`] accepts.
pub fn check_channel_json(data: &[u8]) {
    if let Ok(channel) = serde_json::from_slice::<Channel>(data) {
        let again = Channel::new(
            channel.contextid,
            channel.component.clone(),
            channel.area.clone(),
            channel.itemid,
            channel.details.clone(),
        )
        .expect("a deserialised channel passes Channel::new");
        assert_eq!(again, channel);
        check_valid_channel(&channel);
    }
}

/// What every accepted channel satisfies: the documented field rules, a well-formed and
/// stable hash, and a JSON round trip.
fn check_valid_channel(channel: &Channel) {
    assert!(validate_component(&channel.component).is_ok());
    assert!(!channel.area.is_empty() && channel.area.len() <= MAX_AREA_LEN);
    assert!(!channel.area.chars().any(char::is_control));
    assert!(channel.details.len() <= MAX_DETAILS_LEN);
    let hash = channel.hash(&secret());
    assert_eq!(
        ChannelHash::parse(hash.as_str()).expect("a channel's hash parses"),
        hash
    );
    assert_eq!(channel.clone().hash(&secret()), hash, "the hash is stable");
    let json = serde_json::to_value(channel).expect("invariant: a channel serialises");
    let back: Channel = serde_json::from_value(json).expect("a serialised channel deserialises");
    assert_eq!(&back, channel);
}

// ---------------------------------------------------------------------------------------------
// ws_frame

/// Target `ws_frame`: one client text frame through the connection's parser.
pub fn check_ws_frame(data: &[u8]) {
    // Text frames are UTF-8: the WebSocket layer refuses other bytes before any parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = parse_client_frame(text) else {
        return;
    };
    let written = render_frame(&frame).to_string();
    let again = parse_client_frame(&written).expect("a frame written back parses");
    assert_eq!(
        format!("{again:?}"),
        format!("{frame:?}"),
        "a frame written back parses to the same frame"
    );
}

fn render_frame(frame: &ClientFrame) -> Value {
    match frame {
        ClientFrame::Subscribe {
            id,
            usertoken,
            subscriptions,
            cursor,
        } => {
            let subs: Vec<Value> = subscriptions
                .iter()
                .map(|s| json!({"channel": s.channel, "token": s.token}))
                .collect();
            let mut v = json!({"type": "subscribe", "subscriptions": subs});
            if let Some(id) = id {
                v["id"] = id.clone();
            }
            if let Some(t) = usertoken {
                v["usertoken"] = json!(t);
            }
            if let Some(c) = cursor {
                v["cursor"] = json!(c);
            }
            v
        }
        ClientFrame::Send {
            id,
            component,
            payload,
        } => json!({"type": "send", "id": id, "component": component, "payload": payload}),
        ClientFrame::Unsubscribe { id, channels } => {
            let mut v = json!({"type": "unsubscribe", "channels": channels});
            if let Some(id) = id {
                v["id"] = id.clone();
            }
            v
        }
        ClientFrame::Ping => json!({"type": "ping"}),
    }
}

// ---------------------------------------------------------------------------------------------
// sse_query

/// Target `sse_query`: the `/sse` query string through the handler's parser.
pub fn check_sse_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    match parse_query(Some(&query)) {
        Ok(req) => {
            let mut pairs = vec![("usertoken".to_string(), req.usertoken.clone())];
            for s in &req.subscriptions {
                pairs.push(("channel".into(), s.channel.to_string()));
                pairs.push(("token".into(), s.token.clone()));
            }
            if let Some(c) = &req.cursor {
                pairs.push(("cursor".into(), c.to_string()));
            }
            let encoded =
                serde_urlencoded::to_string(&pairs).expect("invariant: pairs of text encode");
            let again = parse_query(Some(&encoded)).expect("an encoded query parses");
            assert_eq!(again.usertoken, req.usertoken);
            assert_eq!(again.cursor, req.cursor);
            let subs = |r: &crate::transport::sse::SseRequest| {
                r.subscriptions
                    .iter()
                    .map(|s| (s.channel.clone(), s.token.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(subs(&again), subs(&req));
        }
        Err(e) => assert!(
            matches!(e.status().as_u16(), 400 | 401),
            "a bad query is a 400 or 401, not {} ({e})",
            e.status()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The node the `http` and `ws_session` targets talk to

/// One node on a memory engine, with its own runtime, shared by every input of a process.
struct Harness {
    runtime: tokio::runtime::Runtime,
    rt: Realtime,
    router: axum::Router,
    /// Where the node listens for `ws_session`, once it was asked for.
    ws_url: Option<String>,
    /// Inputs run so far, to purge the engine now and then (memory stays flat).
    runs: AtomicU64,
}

thread_local! {
    /// Set by the panic hook on the thread that panicked: also a panic in a server task, which
    /// tokio catches. The harness runtime runs its tasks on the thread that runs the input, so
    /// a panic on another thread (another test, say) does not count against this input.
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

fn harness() -> &'static Mutex<Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fuzz harness");
        let rt = runtime.block_on(async {
            let mut config = Config::default();
            config.auth.api_keys = vec![API_KEY.into()];
            // Short polling: a poll answers at once, so an input never waits.
            config.poll.request_timeout_secs = 0;
            config.hub.cache_events = 256;
            config.websocket.subscribe_timeout_ms = 5_000;
            let rt = Realtime::start(config, secret(), Arc::new(MemoryEngine::new()))
                .await
                .expect("the fuzz harness node starts");
            rt.handle(ECHO_COMPONENT, |ctx, payload| async move {
                Ok(json!({"user": ctx.user, "echo": payload}))
            });
            rt.handle("mod_refuse", |_, _| async move {
                Err(crate::HandlerError::bad_request(
                    "refused by the fuzz handler",
                ))
            });
            rt
        });
        let router = rt.router();
        Mutex::new(Harness {
            runtime,
            rt,
            router,
            ws_url: None,
            runs: AtomicU64::new(0),
        })
    })
}

/// Runs `f` on the harness, one input at a time, and fails when anything panicked meanwhile
/// (a panic inside a server task is caught by tokio and would go unnoticed otherwise).
fn with_harness<T>(f: impl FnOnce(&mut Harness) -> T) -> T {
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    PANICKED.with(|p| p.set(false));
    let out = f(&mut h);
    if h.runs.fetch_add(1, Ordering::Relaxed) % 512 == 511 {
        let rt = h.rt.clone();
        h.runtime.block_on(async move {
            if rt.engine().purge(i64::MAX).await.is_ok() {
                if let Ok(pos) = rt.engine().position().await {
                    rt.hub().raise_floor(pos.floor);
                }
            }
        });
    }
    assert!(
        !PANICKED.with(|p| p.replace(false)),
        "a task panicked while handling this input"
    );
    out
}

/// The endpoints of the `http` target, picked by the first byte.
const ENDPOINTS: &[(Method, &str)] = &[
    (Method::POST, "/api/notify"),
    (Method::POST, "/api/page"),
    (Method::POST, "/api/subscribe"),
    (Method::POST, "/poll"),
    (Method::POST, "/send"),
    (Method::GET, "/sse"),
];

/// Target `http`: byte 0 picks the endpoint (`% 6`) and the credential (`/ 6 % 3`: good,
/// missing, wrong); the rest is the body (for `/sse`, the query string, after a good
/// `usertoken` when the credential is good).
pub fn check_http(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (method, path) = &ENDPOINTS[usize::from(which) % ENDPOINTS.len()];
    let credential = (usize::from(which) / ENDPOINTS.len()) % 3;
    let api = path.starts_with("/api/");
    let mut request = Request::builder().method(method.clone());
    let body = if *path == "/sse" {
        let query = String::from_utf8_lossy(rest);
        let query = query.replace(['#', ' '], "");
        let uri = if credential == 0 {
            format!("/sse?usertoken={}&{query}", user_token())
        } else {
            format!("/sse?{query}")
        };
        if uri.parse::<axum::http::Uri>().is_err() {
            return; // Not a request line a client could send.
        }
        request = request.uri(uri);
        Body::empty()
    } else {
        request = request
            .uri(*path)
            .header(header::CONTENT_TYPE, "application/json");
        match credential {
            0 => {
                let t = if api {
                    API_KEY.to_string()
                } else {
                    user_token()
                };
                request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            1 => {}
            _ => request = request.header(header::AUTHORIZATION, "Bearer not-a-credential"),
        }
        Body::from(rest.to_vec())
    };
    let mut request = request
        .body(body)
        .expect("invariant: method, uri and headers are valid");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let is_sse = *path == "/sse";
    with_harness(|h| {
        let router = h.router.clone();
        h.runtime.block_on(async move {
            let answer = tokio::time::timeout(Duration::from_secs(10), async move {
                let response = router
                    .oneshot(request)
                    .await
                    .expect("invariant: the router is infallible");
                let status = response.status();
                let kind = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if is_sse && status == StatusCode::OK {
                    // A stream that never ends: its opening is enough.
                    assert_eq!(kind, "text/event-stream");
                    return (status, None);
                }
                let body = axum::body::to_bytes(response.into_body(), 64 << 20)
                    .await
                    .expect("an answer's body is readable");
                (status, Some(body))
            })
            .await
            .expect("every request is answered within 10 s");
            let (status, body) = answer;
            check_answer(status, body.as_deref());
        });
    });
}

/// Checks one HTTP answer: below 500 but for 503, JSON, and the error shape on errors.
pub fn check_answer(status: StatusCode, body: Option<&[u8]>) {
    assert!(
        status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE,
        "status {status}, body {:?}",
        body.map(String::from_utf8_lossy)
    );
    let Some(body) = body else { return };
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "status {status}: the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    if status.is_client_error() || status.is_server_error() {
        check_error_shape(&value);
    }
}

/// `{"error": {"code": "<word>", "message": "<text>"}}` and nothing more.
pub fn check_error_shape(value: &Value) {
    let ok = value.as_object().is_some_and(|o| o.len() == 1)
        && value["error"].as_object().is_some_and(|e| e.len() == 2)
        && value["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        && value["error"]["message"].is_string();
    assert!(ok, "not the error shape: {value}");
}

// ---------------------------------------------------------------------------------------------
// ws_session

/// Close codes the protocol documents (docs/protocol.md).
const CLOSE_CODES: &[u16] = &[
    1000, 1002, 1007, 1009, 1012, 1013, 4001, 4002, 4008, 4009, 4010,
];
/// Frame types the server sends.
const SERVER_FRAMES: &[&str] = &[
    "event",
    "subscribed",
    "unsubscribed",
    "reply",
    "recovered",
    "not_recovered",
    "error",
    "pong",
];

/// Target `ws_session`: byte 0 bit 0 set means "start with a valid `subscribe`" (of the seed
/// user and channel); the rest is text frames separated by `0xFF`. A final `send` with id
/// [`FINAL_SEND_ID`] follows; the session must answer it or close with a documented code.
pub fn check_ws_session(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut frames: Vec<String> = Vec::new();
    if which & 1 == 1 {
        frames.push(
            json!({
                "type": "subscribe",
                "usertoken": user_token(),
                "subscriptions": [{"channel": seed_hash(), "token": subscription_token()}],
            })
            .to_string(),
        );
    }
    frames.extend(
        rest.split(|b| *b == 0xFF)
            .filter(|f| !f.is_empty())
            .map(|f| String::from_utf8_lossy(f).into_owned()),
    );
    frames.push(
        json!({"type": "send", "id": FINAL_SEND_ID, "component": ECHO_COMPONENT, "payload": 1})
            .to_string(),
    );
    with_harness(|h| {
        let url = ws_url(h);
        h.runtime.block_on(async move {
            tokio::time::timeout(Duration::from_secs(20), session(&url, frames))
                .await
                .expect("the session answers the final send or closes within 20 s");
        });
    });
}

fn ws_url(h: &mut Harness) -> String {
    if let Some(url) = &h.ws_url {
        return url.clone();
    }
    let router = h.router.clone();
    let url = h.runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the fuzz harness binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        format!("ws://{addr}/ws")
    });
    h.ws_url = Some(url.clone());
    url
}

async fn session(url: &str, frames: Vec<String>) {
    use tokio_tungstenite::tungstenite::Message;
    // No Nagle: small frames must not wait for the peer's delayed ACK (40 ms a session).
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("the harness server accepts a WebSocket");
    // The server may close early (a refused subscribe): later writes then fail, which is fine.
    let mut written = true;
    for f in frames {
        if ws.feed(Message::text(f)).await.is_err() {
            written = false;
            break;
        }
    }
    if written {
        let _ = ws.flush().await;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("a server frame is not JSON ({e}): {text}"));
                let kind = frame["type"].as_str().unwrap_or("");
                assert!(SERVER_FRAMES.contains(&kind), "unknown frame {frame}");
                if kind == "error" {
                    check_error_shape(&json!({"error": frame["error"]}));
                }
                if kind == "reply" {
                    assert!(
                        frame.get("response").is_some() != frame.get("error").is_some(),
                        "a reply has a response or an error: {frame}"
                    );
                    if frame["id"] == FINAL_SEND_ID {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
            Some(Ok(Message::Close(close))) => {
                let code = close.map(|c| u16::from(c.code));
                assert!(
                    code.is_some_and(|c| CLOSE_CODES.contains(&c)),
                    "undocumented close code {code:?}"
                );
                return;
            }
            Some(Ok(Message::Binary(b))) => panic!("the server sent a binary frame: {b:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the connection failed without a close frame: {e}"),
            None => panic!("the connection ended without a close frame"),
        }
    }
}
