//! The PostgreSQL engine against the shared conformance suite, and the ordering that a plain
//! sequence would break: many nodes appending at once, a reader tailing that never sees a gap.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use realtime::engine::Engine;
use realtime::testing::{engine_conformance, new_event, raw_event};
use realtime::EventId;
use realtime_postgres::testing::ScratchDatabase;
use realtime_postgres::PostgresEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_engine_conforms() {
    let dbs = std::sync::Mutex::new(Vec::new());
    engine_conformance(|| async {
        let db = ScratchDatabase::create().await;
        let engine = PostgresEngine::connect(&db.url).await.expect("connect");
        dbs.lock().expect("lock").push(db);
        Arc::new(engine) as Arc<dyn Engine>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_become_visible_in_order_under_many_concurrent_notifiers() {
    let db = ScratchDatabase::create().await;
    // Four engines stand for four nodes: four writers racing for ids.
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(Arc::new(
            PostgresEngine::connect(&db.url).await.expect("connect"),
        ));
    }
    let reader = PostgresEngine::connect(&db.url).await.expect("connect");
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .flat_map(|(n, node)| {
            (0..4).map(move |t| {
                let node = node.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        node.append(vec![new_event(
                            "mod_o",
                            "x",
                            (n * 4 + t) as i64,
                            &i.to_string(),
                        )])
                        .await
                        .expect("append");
                    }
                })
            })
        })
        .collect();
    // Tail while they write: every read continues exactly where the last ended.
    let mut seen = BTreeSet::new();
    let mut after = EventId::ZERO;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 400 events seen",
            seen.len()
        );
        for e in reader.read(after, None, 1_000).await.expect("read") {
            assert_eq!(
                e.id.get(),
                after.get() + 1,
                "a gap: id {} visible before {}",
                e.id.get(),
                after.get() + 1
            );
            after = e.id;
            seen.insert(e.id);
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        reader.position().await.expect("position").head,
        EventId::new(400).expect("an event id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_learns_of_another_nodes_events_through_listen() {
    let db = ScratchDatabase::create().await;
    let a = PostgresEngine::connect(&db.url).await.expect("connect a");
    let b = PostgresEngine::connect(&db.url).await.expect("connect b");
    let changes = b.changes();
    tokio::time::sleep(Duration::from_millis(300)).await; // let b's LISTEN settle
                                                          // Drain the wake-up b gives itself after connecting.
    let _ = tokio::time::timeout(Duration::from_millis(50), changes.notified()).await;
    let waiter = tokio::spawn(async move { changes.notified().await });
    a.append(vec![new_event("mod_l", "x", 0, "1")])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("b was woken by a's NOTIFY")
        .expect("task");
    assert_eq!(
        b.read(EventId::ZERO, None, 10).await.expect("read").len(),
        1
    );
}

/// Issue 9: a NUL in details (or a payload nested past PostgreSQL's stack) failed the whole
/// group commit with 503, and with it every other caller batched into it. Handed to the engine
/// directly (the boundary refuses them first), each bad event now gets 400 `invalid_event`,
/// alone, and every concurrent good notify is acknowledged and readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_event_fails_only_its_own_caller() {
    let db = ScratchDatabase::create().await;
    let engine = Arc::new(PostgresEngine::connect(&db.url).await.expect("connect"));
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    for bad in [
        raw_event(1, "mod_bad", "x", 0, "nul\0here", "1"),
        raw_event(1, "mod_bad", "x", 0, "", &deep),
    ] {
        let good: Vec<_> = (0..64)
            .map(|t| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    engine
                        .append(vec![new_event("mod_good", "x", t, &t.to_string())])
                        .await
                })
            })
            .collect();
        let refused = engine
            .append(vec![bad])
            .await
            .expect_err("PostgreSQL refuses this event");
        assert_eq!(
            (refused.status().as_u16(), refused.code()),
            (400, "invalid_event"),
            "{refused}"
        );
        assert!(
            !refused.to_string().contains("db error"),
            "no driver text for the client: {refused}"
        );
        let mut ids = Vec::new();
        for g in good {
            ids.push(
                g.await
                    .expect("task")
                    .expect("a good notify is acknowledged")[0]
                    .id,
            );
        }
        let all = engine
            .read(EventId::ZERO, None, 10_000)
            .await
            .expect("read");
        for id in ids {
            assert!(all.iter().any(|e| e.id == id), "{id:?} is readable");
        }
    }
    assert_eq!(
        engine
            .read(EventId::ZERO, None, 10_000)
            .await
            .expect("read")
            .len(),
        128
    );
}
