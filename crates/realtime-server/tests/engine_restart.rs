//! The engine goes away in the middle of a stream and comes back: notifies fail clearly (503)
//! while it is down, succeed after, and subscribers end with every acknowledged event.

mod common;

use std::time::Duration;

use common::{page, PrivatePostgres, PrivateRedis, Server};
use realtime::testing::ws;
use serde_json::{json, Value};

const KEY: &str = "restart-key";

/// An engine server of the test's own that it can stop and start.
trait Restartable {
    fn url(&self) -> String;
    fn down(&mut self);
    fn up(&mut self);
}

impl Restartable for PrivatePostgres {
    fn url(&self) -> String {
        PrivatePostgres::url(self)
    }
    fn down(&mut self) {
        PrivatePostgres::down(self);
    }
    fn up(&mut self) {
        PrivatePostgres::up(self);
    }
}

impl Restartable for PrivateRedis {
    fn url(&self) -> String {
        PrivateRedis::url(self)
    }
    fn down(&mut self) {
        PrivateRedis::down(self);
    }
    fn up(&mut self) {
        PrivateRedis::up(self);
    }
}

/// Notifies `payload` once; answers the status (200, or 503 with a clear error).
async fn notify(http: &reqwest::Client, url: &str, payload: i64) -> u16 {
    let body =
        json!({"channel": {"contextid": 1, "component": "mod_r", "area": "x"}, "payload": payload});
    let res = http
        .post(format!("{url}/api/notify"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the node itself must keep answering: {e}"));
    let status = res.status().as_u16();
    if status != 200 {
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            body["error"]["code"], "engine_unavailable",
            "a clear error: {body}"
        );
    }
    status
}

/// 10 events, the engine down (3 tries), the engine up, until 20 acknowledged; the WebSocket
/// subscriber must end with exactly the acknowledged events, in order. Answers whether the
/// subscriber was told `not_recovered` on the way.
async fn restart_mid_stream(engine: &mut dyn Restartable) -> bool {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", KEY),
        ("REALTIME_ENGINE_URL", &engine.url()),
        ("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200"),
    ]);
    let http = reqwest::Client::new();
    let page = page(
        &http,
        &server.url,
        KEY,
        1,
        json!({"contextid": 1, "component": "mod_r", "area": "x"}),
    )
    .await;
    let mut sock = ws::connect(&server.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");

    let mut acked = Vec::new();
    for i in 0..10 {
        assert_eq!(notify(&http, &server.url, i).await, 200);
        acked.push(i);
    }
    // The subscriber has them before the engine goes (a store without persistence loses them).
    let (before, _) = ws::events(&mut sock, 10).await;
    engine.down();
    let mut refused = 0;
    for i in 10..13 {
        match notify(&http, &server.url, i).await {
            200 => acked.push(i),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0,
        "notifies while the engine is down are refused, not falsely acknowledged"
    );
    engine.up();
    let mut i = 13;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine never came back"
        );
        if notify(&http, &server.url, i).await == 200 {
            acked.push(i);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        i += 1;
    }
    let mut told = false;
    let mut got: Vec<i64> = before
        .iter()
        .map(|e| e["payload"].as_i64().expect("n"))
        .collect();
    while got.len() < acked.len() {
        let f = ws::frame(&mut sock).await;
        match f["type"].as_str() {
            Some("not_recovered") => told = true,
            Some("event") => got.push(f["event"]["payload"].as_i64().expect("n")),
            _ => {}
        }
    }
    assert_eq!(got, acked, "every acknowledged event, once, in order");
    told
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream_loses_no_acknowledged_event() {
    let mut pg = PrivatePostgres::start();
    let told = restart_mid_stream(&mut pg).await;
    assert!(
        !told,
        "PostgreSQL kept its data: the stream goes on without a recovery notice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence_is_told_and_loses_nothing_acknowledged_after() {
    let mut redis = PrivateRedis::start();
    let told = restart_mid_stream(&mut redis).await;
    assert!(told, "the subscriber was told that the store was lost");
}

/// A node started while PostgreSQL is down (both restarted together in a deploy) waits for it
/// and comes up with it, instead of exiting with "db error"; a database that does not exist is
/// still refused at once, with the server's own reason.
#[test]
fn a_node_started_while_postgres_is_down_comes_up_with_it() {
    let mut pg = PrivatePostgres::start();
    pg.down();
    let url = pg.url();
    let revive = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        pg.up();
        pg
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("REALTIME_ENGINE_URL", url.as_str())],
    );
    let pg = revive.join().expect("postgres restarts");
    let health = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(reqwest::get(format!("{}/healthz", server.url)))
        .expect("healthz answers");
    assert_eq!(health.status(), 200);
    server.terminate();

    let missing = url.replace("/postgres", "/no_such_database");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_realtime"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("REALTIME_ENGINE_URL", &missing)
        .output()
        .expect("realtime runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "the server's reason: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "a missing database is not waited for"
    );
    drop(pg);
}
