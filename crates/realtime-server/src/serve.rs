//! `realtime serve`: bind (with a large backlog), print `listening on http://ADDR:PORT` (and
//! `metrics on …` / `api on …` before it when `metrics.listen` / `server.api_listen` are set),
//! serve with the library's hardened loop (timeouts, connection cap) until SIGTERM or ctrl-c,
//! then shut down in order: open long-polls answer at once, streams end, in-flight requests
//! finish or are dropped at the drain timeout, background tasks stop, the engine closes.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use realtime::{Realtime, ServeOptions};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    let metrics = metrics_route(&s.config.metrics.token)?;
    let engine = open_engine(&s).await?;
    let engine_name = engine.name();
    let listen = s.config.server.listen.clone();
    // The demo node's secret is derived from this one (docs/deploy.md, "The demo page").
    let secret = s.secret.clone();
    let rt = Realtime::start(s.config, s.secret, engine)
        .await
        .map_err(|e| e.to_string())?;
    let listener = bind(&listen).await?;
    let addr = local(&listener)?;
    tracing::info!(%addr, engine = engine_name, "realtime started");
    let mut app = rt.router();
    let mut extra = Vec::new();
    let metrics_listen = rt.config().metrics.listen.clone();
    if metrics_listen.is_empty() {
        app = app.merge(metrics);
    } else {
        let l = bind(&metrics_listen).await?;
        println!("metrics on http://{}/metrics", local(&l)?);
        extra.push((l, metrics));
    }
    let setting = rt.config().server.demo.clone();
    let demo = if demo::enabled(&setting, &addr) {
        let d = demo::start(&rt, &secret, &s.data_dir, setting == "auto").await?;
        app = app.merge(d.router.clone());
        eprintln!("realtime: the demo page is at http://{addr}/demo (a node of its own: its tokens work nowhere else; server.demo = off to remove it)");
        Some(d)
    } else {
        None
    };
    let api_listen = rt.config().server.api_listen.clone();
    if !api_listen.is_empty() {
        let l = bind(&api_listen).await?;
        println!("api on http://{}", local(&l)?);
        extra.push((l, rt.router()));
    }
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
    extra.insert(0, (listener, app));
    // The demo node's streams end with the main node's, at the signal.
    let demo_cancel = demo.as_ref().map(|d| d.rt.shutdown_token().clone());
    let signal = async move {
        shutdown_signal().await;
        if let Some(c) = demo_cancel {
            c.cancel();
        }
    };
    let served = run(extra, rt, signal).await;
    if let Some(d) = demo {
        d.rt.shutdown().await;
    }
    served
}

async fn bind(addr: &str) -> Result<TcpListener, String> {
    realtime::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))
}

fn local(listener: &TcpListener) -> Result<std::net::SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("reading the bound address: {e}"))
}

/// Serves each router on its listener until `shutdown` completes, then drains, all within
/// `server.drain_timeout_ms`: the node's token fires first (long-polls answer, SSE streams
/// end, WebSockets close with 1012), the listeners close, requests in flight may finish until
/// the drain timeout and are dropped after it; then the node's tasks and the engine stop (given
/// what is left of the drain timeout, and at least [`ENGINE_CLOSE_MIN`]).
pub(crate) async fn run(
    listeners: Vec<(TcpListener, axum::Router)>,
    rt: Realtime,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let cancel = rt.shutdown_token().clone();
    let drain = Duration::from_millis(rt.config().server.drain_timeout_ms);
    let options = ServeOptions::from_config(rt.config());
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let deadline = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        // Ends open long-polls (they answer with their cursor), SSE streams and WebSockets,
        // so the drain is quick.
        cancel.cancel();
        signal.cancel();
        Instant::now() + drain
    });
    let mut servers = Vec::new();
    for (listener, app) in listeners {
        let stop = stop.clone();
        servers.push(tokio::spawn(realtime::serve(
            listener,
            app,
            options.clone(),
            stop.cancelled_owned(),
        )));
    }
    for server in servers {
        let finished = server.await.map_err(|e| format!("server task: {e}"))?;
        finished.map_err(|e| format!("serving: {e}"))?;
    }
    let deadline = deadline
        .await
        .map_err(|e| format!("shutdown task: {e}"))?
        .max(Instant::now() + ENGINE_CLOSE_MIN);
    if tokio::time::timeout_at(deadline, rt.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than the drain timeout");
    }
    Ok(())
}

/// The least time the node's tasks and the engine get to stop after the HTTP drain, even when
/// that used the whole drain timeout (acknowledged events are durable already; this lets the
/// SQLite writer finish its queue).
const ENGINE_CLOSE_MIN: Duration = Duration::from_secs(1);

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

/// `GET /metrics` in Prometheus format, from a recorder installed for this process. With
/// `token` (`metrics.token`), it asks for `Authorization: Bearer <token>`; without, anyone who
/// reaches the listener can read it: serve it on `metrics.listen`, an internal address, or keep
/// it from the public (see docs/deploy.md).
fn metrics_route(token: &str) -> Result<axum::Router, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    let expected: Option<Arc<str>> =
        (!token.is_empty()).then(|| Arc::from(format!("Bearer {token}")));
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let handle = handle.clone();
            let expected = expected.clone();
            async move {
                if let Some(expected) = expected {
                    let given = headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes())
                        .unwrap_or_default();
                    if !constant_time_eq(given, expected.as_bytes()) {
                        return realtime::Error::Unauthorized {
                            code: "unauthorized",
                            message: "/metrics needs the metrics token (Authorization: Bearer)"
                                .into(),
                        }
                        .into_response();
                    }
                }
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    ))
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
