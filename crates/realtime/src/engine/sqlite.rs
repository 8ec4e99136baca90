//! The embedded default: one SQLite file in WAL mode, shared by every process on the machine.
//!
//! - Writes go through one writer thread per process that practises group commit: it takes
//!   every append waiting in its queue, writes them in one transaction and commits once
//!   (`synchronous = FULL`: one fsync of the WAL per commit), then answers each caller. Many
//!   concurrent notifies therefore share one fsync.
//! - Ids come from `INTEGER PRIMARY KEY AUTOINCREMENT`, so they are never reused after a purge;
//!   SQLite has one writer at a time, so ids become visible in order across processes too.
//! - Reads use a small pool of connections on blocking threads.
//! - `meta` holds the epoch (random, made with the file) and the floor (raised by purge).
//! - Another process appending to the file is seen by the hub's tail within the check interval.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Notify};

use super::{Engine, Position};
use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::event::{Epoch, Event, EventId, NewEvent};
use crate::secret::random_hex;
use crate::token::now_secs;

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most events one group commit takes from the queue.
const MAX_GROUP: usize = 20_000;
/// Read connections kept open.
const POOL_SIZE: usize = 4;

enum WriteOp {
    Append(Vec<NewEvent>, oneshot::Sender<Result<Vec<Event>>>),
    Purge(i64, oneshot::Sender<Result<u64>>),
}

/// The SQLite engine. Cheap to share behind an `Arc`; closing stops its writer thread.
#[derive(Debug)]
pub struct SqliteEngine {
    path: PathBuf,
    epoch: Epoch,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    /// Fires when the writer thread has drained its queue and closed its connection.
    writer_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Set by `close`: read connections are no longer pooled.
    closed: Arc<std::sync::atomic::AtomicBool>,
    changes: Arc<Notify>,
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteOp")
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::EngineUnavailable(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// How long opening keeps retrying while another process creates the same database.
const OPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// Opens the database, creates the schema and the epoch when absent, and reads the epoch.
fn create_or_open(path: &Path) -> rusqlite::Result<(Connection, String)> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?1)",
        params![random_hex(8)],
    )?;
    let epoch: String = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
        r.get(0)
    })?;
    Ok((conn, epoch))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL,
    contextid INTEGER NOT NULL,
    component TEXT NOT NULL,
    area TEXT NOT NULL,
    itemid INTEGER NOT NULL,
    channeldetails TEXT NOT NULL,
    payload TEXT NOT NULL,
    timecreated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_hash_id ON events (hash, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

impl SqliteEngine {
    /// Opens (creating when absent) the database at `path` and starts the writer thread.
    ///
    /// # Errors
    /// [`Error::EngineUnavailable`] when the file cannot be opened or set up.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (conn, epoch) = tokio::task::spawn_blocking(move || -> Result<(Connection, Epoch)> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::EngineUnavailable(format!("creating {}: {e}", dir.display()))
                })?;
            }
            // Several processes may create the file at the same moment (two servers first
            // started together): switching to WAL and creating the schema can answer "database
            // is locked" at once, without waiting on the busy timeout. Retry until a deadline.
            let deadline = std::time::Instant::now() + OPEN_RETRY;
            loop {
                match create_or_open(&p) {
                    Ok((conn, epoch)) => return Ok((conn, Epoch(epoch))),
                    Err(e)
                        if matches!(
                            e.sqlite_error_code(),
                            Some(rusqlite::ErrorCode::DatabaseBusy)
                                | Some(rusqlite::ErrorCode::DatabaseLocked)
                        ) && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => {
                        return Err(Error::EngineUnavailable(format!(
                            "setting up {}: {e}",
                            p.display()
                        )))
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("sqlite open task: {e}")))??;

        let changes = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(1024);
        let notify = changes.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("realtime-sqlite-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, notify);
                // The connection is closed (and the WAL checkpointed) by now.
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::Internal(format!("starting the sqlite writer: {e}")))?;
        Ok(SqliteEngine {
            path,
            epoch,
            writer: Mutex::new(Some(tx)),
            writer_done: Mutex::new(Some(done_rx)),
            readers: Arc::new(Mutex::new(Vec::new())),
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            changes,
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<WriteOp>> {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::EngineUnavailable("the sqlite engine is closed".into()))
    }

    /// Runs `f` with a pooled read connection on a blocking thread.
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.readers.clone();
        let path = self.path.clone();
        let closed = self.closed.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let out = f(&conn);
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_SIZE && !closed.load(std::sync::atomic::Ordering::SeqCst) {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Internal(format!("sqlite read task: {e}")))?
    }
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteOp>, changes: Arc<Notify>) {
    while let Some(first) = rx.blocking_recv() {
        let mut appends = Vec::new();
        let mut count = 0;
        let mut pending = Some(first);
        // Take everything queued (up to MAX_GROUP events) into one transaction.
        while let Some(op) = pending.take() {
            match op {
                WriteOp::Append(events, reply) => {
                    count += events.len();
                    appends.push((events, reply));
                }
                WriteOp::Purge(before, reply) => {
                    let _ = reply.send(purge(&mut conn, before));
                }
            }
            if count < MAX_GROUP {
                pending = rx.try_recv().ok();
            }
        }
        if appends.is_empty() {
            continue;
        }
        let batches: Vec<Vec<NewEvent>> =
            appends.iter_mut().map(|(e, _)| std::mem::take(e)).collect();
        match insert_group(&mut conn, batches) {
            Ok(stored) => {
                for ((_, reply), events) in appends.into_iter().zip(stored) {
                    let _ = reply.send(Ok(events));
                }
                changes.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "sqlite group commit failed");
                for (_, reply) in appends {
                    let _ = reply.send(Err(Error::EngineUnavailable(e.to_string())));
                }
            }
        }
    }
}

