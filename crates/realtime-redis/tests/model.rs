//! Property test: the Redis engine against a model of the engine contract
//! (`realtime::testing::check_against_model`), a key prefix per case (deleted afterwards).
//! 32 cases by default; `PROPTEST_CASES=N` for a longer run.

use std::sync::Arc;

use proptest::prelude::*;
use realtime::engine::Engine;
use realtime::testing::{check_against_model, model_config, model_op};
use realtime_redis::{delete_prefix, RedisEngine};

fn base_url() -> String {
    std::env::var("REALTIME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn redis_engine_matches_the_model(ops in prop::collection::vec(model_op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let prefix = format!("rt_test_{}", realtime::random_hex(6));
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
