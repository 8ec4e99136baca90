//! The short form of the chaos soak, for `cargo test`: 3 nodes of the real `realtime` binary
//! (built by cargo, debug profile) on a private PostgreSQL, then on a private Redis; 150
//! clients; 20 s of kills, an engine restart, stalled readers and slowloris connections. Each
//! engine's run must lose nothing acknowledged, duplicate nothing and stay under the memory
//! bound. The two runs take turns: the machine has two cores.

use std::path::PathBuf;

use chaos::{build_realtime, EngineKind, Options};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn realtime_bin() -> PathBuf {
    // target/<profile>/deps/short-HASH -> target/<profile>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target/<profile>/deps directory");
    build_realtime(profile_dir).expect("cargo builds the realtime binary")
}

async fn soak(engine: EngineKind) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let report = chaos::run(Options::short(engine, realtime_bin()))
        .await
        .expect("the soak runs");
    println!("{report}");
    assert!(report.kills >= 3, "nodes were killed: {report}");
    assert_eq!(report.engine_restarts, 1, "the engine was restarted");
    assert!(
        report.clients >= 140,
        "the clients rendered their pages: {report}"
    );
    assert!(
        report.connections.iter().all(|n| *n > 0),
        "every transport was used: {report}"
    );
    assert!(report.passed(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_postgres() {
    soak(EngineKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_redis() {
    soak(EngineKind::Redis).await;
}
