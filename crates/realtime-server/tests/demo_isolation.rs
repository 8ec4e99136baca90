//! The demo never mints a credential usable elsewhere, and is not public by accident (issue 9,
//! item 5). Before, `/demo` handed anyone a user-1 token of the real node: it worked on
//! `/send` (the application's webhook received a correctly signed message from user 1), on
//! every transport, and on `/demo/events` without bound (21 requests → 21,000 durable events).

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::Router;
use common::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

const KEY: &str = "demo-isolation-key";

fn page_config(html: &str) -> Value {
    let marker = r#"id="realtime-page-config">"#;
    let start = html.find(marker).expect("the config element") + marker.len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end].replace("<\\/", "</")).expect("config JSON")
}

/// The application's webhook: records every request it receives.
async fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: String| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(body);
                axum::Json(json!({"from": "the application"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

/// A server whose application has a webhook for `tool_realtime` (the demo's component) and
/// for `mod_app`.
fn server(dir: &tempfile::TempDir, hook: &str) -> Server {
    let config = dir.path().join("realtime.toml");
    std::fs::write(
        &config,
        format!("[webhooks.components]\ntool_realtime = \"{hook}\"\nmod_app = \"{hook}\"\n"),
    )
    .expect("write config");
    let data = dir.path().join("data");
    Server::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
        ],
        // Short long-polls: an empty poll of the demo answers within a second.
        &[
            ("REALTIME_API_KEY", KEY),
            ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "1"),
        ],
    )
}

