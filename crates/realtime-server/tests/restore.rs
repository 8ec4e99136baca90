//! A PostgreSQL or Redis store restored from a backup under running nodes (issue 10, item 6):
//! the store is back at an older head in the same epoch, and the ids above it are handed out
//! again, to other events. Every client holding a cursor from after the backup is told
//! `recovered: false` with the restored head — a WebSocket client of a node that was running
//! across the restore, a poll to that node, an SSE stream (with `Last-Event-ID`) to a node
//! started after it — and then receives the events that take those ids again.
//!
//! The backups are the engines' own: `pg_dump` and `pg_restore --clean` for PostgreSQL, a copy
//! of the RDB file written by `SAVE` put back before a restart for Redis. (SQLite, a copy of
//! the database file and its WAL, is in `crates/realtime/tests/ahead.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{page, poll, PrivateRedis, Server};
use realtime::testing::{sse, ws};
use realtime_postgres::testing::ScratchDatabase;
use serde_json::{json, Value};

const KEY: &str = "restore-key";
const SECRET: &str = "restore-secret-0123456789abcdef";
/// How long a step may wait before the test fails instead of hanging (not a timing assertion:
/// these steps take well under a second).
const PATIENCE: Duration = Duration::from_secs(60);

/// `f`, or a failure naming `what` after [`PATIENCE`].
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

/// A store that can be backed up and restored with its engine's own tools.
trait Restorable {
    /// The engine URL nodes use.
    fn url(&self) -> String;
    /// Takes a backup of the store as it is now.
    fn backup(&mut self);
    /// Puts the backup back, replacing what the store holds.
    fn restore(&mut self);
    /// Gives the store a new epoch with the engine's own tool, as `docs/deploy.md` says to
    /// after a restore, with the nodes stopped.
    fn new_epoch(&mut self);
}

/// Runs `program` with `args`; fails the test with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch database on the PostgreSQL at 127.0.0.1:5432, backed up with `pg_dump` (custom
/// format) and restored with `pg_restore --clean --if-exists --single-transaction` into the
/// same database while the nodes run, as an operator rolling a database back would.
struct Postgres {
    db: ScratchDatabase,
    dump: PathBuf,
}

impl Restorable for Postgres {
    fn url(&self) -> String {
        self.db.url.clone()
    }
    fn backup(&mut self) {
        let file = self.dump.to_str().expect("utf-8").to_string();
        run(
            "pg_dump",
            &["--format=custom", "--file", &file, &self.db.url],
        );
    }
    fn restore(&mut self) {
        let file = self.dump.to_str().expect("utf-8").to_string();
        run(
            "pg_restore",
            &[
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--dbname",
                &self.db.url,
                &file,
            ],
        );
    }
    fn new_epoch(&mut self) {
        run(
            "psql",
            &[
                &self.db.url,
                "--quiet",
                "--command",
                "UPDATE realtime_meta SET value = md5(random()::text) WHERE key = 'epoch'",
            ],
        );
    }
}

/// A Redis of the test's own that persists only on `SAVE`: the backup is a copy of the RDB
/// file `SAVE` wrote, and the restore stops Redis, puts that copy in place and starts it again
/// (it loads the file at start), as an operator restoring an RDB snapshot would.
struct Redis {
    server: PrivateRedis,
    backup: PathBuf,
}

impl Restorable for Redis {
    fn url(&self) -> String {
        self.server.url()
    }
    fn backup(&mut self) {
        run(
            "redis-cli",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.server.port.to_string(),
                "SAVE",
            ],
        );
        let rdb = self.server.rdb().expect("an RDB file");
        std::fs::copy(&rdb, &self.backup).expect("copy the RDB file");
    }
    fn restore(&mut self) {
        self.server.down();
        let rdb = self.server.rdb().expect("an RDB file");
        std::fs::copy(&self.backup, &rdb).expect("put the RDB file back");
        self.server.up();
    }
    fn new_epoch(&mut self) {
        // The URL has no `prefix`: the keys are `realtime:*`.
        run(
            "redis-cli",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.server.port.to_string(),
                "DEL",
                "realtime:epoch",
            ],
        );
    }
}

