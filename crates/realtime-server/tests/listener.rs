//! The HTTP listener under hostile clients, on the real binary with raw TCP clients: header,
//! idle and body timeouts, the connection cap and its reserve, the open-file limit, a shutdown
//! bounded by the drain timeout, and `/metrics` behind a token or on its own address. Short
//! timeouts keep the tests quick; waits are bounded generously and only behaviour is asserted.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{page, Server, BIN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Long enough for anything the server should do on a loaded machine.
const BOUND: Duration = Duration::from_secs(20);

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (or an error, such as a reset); `None` if it
/// is still open after `BOUND`.
async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// Reads one response (headers, then `content-length` bytes of body) from a connection that
/// stays open; `None` if it closes or fails first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    timeout(BOUND, async {
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return Some(text);
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a response in time")
}

/// `GET path` on an open connection; `None` if the connection fails first.
async fn try_get(stream: &mut TcpStream, path: &str) -> Option<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .ok()?;
    read_response(stream).await
}

async fn get(stream: &mut TcpStream, path: &str) -> String {
    try_get(stream, path).await.expect("a whole response")
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let (_dir, server) = Server::fresh(&[("REALTIME_SERVER_HEADER_TIMEOUT_MS", "1000")]);
    let mut stream = connect(&addr(&server)).await;
    let (mut reader, mut writer) = stream.split();
    // One byte every 100 ms: the headers would take far longer than the header timeout.
    let dribble = async {
        for b in b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: "
            .iter()
            .cycle()
        {
            if writer.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = timeout(BOUND, async {
        tokio::select! {
            () = read => {}
            () = dribble => { panic!("the dribble cannot end while the connection is open") }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a connection dribbling headers was held open"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));

    // A connection that sends nothing at all is closed too.
    let mut silent = connect(&addr(&server)).await;
    assert_eq!(read_to_close(&mut silent).await.as_deref(), Some(""));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (_dir, server) = Server::fresh(&[("REALTIME_SERVER_IDLE_TIMEOUT_MS", "1000")]);
    let mut stream = connect(&addr(&server)).await;
    let first = get(&mut stream, "/healthz").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Kept alive: a second request on the same connection is served.
    let second = get(&mut stream, "/healthz").await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // Then nothing: the server closes it.
    assert_eq!(read_to_close(&mut stream).await.as_deref(), Some(""));
}

#[tokio::test]
async fn a_stalled_chunked_body_is_answered_408_and_closed() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_SERVER_BODY_TIMEOUT_MS", "1000"),
    ]);
    let mut stream = connect(&addr(&server)).await;
    let chunk = r#"{"channel": {"contextid": 1, "#;
    let request = format!(
        "POST /api/notify HTTP/1.1\r\nhost: t\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // ... and the rest never comes.
    let answer = read_to_close(&mut stream)
        .await
        .expect("the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"body_timeout""#), "{answer}");
}

#[tokio::test]
async fn the_connection_cap_refuses_past_the_reserve_and_recovers() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_SERVER_MAX_CONNECTIONS", "2"),
        ("REALTIME_SERVER_RESERVE_CONNECTIONS", "1"),
    ]);
    let addr = addr(&server);
    let mut a = connect(&addr).await;
    let mut b = connect(&addr).await;
    assert!(get(&mut a, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(&mut b, "/healthz").await.starts_with("HTTP/1.1 200"));

    // At the cap: a new connection is a reserve connection, for the application's paths only.
    let mut c = connect(&addr).await;
    let browser = get(&mut c, "/realtime.js").await;
    assert!(browser.starts_with("HTTP/1.1 503"), "{browser}");
    assert!(
        browser.to_ascii_lowercase().contains("retry-after: "),
        "{browser}"
    );
    assert_eq!(read_to_close(&mut c).await.as_deref(), Some(""));
    // The application's paths are served on the reserve: an upload whose body is still on its
    // way holds the reserve's only place.
    // (The server may count `c` for a moment after its close reached us.)
    let mut d = timeout(BOUND, async {
        loop {
            let mut d = connect(&addr).await;
            let answer = try_get(&mut d, "/healthz").await.unwrap_or_default();
            if answer.starts_with("HTTP/1.1 200") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("/healthz is served on the reserve");
    d.write_all(b"POST /api/notify HTTP/1.1\r\nhost: t\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .expect("write");

    // Past the cap and the reserve: answered 503 at once, without reading, and closed.
    let mut e = connect(&addr).await;
    let refused = read_to_close(&mut e).await.expect("closed at once");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 5"), "{refused}");
    assert!(refused.contains("too_many_connections"), "{refused}");

    // The connections already in are still served.
    assert!(get(&mut a, "/healthz").await.starts_with("HTTP/1.1 200"));

    // Once they close, new connections are served again.
    drop((a, b, d));
    let http = reqwest::Client::new();
    let healthy = timeout(BOUND, async {
        loop {
            let res = http.get(format!("{}/realtime.js", server.url)).send().await;
            if matches!(&res, Ok(r) if r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(healthy.is_ok(), "the server did not serve browsers again");
}

#[tokio::test]
async fn streams_and_long_polls_outlive_the_timeouts() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_SERVER_HEADER_TIMEOUT_MS", "500"),
        ("REALTIME_SERVER_IDLE_TIMEOUT_MS", "500"),
        ("REALTIME_SERVER_BODY_TIMEOUT_MS", "500"),
        ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "3"),
    ]);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_l", "area": "x"});
    let p = page(&http, &server.url, "k", 1, channel.clone()).await;
    let sub = &p["subscriptions"][0];
    let usertoken = p["usertoken"].as_str().expect("usertoken");

    // A long-poll that waits 3 s (six idle timeouts) for nothing, then answers normally.
    let polled = http
        .post(format!("{}/poll", server.url))
        .bearer_auth(usertoken)
        .json(&json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": p["cursor"]}))
        .send()
        .await
        .expect("the poll is answered, not cut");
    assert_eq!(polled.status(), 200);
    let polled: Value = polled.json().await.expect("json");
    assert_eq!(polled["events"], json!([]));

    // An SSE stream and a WebSocket, quiet for 3 s, then an event arrives on each.
    let mut sse = connect(&addr(&server)).await;
    let query = format!(
        "usertoken={usertoken}&channel={}&token={}",
        sub["channel"].as_str().expect("hash"),
        sub["token"].as_str().expect("token")
    );
    sse.write_all(format!("GET /sse?{query} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let ws_url = format!("{}/ws", server.url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let subscribe = json!({"type": "subscribe", "usertoken": usertoken,
        "subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": p["cursor"]});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        subscribe.to_string(),
    ))
    .await
    .expect("subscribe");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let res = http
        .post(format!("{}/api/notify", server.url))
        .bearer_auth("k")
        .json(&json!({"channel": channel, "payload": {"late": "and-still-there"}}))
        .send()
        .await
        .expect("notify");
    assert_eq!(res.status(), 200);

    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let arrived = timeout(BOUND, async {
        while !String::from_utf8_lossy(&got).contains("and-still-there") {
            let n = sse.read(&mut buf).await.expect("read");
            assert!(n > 0, "the SSE stream was closed");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(arrived.is_ok(), "{}", String::from_utf8_lossy(&got));
    let event = timeout(BOUND, async {
        while let Some(frame) = ws.next().await {
            let text = frame.expect("frame").into_text().unwrap_or_default();
            if text.contains("and-still-there") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(event, Ok(true), "the WebSocket was closed");
}

#[tokio::test]
async fn sigterm_with_a_stalled_upload_exits_within_the_drain_timeout() {
    let (_dir, mut server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_SERVER_DRAIN_TIMEOUT_MS", "1000"),
        ("REALTIME_SERVER_BODY_TIMEOUT_MS", "600000"),
    ]);
    let mut stream = connect(&addr(&server)).await;
    stream
        .write_all(b"POST /api/notify HTTP/1.1\r\nhost: t\r\nauthorization: Bearer k\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"channel\":")
        .await
        .expect("write");
    // The request is in: the server is waiting for the rest of its body.
    let mut other = connect(&addr(&server)).await;
    assert!(get(&mut other, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    // `terminate` allows 10 s, well above the 1 s drain (the upload would hold it for ever).
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(read_to_close(&mut stream).await.is_some());
}

#[tokio::test]
async fn the_app_api_stays_reachable_at_the_open_file_limit() {
    // 256 descriptors: the cap becomes 64 connections plus a reserve of 64, leaving 128 for
    // everything else, so the server never reaches EMFILE however many clients come.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8").to_string();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {BIN} serve --listen 127.0.0.1:0 --data-dir {data}"
        ))
        .env("REALTIME_API_KEY", "k")
        .env("REALTIME_SERVER_HEADER_TIMEOUT_MS", "60000");
    let (server, _) = Spawned::start(cmd);
    let addr = server.url.trim_start_matches("http://").to_string();

    // 300 connections that send nothing and hold on.
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(connect(&addr).await);
    }
    // Refused ones were answered 503 without being read; admitted ones stay silent.
    let mut refused = 0;
    for s in &mut held {
        let mut first = [0u8; 12];
        if let Ok(Ok(n)) = timeout(Duration::from_millis(50), s.read(&mut first)).await {
            if first[..n].starts_with(b"HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "nothing was refused past the cap");

    // The application's paths still answer (on the reserve, freed by its short timeouts).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let notified = timeout(BOUND, async {
        loop {
            let health = http.get(format!("{}/healthz", server.url)).send().await;
            let notify = http
                .post(format!("{}/api/notify", server.url))
                .bearer_auth("k")
                .json(&json!({"channel": {"contextid": 1, "component": "mod_f", "area": "x"}, "payload": 1}))
                .send()
                .await;
            if matches!((&health, &notify), (Ok(h), Ok(n)) if h.status() == 200 && n.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        notified.is_ok(),
        "/healthz and /api/notify did not answer at the limit"
    );
    drop(held);
}

#[tokio::test]
async fn metrics_asks_for_its_token() {
    let (_dir, server) = Server::fresh(&[("REALTIME_METRICS_TOKEN", "metrics-secret")]);
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.url);
    let none = http.get(&url).send().await.expect("metrics");
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http.get(&url).bearer_auth("guess").send().await.expect("m");
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth("metrics-secret")
        .send()
        .await
        .expect("metrics");
    assert_eq!(right.status(), 200);
    assert!(right.text().await.expect("text").contains("realtime_"));
}

#[tokio::test]
async fn metrics_and_the_api_can_have_their_own_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8").to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
        .env("REALTIME_API_KEY", "k")
        .env("REALTIME_METRICS_LISTEN", "127.0.0.1:0")
        .env("REALTIME_SERVER_API_LISTEN", "127.0.0.1:0");
    let (server, lines) = Spawned::start(cmd);
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("a `{prefix}` line in {lines:?}"))
            .to_string()
    };
    let metrics = find("metrics on ");
    let api = find("api on ");
    let http = reqwest::Client::new();
    let main = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("main");
    assert_eq!(main.status(), 404, "/metrics left the main listener");
    let scraped = http.get(&metrics).send().await.expect("metrics");
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.expect("text").contains("realtime_"));
    let notified = http
        .post(format!("{api}/api/notify"))
        .bearer_auth("k")
        .json(
            &json!({"channel": {"contextid": 1, "component": "mod_a", "area": "x"}, "payload": 1}),
        )
        .send()
        .await
        .expect("api");
    assert_eq!(notified.status(), 200);
}

/// The binary started by a command of the test's own; the lines printed before `listening on`.
struct Spawned {
    child: std::process::Child,
    url: String,
}

impl Spawned {
    fn start(mut cmd: Command) -> (Spawned, Vec<String>) {
        cmd.stdout(Stdio::piped())
            .env_remove("REALTIME_SECRET")
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("realtime serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut before = Vec::new();
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            for line in lines.by_ref() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send((url.to_string(), before));
                    break;
                }
                before.push(line);
            }
            lines.for_each(drop);
        });
        let (url, lines) = rx.recv_timeout(BOUND).expect("a `listening on` line");
        (Spawned { child, url }, lines)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
