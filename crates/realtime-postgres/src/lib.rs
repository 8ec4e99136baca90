//! # realtime-postgres
//!
//! The PostgreSQL engine for `realtime`: events live in a table beside the application's own
//! data (as the original kept them in the site's database), and nodes learn of new ones through
//! `LISTEN`/`NOTIFY`. Open it with [`PostgresEngine::connect`] and a `postgres://` URL.
//!
//! ## Ordered visibility
//! A plain sequence does not make ids visible in order: transaction A may take id 7, B id 8,
//! and B commit first, so a reader tailing "after 6" sees 8, moves on, and never sees 7. Here
//! every append takes its ids by incrementing the single row of `realtime_head` inside its
//! transaction. That row stays locked until commit, so the next append (from any node) waits
//! for it: ids are assigned in commit order and become visible in order, with no gaps.
//! Each node batches concurrent appends into one transaction (group commit), so the lock is
//! taken once per batch, not once per event.
//!
//! ## Tables
//! - `realtime_events (id, hash, contextid, component, area, itemid, channeldetails, payload
//!   json, timecreated)`, primary key `id`, index `(hash, id)`;
//! - `realtime_head` (one row: the newest id) and `realtime_meta` (`epoch`, `floor`).
//!
//! ## Fan-out
//! An append ends with `pg_notify('realtime_events', <head>)`, delivered at commit. Each node
//! keeps one connection that `LISTEN`s and wakes its hub, which then reads the new rows once.
//! When that connection drops it reconnects with backoff, and wakes the hub to catch up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use realtime::engine::now_secs;
use realtime::engine::{Engine, Position};
use realtime::random_hex;
use realtime::NewEvent;
use realtime::{ChannelHash, Epoch, Error, Event, EventId, Result};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "test-util")]
pub mod testing;

/// The notification channel.
const CHANNEL: &str = "realtime_events";
/// Most events one group commit takes from the queue.
const MAX_GROUP: usize = 10_000;
/// How long one engine operation may take before it fails (and `notify` answers 503).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Key of the advisory lock that serialises schema creation between nodes.
const SCHEMA_LOCK: i64 = 0x7265_616c_7469_6d65; // "realtime"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS realtime_events (
    id BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    contextid BIGINT NOT NULL,
    component TEXT NOT NULL,
    area TEXT NOT NULL,
    itemid BIGINT NOT NULL,
    channeldetails TEXT NOT NULL,
    payload JSON NOT NULL,
    timecreated BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS realtime_events_hash_id ON realtime_events (hash, id);
CREATE TABLE IF NOT EXISTS realtime_head (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    head BIGINT NOT NULL
);
INSERT INTO realtime_head (one, head) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS realtime_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO realtime_meta (key, value) VALUES ('floor', '0') ON CONFLICT DO NOTHING;
";

const COLUMNS: &str =
    "id, hash, contextid, component, area, itemid, channeldetails, payload::text, timecreated";

struct Append {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Event>>>,
}

/// The PostgreSQL engine. See the crate doc.
pub struct PostgresEngine {
    pool: Pool,
    writer: Mutex<Option<mpsc::Sender<Append>>>,
    changes: Arc<Notify>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine").finish_non_exhaustive()
    }
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> Error {
    Error::EngineUnavailable(format!("postgres {context}: {e}"))
}

/// Classifies a failed statement of an append: the database refusing the data itself (SQLSTATE
/// class 22 "data exception", 23 "integrity constraint violation", 54 "program limit exceeded",
/// such as a JSON value nested past the stack limit) is the caller's fault and answers 400
/// `invalid_event`; anything else (no connection, shutdown, lack of resources, a timeout) is
/// the engine's and answers 503. The driver's text goes to the log, not to the client.
fn append_error(context: &str, e: &tokio_postgres::Error) -> Error {
    let data = e.code().is_some_and(|c| {
        let class = c.code().get(..2).unwrap_or("");
        matches!(class, "22" | "23" | "54")
    });
    if data {
        tracing::warn!(error = %e, "postgres refused an event's data");
        Error::bad_request(
            "invalid_event",
            "the engine cannot store a value of this event",
        )
    } else {
        unavailable(context, e)
    }
}

