//! Retention and recovery: a cursor the store can no longer serve gets `recovered: false` and
//! the current cursor, never a silent gap; the client then resumes normally.

mod common;

use std::time::Duration;

use common::{channel, config, TestServer};
use serde_json::json;

#[tokio::test]
async fn a_cursor_older_than_retention_is_told_and_then_resumes() {
    let s = TestServer::start(config(|c| {
        c.engine.retention_secs = 1;
        c.engine.purge_interval_secs = 1;
    }))
    .await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(42, json!([ch])).await;
    let old_cursor = page["cursor"].clone();
    s.notify(ch.clone(), json!("will be purged")).await;

    // Wait until the purge has run past it.
    let mut floor = 0;
    for _ in 0..100 {
        let res = s
            .http
            .get(format!("{}/api/status", s.url))
            .bearer_auth(common::API_KEY)
            .send()
            .await
            .expect("status");
        let body: serde_json::Value = res.json().await.expect("json");
        floor = body["floor"].as_i64().expect("floor");
        if floor > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(floor > 0, "the purge ran");

    let (status, body) = s.poll(&page, &old_cursor).await;
    assert_eq!(status, 200);
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["events"], json!([]));
    let fresh = body["cursor"].clone();
    assert_ne!(fresh, old_cursor);

    let id = s.notify(ch, json!("after")).await;
    let (_, body) = s.poll(&page, &fresh).await;
    assert_eq!(body["recovered"], true);
    assert_eq!(body["events"][0]["id"], id);
    s.stop().await;
}

#[tokio::test]
async fn a_cursor_from_another_store_is_told_with_the_current_cursor() {
    let s = TestServer::start(config(|_| {})).await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(42, json!([ch])).await;
    s.notify(ch.clone(), json!(1)).await;
    let (status, body) = s.poll(&page, &json!("0123456789abcdef:0")).await;
    assert_eq!(status, 200);
    assert_eq!(body["recovered"], false);
    assert_eq!(body["events"], json!([]));
    let epoch = page["cursor"]
        .as_str()
        .expect("cursor")
        .split(':')
        .next()
        .expect("epoch")
        .to_string();
    assert!(body["cursor"].as_str().expect("cursor").starts_with(&epoch));
    s.stop().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn events_survive_a_restart_on_the_same_file_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("realtime.db");
    let ch = channel("mod_a", "x", 0);
    let engine = std::sync::Arc::new(
        realtime::engine::SqliteEngine::open(&path)
            .await
            .expect("open"),
    );
    let keep = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_with(config(|_| {}), engine, keep).await;
    let page = s.page(1, json!([ch])).await;
    let first = s.notify(ch.clone(), json!("before restart")).await;
    s.stop().await;

    let engine = std::sync::Arc::new(
        realtime::engine::SqliteEngine::open(&path)
            .await
            .expect("reopen"),
    );
    let s = TestServer::start_with(config(|_| {}), engine, dir).await;
    let second = s.notify(ch.clone(), json!("after restart")).await;
    assert!(second > first);
    // The old page's cursor still resumes on the reopened store (same epoch).
    let events = s.collect(&page, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect::<Vec<_>>(),
        vec![first, second]
    );
    s.stop().await;
}
