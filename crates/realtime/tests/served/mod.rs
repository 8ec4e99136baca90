//! A real server as the `realtime` binary serves it: the library's router behind a
//! `WriteTimeoutListener`, with the peer address handed over (`ConnectInfo<SocketAddr>`), on a
//! random loopback port over a real SQLite file (the memory engine without the `sqlite`
//! feature). Plus raw-socket helpers for clients that
//! misbehave (never read, send broken frames).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "sqlite")]
use realtime::engine::SqliteEngine;
use realtime::testing::internal::{PeerAddr, WriteTimeoutListener};
use realtime::{Config, Realtime, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub const API_KEY: &str = "test-api-key";

pub struct Served {
    pub url: String,
    pub addr: SocketAddr,
    pub rt: Realtime,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.auth.api_keys = vec![API_KEY.into()];
    c.poll.request_timeout_secs = 2;
    c.engine.check_interval_ms = 200;
    tweak(&mut c);
    c.validate().expect("a valid test config");
    c
}

impl Served {
    pub async fn start(config: Config) -> Served {
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
        let secret = Secret::from_text("test-secret-0123456789abcdef").expect("a valid secret");
        let write_timeout = Duration::from_millis(config.limits.write_timeout_ms);
        let rt = Realtime::start(config, secret, engine)
            .await
            .expect("realtime starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = rt
            .router()
            .into_make_service_with_connect_info::<PeerAddr>();
        let token = rt.shutdown_token().clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(WriteTimeoutListener::new(listener, write_timeout), app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Served {
            url: format!("http://{addr}"),
            addr,
            rt,
            http: reqwest::Client::new(),
            _dir: dir,
            task,
        }
    }

    pub async fn stop(self) {
        self.rt.shutdown().await;
        let _ = self.task.await;
    }

    /// POSTs JSON with a bearer; answers (status, Retry-After, body as JSON or Null).
    pub async fn post(
        &self,
        path: &str,
        bearer: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(bearer)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = res.text().await.expect("body read");
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    pub async fn page(&self, user: i64, channels: Value) -> Value {
        let (status, _, page) = self
            .post(
                "/api/page",
                API_KEY,
                &json!({"user": user, "channels": channels}),
                &[],
            )
            .await;
        assert_eq!(status, 200, "page: {page}");
        page
    }

    /// Notifies `n` events of `payload_bytes` each, in batches that fit a request.
    pub async fn notify_large(&self, channel: &Value, n: usize, payload_bytes: usize) {
        let text = "x".repeat(payload_bytes);
        let per_request = (3 * 1024 * 1024 / payload_bytes).max(1);
        let mut left = n;
        while left > 0 {
            let k = left.min(per_request);
            let events: Vec<Value> = (0..k)
                .map(|_| json!({"channel": channel, "payload": {"text": text}}))
                .collect();
            let (status, _, body) = self
                .post("/api/notify", API_KEY, &json!({"events": events}), &[])
                .await;
            assert_eq!(status, 200, "notify: {body}");
            left -= k;
        }
    }

    /// Waits until this node's hub has taken `id` from the engine.
    pub async fn wait_head(&self, id: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while realtime::testing::internal::hub(&self.rt).head().id.get() < id {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub never reached {id}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn channel(component: &str, area: &str) -> Value {
    json!({"contextid": 1, "component": component, "area": area, "itemid": 0, "details": ""})
}

/// The body of a poll as a page sends it.
pub fn poll_body(page: &Value, cursor: &Value) -> Value {
    let subs: Vec<Value> = page["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
        .collect();
    json!({"subscriptions": subs, "cursor": cursor})
}

/// A TCP connection that sent `request` and has not read a byte.
pub async fn raw(addr: SocketAddr, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes())
        .await
        .expect("request written");
    s
}

/// Reads everything until the server closes; `None` when it is still open after `wait`.
pub async fn drain(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| out)
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