/// Runs `f` within [`OP_TIMEOUT`].
async fn timed<T>(context: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .map_err(|_| unavailable(context, "timed out"))?
}

impl PostgresEngine {
    /// Connects to `url` (`postgres://user:password@host:port/database`), creates the tables
    /// when absent, and starts the group-commit writer and the `LISTEN` task.
    ///
    /// # Errors
    /// [`Error::EngineUnavailable`] when the URL is invalid or the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("engine url: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Internal(format!("building the postgres pool: {e}")))?;
        setup(&pool).await?;

        let changes = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer(pool.clone(), rx, changes.clone()));
        tokio::spawn(listen(config, changes.clone(), cancel.clone()));
        Ok(PostgresEngine {
            pool,
            writer: Mutex::new(Some(tx)),
            changes,
            cancel,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| unavailable("connection", e))
    }
}

/// How long a starting node waits for PostgreSQL when it is not accepting connections yet (a
/// node started during a PostgreSQL restart), before it gives up.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// A failed setup and whether it is worth waiting out: no connection yet, PostgreSQL starting or
/// shutting down (SQLSTATE classes 08 and 57), or the setup's transaction rolled back by a
/// deadlock with running nodes' appends (class 40); not a wrong database or password.
/// The server's message is kept (the driver's own text for it is only "db error").
fn setup_error(e: &tokio_postgres::Error) -> (Error, bool) {
    let transient = e
        .code()
        .is_none_or(|c| matches!(c.code().get(..2).unwrap_or(""), "08" | "40" | "57"));
    let detail = match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    (
        Error::EngineUnavailable(format!("postgres setup: {detail}")),
        transient,
    )
}

async fn create_schema(pool: &Pool) -> std::result::Result<(), (Error, bool)> {
    let mut client = pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => setup_error(&e),
        other => (unavailable("connection", other), true),
    })?;
    let tx = client.transaction().await.map_err(|e| setup_error(&e))?;
    // Nodes starting together would race on CREATE TABLE IF NOT EXISTS; one at a time.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(|e| setup_error(&e))?;
    tx.batch_execute(SCHEMA)
        .await
        .map_err(|e| setup_error(&e))?;
    tx.execute(
        "INSERT INTO realtime_meta (key, value) VALUES ('epoch', $1) ON CONFLICT DO NOTHING",
        &[&random_hex(8)],
    )
    .await
    .map_err(|e| setup_error(&e))?;
    tx.commit().await.map_err(|e| setup_error(&e))
}

