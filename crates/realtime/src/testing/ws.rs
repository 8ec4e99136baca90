//! A WebSocket client that speaks the protocol, for tests.
#![allow(missing_docs, clippy::missing_panics_doc)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(base: &str) -> Socket {
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

pub fn subscribe_frame(page: &Value, cursor: &Value) -> Value {
    let subs: Vec<Value> = page["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
        .collect();
    json!({"type": "subscribe", "usertoken": page["usertoken"], "subscriptions": subs, "cursor": cursor})
}

pub async fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("frame sent");
}

/// What the next read gave.
#[derive(Debug)]
pub enum Next {
    Frame(Value),
    Closed(Option<u16>),
    Timeout,
}

/// The next text frame or the close, within `wait` in all (pings and pongs, skipped, do not
/// extend it: a server that pings more often than `wait` still times out).
pub async fn next(ws: &mut Socket, wait: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Next::Timeout,
            Ok(None) | Ok(Some(Err(_))) => return Next::Closed(None),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Next::Frame(serde_json::from_str(&t).expect("JSON frame"))
            }
            Ok(Some(Ok(Message::Close(c)))) => return Next::Closed(c.map(|c| u16::from(c.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

pub async fn frame(ws: &mut Socket) -> Value {
    match next(ws, Duration::from_secs(10)).await {
        Next::Frame(f) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Reads until `n` event frames arrived; returns (events, last cursor).
pub async fn events(ws: &mut Socket, n: usize) -> (Vec<Value>, Value) {
    let mut out = Vec::new();
    let mut cursor = Value::Null;
    while out.len() < n {
        let f = frame(ws).await;
        if f["type"] == "event" {
            cursor = f["cursor"].clone();
            out.push(f["event"].clone());
        }
    }
    (out, cursor)
}

pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}
