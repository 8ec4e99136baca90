//! `rawloop ADDR`: the practical limit of the realtime benchmark. A minimal WebSocket broadcast
//! loop with no framework: tokio, tokio-tungstenite and a `broadcast` channel per room, nothing
//! else — no tokens, no cursor, no store, no JSON.
//!
//! - `GET /sub?room=NAME` (room `bench` when absent): the connection joins the room, is sent
//!   `{"type":"ready"}`, then gets every frame published to the room, written as it came.
//! - `GET /publish`: every text frame `ROOM<TAB>PAYLOAD` (or just `PAYLOAD`, for room `bench`) is
//!   written as `PAYLOAD` to every connection of the room.
//!
//! A subscriber that falls more than a room's capacity behind is closed (4008), which the load
//! generator counts as lost messages. Prints `listening on http://ADDR` when ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames a subscriber of the broadcast room may fall behind before it is cut off.
const BENCH_ROOM_CAPACITY: usize = 16_384;
/// The same for any other room (one per client in the many-channels scenario).
const ROOM_CAPACITY: usize = 256;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

fn room(rooms: &Rooms, name: &str) -> broadcast::Sender<Utf8Bytes> {
    let mut map = rooms.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(name.to_string())
        .or_insert_with(|| {
            let cap = if name == "bench" {
                BENCH_ROOM_CAPACITY
            } else {
                ROOM_CAPACITY
            };
            broadcast::channel(cap).0
        })
        .clone()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("rawloop: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let rooms = rooms.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, rooms).await {
                eprintln!("rawloop: connection: {e}");
            }
        });
    }
}

async fn serve(
    stream: TcpStream,
    rooms: Rooms,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    // A small read buffer (subscribers send nothing); writes are buffered until the flush that
    // ends each batch, so a batch of frames costs one write syscall.
    let cfg = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024);
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().to_string();
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(cfg)).await?;
    let (mut sink, mut source) = ws.split();
    if path.starts_with("/publish") {
        while let Some(msg) = source.next().await {
            match msg? {
                Message::Text(t) => {
                    let (name, payload) = t.split_once('\t').unwrap_or(("bench", t.as_str()));
                    // No subscriber is not an error for a broadcast.
                    let _ = room(&rooms, name).send(Utf8Bytes::from(payload));
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        return Ok(());
    }
    let name = path
        .split_once("room=")
        .map(|(_, r)| r.split('&').next().unwrap_or("bench"))
        .unwrap_or("bench")
        .to_string();
    let mut rx = room(&rooms, &name).subscribe();
    sink.send(Message::text(r#"{"type":"ready"}"#)).await?;
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(frame) => {
                    sink.feed(Message::Text(frame)).await?;
                    while let Ok(more) = rx.try_recv() {
                        sink.feed(Message::Text(more)).await?;
                    }
                    sink.flush().await?;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let close = CloseFrame { code: CloseCode::from(4008), reason: "slow consumer".into() };
                    sink.send(Message::Close(Some(close))).await?;
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            msg = source.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}