/// Creates the schema, waiting up to [`STARTUP_WAIT`] for a PostgreSQL that is not accepting
/// connections yet, so that a node started during a PostgreSQL restart comes up with it.
async fn setup(pool: &Pool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    let mut delay = Duration::from_millis(250);
    loop {
        let outcome = match tokio::time::timeout(OP_TIMEOUT, create_schema(pool)).await {
            Ok(r) => r,
            Err(_) => Err((unavailable("setup", "timed out"), true)),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err((e, true)) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "PostgreSQL is not ready; waiting for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

async fn writer(pool: Pool, mut rx: mpsc::Receiver<Append>, changes: Arc<Notify>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < MAX_GROUP {
            match rx.try_recv() {
                Ok(a) => {
                    count += a.events.len();
                    group.push(a);
                }
                Err(_) => break,
            }
        }
        let result = {
            let batches: Vec<&[NewEvent]> = group.iter().map(|a| a.events.as_slice()).collect();
            timed("append", insert_group(&pool, &batches)).await
        };
        match result {
            Ok(stored) => {
                answer(group, stored);
                changes.notify_one();
            }
            Err(Error::BadRequest { .. }) if group.len() > 1 => {
                // One caller's data failed the whole transaction: retry each caller's batch on
                // its own, in order, so that only the bad one gets its error.
                tracing::warn!(
                    callers = group.len(),
                    "postgres group commit refused data; retrying each caller alone"
                );
                let mut any = false;
                for a in group {
                    let result = timed("append", insert_group(&pool, &[a.events.as_slice()])).await;
                    match result {
                        Ok(stored) => {
                            any = true;
                            answer(vec![a], stored);
                        }
                        Err(e) => {
                            let _ = a.reply.send(Err(e));
                        }
                    }
                }
                if any {
                    changes.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "postgres group commit failed; nothing of it was stored");
                let e = match e {
                    // The one caller's own data: its 400 as it is.
                    Error::BadRequest { code, message } => Error::BadRequest { code, message },
                    other => Error::EngineUnavailable(other.to_string()),
                };
                let mut group = group.into_iter();
                if let Some(a) = group.next() {
                    let _ = a.reply.send(Err(e));
                }
            }
        }
    }
}

/// Answers each caller of `group` with its events, stored from the first id `first` at `now`.
fn answer(group: Vec<Append>, (first, now): (i64, i64)) {
    let mut id = first;
    for a in group {
        let events = a
            .events
            .into_iter()
            .map(|e| {
                let stored = EventId::new(id).map(|id| Event::from_new(e, id, now));
                id += 1;
                stored
            })
            .collect();
        let _ = a.reply.send(events);
    }
}

/// Inserts `batches` in one transaction; answers the first id given and the time stored.
async fn insert_group(pool: &Pool, batches: &[&[NewEvent]]) -> Result<(i64, i64)> {
    let n: usize = batches.iter().map(|b| b.len()).sum();
    let mut client = pool.get().await.map_err(|e| unavailable("connection", e))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| unavailable("append", e))?;
    let n_i64 = i64::try_from(n).map_err(|_| Error::Internal("batch too large".into()))?;
    // Takes the head row's lock until commit: ids are handed out in commit order.
    let head: i64 = tx
        .query_one(
            "UPDATE realtime_head SET head = head + $1 RETURNING head",
            &[&n_i64],
        )
        .await
        .map_err(|e| unavailable("append", e))?
        .get(0);
    let now = now_secs();
    let first = head - n_i64 + 1;
    let mut ids = Vec::with_capacity(n);
    let (mut hashes, mut contexts, mut components, mut areas) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut items, mut details, mut payloads, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, e) in (first..).zip(batches.iter().flat_map(|b| b.iter())) {
        ids.push(id);
        hashes.push(e.hash.as_str());
        contexts.push(e.channel.contextid());
        components.push(e.channel.component());
        areas.push(e.channel.area());
        items.push(e.channel.itemid());
        details.push(e.channel.details());
        payloads.push(e.payload.get());
        times.push(now);
    }
    tx.execute(
        "INSERT INTO realtime_events (id, hash, contextid, component, area, itemid, channeldetails, payload, timecreated)
         SELECT i, h, c, co, a, it, d, p::json, t
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[])
              AS u(i, h, c, co, a, it, d, p, t)",
        &[&ids, &hashes, &contexts, &components, &areas, &items, &details, &payloads, &times],
    )
    .await
    .map_err(|e| append_error("append", &e))?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &head.to_string()])
        .await
        .map_err(|e| unavailable("append", e))?;
    tx.commit().await.map_err(|e| unavailable("commit", e))?;
    Ok((first, now))
}

/// Keeps one `LISTEN` connection open, reconnecting with backoff, and wakes the hub on every
/// notification and after every reconnect (to catch up on what passed meanwhile).
async fn listen(config: tokio_postgres::Config, changes: Arc<Notify>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<()>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(_)) => {
                                if tx.send(()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "postgres LISTEN connection lost");
                                return;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "postgres LISTEN failed");
                    driver.abort();
                } else {
                    backoff = Duration::from_millis(100);
                    changes.notify_one();
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => {
                                driver.abort();
                                return;
                            }
                            got = rx.recv() => match got {
                                Some(()) => changes.notify_one(),
                                None => break,
                            },
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "postgres LISTEN connection failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn row_to_event(r: &Row) -> Result<Event> {
    let bad = |e: String| Error::Internal(format!("a stored event cannot be read: {e}"));
    let hash: String = r.try_get(1).map_err(|e| bad(e.to_string()))?;
    let payload: String = r.try_get(7).map_err(|e| bad(e.to_string()))?;
    Ok(Event {
        id: EventId::new(r.try_get(0).map_err(|e| bad(e.to_string()))?)?,
        hash: ChannelHash::parse(&hash).map_err(|e| bad(e.to_string()))?,
        contextid: r.try_get(2).map_err(|e| bad(e.to_string()))?,
        component: r.try_get(3).map_err(|e| bad(e.to_string()))?,
        area: r.try_get(4).map_err(|e| bad(e.to_string()))?,
        itemid: r.try_get(5).map_err(|e| bad(e.to_string()))?,
        channeldetails: r.try_get(6).map_err(|e| bad(e.to_string()))?,
        payload: RawValue::from_string(payload).map_err(|e| bad(e.to_string()))?,
        timecreated: r.try_get(8).map_err(|e| bad(e.to_string()))?,
    })
}