/// A node on `engine`, its data dir `dir/name`; all nodes share the secret and the API key.
fn node(dir: &Path, name: &str, engine: &str) -> Server {
    let data = dir.join(name);
    Server::start(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        &[
            ("REALTIME_API_KEY", KEY),
            ("REALTIME_SECRET", SECRET),
            ("REALTIME_ENGINE_URL", engine),
            ("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200"),
            ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "2"),
        ],
    )
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

fn epoch_of(cursor: &Value) -> String {
    cursor
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .map(|(e, _)| e.to_string())
        .unwrap_or_else(|| panic!("a cursor: {cursor}"))
}

/// Three events, a backup, three more (every client is then at id 6), the restore (head 3,
/// same epoch); every transport is told, then gets ids 4 and 5 when they are handed out again.
async fn restored_under_running_nodes(store: &mut dyn Restorable) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = store.url();
    let a = node(dir.path(), "a", &engine);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_x", "area": "restore"});
    let page = page(&http, &a.url, KEY, 2, channel.clone()).await;
    let mut socket = ws::connect(&a.url).await;
    ws::send(&mut socket, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut socket).await["type"], "recovered");
    for n in 1..=3 {
        notify(&http, &a.url, &channel, json!({"before": n})).await;
    }
    store.backup();
    for n in 4..=6 {
        notify(&http, &a.url, &channel, json!({"before": n})).await;
    }
    let (events, lost) = ws::events(&mut socket, 6).await;
    let ids: Vec<Value> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, (1..=6).map(|n| json!(n)).collect::<Vec<_>>());
    let epoch = epoch_of(&lost);
    let head = json!(format!("{epoch}:3"));

    store.restore();

    // The node running across the restore notices at a position check and tells its
    // WebSocket client (the engine may take a moment to reconnect: no timing is asserted).
    let frame = match ws::next(&mut socket, PATIENCE).await {
        ws::Next::Frame(f) => f,
        other => panic!("expected not_recovered, got {other:?}"),
    };
    assert_eq!(frame["type"], "not_recovered", "{frame}");
    assert_eq!(
        frame["cursor"], head,
        "the stream continues from the restored head"
    );
    // A poll to it with the lost cursor is told too.
    let answer = poll(&http, &a.url, &page, &lost).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["cursor"], head);
    // A node started after the restore: an SSE client resuming with the lost cursor.
    let b = node(dir.path(), "b", &engine);
    let mut stream = sse::open(
        &b.url,
        &sse::query(&page, None),
        Some(lost.as_str().expect("a cursor")),
    )
    .await;
    assert_eq!(stream.status, 200);
    let first = within("the SSE stream's first record", stream.record())
        .await
        .expect("a record");
    assert_eq!(first.event.as_deref(), Some("not_recovered"), "{first:?}");
    assert_eq!(first.id.as_deref(), head.as_str());

    // Ids 4 and 5 again, for other events: every client gets them.
    let mut again = Vec::new();
    for n in 1..=2 {
        again.push(notify(&http, &a.url, &channel, json!({"after": n})).await);
    }
    assert_eq!(
        again,
        vec![4, 5],
        "the restored store hands ids 4 and 5 out again"
    );
    let expect = vec![(json!(4), json!(1)), (json!(5), json!(2))];
    let pairs = |events: &[Value]| -> Vec<(Value, Value)> {
        events
            .iter()
            .map(|e| (e["id"].clone(), e["payload"]["after"].clone()))
            .collect()
    };
    let (events, cursor) = ws::events(&mut socket, 2).await;
    assert_eq!(pairs(&events), expect, "WebSocket");
    assert_eq!(cursor, json!(format!("{epoch}:5")));
    let (events, last) = within("SSE events 4 and 5", stream.events(2)).await;
    assert_eq!(pairs(&events), expect, "SSE");
    assert_eq!(last, format!("{epoch}:5"));
    let mut got = Vec::new();
    let mut cursor = answer["cursor"].clone();
    while got.len() < 2 {
        let answer = poll(&http, &a.url, &page, &cursor).await;
        assert_eq!(answer["recovered"], true, "{answer}");
        got.extend(answer["events"].as_array().expect("events").iter().cloned());
        cursor = answer["cursor"].clone();
    }
    assert_eq!(pairs(&got), expect, "poll");
    drop(socket);
    drop(stream);
}

