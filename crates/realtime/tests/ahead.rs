//! A cursor ahead of the engine's head (issue 9, item 6). A data dir restored from a backup has
//! the same epoch and a lower head: the ids above it are handed out again, to other events. A
//! client holding a cursor from before the restore must be told `recovered: false` and then
//! receive the events that now carry those ids — on every transport — not be told that nothing
//! was missed while its cursor skips them.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{channel, config, sse, ws, TestServer};
use realtime::engine::SqliteEngine;
use serde_json::{json, Value};

const FILES: [&str; 3] = ["realtime.db", "realtime.db-wal", "realtime.db-shm"];

/// A server on the SQLite file in `data` (which outlives it: the server gets a scratch dir of
/// its own to drop).
async fn start(data: &Path) -> TestServer {
    let engine = Arc::new(
        SqliteEngine::open(data.join("realtime.db"))
            .await
            .expect("sqlite opens"),
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    TestServer::start_with(config(|_| {}), engine, scratch).await
}

/// Copies the SQLite file (and its WAL, when there is one) from `from` to `to`, replacing
/// what `to` had: a backup taken, or restored.
fn copy_db(from: &Path, to: &Path) {
    for f in FILES {
        let target = to.join(f);
        if target.exists() {
            std::fs::remove_file(&target).expect("remove");
        }
        let source = from.join(f);
        if source.exists() {
            std::fs::copy(&source, &target).expect("copy");
        }
    }
}

/// Three events, a backup, three more (the client's cursor is after them), then the backup is
/// restored and a server started on it. Returns the server (head 3), the page, and the
/// client's cursor (at id 6, of the same epoch).
async fn restored_server(data: &Path) -> (TestServer, Value, Value) {
    let ch = channel("mod_x", "restore", 0);
    let backup = tempfile::tempdir().expect("tempdir");

    let server = start(data).await;
    let page = server.page(2, json!([ch])).await;
    for n in 1..=3 {
        server.notify(ch.clone(), json!({"n": n})).await;
    }
    server.stop().await;
    copy_db(data, backup.path());

    let server = start(data).await;
    for n in 4..=6 {
        server.notify(ch.clone(), json!({"n": n})).await;
    }
    let events = server.collect(&page, 6).await;
    let ids: Vec<i64> = events.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    let epoch = page["cursor"]
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .map(|(e, _)| e.to_string())
        .expect("a cursor");
    let later = Value::String(format!("{epoch}:6"));
    server.stop().await;

    copy_db(backup.path(), data);
    let server = start(data).await;
    assert_eq!(server.head().await, 3, "the restored store's head");
    (server, page, later)
}

fn epoch_of(cursor: &Value) -> String {
    cursor
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .map(|(e, _)| e.to_string())
        .expect("a cursor")
}

/// Two events after the restore: they take ids 4 and 5 again.
async fn notify_reused(server: &TestServer) -> Vec<i64> {
    let ch = channel("mod_x", "restore", 0);
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.push(server.notify(ch.clone(), json!({"after": n})).await);
    }
    assert_eq!(
        ids,
        vec![4, 5],
        "the restored store hands ids 4 and 5 out again"
    );
    ids
}

#[tokio::test]
async fn poll_with_a_cursor_ahead_of_the_head_is_not_recovered_and_gets_the_reused_ids() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, page, later) = restored_server(data.path()).await;
    let (status, body) = server.poll(&page, &later).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["events"], json!([]));
    let cursor = body["cursor"].clone();
    assert_eq!(cursor, Value::String(format!("{}:3", epoch_of(&later))));

    notify_reused(&server).await;
    let mut got = Vec::new();
    let mut cursor = cursor;
    while got.len() < 2 {
        let (status, body) = server.poll(&page, &cursor).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovered"], true, "{body}");
        for e in body["events"].as_array().expect("events") {
            got.push((e["id"].clone(), e["payload"]["after"].clone()));
        }
        cursor = body["cursor"].clone();
    }
    assert_eq!(got, vec![(json!(4), json!(1)), (json!(5), json!(2))]);
    server.stop().await;
}

