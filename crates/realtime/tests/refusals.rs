//! Bad input gets a clear error with a fitting status, and changes nothing.

mod common;

use common::{channel, config, secret, TestServer, API_KEY};
use realtime::testing::internal::{self as token, now_secs, TokenKind};
use realtime::{ChannelHash, UserId};
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body: {body}"))
}

fn poll_body(subs: Value, cursor: &Value) -> String {
    json!({"subscriptions": subs, "cursor": cursor}).to_string()
}

#[tokio::test]
async fn forged_or_misused_credentials_are_refused_on_poll() {
    let s = TestServer::start(config(|_| {})).await;
    let mine = s.page(42, json!([channel("mod_a", "x", 1)])).await;
    let theirs = s.page(7, json!([channel("mod_a", "x", 2)])).await;
    let sub = &mine["subscriptions"][0];
    let ut = mine["usertoken"].as_str().expect("usertoken");
    let cursor = &mine["cursor"];

    // A forged hash: a valid-looking hash the token was not issued for.
    let forged = json!([{"channel": "f".repeat(64), "token": sub["token"]}]);
    let (st, body) = s.post("/poll", Some(ut), poll_body(forged, cursor)).await;
    assert_eq!((st, code(&body)), (403, "token_invalid"), "{body}");

    // My token for another channel.
    let other = json!([{"channel": theirs["subscriptions"][0]["channel"], "token": sub["token"]}]);
    let (st, body) = s.post("/poll", Some(ut), poll_body(other, cursor)).await;
    assert_eq!((st, code(&body)), (403, "token_invalid"));

    // Another user's subscription token, presented with my user token.
    let stolen = json!([{"channel": theirs["subscriptions"][0]["channel"], "token": theirs["subscriptions"][0]["token"]}]);
    let (st, body) = s.post("/poll", Some(ut), poll_body(stolen, cursor)).await;
    assert_eq!((st, code(&body)), (403, "token_invalid"));

    // Expired tokens (signed with the server's secret, so only the time is wrong).
    let hash = ChannelHash::parse(sub["channel"].as_str().expect("hash")).expect("hash");
    let old_sub = token::sign(
        &secret(),
        TokenKind::Subscription,
        Some(&hash),
        UserId::new(42).expect("a user id"),
        now_secs() - 5,
    );
    let (st, body) = s
        .post(
            "/poll",
            Some(ut),
            poll_body(json!([{"channel": hash, "token": old_sub}]), cursor),
        )
        .await;
    assert_eq!((st, code(&body)), (401, "token_expired"));
    let old_user = token::sign(
        &secret(),
        TokenKind::User,
        None,
        UserId::new(42).expect("a user id"),
        now_secs() - 5,
    );
    let mine_subs = json!([{"channel": sub["channel"], "token": sub["token"]}]);
    let (st, body) = s
        .post(
            "/poll",
            Some(&old_user),
            poll_body(mine_subs.clone(), cursor),
        )
        .await;
    assert_eq!((st, code(&body)), (401, "token_expired"));

    // No user token; a tampered one; a subscription token used as a user token.
    let (st, body) = s
        .post("/poll", None, poll_body(mine_subs.clone(), cursor))
        .await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    let (st, _) = s
        .post(
            "/poll",
            Some(&ut.replacen("v1.42.", "v1.7.", 1)),
            poll_body(mine_subs.clone(), cursor),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post(
            "/poll",
            sub["token"].as_str(),
            poll_body(mine_subs.clone(), cursor),
        )
        .await;
    assert_eq!(st, 403);

    // Credentials are checked before the body: no token and a bad body is still a 401.
    let (st, body) = s.post("/poll", None, "{}".into()).await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    let (st, body) = s.post("/send", None, "not json".into()).await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));

    // Bad shapes.
    let (st, body) = s
        .post("/poll", Some(ut), poll_body(json!([]), cursor))
        .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
    let (st, body) = s
        .post(
            "/poll",
            Some(ut),
            poll_body(mine_subs.clone(), &json!("nonsense")),
        )
        .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"), "{body}");
    let (st, body) = s
        .post(
            "/poll",
            Some(ut),
            poll_body(json!([{"channel": "abc", "token": "x"}]), cursor),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn the_api_needs_its_key_and_refused_notifies_store_nothing() {
    let s = TestServer::start(config(|c| {
        c.components.enabled = vec!["mod_on".into()];
        c.limits.payload_bytes = 1_000;
    }))
    .await;
    let on = channel("mod_on", "x", 0);
    let ok = json!({"channel": on, "payload": {"a": 1}}).to_string();
    let head = s.head().await;

    let (st, body) = s.post("/api/notify", None, ok.clone()).await;
    assert_eq!((st, code(&body)), (401, "unauthorized"));
    let (st, body) = s.post("/api/notify", Some("wrong-key"), ok.clone()).await;
    assert_eq!((st, code(&body)), (401, "invalid_api_key"));
    let (st, body) = s.post("/api/notify", None, "{".into()).await;
    assert_eq!(
        (st, code(&body)),
        (401, "unauthorized"),
        "the key is checked before the body"
    );
    let (st, body) = s
        .post("/api/notify", Some(API_KEY), "{\"channel\": ".into())
        .await;
    assert_eq!((st, code(&body)), (400, "bad_json"));
    let (st, body) = s
        .post(
            "/api/notify",
            Some(API_KEY),
            json!({"channel": on, "payload": 1, "colour": "red"}).to_string(),
        )
        .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("colour"),
        "{body}"
    );
    let wrong_type =
        json!({"channel": {"contextid": "one", "component": "mod_on", "area": "x"}, "payload": 1});
    let (st, body) = s
        .post("/api/notify", Some(API_KEY), wrong_type.to_string())
        .await;
    assert_eq!((st, code(&body)), (400, "invalid_request"));
    let bad_component = json!({"channel": channel("Mod-On", "x", 0), "payload": 1});
    let (st, body) = s
        .post("/api/notify", Some(API_KEY), bad_component.to_string())
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/api/notify",
            Some(API_KEY),
            json!({"channel": on, "payload": "x".repeat(2_000)}).to_string(),
        )
        .await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"));
    let (st, body) = s
        .post(
            "/api/notify",
            Some(API_KEY),
            json!({"channel": channel("mod_off", "x", 0), "payload": 1}).to_string(),
        )
        .await;
    assert_eq!((st, code(&body)), (403, "component_disabled"));
    // A batch with one bad event stores none of them.
    let batch = json!({"events": [{"channel": on, "payload": 1}, {"channel": channel("mod_off", "x", 0), "payload": 2}]});
    let (st, _) = s
        .post("/api/notify", Some(API_KEY), batch.to_string())
        .await;
    assert_eq!(st, 403);
    // Both forms at once, or neither.
    let (st, _) = s
        .post(
            "/api/notify",
            Some(API_KEY),
            json!({"channel": on, "events": []}).to_string(),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s.post("/api/notify", Some(API_KEY), "{}".into()).await;
    assert_eq!(st, 400);
    assert_eq!(s.head().await, head, "refused notifies changed nothing");

    // Subscribing to a disabled component, or as a guest, is refused too.
    let (st, body) = s
        .api(
            "/api/subscribe",
            json!({"channel": channel("mod_off", "x", 0), "user": 3}),
        )
        .await;
    assert_eq!((st, code(&body)), (403, "component_disabled"));
    let (st, body) = s
        .api("/api/page", json!({"user": 0, "channels": [on]}))
        .await;
    assert_eq!((st, code(&body)), (403, "guests_not_allowed"));
    let (st, body) = s
        .api("/api/page", json!({"user": -4, "channels": [on]}))
        .await;
    assert_eq!((st, code(&body)), (400, "invalid_user"));
    assert!(!s.rt.is_enabled("mod_off"));
    assert!(s.rt.is_enabled("mod_on"));

    // The library refuses alike.
    let off = realtime::Channel::new(1, "mod_off", "x", 0, "").expect("valid");
    assert_eq!(
        s.rt.notify(&off, &1).await.expect_err("disabled").code(),
        "component_disabled"
    );
    assert_eq!(s.head().await, head);

    // Unknown routes answer in the same error shape.
    let (st, body) = s.post("/api/nothing", Some(API_KEY), "{}".into()).await;
    assert_eq!((st, code(&body)), (404, "not_found"));
    s.stop().await;
}

#[tokio::test]
async fn guests_are_served_only_when_allowed() {
    let s = TestServer::start(config(|c| c.auth.allow_guests = true)).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(0, json!([ch])).await;
    s.notify(ch, json!("for guests")).await;
    assert_eq!(s.collect(&page, 1).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_oversize_body_is_refused_with_413() {
    let s = TestServer::start(config(|c| {
        c.limits.request_bytes = 10_000;
        c.limits.payload_bytes = 10_000;
    }))
    .await;
    let big = json!({"events": (0..100).map(|_| json!({"channel": channel("mod_a", "x", 0), "payload": "y".repeat(200)})).collect::<Vec<_>>()});
    let (st, body) = s.post("/api/notify", Some(API_KEY), big.to_string()).await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"));
    assert_eq!(s.head().await, 0);
    s.stop().await;
}
