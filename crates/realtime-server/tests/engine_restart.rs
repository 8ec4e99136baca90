//! The engine goes away in the middle of a stream and comes back: notifies fail clearly (503)
//! while it is down, succeed after, and subscribers end with every acknowledged event.

mod common;

use std::time::Duration;

use common::{PrivatePostgres, PrivateRedis, Server};
use realtime::testing::ws;
use serde_json::{json, Value};

const KEY: &str = "restart-key";

/// Notifies `payload` once; answers the status.
async fn notify(http: &reqwest::Client, url: &str, payload: i64) -> u16 {
    let body =
        json!({"channel": {"contextid": 1, "component": "mod_r", "area": "x"}, "payload": payload});
    match http
        .post(format!("{url}/api/notify"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
    {
        Ok(res) => {
            let status = res.status().as_u16();
            if status != 200 {
                let body: Value = res.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    body["error"]["code"], "engine_unavailable",
                    "a clear error: {body}"
                );
            }
            status
        }
        Err(e) => panic!("the node itself must keep answering: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_no_acknowledged_event() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[
            ("REALTIME_API_KEY", KEY),
            ("REALTIME_ENGINE_URL", &pg.url()),
            ("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200"),
        ],
    );
    let http = reqwest::Client::new();
    let page: Value = http
        .post(format!("{}/api/page", server.url))
        .bearer_auth(KEY)
        .json(
            &json!({"user": 1, "channels": [{"contextid": 1, "component": "mod_r", "area": "x"}]}),
        )
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    let mut sock = ws::connect(&server.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");

    let mut acked = Vec::new();
    for i in 0..10 {
        assert_eq!(notify(&http, &server.url, i).await, 200);
        acked.push(i);
    }
    pg.down();
    let mut refused = 0;
    for i in 10..15 {
        match notify(&http, &server.url, i).await {
            200 => acked.push(i),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0,
        "notifies while the engine is down are refused, not falsely acknowledged"
    );
    pg.up();
    // The pool reconnects on the next use; give it a few tries.
    let mut i = 15;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine never came back"
        );
        if notify(&http, &server.url, i).await == 200 {
            acked.push(i);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        i += 1;
    }
    let (events, _) = ws::events(&mut sock, acked.len()).await;
    let got: Vec<i64> = events
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .collect();
    assert_eq!(got, acked, "every acknowledged event, once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence_is_told_and_loses_nothing_acknowledged_after() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[
            ("REALTIME_API_KEY", KEY),
            ("REALTIME_ENGINE_URL", &redis.url()),
            ("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200"),
        ],
    );
    let http = reqwest::Client::new();
    let page: Value = http
        .post(format!("{}/api/page", server.url))
        .bearer_auth(KEY)
        .json(
            &json!({"user": 1, "channels": [{"contextid": 1, "component": "mod_r", "area": "x"}]}),
        )
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    let mut sock = ws::connect(&server.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");

    let mut acked = Vec::new();
    for i in 0..10 {
        assert_eq!(notify(&http, &server.url, i).await, 200);
        acked.push(i);
    }
    let (before, _) = ws::events(&mut sock, 10).await;
    redis.down();
    let mut refused = 0;
    for i in 10..13 {
        match notify(&http, &server.url, i).await {
            200 => acked.push(i),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0,
        "notifies while Redis is down are refused, not falsely acknowledged"
    );
    redis.up();
    let mut i = 13;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        if notify(&http, &server.url, i).await == 200 {
            acked.push(i);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        i += 1;
    }
    // The store was lost: the subscriber is told so, then gets everything acknowledged since.
    let mut told = false;
    let mut after = Vec::new();
    while before.len() + after.len() < acked.len() {
        let f = ws::frame(&mut sock).await;
        match f["type"].as_str() {
            Some("not_recovered") => told = true,
            Some("event") => after.push(f["event"]["payload"].as_i64().expect("n")),
            _ => {}
        }
    }
    assert!(told, "the subscriber was told that the store was lost");
    let got: Vec<i64> = before
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .chain(after)
        .collect();
    assert_eq!(got, acked, "every acknowledged event, once, in order");
}
