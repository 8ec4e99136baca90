//! The two routers of a node (issue 11): the client endpoints for browsers and the application
//! API for servers, mounted apart — here on two listeners, as an embedder protecting the API on
//! an internal address would — sharing one node and its limits.

mod common;

use std::sync::Arc;

use common::{channel, config, secret, API_KEY};
use realtime::engine::MemoryEngine;
use realtime::Realtime;
use serde_json::{json, Value};

/// Serves `app` on a random loopback port; its base URL.
async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    url
}

async fn post(url: &str, bearer: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(url)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn client_and_api_routers_mounted_apart_serve_only_their_own_endpoints() {
    let rt = Realtime::start(config(|_| {}), secret(), Arc::new(MemoryEngine::new()))
        .await
        .expect("starts");
    // The API on one listener (an internal one, in production), the client endpoints nested
    // under a path of the application's own router on another.
    let api = listen(rt.api_router()).await;
    let app = listen(axum::Router::new().nest("/rt", rt.client_router())).await;

    let ch = channel("mod_x", "apart", 0);
    let (status, page) = post(
        &format!("{api}/api/page"),
        API_KEY,
        json!({"user": 3, "channels": [ch]}),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (status, body) = post(
        &format!("{api}/api/notify"),
        API_KEY,
        json!({"channel": ch, "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].clone();

    // The page polls the client router: the event notified through the API router arrives.
    let subs: Vec<Value> = page["subscriptions"]
        .as_array()
        .expect("subs")
        .iter()
        .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
        .collect();
    let (status, answer) = post(
        &format!("{app}/rt/poll"),
        page["usertoken"].as_str().expect("usertoken"),
        json!({"subscriptions": subs, "cursor": page["cursor"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"][0]["id"], id);

    // Each router serves only its own endpoints: 404 in the protocol's error shape.
    let (status, body) = post(
        &format!("{app}/rt/api/notify"),
        API_KEY,
        json!({"channel": ch, "payload": 2}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = post(
        &format!("{api}/poll"),
        page["usertoken"].as_str().expect("usertoken"),
        json!({"subscriptions": subs}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let js = reqwest::get(format!("{app}/rt/realtime.js"))
        .await
        .expect("GET realtime.js");
    assert_eq!(js.status().as_u16(), 200);
    let js = reqwest::get(format!("{api}/realtime.js"))
        .await
        .expect("GET realtime.js");
    assert_eq!(js.status().as_u16(), 404);
    rt.shutdown().await;
}
