//! `realtime serve`: bind, print `listening on http://ADDR:PORT`, serve until SIGTERM or
//! ctrl-c, then shut down in order: open long-polls answer at once, in-flight requests finish,
//! background tasks stop, the engine closes — all within the drain timeout.

use std::io::Write;
use std::time::Duration;

use realtime::Realtime;
use tokio::net::TcpListener;

use crate::cli::{open_engine, setup};
use crate::settings::Env;
use crate::{datadir, demo, ServeArgs};

pub(crate) async fn main(args: ServeArgs, env: Env) -> Result<(), String> {
    let filter = env
        .iter()
        .find(|(k, _)| k == "RUST_LOG")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .map_err(|e| format!("RUST_LOG: {e}"))?,
        )
        .with_writer(std::io::stderr)
        .init();

    let mut s = setup(&args.common, &env, args.listen.as_deref())?;
    if s.config.auth.api_keys.is_empty() {
        let (key, path) = datadir::api_key(&s.data_dir)?;
        s.config.auth.api_keys.push(key);
        eprintln!(
            "realtime: the API key is in {} (set REALTIME_API_KEY to choose one)",
            path.display()
        );
    }
    // The recorder first, so that what the node registers at start is recorded.
    let metrics = metrics_route()?;
    let engine = open_engine(&s).await?;
    let engine_name = engine.name();
    let listen = s.config.server.listen.clone();
    let rt = Realtime::start(s.config, s.secret, engine)
        .await
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))?;
    tracing::info!(%addr, engine = engine_name, "realtime started");
    let mut app = rt.router().merge(metrics);
    let setting = rt.config().server.demo.clone();
    let demo = if demo::enabled(&setting, &addr) {
        let d = demo::start(&rt, &s.data_dir, setting == "auto").await?;
        app = app.merge(d.router.clone());
        eprintln!("realtime: the demo page is at http://{addr}/demo (a node of its own: its tokens work nowhere else; server.demo = off to remove it)");
        Some(d)
    } else {
        None
    };
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    let served = run(listener, rt, app, shutdown_signal()).await;
    if let Some(d) = demo {
        d.rt.shutdown().await;
    }
    served
}

/// Serves `rt` on `listener` until `shutdown` completes, then drains.
pub(crate) async fn run(
    listener: TcpListener,
    rt: Realtime,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let cancel = rt.shutdown_token().clone();
    let drain = Duration::from_millis(rt.config().server.drain_timeout_ms);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down");
        // Ends open long-polls (they answer with their cursor) so the drain is quick.
        cancel.cancel();
    });
    let served = tokio::spawn(async move { server.await });
    let finished = served.await.map_err(|e| format!("server task: {e}"))?;
    finished.map_err(|e| format!("serving: {e}"))?;
    if tokio::time::timeout(drain, rt.shutdown()).await.is_err() {
        tracing::warn!("shutdown took longer than the drain timeout");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `GET /metrics` in Prometheus format, from a recorder installed for this process. No
/// credential, like `/healthz`: keep it on the internal network (see docs/deploy.md).
fn metrics_route() -> Result<axum::Router, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    ))
}
