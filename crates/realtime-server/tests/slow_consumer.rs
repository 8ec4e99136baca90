//! A WebSocket client that stops reading is cut off, the server's memory stays bounded, and the
//! other clients keep receiving. Measured on the real binary, so its memory is its own.

mod common;

use std::time::Duration;

use common::{page, rss_kib, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribed(url: &str, page: &Value) -> Socket {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/ws", url.replacen("http", "ws", 1)))
            .await
            .expect("connect");
    let sub = &page["subscriptions"][0];
    let frame = json!({"type": "subscribe", "usertoken": page["usertoken"], "cursor": page["cursor"],
        "subscriptions": [{"channel": sub["channel"], "token": sub["token"]}]});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("subscribe");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_off_and_memory_stays_bounded() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_WEBSOCKET_WRITE_TIMEOUT_MS", "500"),
        ("REALTIME_HUB_CACHE_EVENTS", "50"),
        ("REALTIME_LIMITS_PAYLOAD_BYTES", "131072"),
    ]);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_a", "area": "x"});
    let page = page(&http, &server.url, "k", 1, channel.clone()).await;

    let mut slow = subscribed(&server.url, &page).await;
    let mut good = subscribed(&server.url, &page).await;
    let notify = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|_| json!({"channel": channel, "payload": "y".repeat(100_000)}))
            .collect();
        let req = http
            .post(format!("{}/api/notify", server.url))
            .bearer_auth("k")
            .json(&json!({"events": items}));
        async move { assert_eq!(req.send().await.expect("notify").status(), 200) }
    };
    // Warm up (allocator arenas, SQLite cache), then measure.
    notify(10).await;
    let mut got = 0;
    let next_event = async |ws: &mut Socket| loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).expect("json");
                if f["type"] == "event" {
                    return f["event"]["id"].as_i64().expect("id");
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the good reader lost its connection: {other:?}"),
        }
    };
    while got < 10 {
        next_event(&mut good).await;
        got += 1;
    }
    let before = rss_kib(server.child.id());

    // 1,000 more events of 100 KB (100 MB): far more than the socket buffers hold for `slow`, so a
    // server that kept them for it would grow by about that much.
    let producer = async {
        for _ in 0..100 {
            notify(10).await;
        }
    };
    let consumer = async {
        let mut last = 0;
        for _ in 0..1000 {
            let id = next_event(&mut good).await;
            assert!(id > last, "in order, once");
            last = id;
        }
    };
    tokio::join!(producer, consumer);
    let after = rss_kib(server.child.id());
    let growth_mib = after.saturating_sub(before) / 1024;
    println!(
        "server RSS: {} MiB before, {} MiB after 100 MB to one good and one stalled reader",
        before / 1024,
        after / 1024
    );

    let mut slow_events = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(20), slow.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.contains("\"type\":\"event\"") {
                    slow_events += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => break None,
            Err(_) => panic!("the stalled reader was never cut off"),
        }
    };
    println!("stalled reader: {slow_events} events before the cut, close code {ended:?}");
    assert!(
        slow_events < 1010,
        "the stalled reader was cut off before the end"
    );
    // What it holds is the hub's cache (50 events, JSON and frame), SQLite's page caches and the
    // allocator's slack: well under half of what went by.
    assert!(
        growth_mib < 50,
        "server memory grew by {growth_mib} MiB while 100 MB went by"
    );
}
