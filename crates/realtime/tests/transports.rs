//! WebSocket and SSE against a real server: backlog then live, exactly once and in order,
//! resume by cursor and by Last-Event-ID, send/reply, refusals and close codes, slow readers,
//! oversize frames, and one client moving WS → SSE → poll through a stream of 1,000 events.

mod common;

use std::time::Duration;

use common::ws::{self, Next};
use common::{channel, config, sse, TestServer};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn ids(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

async fn notify_n(s: &TestServer, ch: &Value, n: usize) -> Vec<i64> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"channel": ch, "payload": {"i": i}}))
        .collect();
    let (st, body) = s.api("/api/notify", json!({"events": items})).await;
    assert_eq!(st, 200, "{body}");
    body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn websocket_sends_backlog_then_live_exactly_once_in_order() {
    let s = TestServer::start(config(|_| {})).await;
    let (a, b, other) = (
        channel("mod_a", "x", 0),
        channel("mod_b", "y", 0),
        channel("mod_c", "z", 0),
    );
    let page = s.page(42, json!([a, b])).await;
    assert_eq!(page["transports"], json!(["websocket", "sse", "poll"]));
    let mut expected = notify_n(&s, &a, 5).await;
    notify_n(&s, &other, 3).await;
    expected.extend(notify_n(&s, &b, 5).await);

    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    let first = ws::frame(&mut sock).await;
    assert_eq!(first["type"], "recovered", "{first}");
    let (backlog, _) = ws::events(&mut sock, 10).await;
    assert_eq!(ids(&backlog), expected);
    assert_eq!(backlog[0]["payload"], json!({"i": 0}));
    assert_eq!(backlog[0]["component"], "mod_a");

    let live_a = notify_n(&s, &a, 3).await;
    notify_n(&s, &other, 3).await;
    let live_b = notify_n(&s, &b, 3).await;
    let (live, cursor) = ws::events(&mut sock, 6).await;
    assert_eq!(ids(&live), [live_a, live_b].concat());
    assert!(cursor
        .as_str()
        .expect("cursor")
        .ends_with(&format!(":{}", live[5]["id"])));
    ws::send(&mut sock, json!({"type": "ping"})).await;
    assert_eq!(
        ws::frame(&mut sock).await,
        json!({"type": "pong"}),
        "nothing more than the 16 events came"
    );
    s.stop().await;
}

#[tokio::test]
async fn websocket_reconnect_with_a_cursor_in_the_middle_of_a_burst() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let burst = {
        let (url, ch) = (s.url.clone(), ch.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..40 {
                let items: Vec<Value> = (0..5)
                    .map(|j| json!({"channel": ch, "payload": i * 5 + j}))
                    .collect();
                http.post(format!("{url}/api/notify"))
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"events": items}))
                    .send()
                    .await
                    .expect("notify");
            }
        })
    };
    let (first, cursor) = ws::events(&mut sock, 60).await;
    drop(sock);
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &cursor)).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let (rest, _) = ws::events(&mut sock, 140).await;
    burst.await.expect("burst");
    let all: Vec<i64> = [first, rest]
        .concat()
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .collect();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    s.stop().await;
}

#[tokio::test]
async fn sse_delivers_and_resumes_with_last_event_id() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    let expected = notify_n(&s, &ch, 4).await;
    let q = sse::query(&page, Some(&page["cursor"]));
    let mut stream = sse::open(&s.url, &q, None).await;
    assert_eq!(stream.status, 200);
    let (got, _) = stream.events(2).await;
    assert_eq!(ids(&got), expected[..2]);
    let (got, last) = stream.events(2).await;
    assert_eq!(ids(&got), expected[2..]);
    drop(stream);
    let more = notify_n(&s, &ch, 3).await;
    // As the browser reconnects: same URL (old cursor), plus Last-Event-ID, which wins.
    let mut stream = sse::open(&s.url, &q, Some(&last)).await;
    let (got, _) = stream.events(3).await;
    assert_eq!(ids(&got), more);
    // Live events after the backlog.
    let live = notify_n(&s, &ch, 2).await;
    let (got, _) = stream.events(2).await;
    assert_eq!(ids(&got), live);

    // recovered:false travels as a named event.
    let mut stream = sse::open(&s.url, &q, Some("0123abcd:0")).await;
    let r = stream.record().await.expect("a record");
    assert_eq!(r.event.as_deref(), Some("not_recovered"));
    let data: Value = serde_json::from_str(&r.data).expect("json");
    assert_eq!(
        Some(data["cursor"].as_str().expect("cursor")),
        r.id.as_deref()
    );
    s.stop().await;
}