#[async_trait]
impl Engine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::EngineUnavailable("the postgres engine is closed".into()))?;
        let (reply, rx) = oneshot::channel();
        sender
            .send(Append { events, reply })
            .await
            .map_err(|_| Error::EngineUnavailable("the postgres writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::EngineUnavailable("the postgres writer has stopped".into()))?
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        timed("read", async {
            let client = self.client().await?;
            let rows = match hashes {
                None => {
                    let sql = format!("SELECT {COLUMNS} FROM realtime_events WHERE id > $1 ORDER BY id LIMIT $2");
                    let stmt = client.prepare_cached(&sql).await.map_err(|e| unavailable("read", e))?;
                    client.query(&stmt, &[&after.get(), &limit]).await
                }
                Some(hashes) => {
                    let hashes: Vec<&str> = hashes.iter().map(ChannelHash::as_str).collect();
                    let sql = format!(
                        "SELECT {COLUMNS} FROM realtime_events WHERE hash = ANY($3) AND id > $1 ORDER BY id LIMIT $2"
                    );
                    let stmt = client.prepare_cached(&sql).await.map_err(|e| unavailable("read", e))?;
                    client.query(&stmt, &[&after.get(), &limit, &hashes]).await
                }
            }
            .map_err(|e| unavailable("read", e))?;
            rows.iter().map(row_to_event).collect()
        })
        .await
    }

    async fn position(&self) -> Result<Position> {
        timed("position", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT head FROM realtime_head),
                            (SELECT value FROM realtime_meta WHERE key = 'epoch'),
                            (SELECT value FROM realtime_meta WHERE key = 'floor')",
                    &[],
                )
                .await
                .map_err(|e| unavailable("position", e))?;
            let head: Option<i64> = row.get(0);
            let epoch: Option<String> = row.get(1);
            let floor: Option<String> = row.get(2);
            Ok(Position {
                epoch: Epoch::new(epoch.ok_or_else(|| {
                    unavailable("position", "no epoch: the tables were emptied")
                })?)?,
                head: EventId::new(head.unwrap_or(0))?,
                floor: EventId::new(floor.and_then(|f| f.parse().ok()).unwrap_or(0))?,
            })
        })
        .await
    }

    async fn purge(&self, before: i64) -> Result<u64> {
        timed("purge", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| unavailable("purge", e))?;
            // The first event young enough to keep; everything below it goes, as one run of ids.
            let keep: Option<i64> = tx
                .query_opt("SELECT id FROM realtime_events WHERE timecreated >= $1 ORDER BY id LIMIT 1", &[&before])
                .await
                .map_err(|e| unavailable("purge", e))?
                .map(|r| r.get(0));
            let last: Option<i64> = match keep {
                Some(id) => tx.query_one("SELECT max(id) FROM realtime_events WHERE id < $1", &[&id]).await,
                None => tx.query_one("SELECT max(id) FROM realtime_events", &[]).await,
            }
            .map_err(|e| unavailable("purge", e))?
            .get(0);
            let Some(last) = last else {
                return Ok(0);
            };
            let removed = tx
                .execute("DELETE FROM realtime_events WHERE id <= $1", &[&last])
                .await
                .map_err(|e| unavailable("purge", e))?;
            tx.execute(
                "UPDATE realtime_meta SET value = GREATEST(value::bigint, $1)::text WHERE key = 'floor'",
                &[&last],
            )
            .await
            .map_err(|e| unavailable("purge", e))?;
            tx.commit().await.map_err(|e| unavailable("purge", e))?;
            Ok(removed)
        })
        .await
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    async fn close(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.cancel.cancel();
    }
}
