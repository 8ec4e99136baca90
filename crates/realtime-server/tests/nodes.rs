//! Several `realtime serve` nodes over one engine (PostgreSQL, then Redis), no sticky sessions: a notify on
//! one node reaches WebSocket, SSE and poll clients on the others; polls that hop between nodes
//! get every event once, in order; sendToServer works through any node; a node killed with
//! SIGKILL loses no acknowledged event for clients that move to another node.

mod common;

use std::time::Duration;

use common::{page, poll, Server};
use realtime::testing::{sse, ws};
use realtime_postgres::testing::ScratchDatabase;
use serde_json::{json, Value};

const KEY: &str = "nodes-key";
const SECRET: &str = "nodes-secret-0123456789abcdef";

async fn webhook() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            axum::Json(json!({"echo": body["payload"], "user": body["user"]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn node(dir: &std::path::Path, n: usize, engine: &str, config: &std::path::Path) -> Server {
    let data = dir.join(format!("node{n}"));
    Server::start(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ],
        &[
            ("REALTIME_API_KEY", KEY),
            ("REALTIME_SECRET", SECRET),
            ("REALTIME_ENGINE_URL", engine),
            ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "2"),
        ],
    )
}

async fn notify(http: &reqwest::Client, url: &str, from: usize, n: usize) -> Vec<i64> {
    let items: Vec<Value> = (from..from + n)
        .map(|i| json!({"channel": {"contextid": 1, "component": "mod_n", "area": "x"}, "payload": i}))
        .collect();
    let res = http
        .post(format!("{url}/api/notify"))
        .bearer_auth(KEY)
        .json(&json!({"events": items}))
        .send()
        .await
        .expect("notify");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("id"))
        .collect()
}

fn payloads(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_one_postgres_database() {
    let db = ScratchDatabase::create().await;
    three_nodes(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_one_redis() {
    let base = std::env::var("REALTIME_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("rt_test_{}", realtime::random_hex(6));
    three_nodes(&format!("{base}?prefix={prefix}")).await;
    realtime_redis::delete_prefix(&base, &prefix)
        .await
        .expect("cleanup");
}

async fn three_nodes(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("realtime.toml");
    std::fs::write(
        &config,
        format!("[webhooks.components]\nmod_n = \"{}\"\n", webhook().await),
    )
    .expect("config");
    let mut nodes: Vec<Server> = (0..3)
        .map(|n| node(dir.path(), n, engine, &config))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = reqwest::Client::new();

    // The page is rendered through node 0; its clients connect to nodes 1 and 2.
    let page = page(
        &http,
        &urls[0],
        KEY,
        42,
        json!({"contextid": 1, "component": "mod_n", "area": "x"}),
    )
    .await;
    let mut wsock = ws::connect(&urls[1]).await;
    ws::send(&mut wsock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut wsock).await["type"], "recovered");
    let mut stream = sse::open(&urls[2], &sse::query(&page, Some(&page["cursor"])), None).await;
    assert_eq!(stream.status, 200);

    notify(&http, &urls[0], 0, 20).await;
    let (got, _) = ws::events(&mut wsock, 20).await;
    assert_eq!(
        payloads(&got),
        (0..20).collect::<Vec<_>>(),
        "WebSocket on node 1"
    );
    let (got, _) = stream.events(20).await;
    assert_eq!(payloads(&got), (0..20).collect::<Vec<_>>(), "SSE on node 2");

    // A poller whose every request goes to another node.
    let mut cursor = page["cursor"].clone();
    let mut polled = Vec::new();
    let mut hop = 0;
    notify(&http, &urls[1], 20, 10).await;
    while polled.len() < 30 {
        let body = poll(&http, &urls[hop % 3], &page, &cursor).await;
        assert_eq!(body["recovered"], true, "{body}");
        polled.extend(payloads(body["events"].as_array().expect("events")));
        cursor = body["cursor"].clone();
        hop += 1;
    }
    assert_eq!(
        polled,
        (0..30).collect::<Vec<_>>(),
        "polls across nodes: every event once, in order"
    );

    // Send to server through each node.
    for url in &urls {
        let answer: Value = http
            .post(format!("{url}/send"))
            .bearer_auth(page["usertoken"].as_str().expect("ut"))
            .json(&json!({"component": "mod_n", "payload": {"via": url}}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["response"]["echo"]["via"], url.as_str());
        assert_eq!(answer["response"]["user"], 42);
    }

    // Node 1 dies mid-stream (SIGKILL); its WebSocket client moves to node 2 with its cursor.
    let (got, _) = ws::events(&mut wsock, 10).await;
    assert_eq!(payloads(&got), (20..30).collect::<Vec<_>>());
    let burst = {
        let (http, url) = (http.clone(), urls[0].clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0..10 {
                acked.extend(notify(&http, &url, 30 + b * 5, 5).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    let (first, last_cursor) = ws::events(&mut wsock, 12).await;
    nodes[1].child.kill().expect("kill -9");
    let acked = burst.await.expect("burst");
    assert_eq!(acked.len(), 50);
    let mut moved = ws::connect(&urls[2]).await;
    ws::send(&mut moved, ws::subscribe_frame(&page, &last_cursor)).await;
    assert_eq!(ws::frame(&mut moved).await["type"], "recovered");
    let (rest, _) = ws::events(&mut moved, 50 - first.len()).await;
    let all = [payloads(&first), payloads(&rest)].concat();
    assert_eq!(
        all,
        (30..80).collect::<Vec<_>>(),
        "every acknowledged event, once, after moving node"
    );
    drop(nodes);
}