#[tokio::test]
async fn sse_refuses_bad_credentials_with_http_errors() {
    let s = TestServer::start(config(|c| {
        c.server.allowed_origins = vec!["http://good.example".into()]
    }))
    .await;
    let page = s.page(1, json!([channel("mod_a", "x", 0)])).await;
    let other = s.page(2, json!([channel("mod_a", "x", 1)])).await;
    let mut forged = page.clone();
    forged["subscriptions"][0]["token"] = other["subscriptions"][0]["token"].clone();
    assert_eq!(
        sse::open(&s.url, &sse::query(&forged, None), None)
            .await
            .status,
        403
    );
    let mut no_user = page.clone();
    no_user["usertoken"] = json!("v1.1.1.AAAA");
    assert_eq!(
        sse::open(&s.url, &sse::query(&no_user, None), None)
            .await
            .status,
        403
    );
    let res = reqwest::Client::new()
        .get(format!("{}/sse?channel=abc", s.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 400);
    let res = reqwest::Client::new()
        .get(format!("{}/sse?{}", s.url, sse::query(&page, None)))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 403);
    s.stop().await;
}

#[tokio::test]
async fn websocket_send_and_reply_match_by_id_under_concurrency() {
    let s = TestServer::start(config(|_| {})).await;
    s.rt.handle("mod_echo", |ctx, payload| async move {
        // Later sends answer first: replies must be matched by id, not by order.
        let delay = 200 - payload["n"].as_u64().unwrap_or(0) * 20;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(json!({"user": ctx.user, "echo": payload}))
    });
    let page = s.page(42, json!([channel("mod_echo", "x", 0)])).await;
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    for n in 0..8 {
        ws::send(&mut sock, json!({"type": "send", "id": format!("req-{n}"), "component": "mod_echo", "payload": {"n": n}})).await;
    }
    ws::send(
        &mut sock,
        json!({"type": "send", "id": 99, "component": "mod_nobody", "payload": 1}),
    )
    .await;
    let mut replies = std::collections::HashMap::new();
    let mut order = Vec::new();
    while replies.len() < 9 {
        let f = ws::frame(&mut sock).await;
        assert_eq!(f["type"], "reply", "{f}");
        order.push(f["id"].clone());
        replies.insert(f["id"].to_string(), f);
    }
    for n in 0..8 {
        let r = &replies[&format!("\"req-{n}\"")];
        assert_eq!(r["response"], json!({"user": 42, "echo": {"n": n}}));
    }
    assert_eq!(replies["99"]["error"]["code"], "not_found");
    assert_ne!(
        order.first(),
        Some(&json!("req-0")),
        "replies came as handlers finished"
    );
    s.stop().await;
}

#[tokio::test]
async fn refused_credentials_close_with_4001_and_bad_subscribes_with_4002() {
    let s = TestServer::start(config(|_| {})).await;
    let page = s.page(42, json!([channel("mod_a", "x", 0)])).await;
    let mut bad = page.clone();
    bad["usertoken"] = json!("v1.42.99999999999.forged");
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&bad, &page["cursor"])).await;
    let f = ws::frame(&mut sock).await;
    assert_eq!(
        (f["type"].as_str(), f["error"]["code"].as_str()),
        (Some("error"), Some("token_invalid"))
    );
    assert!(matches!(
        ws::next(&mut sock, Duration::from_secs(5)).await,
        Next::Closed(Some(4001))
    ));

    let other = s.page(7, json!([channel("mod_a", "x", 0)])).await;
    let mut stolen = page.clone();
    stolen["subscriptions"] = other["subscriptions"].clone();
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&stolen, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["error"]["code"], "token_invalid");
    assert!(matches!(
        ws::next(&mut sock, Duration::from_secs(5)).await,
        Next::Closed(Some(4001))
    ));

    let mut sock = ws::connect(&s.url).await;
    ws::send(
        &mut sock,
        json!({"type": "send", "id": 1, "component": "mod_a"}),
    )
    .await;
    assert_eq!(ws::frame(&mut sock).await["type"], "error");
    assert!(matches!(
        ws::next(&mut sock, Duration::from_secs(5)).await,
        Next::Closed(Some(4002))
    ));
    s.stop().await;
}

