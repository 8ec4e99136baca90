//! Pages that stay open all day (issue 10): a stream ends when the first of its tokens expires,
//! with a code that means "renew, then reconnect" (WebSocket close 4010, SSE `token_expired`);
//! a later `subscribe` frame renews the tokens of a live WebSocket, adds a channel with its
//! backlog from the cursor the application minted, and `unsubscribe` drops one. A real server on
//! a random port over a real SQLite file; tokens minted with the server's secret, as an
//! application holding it may.

mod common;

use std::time::Duration;

use common::{channel, config, secret, sse, ws, TestServer};
use realtime::testing::internal::{now_secs, sign, TokenKind};
use realtime::ChannelHash;
use realtime::UserId;
use serde_json::{json, Value};

/// `page` with every token (the user's and each subscription's) re-signed to expire at `expires`.
fn with_expiry(page: &Value, expires: i64) -> Value {
    let s = secret();
    let user = UserId::new(page["user"].as_i64().expect("user")).expect("a user id");
    let mut page = page.clone();
    page["usertoken"] = json!(sign(&s, TokenKind::User, None, user, expires));
    for sub in page["subscriptions"].as_array_mut().expect("subscriptions") {
        let hash = ChannelHash::parse(sub["channel"].as_str().expect("hash")).expect("a hash");
        sub["token"] = json!(sign(
            &s,
            TokenKind::Subscription,
            Some(&hash),
            user,
            expires
        ));
    }
    page["expires"] = json!(expires);
    page
}

/// The frames up to (and the code of) the close; panics when the server keeps the connection
/// past `wait`.
async fn until_close(socket: &mut ws::Socket, wait: Duration) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match ws::next(socket, wait).await {
            ws::Next::Frame(f) => frames.push(f),
            ws::Next::Closed(code) => return (frames, code),
            ws::Next::Timeout => panic!("still open after {wait:?}; frames {frames:?}"),
        }
    }
}

#[tokio::test]
async fn a_websocket_ends_with_4010_when_its_token_expires_and_a_renewed_one_resumes() {
    let server = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_x", "expiry", 0);
    let page = with_expiry(&server.page(5, json!([ch])).await, now_secs() + 2);

    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");
    let first = server.notify(ch.clone(), json!({"n": 1})).await;
    let (events, cursor) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], first);

    // The tokens run out within ~2 s: an `error` frame, then close 4010 (not 4001: renewable).
    let (frames, code) = until_close(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(4010), "frames {frames:?}");
    let error = frames.last().expect("an error frame before the close");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["code"], "token_expired");

    // Meanwhile an event; a renewed page config resumes from the cursor with nothing lost.
    let second = server.notify(ch.clone(), json!({"n": 2})).await;
    let renewed = server.page(5, json!([ch])).await;
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&renewed, &cursor)).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], second);
    server.stop().await;
}

#[tokio::test]
async fn a_later_subscribe_with_fresh_tokens_keeps_a_websocket_past_the_old_expiry() {
    let server = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_x", "renew", 0);
    let page = server.page(6, json!([ch])).await;
    let short = with_expiry(&page, now_secs() + 2);
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&short, &short["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");

    // Renew before expiry: the same channel with a token for an hour, and a new user token.
    let fresh = with_expiry(&page, now_secs() + 3_600);
    let mut frame = ws::subscribe_frame(&fresh, &Value::Null);
    frame["id"] = json!("renew-1");
    frame.as_object_mut().expect("object").remove("cursor");
    ws::send(&mut socket, frame).await;
    let answer = ws::frame(&mut socket).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["id"], "renew-1");
    assert_eq!(
        answer["channels"],
        json!([page["subscriptions"][0]["channel"]])
    );

    // Past the old expiry the connection is still there and delivering.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = server.notify(ch.clone(), json!({"after": "expiry"})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], id);

    // A shorter-lived token shown later (a stale renewal) does not shorten the connection.
    let short_user = with_expiry(&page, now_secs() + 2);
    let mut frame = ws::subscribe_frame(&fresh, &Value::Null);
    frame["usertoken"] = short_user["usertoken"].clone();
    frame["id"] = json!(2);
    ws::send(&mut socket, frame).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "subscribed");
    // The connection keeps the latest expiry it was shown for each token: still open later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = server.notify(ch.clone(), json!({"still": "open"})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], id);
    server.stop().await;
}

#[tokio::test]
async fn an_sse_stream_says_token_expired_and_ends_when_its_token_expires() {
    let server = TestServer::start(config(|c| c.sse.heartbeat_ms = 500)).await;
    let ch = channel("mod_x", "sse-expiry", 0);
    let page = with_expiry(&server.page(7, json!([ch])).await, now_secs() + 2);
    let mut stream = sse::open(&server.url, &sse::query(&page, Some(&page["cursor"])), None).await;
    assert_eq!(stream.status, 200);
    let id = server.notify(ch.clone(), json!({"n": 1})).await;
    let (events, _) = stream.events(1).await;
    assert_eq!(events[0]["id"], id);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut records = Vec::new();
        while let Some(r) = stream.record().await {
            records.push(r);
        }
        records
    })
    .await
    .expect("the stream ends after the token expires");
    let last = ended.last().expect("a record before the end");
    assert_eq!(last.event.as_deref(), Some("token_expired"), "{ended:?}");
    assert!(last.id.is_none(), "no id: the client keeps its cursor");
    let data: Value = serde_json::from_str(&last.data).expect("JSON data");
    assert_eq!(data["error"]["code"], "token_expired");
    server.stop().await;
}

