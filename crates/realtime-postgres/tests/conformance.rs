//! The PostgreSQL engine against the shared conformance suite, and the ordering that a plain
//! sequence would break: many nodes appending at once, a reader tailing that never sees a gap.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use realtime::engine::Engine;
use realtime::testing::{engine_conformance, new_event};
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
    let mut after = EventId(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 400 events seen",
            seen.len()
        );
        for e in reader.read(after, None, 1_000).await.expect("read") {
            assert_eq!(
                e.id.0,
                after.0 + 1,
                "a gap: id {} visible before {}",
                e.id.0,
                after.0 + 1
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
        EventId(400)
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
    assert_eq!(b.read(EventId(0), None, 10).await.expect("read").len(), 1);
}
