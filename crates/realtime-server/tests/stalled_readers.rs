//! Issue 9, item 3, on the release-shaped binary: SSE and long-poll clients that never read
//! (raw TCP) while 36 MB of large events wait for them. The server's RSS stays bounded (it
//! used to grow by a whole batch per client: 15 SSE readers took it from 114 MB to 1,059 MB),
//! and the SSE streams are dropped after `limits.write_timeout_ms`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{page, rss_kib, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "k";

async fn raw(addr: SocketAddr, request: String) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("request sent");
    s
}

/// Reads until the server closes; false when it is still open after `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_sse_and_poll_clients_keep_the_server_small_and_sse_ones_are_dropped() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", KEY),
        ("REALTIME_LIMITS_WRITE_TIMEOUT_MS", "3000"),
        ("REALTIME_SSE_HEARTBEAT_MS", "500"),
        ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "1"),
    ]);
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let http = reqwest::Client::new();
    let ch = json!({"contextid": 1, "component": "mod_big", "area": "stalled", "itemid": 0, "details": ""});
    let page = page(&http, &server.url, KEY, 1, ch.clone()).await;
    let text = "x".repeat(60 * 1024);
    for _ in 0..12 {
        let events: Vec<Value> = (0..50)
            .map(|_| json!({"channel": ch, "payload": {"text": text}}))
            .collect();
        let res = http
            .post(format!("{}/api/notify", server.url))
            .bearer_auth(KEY)
            .json(&json!({"events": events}))
            .send()
            .await
            .expect("notify");
        assert_eq!(res.status(), 200);
    }
    // The node has all 600 in its hub.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st: Value = http
            .get(format!("{}/api/status", server.url))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if st["hub"]["head"]
            .as_str()
            .is_some_and(|h| h.ends_with(":600"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub never took the events: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = rss_kib(server.child.id());
    let query = realtime::testing::sse::query(&page, Some(&page["cursor"]));
    let sub = &page["subscriptions"][0];
    let poll = json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": page["cursor"]}).to_string();
    let ut = page["usertoken"].as_str().expect("usertoken");
    let mut sse = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..15 {
        sse.push(
            raw(
                addr,
                format!("GET /sse?{query} HTTP/1.1\r\nHost: t\r\n\r\n"),
            )
            .await,
        );
        polls.push(
            raw(
                addr,
                format!(
                    "POST /poll HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ut}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{poll}",
                    poll.len()
                ),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = rss_kib(server.child.id());
    let grown = after.saturating_sub(before) / 1024;
    println!(
        "server RSS: {} MiB before, {} MiB with 15 stalled SSE and 15 stalled long-poll readers of 36 MB",
        before / 1024,
        after / 1024
    );
    assert!(
        grown < 150,
        "30 stalled readers grew the server by {grown} MiB"
    );

    // Past the write timeout every SSE stream has been dropped.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    for s in &mut sse {
        assert!(
            closed_within(s, Duration::from_secs(20)).await,
            "a stalled SSE stream was still open after the write timeout"
        );
    }
    drop(polls);
}