#[tokio::test]
async fn a_handshake_from_an_origin_outside_the_allow_list_is_refused() {
    let s = TestServer::start(config(|c| {
        c.server.allowed_origins = vec!["http://good.example".into()]
    }))
    .await;
    let url = format!("{}/ws", s.url.replacen("http://", "ws://", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .expect("request");
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected a 403 handshake, got {:?}", other.map(|_| ())),
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .expect("request");
    req.headers_mut()
        .insert("origin", "http://good.example".parse().expect("header"));
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let s = TestServer::start(config(|c| c.websocket.max_frame_bytes = 4096)).await;
    let page = s.page(42, json!([channel("mod_a", "x", 0)])).await;
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let big = json!({"type": "send", "id": 1, "component": "mod_a", "payload": "x".repeat(10_000)});
    let _ = sock.send(Message::text(big.to_string())).await;
    assert!(matches!(
        ws::next(&mut sock, Duration::from_secs(5)).await,
        Next::Closed(Some(1009))
    ));
    s.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_with_4009_and_draining_closes_with_1012() {
    let s = TestServer::start(config(|c| {
        c.websocket.ping_interval_ms = 100;
        c.websocket.dead_peer_timeout_ms = 300;
    }))
    .await;
    let page = s.page(42, json!([channel("mod_a", "x", 0)])).await;
    let mut silent = ws::connect(&s.url).await;
    ws::send(&mut silent, ws::subscribe_frame(&page, &page["cursor"])).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let closed = loop {
        match ws::next(&mut silent, Duration::from_secs(5)).await {
            Next::Frame(_) => continue,
            Next::Closed(code) => break code,
            Next::Timeout => panic!("a silent peer was not closed"),
        }
    };
    assert_eq!(closed, Some(4009));
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    s.rt.shutdown_token().cancel();
    loop {
        match ws::next(&mut sock, Duration::from_secs(5)).await {
            Next::Closed(c) => {
                assert_eq!(c, Some(1012));
                break;
            }
            Next::Frame(_) => continue,
            Next::Timeout => panic!("no close on drain"),
        }
    }
    s.stop().await;
}

/// A reconnect storm reaches a draining node too (a client told 1012 that comes back at once,
/// over a connection accepted before the listener closed): such a WebSocket is closed with
/// 1012 without being served, so that its client backs off and resumes on the next node,
/// rather than subscribing, reporting itself connected and being closed again.
#[tokio::test]
async fn a_websocket_not_yet_subscribed_when_the_node_drains_is_closed_with_1012_unserved() {
    let s = TestServer::start(config(|_| {})).await;
    let page = s.page(42, json!([channel("mod_a", "x", 0)])).await;
    let mut waiting = ws::connect(&s.url).await; // upgraded, no subscribe frame yet
    let mut late = ws::connect(&s.url).await;
    s.rt.shutdown_token().cancel();
    // Closed at once, not after the subscribe timeout (10 s) or the drain timeout.
    assert!(matches!(
        ws::next(&mut waiting, Duration::from_secs(5)).await,
        Next::Closed(Some(1012))
    ));
    // Its subscribe frame comes after the drain began: not served.
    ws::send(&mut late, ws::subscribe_frame(&page, &page["cursor"])).await;
    match ws::next(&mut late, Duration::from_secs(5)).await {
        Next::Closed(code) => assert_eq!(code, Some(1012)),
        other => panic!("a subscribe was served while the node drained: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_moves_ws_to_sse_to_poll_through_1000_events() {
    let s = TestServer::start(config(|c| c.hub.cache_events = 300)).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    let producer = {
        let (url, ch) = (s.url.clone(), ch.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for b in 0..100 {
                let items: Vec<Value> = (0..10)
                    .map(|i| json!({"channel": ch, "payload": b * 10 + i}))
                    .collect();
                let res = http
                    .post(format!("{url}/api/notify"))
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"events": items}))
                    .send()
                    .await
                    .expect("notify");
                assert_eq!(res.status(), 200);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut payloads = Vec::new();

    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let (events, cursor) = ws::events(&mut sock, 300).await;
    payloads.extend(events.iter().map(|e| e["payload"].as_i64().expect("n")));
    drop(sock);

    let mut stream = sse::open(&s.url, &sse::query(&page, Some(&cursor)), None).await;
    let (events, last_id) = stream.events(300).await;
    payloads.extend(events.iter().map(|e| e["payload"].as_i64().expect("n")));
    drop(stream);

    let mut cursor = json!(last_id);
    while payloads.len() < 1000 {
        let (status, body) = s.poll(&page, &cursor).await;
        assert_eq!(status, 200);
        assert_eq!(body["recovered"], true);
        payloads.extend(
            body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["payload"].as_i64().expect("n")),
        );
        cursor = body["cursor"].clone();
    }
    producer.await.expect("producer");
    assert_eq!(
        payloads,
        (0..1000).collect::<Vec<_>>(),
        "all 1,000, once each, in order"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_disabled_transport_is_not_served_and_not_offered() {
    let s = TestServer::start(config(|c| {
        c.transports.enabled = vec!["sse".into(), "poll".into()]
    }))
    .await;
    let page = s.page(1, json!([channel("mod_a", "x", 0)])).await;
    assert_eq!(page["transports"], json!(["sse", "poll"]));
    let url = format!("{}/ws", s.url.replacen("http://", "ws://", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("expected a 404 handshake, got {:?}", other.map(|_| ())),
    }
    s.stop().await;
}

#[cfg(feature = "sqlite")]
/// The SQLite engine, whose reads fail while `down` is set: an engine that is unavailable for a
/// moment (the PostgreSQL pool busy during a rolling restart, when every client resumes at once).
struct Flaky {
    inner: realtime::engine::SqliteEngine,
    down: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "sqlite")]
#[async_trait::async_trait]
impl realtime::engine::Engine for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn append(
        &self,
        events: Vec<realtime::NewEvent>,
    ) -> realtime::Result<Vec<realtime::Event>> {
        self.inner.append(events).await
    }
    async fn read(
        &self,
        after: realtime::EventId,
        hashes: Option<&[realtime::ChannelHash]>,
        limit: usize,
    ) -> realtime::Result<Vec<realtime::Event>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(realtime::Error::EngineUnavailable(
                "down for the test".into(),
            ));
        }
        self.inner.read(after, hashes, limit).await
    }
    async fn position(&self) -> realtime::Result<realtime::engine::Position> {
        self.inner.position().await
    }
    async fn purge(&self, before: i64) -> realtime::Result<u64> {
        self.inner.purge(before).await
    }
    fn changes(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.inner.changes()
    }
}

/// A transient failure while subscribing is not final: the connection closes with 1013 (try
/// again later), not 4002, and the same subscribe succeeds once the engine is back.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn an_engine_failure_while_subscribing_closes_with_1013_not_4002() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = std::sync::Arc::new(Flaky {
        inner: realtime::engine::SqliteEngine::open(dir.path().join("realtime.db"))
            .await
            .expect("sqlite opens"),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    // A one-event cache: a cursor from before the last event needs the engine.
    let s = TestServer::start_with(config(|c| c.hub.cache_events = 1), engine.clone(), dir).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(42, json!([ch])).await;
    let expected = notify_n(&s, &ch, 3).await;
    // Once the hub has taken the events in, the page's cursor is older than its cache.
    let last = *expected.last().expect("ids");
    for _ in 0..200 {
        if realtime::testing::internal::hub(&s.rt).head().id.get() >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        realtime::testing::internal::hub(&s.rt).head().id.get(),
        last,
        "the hub took the events in"
    );
    engine.down.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    let f = ws::frame(&mut sock).await;
    assert_eq!(
        (f["type"].as_str(), f["error"]["code"].as_str()),
        (Some("error"), Some("engine_unavailable")),
        "{f}"
    );
    assert!(matches!(
        ws::next(&mut sock, Duration::from_secs(5)).await,
        Next::Closed(Some(1013))
    ));

    engine
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let (events, _) = ws::events(&mut sock, 3).await;
    assert_eq!(ids(&events), expected);
    s.stop().await;
}
