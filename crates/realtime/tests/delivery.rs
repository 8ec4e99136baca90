//! Subscribe, notify, poll: the core loop as an application and a page use it.

mod common;

use std::time::{Duration, Instant};

use common::{channel, config, TestServer};
use serde_json::json;

#[tokio::test]
async fn a_notified_event_reaches_a_waiting_poll_in_the_one_event_shape() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_quiz", "attempts", 7);
    let page = s.page(42, json!([ch])).await;
    assert_eq!(page["user"], 42);
    assert_eq!(page["transports"], json!(["websocket", "sse", "poll"]));
    assert_eq!(page["url"], s.url);

    // The poll is waiting on the hub before the event exists.
    let waiting = {
        let (s2, page2) = (s.http.clone(), page.clone());
        let url = s.url.clone();
        tokio::spawn(async move {
            let subs = json!([{"channel": page2["subscriptions"][0]["channel"], "token": page2["subscriptions"][0]["token"]}]);
            let res = s2
                .post(format!("{url}/poll"))
                .bearer_auth(page2["usertoken"].as_str().expect("usertoken"))
                .json(&json!({"subscriptions": subs, "cursor": page2["cursor"]}))
                .send()
                .await
                .expect("poll");
            res.json::<serde_json::Value>().await.expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = s
        .notify(ch.clone(), json!({"text": "hello", "n": [1, 2]}))
        .await;
    let body = waiting.await.expect("poll task");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{body}");
    let e = &events[0];
    assert_eq!(e["id"], id);
    assert_eq!(e["contextid"], 1);
    assert_eq!(e["component"], "mod_quiz");
    assert_eq!(e["area"], "attempts");
    assert_eq!(e["itemid"], 7);
    assert_eq!(e["channeldetails"], "");
    assert_eq!(e["payload"], json!({"text": "hello", "n": [1, 2]}));
    assert!(e["timecreated"].as_i64().expect("timecreated") > 1_700_000_000);
    let mut keys: Vec<&String> = e.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "area",
            "channeldetails",
            "component",
            "contextid",
            "id",
            "itemid",
            "payload",
            "timecreated"
        ]
    );
    assert_eq!(body["recovered"], true);
    assert!(body["cursor"]
        .as_str()
        .expect("cursor")
        .ends_with(&format!(":{id}")));
    s.stop().await;
}

#[tokio::test]
async fn two_channels_interleaved_come_back_in_id_order_and_others_stay_out() {
    let s = TestServer::start(config(|_| {})).await;
    let (a, b, other) = (
        channel("mod_a", "x", 1),
        channel("mod_b", "y", 2),
        channel("mod_a", "x", 3),
    );
    let page = s.page(5, json!([a, b])).await;
    let mut expected = Vec::new();
    for i in 0..30 {
        s.notify(other.clone(), json!({"noise": i})).await;
        let ch = if i % 3 == 0 { &b } else { &a };
        expected.push(s.notify(ch.clone(), json!({"i": i})).await);
    }
    // A batch interleaves too, and is acknowledged as a whole.
    let (status, body) = s
        .api("/api/notify", json!({"events": [{"channel": a, "payload": 1}, {"channel": other, "payload": 2}, {"channel": b, "payload": 3}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    expected.extend([ids[0], ids[2]]);

    let events = s.collect(&page, expected.len()).await;
    let got: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, expected);
    s.stop().await;
}

#[tokio::test]
async fn an_event_between_page_render_and_first_poll_is_not_missed() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_forum", "posts", 0);
    s.notify(ch.clone(), json!("before the page")).await;
    let page = s.page(42, json!([ch])).await;
    let id = s
        .notify(ch.clone(), json!("after render, before the first poll"))
        .await;
    let (status, body) = s.poll(&page, &page["cursor"]).await;
    assert_eq!(status, 200);
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "only the event after render: {body}");
    assert_eq!(events[0]["id"], id);
    s.stop().await;
}

#[tokio::test]
async fn an_empty_poll_waits_for_the_timeout_and_short_polling_answers_at_once() {
    let s = TestServer::start(config(|c| c.poll.request_timeout_secs = 1)).await;
    let page = s.page(1, json!([channel("mod_a", "x", 0)])).await;
    let t = Instant::now();
    let (status, body) = s.poll(&page, &page["cursor"]).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], json!([]));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "a long-poll waits for its timeout"
    );
    s.stop().await;

    let s = TestServer::start(config(|c| c.poll.request_timeout_secs = 0)).await;
    let page = s.page(1, json!([channel("mod_a", "x", 0)])).await;
    let (status, body) = s.poll(&page, &page["cursor"]).await;
    assert_eq!((status, body["events"].clone()), (200, json!([])));
    s.notify(channel("mod_a", "x", 0), json!(1)).await;
    // Short polling: the next poll answers whatever is there now.
    let events = s.collect(&page, 1).await;
    assert_eq!(events.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_cache_is_answered_from_the_engine() {
    let s = TestServer::start(config(|c| c.hub.cache_events = 5)).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(s.notify(ch.clone(), json!(i)).await);
    }
    let events = s.collect(&page, 40).await;
    let got: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, ids);
    s.stop().await;
}

