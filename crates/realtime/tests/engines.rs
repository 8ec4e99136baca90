//! Every engine passes the same conformance suite.

use std::sync::Arc;

use realtime::engine::{Engine, MemoryEngine, SqliteEngine};
use realtime::testing::engine_conformance;

#[tokio::test]
async fn memory_engine_conforms() {
    engine_conformance(|| async { Arc::new(MemoryEngine::new()) as Arc<dyn Engine> }).await;
}

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
        .read(realtime::EventId(0), None, 1_000)
        .await
        .expect("read");
    assert_eq!(from_a.len(), 100);
    assert!(from_a.windows(2).all(|w| w[0].id < w[1].id));
}