#[tokio::test]
async fn a_channel_added_later_gets_its_backlog_from_its_own_cursor_and_the_others_nothing_again() {
    let server = TestServer::start(config(|_| {})).await;
    let a = channel("mod_x", "first", 0);
    let b = channel("mod_x", "added", 0);
    let page = server.page(8, json!([a])).await;
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");

    // The application renders a fragment for channel b: its subscription's cursor is the head.
    let b_before = server.notify(b.clone(), json!({"b": "before mint"})).await;
    let (status, sub) = server
        .api("/api/subscribe", json!({"channel": b, "user": 8}))
        .await;
    assert_eq!(status, 200, "{sub}");
    // Events of both channels after the mint, before the page adds b; a has been delivered.
    let b1 = server.notify(b.clone(), json!({"b": 1})).await;
    let a1 = server.notify(a.clone(), json!({"a": 1})).await;
    let b2 = server.notify(b.clone(), json!({"b": 2})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], a1);

    ws::send(
        &mut socket,
        json!({"type": "subscribe", "id": 1, "cursor": sub["cursor"],
               "subscriptions": [{"channel": sub["channel"], "token": sub["token"]}]}),
    )
    .await;
    let answer = ws::frame(&mut socket).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["channels"].as_array().map(Vec::len), Some(2));
    // From b's cursor: b1, a1 (a repeat, which the client drops by id), b2 — never b_before.
    let (events, _) = ws::events(&mut socket, 3).await;
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert_eq!(ids, vec![b1, a1, b2]);
    assert!(!ids.contains(&b_before));
    // Then new events of both.
    let b3 = server.notify(b.clone(), json!({"b": 3})).await;
    let a2 = server.notify(a.clone(), json!({"a": 2})).await;
    let (events, _) = ws::events(&mut socket, 2).await;
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert_eq!(ids, vec![b3, a2]);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_later_subscribe_is_an_error_frame_and_the_connection_goes_on() {
    let server = TestServer::start(config(|_| {})).await;
    let a = channel("mod_x", "kept", 0);
    let page = server.page(9, json!([a])).await;
    let other = server
        .page(10, json!([channel("mod_x", "theirs", 0)]))
        .await;
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");

    let cases = [
        // Another user's subscription token.
        json!({"type": "subscribe", "id": "x", "subscriptions": [
            {"channel": other["subscriptions"][0]["channel"], "token": other["subscriptions"][0]["token"]}]}),
        // Another user's user token.
        json!({"type": "subscribe", "id": "y", "usertoken": other["usertoken"], "subscriptions": [
            {"channel": page["subscriptions"][0]["channel"], "token": page["subscriptions"][0]["token"]}]}),
        // An expired token.
        json!({"type": "subscribe", "id": "z", "subscriptions": [
            {"channel": page["subscriptions"][0]["channel"],
             "token": with_expiry(&page, now_secs() - 1)["subscriptions"][0]["token"]}]}),
    ];
    for (frame, code) in cases
        .into_iter()
        .zip(["token_invalid", "token_invalid", "token_expired"])
    {
        let id = frame["id"].clone();
        ws::send(&mut socket, frame).await;
        let answer = ws::frame(&mut socket).await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["id"], id);
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    // The connection and its channel are unchanged.
    let id = server.notify(a.clone(), json!({"still": "here"})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], id);
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_drops_a_channel_but_not_the_last() {
    let server = TestServer::start(config(|_| {})).await;
    let a = channel("mod_x", "stays", 0);
    let b = channel("mod_x", "goes", 0);
    let page = server.page(11, json!([a, b])).await;
    let hash_b = page["subscriptions"]
        .as_array()
        .expect("subs")
        .iter()
        .find(|s| s["area"] == "goes")
        .expect("b")["channel"]
        .clone();
    let hash_a = page["subscriptions"]
        .as_array()
        .expect("subs")
        .iter()
        .find(|s| s["area"] == "stays")
        .expect("a")["channel"]
        .clone();
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");

    ws::send(
        &mut socket,
        json!({"type": "unsubscribe", "id": 7, "channels": [hash_b]}),
    )
    .await;
    let answer = ws::frame(&mut socket).await;
    assert_eq!(answer["type"], "unsubscribed", "{answer}");
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["channels"], json!([hash_a]));
    server.notify(b.clone(), json!({"dropped": true})).await;
    let kept = server.notify(a.clone(), json!({"kept": true})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], kept, "b's event is not delivered");

    ws::send(
        &mut socket,
        json!({"type": "unsubscribe", "id": 8, "channels": [hash_a]}),
    )
    .await;
    let answer = ws::frame(&mut socket).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["id"], 8);
    assert_eq!(answer["error"]["code"], "invalid_request");
    let again = server.notify(a.clone(), json!({"still": true})).await;
    let (events, _) = ws::events(&mut socket, 1).await;
    assert_eq!(events[0]["id"], again);
    server.stop().await;
}

#[tokio::test]
async fn a_poll_with_wait_false_answers_at_once_even_empty() {
    // The server would wait 5 minutes for an event; the client's first poll must not.
    let server = TestServer::start(config(|c| c.poll.request_timeout_secs = 300)).await;
    let ch = channel("mod_x", "quick", 0);
    let page = server.page(12, json!([ch])).await;
    let subs: Vec<Value> = page["subscriptions"]
        .as_array()
        .expect("subs")
        .iter()
        .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
        .collect();
    let body = json!({"subscriptions": subs, "cursor": page["cursor"], "wait": false});
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(60),
        server.post("/poll", page["usertoken"].as_str(), body.to_string()),
    )
    .await
    .expect("answered without waiting for an event");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["recovered"], true);
    assert_eq!(answer["cursor"], page["cursor"]);
    // A wrong type is refused, naming the field.
    let bad = json!({"subscriptions": subs, "wait": "no"});
    let (status, answer) = server
        .post("/poll", page["usertoken"].as_str(), bad.to_string())
        .await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}
