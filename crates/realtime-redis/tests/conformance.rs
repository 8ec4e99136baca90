//! The Redis engine against the shared conformance suite, each engine under a key prefix of its
//! own (deleted afterwards), and the epoch change a Redis restart without persistence causes.

use std::sync::Arc;

use realtime::engine::Engine;
use realtime::testing::{engine_conformance, new_event};
use realtime::EventId;
use realtime_redis::{delete_prefix, RedisEngine};

fn base_url() -> String {
    std::env::var("REALTIME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("rt_test_{}", realtime::secret::random_hex(6))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_conforms() {
    let prefixes = std::sync::Mutex::new(Vec::new());
    engine_conformance(|| async {
        let p = prefix();
        prefixes.lock().expect("lock").push(p.clone());
        let url = format!("{}?prefix={p}", base_url());
        Arc::new(
            RedisEngine::connect(&url)
                .await
                .expect("Redis on 127.0.0.1:6379"),
        ) as Arc<dyn Engine>
    })
    .await;
    for p in prefixes.into_inner().expect("lock") {
        delete_prefix(&base_url(), &p).await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_gets_a_new_epoch_and_reads_of_it_fail_until_noticed() {
    let p = prefix();
    let url = format!("{}?prefix={p}", base_url());
    let engine = RedisEngine::connect(&url).await.expect("connect");
    engine
        .append(vec![new_event("mod_e", "x", 0, "1")])
        .await
        .expect("append");
    let before = engine.position().await.expect("position");
    // What a restart without persistence does to the keys.
    delete_prefix(&base_url(), &p).await.expect("delete");
    let other = RedisEngine::connect(&url).await.expect("another node");
    other
        .append(vec![new_event("mod_e", "x", 0, "2")])
        .await
        .expect("append after the loss");
    // The first engine must not take the new store's event for one of the old epoch.
    assert!(
        engine.read(EventId(0), None, 10).await.is_err(),
        "a read across an epoch change fails"
    );
    let after = engine.position().await.expect("position");
    assert_ne!(after.epoch, before.epoch, "a lost store has a new epoch");
    assert_eq!(
        engine
            .read(EventId(0), None, 10)
            .await
            .expect("read in the new epoch")
            .len(),
        1
    );
    delete_prefix(&base_url(), &p).await.expect("cleanup");
}
