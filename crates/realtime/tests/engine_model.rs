//! Property tests: the memory and SQLite engines against a model of the engine contract
//! (`realtime::testing::check_against_model`): random sequences of append batches, reads after
//! any id with and without channel filters, purges, and the position after every step.
//! 32 cases each by default; `PROPTEST_CASES=1000` for a longer run.

use std::sync::Arc;

use proptest::prelude::*;
use realtime::engine::{Engine, MemoryEngine};
use realtime::testing::{check_against_model, model_config, model_op};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn memory_engine_matches_the_model(ops in prop::collection::vec(model_op(), 1..40)) {
        runtime().block_on(async {
            check_against_model(Arc::new(MemoryEngine::new()) as Arc<dyn Engine>, &ops).await;
        });
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_engine_matches_the_model(ops in prop::collection::vec(model_op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let engine = realtime::engine::SqliteEngine::open(dir.path().join("model.db")).await.expect("open");
            let engine = Arc::new(engine) as Arc<dyn Engine>;
            check_against_model(engine.clone(), &ops).await;
            engine.close().await;
        });
    }
}