fn insert_group(conn: &mut Connection, batches: Vec<Vec<NewEvent>>) -> Result<Vec<Vec<Event>>> {
    let now = now_secs();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(batches.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (hash, contextid, component, area, itemid, channeldetails, payload, timecreated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for batch in batches {
            let mut stored = Vec::with_capacity(batch.len());
            for new in batch {
                stmt.execute(params![
                    new.hash.as_str(),
                    new.channel.contextid,
                    new.channel.component,
                    new.channel.area,
                    new.channel.itemid,
                    new.channel.details,
                    new.payload.get(),
                    now
                ])?;
                let id = EventId(tx.last_insert_rowid());
                stored.push(Event::from_new(new, id, now));
            }
            out.push(stored);
        }
    }
    tx.commit()?;
    Ok(out)
}

fn purge(conn: &mut Connection, before: i64) -> Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // The first event young enough to keep; everything below it goes, as one run of ids.
    let keep: Option<i64> = tx
        .query_row(
            "SELECT id FROM events WHERE timecreated >= ?1 ORDER BY id LIMIT 1",
            params![before],
            |r| r.get(0),
        )
        .optional()?;
    let last_removed: Option<i64> = match keep {
        Some(id) => tx.query_row(
            "SELECT max(id) FROM events WHERE id < ?1",
            params![id],
            |r| r.get(0),
        )?,
        None => tx.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?,
    };
    let Some(last_removed) = last_removed else {
        return Ok(0);
    };
    let removed = tx.execute("DELETE FROM events WHERE id <= ?1", params![last_removed])?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('floor', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        params![last_removed.to_string()],
    )?;
    tx.commit()?;
    Ok(removed as u64)
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let payload: String = r.get(7)?;
    let payload = RawValue::from_string(payload).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let hash: String = r.get(1)?;
    let hash = ChannelHash::parse(&hash).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Event {
        id: EventId(r.get(0)?),
        hash,
        contextid: r.get(2)?,
        component: r.get(3)?,
        area: r.get(4)?,
        itemid: r.get(5)?,
        channeldetails: r.get(6)?,
        payload,
        timecreated: r.get(8)?,
    })
}

const COLUMNS: &str =
    "id, hash, contextid, component, area, itemid, channeldetails, payload, timecreated";

#[async_trait]
impl Engine for SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(WriteOp::Append(events, tx))
            .await
            .map_err(|_| Error::EngineUnavailable("the sqlite writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::EngineUnavailable("the sqlite writer has stopped".into()))?
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let hashes: Option<Vec<String>> =
            hashes.map(|h| h.iter().map(|h| h.as_str().to_string()).collect());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(move |conn| {
            let events = match hashes {
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
                    ))?;
                    let rows = stmt.query_map(params![after.0, limit], row_to_event)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                }
                Some(hashes) => {
                    let marks = vec!["?"; hashes.len()].join(",");
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM events WHERE hash IN ({marks}) AND id > ? ORDER BY id LIMIT ?"
                    ))?;
                    let mut values: Vec<rusqlite::types::Value> =
                        hashes.into_iter().map(rusqlite::types::Value::Text).collect();
                    values.push(rusqlite::types::Value::Integer(after.0));
                    values.push(rusqlite::types::Value::Integer(limit));
                    let rows = stmt.query_map(rusqlite::params_from_iter(values), row_to_event)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()?
                }
            };
            Ok(events)
        })
        .await
    }

    async fn position(&self) -> Result<Position> {
        let epoch = self.epoch.clone();
        self.with_reader(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let head: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let floor: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'floor'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let floor = floor.and_then(|f| f.parse::<i64>().ok()).unwrap_or(0);
            tx.finish()?;
            Ok(Position {
                epoch,
                head: EventId(head.unwrap_or(0)),
                floor: EventId(floor),
            })
        })
        .await
    }

    async fn purge(&self, before: i64) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.sender()?
            .send(WriteOp::Purge(before, tx))
            .await
            .map_err(|_| Error::EngineUnavailable("the sqlite writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::EngineUnavailable("the sqlite writer has stopped".into()))?
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    async fn close(&self) {
        // Dropping the sender ends the writer thread once the queue is drained; wait for it to
        // close its connection, and close the pooled readers, so that the file is released when
        // this returns (a backup or another process may take it at once).
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let done = self
            .writer_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            let _ = done.await;
        }
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