/// The practice `docs/deploy.md` recommends: nodes stopped, the store restored and given a new
/// epoch, nodes started. A client that comes back only after the restored store has handed out
/// ids past its cursor (which the head check alone cannot tell from a client that saw them) is
/// still told `recovered: false`, and resumes from there.
async fn restored_with_a_new_epoch(store: &mut dyn Restorable) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = store.url();
    let mut a = node(dir.path(), "a", &engine);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_x", "area": "epoch"});
    let page = page(&http, &a.url, KEY, 2, channel.clone()).await;
    for n in 1..=3 {
        notify(&http, &a.url, &channel, json!({"before": n})).await;
    }
    store.backup();
    for n in 4..=6 {
        notify(&http, &a.url, &channel, json!({"before": n})).await;
    }
    let epoch = epoch_of(&page["cursor"]);
    let lost = json!(format!("{epoch}:6"));
    a.terminate();

    store.restore();
    store.new_epoch();
    let b = node(dir.path(), "b", &engine);
    // Ids 4 to 7 for new events: past the client's cursor before it comes back.
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(notify(&http, &b.url, &channel, json!({"after": n})).await);
    }
    assert_eq!(ids, vec![4, 5, 6, 7], "the restored store's ids");
    let answer = poll(&http, &b.url, &page, &lost).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert_eq!(answer["events"], json!([]));
    let mut cursor = answer["cursor"].clone();
    let renewed = epoch_of(&cursor);
    assert_ne!(renewed, epoch, "a new epoch");
    // From the node's head (7, or less while its tail has not read them all), every later
    // event once.
    let from = cursor
        .as_str()
        .and_then(|c| c.rsplit_once(':'))
        .and_then(|(_, id)| id.parse::<i64>().ok())
        .expect("a cursor");
    assert!((3..=7).contains(&from), "{cursor}");
    let next = notify(&http, &b.url, &channel, json!({"after": 5})).await;
    let mut got = Vec::new();
    while got.last() != Some(&next) {
        let answer = poll(&http, &b.url, &page, &cursor).await;
        assert_eq!(answer["recovered"], true, "{answer}");
        for e in answer["events"].as_array().expect("events") {
            got.push(e["id"].as_i64().expect("an id"));
        }
        cursor = answer["cursor"].clone();
    }
    assert_eq!(got, ((from + 1)..=next).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restored_with_a_new_epoch_tells_a_cursor_the_store_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Postgres {
        db: ScratchDatabase::create().await,
        dump: dir.path().join("realtime.dump"),
    };
    restored_with_a_new_epoch(&mut store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_with_a_new_epoch_tells_a_cursor_the_store_has_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("redis");
    std::fs::create_dir(&data).expect("mkdir");
    let mut store = Redis {
        server: PrivateRedis::with_rdb(&data),
        backup: dir.path().join("backup.rdb"),
    };
    restored_with_a_new_epoch(&mut store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restored_with_pg_restore_is_told_on_every_transport() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Postgres {
        db: ScratchDatabase::create().await,
        dump: dir.path().join("realtime.dump"),
    };
    restored_under_running_nodes(&mut store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restored_from_an_rdb_snapshot_is_told_on_every_transport() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("redis");
    std::fs::create_dir(&data).expect("mkdir");
    let mut store = Redis {
        server: PrivateRedis::with_rdb(&data),
        backup: dir.path().join("backup.rdb"),
    };
    restored_under_running_nodes(&mut store).await;
}
