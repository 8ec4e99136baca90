//! Serving with the library's hardened loop ([`realtime::serve`]: header, idle and body
//! timeouts, a connection cap, a bounded drain) and shutting down right on ctrl-c or SIGTERM:
//!
//! 1. the signal arrives: cancel the node's token, so that long-polls answer with their
//!    cursor, SSE streams end and WebSockets close with 1012 (clients reconnect elsewhere);
//! 2. `serve` closes the listener and lets requests in flight finish, for at most
//!    `server.drain_timeout_ms`, then returns;
//! 3. `rt.shutdown()` stops the node's tasks and closes the engine.
//!
//! Run: `cargo run -p realtime --example graceful_shutdown`, open a stream as it prints, then
//! press ctrl-c (or `kill -TERM`): the stream ends and the process exits within the drain.

use std::sync::Arc;

use realtime::engine::MemoryEngine;
use realtime::{bind, serve, Config, Realtime, Secret, ServeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.server.drain_timeout_ms = 5_000;
    let api_key = realtime::random_hex(16);
    config.auth.api_keys = vec![api_key.clone()];
    let engine = Arc::new(MemoryEngine::new());
    let rt = Realtime::start(config, Secret::generate().0, engine).await?;

    // `bind` sets the socket options `serve` expects (SO_REUSEADDR, a large backlog).
    let listener = bind("127.0.0.1:8787").await?;
    let options = ServeOptions::from_config(rt.config());
    println!(
        "serving on http://127.0.0.1:8787 (pid {})",
        std::process::id()
    );
    println!("  a page config: curl -H 'Authorization: Bearer {api_key}' -d '{{\"user\": 42, \"channels\": [{{\"contextid\": 1, \"component\": \"mod_a\", \"area\": \"x\", \"itemid\": 0}}]}}' http://127.0.0.1:8787/api/page");
    println!("  then ctrl-c or kill -TERM {}", std::process::id());

    let cancel = rt.shutdown_token().clone();
    let shutdown = async move {
        signal().await;
        println!("shutting down: streams end, requests in flight drain");
        // First, before the server drains: otherwise open streams hold the drain to its end.
        cancel.cancel();
    };
    serve(listener, rt.router(), options, shutdown).await?;
    rt.shutdown().await;
    println!("stopped");
    Ok(())
}

/// Ctrl-c, or SIGTERM (what `docker stop` and systemd send) on Unix.
async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
