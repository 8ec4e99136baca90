//! Property test: the Redis engine against a model of the engine contract
//! (`realtime::testing::check_against_model`), a key prefix per case (deleted afterwards).
//! 32 cases by default; `PROPTEST_CASES=N` for a longer run.

use std::sync::Arc;

use proptest::prelude::*;
use realtime::engine::Engine;
use realtime::testing::{check_against_model, ModelOp, MODEL_CHANNELS};
use realtime_redis::{delete_prefix, RedisEngine};

fn base_url() -> String {
    std::env::var("REALTIME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => prop::collection::vec((0..MODEL_CHANNELS, any::<u32>()), 0..8).prop_map(ModelOp::Append),
        4 => (
            any::<u64>(),
            prop::option::of(prop::collection::vec(0..MODEL_CHANNELS, 0..3)),
            1usize..12,
        )
            .prop_map(|(after, channels, limit)| ModelOp::Read { after, channels, limit }),
        1 => any::<bool>().prop_map(ModelOp::Purge),
    ]
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn redis_engine_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let prefix = format!("rt_test_{}", realtime::secret::random_hex(6));
            let engine = RedisEngine::connect(&format!("{}?prefix={prefix}", base_url()))
                .await
                .expect("Redis on 127.0.0.1:6379");
            let engine = Arc::new(engine) as Arc<dyn Engine>;
            check_against_model(engine.clone(), &ops).await;
            engine.close().await;
            delete_prefix(&base_url(), &prefix).await.expect("cleanup");
        });
    }
}
