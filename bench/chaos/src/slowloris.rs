//! Slowloris connections: each dribbles a request head to a live node, one byte a second, and
//! starts again on another node when the server closes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;

/// One slowloris connection at a time, until the run ends.
pub(crate) async fn slowloris(shared: Arc<Shared>) {
    let head = b"GET /healthz HTTP/1.1\r\nHost: chaos\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    while !shared.end.is_cancelled() {
        let Some(url) = shared.nodes.pick() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let addr = url.trim_start_matches("http://").to_string();
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        shared.counters.slow_opened.fetch_add(1, Ordering::Relaxed);
        shared.counters.slow_open.fetch_add(1, Ordering::Relaxed);
        let mut sink = [0u8; 512];
        let mut i = 0;
        let closed_by_server = loop {
            if shared.end.is_cancelled() {
                break false;
            }
            // The header never ends: after the fixed part, the same byte again and again.
            let b = head.get(i).copied().unwrap_or(b'a');
            i += 1;
            if s.write_all(&[b]).await.is_err() {
                break true;
            }
            tokio::select! {
                _ = shared.end.cancelled() => break false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                r = s.read(&mut sink) => {
                    // An answer (408, 400…) or a close: the server let go of it.
                    let _ = r;
                    break true;
                }
            }
        };
        shared.counters.slow_open.fetch_sub(1, Ordering::Relaxed);
        if closed_by_server {
            shared.counters.slow_cut.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
