//! Several processes creating the same SQLite file at the same moment (issue 9, item 7: two
//! servers first started together exited with "database is locked"). Each open here has its own
//! connection, as each process would; all must succeed and agree on the store's epoch.
//! (Without the retry on the open path, "database is locked" came within 5 to 30 rounds here.)

use std::sync::Arc;

use realtime::engine::{Engine, SqliteEngine};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_fresh_file_all_succeed_with_one_epoch() {
    const OPENERS: usize = 32;
    for round in 0..60 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("realtime.db");
        let barrier = Arc::new(tokio::sync::Barrier::new(OPENERS));
        let tasks: Vec<_> = (0..OPENERS)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let engine = SqliteEngine::open(&path).await?;
                    let pos = engine.position().await?;
                    engine.close().await;
                    Ok::<_, realtime::Error>(pos.epoch)
                })
            })
            .collect();
        let mut epochs = Vec::new();
        for t in tasks {
            let epoch = t
                .await
                .expect("no panic")
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            epochs.push(epoch);
        }
        assert!(
            epochs.iter().all(|e| e == &epochs[0]),
            "round {round}: {epochs:?}"
        );
    }
}
