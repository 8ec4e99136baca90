//! Clients that do not read (issue 9, item 3): what they hold is bounded in bytes
//! (`limits.batch_bytes`, SSE chunks) and in time (`limits.write_timeout_ms`), on SSE and
//! long-poll; a client that reads gets every event, in order, once, across the cut batches.

mod served;

use std::time::Duration;

use serde_json::{json, Value};
use served::{channel, config, drain, poll_body, raw, rss_kib, Served, API_KEY};

const PAYLOAD: usize = 60 * 1024;

fn sse_request(page: &Value, cursor: &Value) -> String {
    let q = realtime::testing::sse::query(page, Some(cursor));
    format!("GET /sse?{q} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
}

/// The id of the last complete event record in the raw bytes of an SSE response (the piece
/// after the last blank line may be cut short).
fn last_id(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let records: Vec<&str> = text.split("\n\n").collect();
    records[..records.len().saturating_sub(1)]
        .iter()
        .rev()
        .find_map(|r| {
            r.lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_string)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sse_readers_hold_little_and_are_dropped_after_the_write_timeout() {
    let s = Served::start(config(|c| {
        c.limits.write_timeout_ms = 1_000;
        c.sse.heartbeat_ms = 200;
    }))
    .await;
    let ch = channel("mod_big", "stalled");
    let page = s.page(7, json!([ch])).await;
    // 600 events of 60 KB: 36 MB, which every stream used to copy into one buffer of its own.
    s.notify_large(&ch, 600, PAYLOAD).await;
    s.wait_head(600).await;

    let before = rss_kib();
    let mut streams = Vec::new();
    for _ in 0..15 {
        streams.push(raw(s.addr, &sse_request(&page, &page["cursor"])).await);
    }
    // Long enough for every stream to fill its socket and stall.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    eprintln!("15 stalled SSE readers: RSS grew by {grown_mib} MiB");
    assert!(
        grown_mib < 150,
        "15 stalled SSE readers grew the server by {grown_mib} MiB"
    );

    // After the write timeout each is dropped: the client reads what the kernel held, then EOF.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut resume_from = None;
    for st in &mut streams {
        let got = drain(st, Duration::from_secs(20))
            .await
            .expect("a stalled SSE stream is closed after the write timeout");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..text.len().min(200)]
        );
        resume_from = last_id(&got);
    }
    // The last stream resumes by Last-Event-ID and gets the rest, in order, once.
    let id = resume_from.expect("an event record arrived before the stream was dropped");
    let next: i64 = id
        .rsplit(':')
        .next()
        .and_then(|n| n.parse::<i64>().ok())
        .expect("id")
        + 1;
    let q = realtime::testing::sse::query(&page, None);
    let mut sse = realtime::testing::sse::open(&s.url, &q, Some(&id)).await;
    assert_eq!(sse.status, 200);
    let want = (600 - next + 1) as usize;
    let (events, _) = sse.events(want).await;
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, (next..=600).collect::<Vec<_>>());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answer_nobody_reads_is_dropped_after_the_write_timeout() {
    let s = Served::start(config(|c| {
        c.limits.write_timeout_ms = 1_000;
        // An answer far larger than what the kernel buffers between the two ends, so that
        // the server's write waits on a client that does not read.
        c.limits.batch_bytes = 32 * 1024 * 1024;
        // ... answered from the hub's cache (the engine's resume path reads a few MB at most).
        c.hub.cache_bytes = 256 * 1024 * 1024;
    }))
    .await;
    let ch = channel("mod_big", "poll");
    let page = s.page(8, json!([ch])).await;
    s.notify_large(&ch, 600, PAYLOAD).await;
    s.wait_head(600).await;
    let body = poll_body(&page, &page["cursor"]).to_string();
    let req = format!(
        "POST /poll HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        page["usertoken"].as_str().expect("usertoken"),
        body.len()
    );
    let mut conn = raw(s.addr, &req).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let got = drain(&mut conn, Duration::from_secs(20))
        .await
        .expect("the connection of an unread answer is closed after the write timeout");
    assert!(
        got.len() < 600 * PAYLOAD,
        "the whole answer ({} bytes) was delivered: the connection was not dropped",
        got.len()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_at_batch_bytes_and_the_reader_gets_everything_once() {
    let s = Served::start(config(|c| c.limits.batch_bytes = 1024 * 1024)).await;
    let ch = channel("mod_big", "cut");
    let page = s.page(9, json!([ch])).await;
    s.notify_large(&ch, 100, PAYLOAD).await;
    s.wait_head(100).await;

    // Long-poll: each answer is about 1 MiB, its cursor the last event in it.
    let mut cursor = page["cursor"].clone();
    let mut ids = Vec::new();
    let mut answers = 0;
    while ids.len() < 100 {
        let (status, _, body) = s
            .post(
                "/poll",
                page["usertoken"].as_str().expect("ut"),
                &poll_body(&page, &cursor),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().expect("events");
        assert!(
            !events.is_empty() && events.len() <= 17,
            "{} events in one answer",
            events.len()
        );
        let last = events.last().and_then(|e| e["id"].as_i64()).expect("id");
        assert!(body["cursor"]
            .as_str()
            .expect("cursor")
            .ends_with(&format!(":{last}")));
        ids.extend(events.iter().map(|e| e["id"].as_i64().expect("id")));
        cursor = body["cursor"].clone();
        answers += 1;
    }
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    assert!(answers >= 6, "100 × 60 KB came in {answers} answers");

    // SSE and WebSocket readers get the same 100, in order, once.
    let q = realtime::testing::sse::query(&page, Some(&page["cursor"]));
    let mut sse = realtime::testing::sse::open(&s.url, &q, None).await;
    let (events, _) = sse.events(100).await;
    let got: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    let mut ws = realtime::testing::ws::connect(&s.url).await;
    realtime::testing::ws::send(
        &mut ws,
        realtime::testing::ws::subscribe_frame(&page, &page["cursor"]),
    )
    .await;
    let first = realtime::testing::ws::frame(&mut ws).await;
    assert_eq!(first["type"], "recovered", "{first}");
    let (events, _) = realtime::testing::ws::events(&mut ws, 100).await;
    let got: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    let _ = API_KEY;
    s.stop().await;
}
