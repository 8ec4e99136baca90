//! Notifying from a background task while serving: a tokio interval ticks every two seconds
//! and notifies a channel; every page subscribed to it gets the event, whatever transport it
//! is on. The node is cheap to clone: hand a clone to each task that notifies.
//!
//! Run: `cargo run -p realtime --example background_notify`, open <http://127.0.0.1:3000/>.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use realtime::engine::MemoryEngine;
use realtime::{Channel, Config, Realtime, Secret, UserId};
use serde_json::json;

fn clock() -> realtime::Result<Channel> {
    Channel::new(1, "mod_clock", "ticks", 0, "")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Arc::new(MemoryEngine::new());
    let rt = Realtime::start(Config::default(), Secret::generate().0, engine).await?;

    // The background task: it stops with the node (its shutdown token).
    let node = rt.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(2));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = node.shutdown_token().cancelled() => return,
            }
            n += 1;
            let channel = match clock() {
                Ok(c) => c,
                Err(e) => return eprintln!("bad channel: {e}"),
            };
            // A failure (the engine unavailable) is logged, and the next tick tries again.
            match node.notify(&channel, &json!({"tick": n})).await {
                Ok(id) => println!("tick {n} is event {}", id.get()),
                Err(e) => eprintln!("tick {n} not sent: {e}"),
            }
        }
    });

    let app = Router::new()
        .route("/", get(page))
        .with_state(rt.clone())
        .nest("/rt", rt.client_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("open http://127.0.0.1:3000/ (ctrl-c stops)");
    let cancel = rt.shutdown_token().clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // Ends the ticker and the open streams, so that axum's drain can finish.
            cancel.cancel();
        })
        .await?;
    ticker.await?;
    rt.shutdown().await;
    Ok(())
}

/// A page that lists the ticks it receives.
async fn page(State(rt): State<Realtime>, headers: HeaderMap) -> Response {
    let url = format!("{}/rt", rt.public_url(&headers));
    let config = match clock() {
        Ok(channel) => match UserId::new(42) {
            Ok(user) => rt.page(user, &[channel], url).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let config = match config.map(|c| serde_json::to_string(&c)) {
        Ok(Ok(json)) => json.replace('<', "\\u003c"),
        Ok(Err(e)) => return realtime::Error::Internal(e.to_string()).into_response(),
        Err(e) => return e.into_response(),
    };
    Html(format!(
        r#"<!doctype html>
<meta charset="utf-8"><title>realtime: background notify</title>
<ul id="log"></ul>
<script type="module">
import * as Realtime from '/rt/realtime.js';
Realtime.subscribe(Realtime.EVENT, e => document.getElementById('log')
  .append(Object.assign(document.createElement('li'), {{textContent: `tick ${{e.payload.tick}}`}})));
Realtime.init({config});
</script>
"#
    ))
    .into_response()
}