#[tokio::test]
async fn sse_with_a_cursor_ahead_of_the_head_is_not_recovered_and_gets_the_reused_ids() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, page, later) = restored_server(data.path()).await;
    let mut stream = sse::open(&server.url, &sse::query(&page, Some(&later)), None).await;
    assert_eq!(stream.status, 200);
    let first = stream.record().await.expect("a record");
    assert_eq!(first.event.as_deref(), Some("not_recovered"), "{first:?}");
    assert_eq!(
        first.id.as_deref(),
        Some(format!("{}:3", epoch_of(&later)).as_str())
    );

    notify_reused(&server).await;
    let (events, last) = stream.events(2).await;
    let ids: Vec<Value> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, vec![json!(4), json!(5)]);
    assert_eq!(events[0]["payload"]["after"], 1);
    assert_eq!(last, format!("{}:5", epoch_of(&later)));
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn websocket_with_a_cursor_ahead_of_the_head_is_not_recovered_and_gets_the_reused_ids() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, page, later) = restored_server(data.path()).await;
    let mut socket = ws::connect(&server.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &later)).await;
    let first = ws::frame(&mut socket).await;
    assert_eq!(first["type"], "not_recovered", "{first}");
    assert_eq!(
        first["cursor"],
        Value::String(format!("{}:3", epoch_of(&later)))
    );

    notify_reused(&server).await;
    let (events, cursor) = ws::events(&mut socket, 2).await;
    let ids: Vec<Value> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, vec![json!(4), json!(5)]);
    assert_eq!(cursor, Value::String(format!("{}:5", epoch_of(&later))));
    drop(socket);
    server.stop().await;
}

/// The practice `docs/deploy.md` recommends after a restore: with every process stopped, the
/// epoch row deleted (`DELETE FROM meta WHERE key = 'epoch'`, as `sqlite3` runs it), so that
/// the next start makes a new one. A client that comes back only after the restored store has
/// handed out ids past its cursor — which the head check alone cannot tell from a client that
/// saw them — is still told `recovered: false`, and resumes from there.
#[tokio::test]
async fn a_new_epoch_after_the_restore_tells_a_cursor_the_store_has_passed() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, page, later) = restored_server(data.path()).await;
    server.stop().await;
    let db = rusqlite::Connection::open(data.path().join("realtime.db")).expect("open");
    db.execute("DELETE FROM meta WHERE key = 'epoch'", [])
        .expect("delete the epoch");
    drop(db);

    let server = start(data.path()).await;
    let ch = channel("mod_x", "restore", 0);
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(server.notify(ch.clone(), json!({"after": n})).await);
    }
    assert_eq!(ids, vec![4, 5, 6, 7], "past the client's cursor (6)");
    let (status, body) = server.poll(&page, &later).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovered"], false, "{body}");
    assert_eq!(body["events"], json!([]));
    let mut cursor = body["cursor"].clone();
    let renewed = epoch_of(&cursor);
    assert_ne!(renewed, epoch_of(&later), "a new epoch");
    // From the node's head (7, or less while its tail has not read them all), every later
    // event once.
    let from = cursor
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .and_then(|(_, id)| id.parse::<i64>().ok())
        .expect("a cursor");
    assert!((3..=7).contains(&from), "{cursor}");
    let next = server.notify(ch, json!({"after": 5})).await;
    let mut got = Vec::new();
    while got.last() != Some(&next) {
        let (status, body) = server.poll(&page, &cursor).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["recovered"], true, "{body}");
        for e in body["events"].as_array().expect("events") {
            got.push(e["id"].as_i64().expect("an id"));
        }
        cursor = body["cursor"].clone();
    }
    assert_eq!(got, ((from + 1)..=next).collect::<Vec<_>>());
    server.stop().await;
}
