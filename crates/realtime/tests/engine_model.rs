//! Property tests: the memory and SQLite engines against a model of the engine contract
//! (`realtime::testing::check_against_model`): random sequences of append batches, reads after
//! any id with and without channel filters, purges, and the position after every step.
//! 32 cases each by default; `PROPTEST_CASES=1000` for a longer run.

use std::sync::Arc;

use proptest::prelude::*;
use realtime::engine::{Engine, MemoryEngine, SqliteEngine};
use realtime::testing::{check_against_model, ModelOp, MODEL_CHANNELS};

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
    // PROPTEST_CASES overrides the count (ProptestConfig reads it for its default).
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn memory_engine_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        runtime().block_on(async {
            check_against_model(Arc::new(MemoryEngine::new()) as Arc<dyn Engine>, &ops).await;
        });
    }

    #[test]
    fn sqlite_engine_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        runtime().block_on(async {
            let engine = SqliteEngine::open(dir.path().join("model.db")).await.expect("open");
            let engine = Arc::new(engine) as Arc<dyn Engine>;
            check_against_model(engine.clone(), &ops).await;
            engine.close().await;
        });
    }
}
