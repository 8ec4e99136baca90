//! A store that goes back under a running node (issue 9, item 6, "same for Redis with
//! `appendfsync everysec`"): Redis restarts having lost its last writes, so its head is below
//! what the node already read, in the same epoch, and the lost ids are handed out again. A
//! connected client must be told `recovered: false` and then receive the events that now carry
//! those ids. The loss is made as the AOF would leave it: the last stream entries and the head
//! counter back to an earlier state.

mod common;

use std::process::Command;

use common::{page, poll, Server};
use realtime::testing::ws;
use serde_json::{json, Value};

const KEY: &str = "rewind-key";

fn redis(args: &[&str]) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
}

async fn notify(http: &reqwest::Client, url: &str, channel: &Value, payload: Value) -> i64 {
    let body: Value = http
        .post(format!("{url}/api/notify"))
        .bearer_auth(KEY)
        .json(&json!({"channel": channel, "payload": payload}))
        .send()
        .await
        .expect("notify")
        .json()
        .await
        .expect("json");
    body["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an id: {body}"))
}

#[tokio::test]
async fn a_redis_that_lost_its_last_writes_is_told_to_connected_clients() {
    let prefix = format!("rt_rewind_{}", realtime::random_hex(6));
    let engine_url = format!("redis://127.0.0.1:6379/?prefix={prefix}");
    let (_dir, mut server) = Server::fresh(&[
        ("REALTIME_API_KEY", KEY),
        ("REALTIME_ENGINE_URL", &engine_url),
        ("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200"),
    ]);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_x", "area": "rewind"});
    let page = page(&http, &server.url, KEY, 2, channel.clone()).await;
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");
    for n in 1..=5 {
        notify(&http, &server.url, &channel, json!({"before": n})).await;
    }
    let (events, cursor) = ws::events(&mut socket, 5).await;
    assert_eq!(events[4]["id"], 5);
    let epoch = cursor
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .map(|(e, _)| e.to_string())
        .expect("a cursor");

    // Redis comes back without its last two writes.
    // (The stream's last id goes back with them, as after replaying a shorter AOF.)
    redis(&["XDEL", &format!("{prefix}:events"), "0-4", "0-5"]);
    redis(&["XSETID", &format!("{prefix}:events"), "0-3"]);
    redis(&["SET", &format!("{prefix}:head"), "3"]);

    let frame = ws::frame(&mut socket).await;
    assert_eq!(frame["type"], "not_recovered", "{frame}");
    assert_eq!(frame["cursor"], json!(format!("{epoch}:3")));
    // A poll client holding the lost head is told too.
    let answer = poll(&http, &server.url, &page, &cursor).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["cursor"], json!(format!("{epoch}:3")));

    // Ids 4 and 5 again, for other events: the connected client gets them.
    for n in 1..=2 {
        notify(&http, &server.url, &channel, json!({"after": n})).await;
    }
    let (events, cursor) = ws::events(&mut socket, 2).await;
    let got: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e["id"].clone(), e["payload"]["after"].clone()))
        .collect();
    assert_eq!(got, vec![(json!(4), json!(1)), (json!(5), json!(2))]);
    assert_eq!(cursor, json!(format!("{epoch}:5")));

    drop(socket);
    server.terminate();
    for k in ["events", "head", "epoch", "floor"] {
        redis(&["DEL", &format!("{prefix}:{k}")]);
    }
}