#[tokio::test]
async fn a_poll_answer_is_capped_and_the_rest_follows() {
    let s = TestServer::start(config(|c| c.limits.poll_events = 7)).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    let items: Vec<_> = (0..20)
        .map(|i| json!({"channel": ch, "payload": i}))
        .collect();
    let (status, _) = s.api("/api/notify", json!({"events": items})).await;
    assert_eq!(status, 200);
    let (_, first) = s.poll(&page, &page["cursor"]).await;
    assert_eq!(first["events"].as_array().expect("events").len(), 7);
    let events = s.collect(&page, 20).await;
    let payloads: Vec<i64> = events
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .collect();
    assert_eq!(payloads, (0..20).collect::<Vec<_>>());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_polls_at_once() {
    let s = TestServer::start(config(|c| c.poll.request_timeout_secs = 30)).await;
    let page = s.page(1, json!([channel("mod_a", "x", 0)])).await;
    let http = s.http.clone();
    let url = s.url.clone();
    let p = page.clone();
    let poll = tokio::spawn(async move {
        let sub = &p["subscriptions"][0];
        http.post(format!("{url}/poll"))
            .bearer_auth(p["usertoken"].as_str().expect("token"))
            .json(&json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": p["cursor"]}))
            .send()
            .await
            .expect("poll")
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    s.stop().await;
    assert_eq!(poll.await.expect("poll task"), 200);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown did not wait for the poll's 30 s timeout"
    );
}

#[tokio::test]
async fn the_library_api_matches_the_http_api() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = realtime::Channel::new(3, "mod_lib", "area", 9, "d").expect("valid");
    assert!(s.rt.is_enabled("mod_lib"));
    let sub =
        s.rt.subscribe(&ch, realtime::UserId::new(8).expect("a user id"))
            .await
            .expect("subscribe");
    let (status, http_sub) = s.api("/api/subscribe", json!({"channel": {"contextid": 3, "component": "mod_lib", "area": "area", "itemid": 9, "details": "d"}, "user": 8})).await;
    assert_eq!(status, 200, "{http_sub}");
    assert_eq!(http_sub["channel"], sub.channel.as_str());
    assert_eq!(http_sub["channeldetails"], "d");
    assert!(http_sub["expires"].as_i64().expect("expires") > 0);
    let id =
        s.rt.notify(&ch, &json!({"from": "rust"}))
            .await
            .expect("notify");
    let page = json!({"usertoken": s.rt.page(realtime::UserId::new(8).expect("a user id"), &[ch], String::new()).await.expect("page").usertoken,
        "subscriptions": [{"channel": http_sub["channel"], "token": http_sub["token"]}], "cursor": http_sub["cursor"]});
    let (_, body) = s.poll(&page, &http_sub["cursor"]).await;
    assert_eq!(body["events"][0]["id"], id.get());
    assert_eq!(body["events"][0]["payload"]["from"], "rust");
    s.stop().await;
}
