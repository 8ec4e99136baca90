//! Every engine passes the same conformance suite, and the one rule for what an event may
//! contain is enforced at the boundary, before any engine is touched.

mod common;

use std::sync::Arc;

use common::{config, TestServer, API_KEY};
use serde_json::{json, Value};

#[cfg(feature = "sqlite")]
use realtime::engine::SqliteEngine;
use realtime::engine::{Engine, MemoryEngine};
use realtime::testing::engine_conformance;

#[tokio::test]
async fn memory_engine_conforms() {
    engine_conformance(|| async { Arc::new(MemoryEngine::new()) as Arc<dyn Engine> }).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_engine_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    engine_conformance(|| {
        let path = dir.path().join(format!(
            "e{}.db",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        async move { Arc::new(SqliteEngine::open(path).await.expect("open")) as Arc<dyn Engine> }
    })
    .await;
}

/// Two engines on one file stand for two processes: each sees the other's events, ids stay
/// unique and ascending, and the epoch is shared.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_handles_on_one_file_share_one_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let a = Arc::new(SqliteEngine::open(&path).await.expect("open a"));
    let b = Arc::new(SqliteEngine::open(&path).await.expect("open b"));
    assert_eq!(
        a.position().await.expect("pos").epoch,
        b.position().await.expect("pos").epoch
    );
    let ta = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                a.append(vec![realtime::testing::new_event(
                    "mod_a",
                    "x",
                    0,
                    &i.to_string(),
                )])
                .await
                .expect("append a");
            }
        })
    };
    for i in 0..50 {
        b.append(vec![realtime::testing::new_event(
            "mod_b",
            "x",
            0,
            &i.to_string(),
        )])
        .await
        .expect("append b");
    }
    ta.await.expect("task");
    let from_a = a
        .read(realtime::EventId::ZERO, None, 1_000)
        .await
        .expect("read");
    assert_eq!(from_a.len(), 100);
    assert!(from_a.windows(2).all(|w| w[0].id < w[1].id));
}

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body: {body}"))
}

/// Issue 9: what an event may contain is decided once, at `/api/notify`, for every engine:
/// control characters in area or details, a payload nested past `limits.payload_depth` or
/// holding a lone surrogate are refused with 400, a payload over `limits.payload_bytes` with
/// 413, and nothing is stored; hostile but valid values are stored byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_rule_is_enforced_at_notify_and_refusals_store_nothing() {
    let s = TestServer::start(config(|c| {
        c.limits.payload_bytes = 2_000;
        c.limits.payload_depth = 8;
    }))
    .await;
    let head = s.head().await;
    let channel = |area: &str, details: &str| json!({"contextid": 1, "component": "mod_rule", "area": area, "itemid": 0, "details": details});
    let notify = |body: Value| s.post("/api/notify", Some(API_KEY), body.to_string());
    let nested =
        |depth: usize| -> String { format!("{}1{}", "[".repeat(depth), "]".repeat(depth)) };

    for (area, details) in [
        ("a\nb", ""),
        ("a", "nul\0"),
        ("a", "tab\there"),
        ("a", "del\u{7f}"),
        ("a", "c1\u{85}"),
    ] {
        let (st, body) = notify(json!({"channel": channel(area, details), "payload": 1})).await;
        assert_eq!(st, 400, "{area:?} {details:?}: {body}");
        assert!(
            ["invalid_request", "invalid_channel"].contains(&code(&body)),
            "{body}"
        );
    }
    let deep: Value = serde_json::from_str(&nested(9)).expect("json");
    let (st, body) = notify(json!({"channel": channel("a", ""), "payload": deep})).await;
    assert_eq!((st, code(&body)), (400, "invalid_payload"), "{body}");
    let raw = format!(
        r#"{{"channel": {}, "payload": "\ud800"}}"#,
        channel("a", "")
    );
    let (st, body) = s.post("/api/notify", Some(API_KEY), raw).await;
    assert_eq!(
        (st, code(&body)),
        (400, "invalid_payload"),
        "a lone surrogate: {body}"
    );
    let (st, body) =
        notify(json!({"channel": channel("a", ""), "payload": "x".repeat(2_000)})).await;
    assert_eq!((st, code(&body)), (413, "payload_too_large"), "{body}");
    // One bad event in a batch refuses the batch: all or nothing.
    let (st, body) = notify(json!({"events": [
        {"channel": channel("a", ""), "payload": 1},
        {"channel": channel("a", ""), "payload": deep},
    ]}))
    .await;
    assert_eq!((st, code(&body)), (400, "invalid_payload"), "{body}");
    assert_eq!(s.head().await, head, "nothing refused was stored");

    // Hostile but valid: accepted, and stored byte-exact.
    let payload = format!(
        r#"{{ "p":"C:\\temp\\new", "q":"\"", "nul":"\u0000", "pair":"\ud83d\ude00", "deep":{} }}"#,
        nested(7)
    );
    let raw = format!(
        r#"{{"channel": {}, "payload": {payload}}}"#,
        channel("C:\\temp \"quoted\" 😀", "שלום e\u{301} \\")
    );
    let (st, body) = s.post("/api/notify", Some(API_KEY), raw).await;
    assert_eq!(st, 200, "{body}");
    let id = body["id"].as_i64().expect("an id");
    let stored = realtime::testing::internal::engine(&s.rt)
        .read(
            realtime::EventId::new(id - 1).expect("an event id"),
            None,
            1,
        )
        .await
        .expect("read");
    assert_eq!(stored[0].area, "C:\\temp \"quoted\" 😀");
    assert_eq!(stored[0].channeldetails, "שלום e\u{301} \\");
    assert_eq!(stored[0].payload.get(), payload, "the payload byte-exact");
    s.stop().await;
}
