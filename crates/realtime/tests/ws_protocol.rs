//! WebSocket protocol errors close as RFC 6455 (7.4.1) says (issue 9): 1002 for an unmasked
//! client frame, reserved bits or an unknown opcode, 1007 for a text frame that is not UTF-8.
//! Raw frames over a TCP socket after a real upgrade, before and after the subscribe frame.

mod served;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use served::{channel, config, Served};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A real upgrade, by hand; the socket is left right after the 101's headers.
async fn upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("handshake sent");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A client frame: FIN, `rsv` bits, `opcode`, masked (or not) with a fixed key.
fn frame(opcode: u8, rsv: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut out = vec![0x80 | (rsv << 4) | opcode];
    let key = [0x11u8, 0x22, 0x33, 0x44];
    out.push(if masked { 0x80 } else { 0 } | payload.len() as u8);
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close; its code (`None`: closed without a close frame).
async fn close_code(s: &mut TcpStream) -> Option<u16> {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.ok()?;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                len = u64::from(u16::from_be_bytes(l));
            } else if len == 127 {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                len = u64::from_be_bytes(l);
            }
            let mut payload = vec![0u8; usize::try_from(len).ok()?];
            s.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0f == 0x8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closes in time")
}

fn subscribe(page: &Value) -> Vec<u8> {
    let f = realtime::testing::ws::subscribe_frame(page, &page["cursor"]).to_string();
    // Longer than a 7-bit length: sent with a 16-bit length.
    let key = [1u8, 2, 3, 4];
    let mut out = vec![0x81, 0x80 | 126];
    out.extend_from_slice(&u16::try_from(f.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&key);
    out.extend(f.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_bad_utf8_with_1007() {
    let s = Served::start(config(|_| {})).await;
    let page = s.page(3, json!([channel("mod_a", "frames")])).await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "an unmasked frame",
            frame(0x1, 0, false, b"{\"type\":\"ping\"}"),
            1002,
        ),
        (
            "reserved bits",
            frame(0x1, 0b100, true, b"{\"type\":\"ping\"}"),
            1002,
        ),
        ("an unknown opcode", frame(0x3, 0, true, b"x"), 1002),
        (
            "a text frame that is not UTF-8",
            frame(0x1, 0, true, b"{\"a\":\"\xff\xfe\"}"),
            1007,
        ),
    ];
    for subscribed in [false, true] {
        for (what, bytes, code) in &cases {
            let mut sock = upgrade(s.addr).await;
            if subscribed {
                sock.write_all(&subscribe(&page))
                    .await
                    .expect("subscribe sent");
            }
            sock.write_all(bytes).await.expect("frame sent");
            assert_eq!(
                close_code(&mut sock).await,
                Some(*code),
                "{what} (after subscribe: {subscribed})"
            );
        }
    }
    s.stop().await;
}
