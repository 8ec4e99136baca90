//! A real server for tests: the library's router on a random loopback port, over a real
//! SQLite file in a temporary directory (the memory engine without the `sqlite` feature), and a small HTTP client that speaks to it as an
//! application and as a page would.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;

#[cfg(feature = "sqlite")]
use realtime::engine::SqliteEngine;
use realtime::{Config, Realtime, Secret};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub const API_KEY: &str = "test-api-key";

pub struct TestServer {
    pub url: String,
    pub rt: Realtime,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    task: JoinHandle<()>,
}

/// Settings for tests: short poll timeout, quick checks; `tweak` changes more.
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.auth.api_keys = vec![API_KEY.into()];
    c.poll.request_timeout_secs = 2;
    c.engine.check_interval_ms = 200;
    tweak(&mut c);
    c
}

pub fn secret() -> Secret {
    Secret::from_text("test-secret-0123456789abcdef").expect("a valid secret")
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        // SQLite when the crate has it, else the memory engine.
        #[cfg(feature = "sqlite")]
        let engine = Arc::new(
            SqliteEngine::open(dir.path().join("realtime.db"))
                .await
                .expect("sqlite opens"),
        );
        #[cfg(not(feature = "sqlite"))]
        let engine = Arc::new(realtime::engine::MemoryEngine::new());
        Self::start_with(config, engine, dir).await
    }

    pub async fn start_with(
        config: Config,
        engine: Arc<dyn realtime::engine::Engine>,
        dir: tempfile::TempDir,
    ) -> TestServer {
        let rt = Realtime::start(config, secret(), engine)
            .await
            .expect("realtime starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = rt.router();
        let token = rt.shutdown_token().clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        TestServer {
            url,
            rt,
            dir,
            http: reqwest::Client::new(),
            task,
        }
    }

    pub async fn stop(self) {
        self.rt.shutdown().await;
        let _ = self.task.await;
    }

    /// POSTs JSON with the API key; answers (status, body as JSON or Null).
    pub async fn api(&self, path: &str, body: Value) -> (u16, Value) {
        self.post(path, Some(API_KEY), body.to_string()).await
    }

    /// POSTs a raw body with an optional bearer token.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: String) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body read");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A page config for `user` and `channels`, asserting success.
    pub async fn page(&self, user: i64, channels: Value) -> Value {
        let (status, page) = self
            .api("/api/page", json!({"user": user, "channels": channels}))
            .await;
        assert_eq!(status, 200, "page: {page}");
        page
    }

    pub async fn notify(&self, channel: Value, payload: Value) -> i64 {
        let (status, body) = self
            .api(
                "/api/notify",
                json!({"channel": channel, "payload": payload}),
            )
            .await;
        assert_eq!(status, 200, "notify: {body}");
        body["id"].as_i64().expect("an id")
    }

    /// The engine's head, as `/api/status` tells it.
    pub async fn head(&self) -> i64 {
        let res = self
            .http
            .get(format!("{}/api/status", self.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("status");
        let body: Value = res.json().await.expect("json");
        body["head"].as_i64().expect("head")
    }

    /// One poll as the page would send it, from `cursor`.
    pub async fn poll(&self, page: &Value, cursor: &Value) -> (u16, Value) {
        let subs: Vec<Value> = page["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
            .collect();
        let body = json!({"subscriptions": subs, "cursor": cursor});
        self.post("/poll", page["usertoken"].as_str(), body.to_string())
            .await
    }

    /// Polls until `n` events have arrived (or 10 s pass); returns them.
    pub async fn collect(&self, page: &Value, n: usize) -> Vec<Value> {
        let mut cursor = page["cursor"].clone();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while events.len() < n && tokio::time::Instant::now() < deadline {
            let (status, body) = self.poll(page, &cursor).await;
            assert_eq!(status, 200, "poll: {body}");
            assert_eq!(body["recovered"], true, "poll: {body}");
            events.extend(body["events"].as_array().expect("events").iter().cloned());
            cursor = body["cursor"].clone();
        }
        events
    }
}

pub fn channel(component: &str, area: &str, itemid: i64) -> Value {
    json!({"contextid": 1, "component": component, "area": area, "itemid": itemid, "details": ""})
}

#[allow(unused_imports)]
pub use realtime::testing::{sse, ws};
