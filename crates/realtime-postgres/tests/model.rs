//! Property test: the PostgreSQL engine against a model of the engine contract
//! (`realtime::testing::check_against_model`), a scratch database per case. 32 cases by
//! default; `PROPTEST_CASES=N` for a longer run.

use std::sync::Arc;

use proptest::prelude::*;
use realtime::engine::Engine;
use realtime::testing::{check_against_model, model_config, model_op};
use realtime_postgres::testing::ScratchDatabase;
use realtime_postgres::PostgresEngine;

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn postgres_engine_matches_the_model(ops in prop::collection::vec(model_op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let db = ScratchDatabase::create().await;
            let engine = PostgresEngine::connect(&db.url).await.expect("connect");
            let engine = Arc::new(engine) as Arc<dyn Engine>;
            check_against_model(engine.clone(), &ops).await;
            engine.close().await;
            drop(db);
        });
    }
}
