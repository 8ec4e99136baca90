//! Embedding the node in an axum application.
//!
//! - `GET /` is the application's own page: it renders the page config for its user
//!   ([`Realtime::page`]) into a tiny HTML page that imports the client from `/rt/realtime.js`.
//! - The client endpoints (`/ws`, `/sse`, `/poll`, `/send`, `/realtime.js`) are nested under
//!   `/rt` with [`Realtime::client_router`]: that is all browsers need.
//! - The application API (`/api/notify`, ...) is not mounted on the public listener: it is on
//!   a second listener bound to 127.0.0.1 with [`Realtime::api_router`], for scripts and other
//!   servers holding the API key. The application itself calls `rt.notify` in-process.
//! - A Rust handler for `mod_chat` runs as the sending user and notifies the channel.
//!
//! Run: `cargo run -p realtime --example embed`, open <http://127.0.0.1:3000/?user=7> in two
//! tabs (any user id) and send messages.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use realtime::engine::MemoryEngine;
use realtime::{random_hex, Channel, Config, HandlerError, Realtime, Secret, UserId};
use serde_json::{json, Value};

/// The one channel of this example: the messages of chat room 1.
fn room() -> realtime::Result<Channel> {
    Channel::new(1, "mod_chat", "messages", 1, "")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    let api_key = random_hex(16);
    config.auth.api_keys = vec![api_key.clone()];
    // The memory engine keeps this example self-contained; a real application would use
    // `realtime::engine::SqliteEngine` (feature `sqlite`) or `realtime_postgres`.
    let engine = Arc::new(MemoryEngine::new());
    // A real application keeps its secret (`Secret::from_text`): tokens outlive a restart.
    let rt = Realtime::start(config, Secret::generate().0, engine).await?;

    // Pages send `{"text": ...}` to `mod_chat`; the handler runs as the sender (`ctx.user`,
    // from their verified user token), tells everyone in the room, and answers the sender.
    let node = rt.clone();
    rt.handle("mod_chat", move |ctx, payload: Value| {
        let node = node.clone();
        async move {
            let Some(text) = payload["text"].as_str().filter(|t| !t.is_empty()) else {
                return Err(HandlerError::bad_request("send {\"text\": \"...\"}"));
            };
            let channel = room().map_err(|e| HandlerError::internal(e.to_string()))?;
            let id = node
                .notify(&channel, &json!({"from": ctx.user, "text": text}))
                .await
                .map_err(|e| HandlerError::internal(e.to_string()))?;
            Ok(json!({"sent": id.get()}))
        }
    });

    let app = Router::new()
        .route("/", get(page))
        .with_state(rt.clone())
        .nest("/rt", rt.client_router());
    let public = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let internal = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("open http://127.0.0.1:3000/?user=7 (and ?user=8 in another tab)");
    println!(
        "the API is on the internal listener only: curl -H 'Authorization: Bearer {api_key}' \
         http://127.0.0.1:3001/api/status"
    );

    // Both listeners stop on ctrl-c; cancelling the node's token ends the open streams (see
    // the graceful_shutdown example for the hardened loop with a bounded drain).
    let cancel = rt.shutdown_token().clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
    let stop = rt.shutdown_token().clone();
    let api = axum::serve(internal, rt.api_router())
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let web = axum::serve(public, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .into_future();
    let (web, api) = tokio::join!(web, api);
    web?;
    api?;
    rt.shutdown().await;
    Ok(())
}

/// The application's page: who the user is would come from its session; here `?user=N`.
async fn page(
    State(rt): State<Realtime>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let user = query.get("user").and_then(|u| u.parse().ok()).unwrap_or(42);
    // Where the page reaches the client endpoints: this host, under `/rt`.
    let url = format!("{}/rt", rt.public_url(&headers));
    let config = match room() {
        Ok(channel) => match UserId::new(user) {
            Ok(user) => rt.page(user, &[channel], url).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let config = match config.map(|c| serde_json::to_string(&c)) {
        Ok(Ok(json)) => json,
        // The page is told little; the cause goes to the application's log.
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => return e.into_response(),
    };
    // `<` escaped: the JSON cannot close the script element.
    let config = config.replace('<', "\\u003c");
    Html(format!(
        r#"<!doctype html>
<meta charset="utf-8"><title>realtime: embed</title>
<p>User {user}. <input id="text" placeholder="message"> <button id="send">Send</button></p>
<ul id="log"></ul>
<script type="module">
import * as Realtime from '/rt/realtime.js';
const log = text => document.getElementById('log').append(Object.assign(document.createElement('li'), {{textContent: text}}));
Realtime.subscribe(Realtime.EVENT, e => log(`user ${{e.payload.from}}: ${{e.payload.text}}`));
Realtime.subscribe(Realtime.CONNECTION_LOST, () => log('(connection lost)'));
Realtime.init({config});
document.getElementById('send').onclick = async () => {{
  const input = document.getElementById('text');
  try {{ await Realtime.sendToServer('mod_chat', {{text: input.value}}); input.value = ''; }}
  catch (e) {{ log(`(not sent: ${{e.message}})`); }}
}};
</script>
"#
    ))
    .into_response()
}