#[tokio::test]
async fn the_demos_credentials_are_refused_by_the_real_endpoints_and_webhooks_see_nothing() {
    let (hook, seen) = webhook().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = server(&dir, &hook);
    let http = reqwest::Client::new();
    let html = http
        .get(format!("{}/demo", server.url))
        .send()
        .await
        .expect("demo")
        .text()
        .await
        .expect("html");
    let config = page_config(&html);
    assert_eq!(config["url"], format!("{}/demo", server.url));
    let ut = config["usertoken"].as_str().expect("usertoken").to_string();
    let sub = config["subscriptions"][0].clone();
    let poll_body = json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": config["cursor"]});

    // The real /send, for the demo's component and for the application's: refused.
    for component in ["tool_realtime", "mod_app"] {
        let res = http
            .post(format!("{}/send", server.url))
            .bearer_auth(&ut)
            .json(&json!({"component": component, "payload": {"n": 1}}))
            .send()
            .await
            .expect("send");
        assert!(
            [401, 403].contains(&res.status().as_u16()),
            "{component}: {}",
            res.status()
        );
    }
    // The real /poll and /sse: refused.
    let res = http
        .post(format!("{}/poll", server.url))
        .bearer_auth(&ut)
        .json(&poll_body)
        .send()
        .await
        .expect("poll");
    assert!(
        [401, 403].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    let query = realtime::testing::sse::query(&config, None);
    let res = http
        .get(format!("{}/sse?{query}", server.url))
        .send()
        .await
        .expect("sse");
    assert!(
        [401, 403].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    // The real /ws: the subscribe is refused, the socket closed with 4001.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{}/ws", server.url.replacen("http", "ws", 1)))
            .await
            .expect("ws");
    let frame = realtime::testing::ws::subscribe_frame(&config, &config["cursor"]);
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            frame.to_string(),
        ))
        .await
        .expect("subscribe sent");
    let mut refused = None;
    while let Some(Ok(m)) = socket.next().await {
        match m {
            tokio_tungstenite::tungstenite::Message::Close(c) => {
                refused = c.map(|c| u16::from(c.code));
                break;
            }
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_ne!(v["type"], "recovered", "{v}");
                assert_ne!(v["type"], "not_recovered", "{v}");
            }
            _ => {}
        }
    }
    assert_eq!(refused, Some(4001));

    // The demo's own endpoints take them; its sends are answered by the built-in echo.
    let res = http
        .post(format!("{}/demo/poll", server.url))
        .bearer_auth(&ut)
        .json(&poll_body)
        .send()
        .await
        .expect("poll");
    assert_eq!(res.status(), 200);
    let answer: Value = http
        .post(format!("{}/demo/send", server.url))
        .bearer_auth(&ut)
        .json(&json!({"component": "tool_realtime", "payload": {"n": 2}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["response"]["echo"], json!({"n": 2}), "{answer}");
    // Only the demo's component: the application's is not there.
    let res = http
        .post(format!("{}/demo/send", server.url))
        .bearer_auth(&ut)
        .json(&json!({"component": "mod_app", "payload": {"n": 3}}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403);

    // The other way: a real page's tokens are refused by the demo's endpoints.
    let real: Value = http
        .post(format!("{}/api/page", server.url))
        .bearer_auth(KEY)
        .json(&json!({"user": 1, "channels": [{"contextid": 1, "component": "tool_realtime", "area": "test"}]}))
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    let res = http
        .post(format!("{}/demo/send", server.url))
        .bearer_auth(real["usertoken"].as_str().expect("usertoken"))
        .json(&json!({"component": "tool_realtime", "payload": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 403);
    // A real send still reaches the webhook (so its silence above means something).
    let res = http
        .post(format!("{}/send", server.url))
        .bearer_auth(real["usertoken"].as_str().expect("usertoken"))
        .json(&json!({"component": "mod_app", "payload": "real"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "the webhook saw demo traffic: {seen:?}");
    assert!(seen[0].contains("\"real\""), "{seen:?}");

    // Demo events go to the demo's own store, not the application's engine.
    let status: Value = http
        .get(format!("{}/api/status", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let head_before = status["head"].clone();
    let res = http
        .post(format!("{}/demo/events", server.url))
        .bearer_auth(&ut)
        .json(&json!({"count": 3, "runid": "r"}))
        .send()
        .await
        .expect("run");
    assert_eq!(res.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status: Value = http
        .get(format!("{}/api/status", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status["head"], head_before,
        "demo events in the real engine"
    );
    assert!(dir.path().join("data/demo.db").exists());
    server.terminate();
}

#[tokio::test]
async fn demo_runs_are_bounded() {
    let (dir, mut server) = Server::fresh(&[("REALTIME_API_KEY", KEY)]);
    let http = reqwest::Client::new();
    let html = http
        .get(format!("{}/demo", server.url))
        .send()
        .await
        .expect("demo")
        .text()
        .await
        .expect("html");
    let ut = page_config(&html)["usertoken"]
        .as_str()
        .expect("usertoken")
        .to_string();
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..21 {
        let res = http
            .post(format!("{}/demo/events", server.url))
            .bearer_auth(&ut)
            .json(&json!({"count": 1000, "delay_ms": 10, "runid": format!("flood-{i}")}))
            .send()
            .await
            .expect("run");
        match res.status().as_u16() {
            202 => accepted += 1,
            429 => {
                limited += 1;
                let wait: u64 = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a Retry-After in seconds");
                assert!(wait >= 1);
                let body: Value = res.json().await.expect("json");
                assert!(
                    ["rate_limited", "demo_busy"]
                        .contains(&body["error"]["code"].as_str().unwrap_or("")),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (1..=3).contains(&accepted),
        "{accepted} runs of 1000 accepted"
    );
    assert_eq!(accepted + limited, 21);
    server.terminate();
    drop(dir);
}

#[tokio::test]
async fn with_auto_a_proxied_request_gets_no_demo() {
    let (dir, mut server) = Server::fresh(&[("REALTIME_API_KEY", KEY)]);
    let http = reqwest::Client::new();
    let direct = http
        .get(format!("{}/demo", server.url))
        .send()
        .await
        .expect("demo");
    assert_eq!(direct.status(), 200);
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "rt.example.com"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        for path in ["/demo", "/demo/realtime.js", "/demo/time"] {
            let res = http
                .get(format!("{}{path}", server.url))
                .header(name, value)
                .send()
                .await
                .expect("demo");
            assert_eq!(res.status(), 404, "{path} with {name}");
        }
    }
    // The real endpoints do not care.
    let res = http
        .get(format!("{}/healthz", server.url))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
    server.terminate();
    drop(dir);
}
