//! # realtime-redis
//!
//! The Redis engine for `realtime`: a Redis Stream is the log, and a blocking `XREAD` per node
//! wakes its hub. Open it with [`RedisEngine::connect`] and a `redis://` URL; the optional
//! query parameter `prefix` (default `realtime`) names the keys, so several deployments or
//! tests can share one Redis.
//!
//! ## Keys
//! - `<prefix>:events` — the stream. Entry ids are `0-N` where `N` is the event id, so ids stay
//!   small integers (safe in JavaScript) and ordered by Redis. Each entry has one field `e`: the
//!   event with its channel hash, as JSON.
//! - `<prefix>:head` — the newest id (`INCRBY` inside the append script, so ids are assigned
//!   and made visible in one atomic step per batch: Redis runs one script at a time).
//! - `<prefix>:epoch` — the store's incarnation, created with `SET NX` by whoever touches an
//!   empty store. A Redis restart without persistence loses all three keys; the next append or
//!   position creates a new epoch, and clients are told `recovered: false`.
//! - `<prefix>:floor` — the newest id removed by retention (`XTRIM MINID`).
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` an acknowledged event
//! survives a crash; without persistence it survives only while Redis runs. The keys must not
//! be evicted (`maxmemory-policy noeviction`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use realtime::engine::{Engine, Position};
use realtime::event::NewEvent;
use realtime::secret::random_hex;
use realtime::token::now_secs;
use realtime::{ChannelHash, Epoch, Error, Event, EventId, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Appends a batch atomically: makes sure the epoch exists, takes `n` ids from the head
/// counter, adds the entries with those ids, and answers the last id and the epoch.
const APPEND: &str = r"
redis.call('SET', KEYS[3], ARGV[1], 'NX')
local n = #ARGV - 1
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n
for i = 1, n do
  redis.call('XADD', KEYS[1], '0-' .. (first + i), 'e', ARGV[i + 1])
end
return {last, redis.call('GET', KEYS[3])}
";

/// Raises the floor (never lowers it).
const RAISE_FLOOR: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// An event as stored in the stream entry.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    hash: &'a str,
    contextid: i64,
    component: &'a str,
    area: &'a str,
    itemid: i64,
    channeldetails: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
    timecreated: i64,
}

struct Keys {
    events: String,
    head: String,
    epoch: String,
    floor: String,
}

/// The Redis engine. See the crate doc.
pub struct RedisEngine {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    /// The epoch this engine last saw; a read that finds another one fails, so that no event of
    /// a new store is taken for one of the old.
    epoch: Mutex<Option<String>>,
    changes: Arc<Notify>,
    cancel: CancellationToken,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("stream", &self.keys.events)
            .finish_non_exhaustive()
    }
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> Error {
    Error::EngineUnavailable(format!("redis {context}: {e}"))
}

/// Splits `?prefix=NAME` off a Redis URL.
fn split_prefix(url: &str) -> Result<(String, String)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), "realtime".into()));
    };
    let mut prefix = "realtime".to_string();
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("prefix", p))
                if !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c)) =>
            {
                prefix = p.to_string();
            }
            Some(("prefix", _)) => {
                return Err(Error::Config(
                    "engine url: prefix must be [A-Za-z0-9_-:.]+".into(),
                ))
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, prefix))
}

impl RedisEngine {
    /// Connects to `url` (`redis://host:port/db?prefix=NAME`) and starts the task that wakes
    /// the hub on new entries.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL; [`Error::EngineUnavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, prefix) = split_prefix(url)?;
        let client = redis::Client::open(url.as_str())
            .map_err(|e| Error::Config(format!("engine url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| unavailable("connect", "timed out"))?
        .map_err(|e| unavailable("connect", e))?;
        let keys = Arc::new(Keys {
            events: format!("{prefix}:events"),
            head: format!("{prefix}:head"),
            epoch: format!("{prefix}:epoch"),
            floor: format!("{prefix}:floor"),
        });
        let engine = RedisEngine {
            conn,
            keys: keys.clone(),
            epoch: Mutex::new(None),
            changes: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        engine.position().await?;
        tokio::spawn(watch(
            client,
            keys,
            engine.changes.clone(),
            engine.cancel.clone(),
        ));
        Ok(engine)
    }

    /// Records the epoch seen now; false when it differs from the one seen before.
    fn same_epoch(&self, seen: &str) -> bool {
        let mut known = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        match known.as_deref() {
            Some(k) if k == seen => true,
            Some(_) => false,
            None => {
                *known = Some(seen.to_string());
                true
            }
        }
    }

    /// Reads entries after `after` (exclusive), up to `count`, checking the epoch in the same
    /// atomic step.
    async fn range(&self, after: i64, count: usize) -> Result<Vec<Event>> {
        let mut conn = self.conn.clone();
        let (epoch, reply): (Option<String>, StreamRangeReply) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&self.keys.epoch)
            .cmd("XRANGE")
            .arg(&self.keys.events)
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("read", e))?;
        match epoch {
            Some(e) if self.same_epoch(&e) => {}
            // A lost or replaced store: fail this read; the hub's next position check sees the
            // new epoch and starts over in it.
            _ => {
                return Err(unavailable(
                    "read",
                    "the store was lost or replaced (epoch changed)",
                ))
            }
        }
        reply
            .ids
            .iter()
            .map(|entry| parse_entry(&entry.id, &entry.map))
            .collect()
    }
}

fn entry_id(id: &str) -> Result<i64> {
    id.strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Internal(format!("a stream entry id {id:?} is not 0-N")))
}

fn parse_entry(id: &str, map: &std::collections::HashMap<String, redis::Value>) -> Result<Event> {
    let id = entry_id(id)?;
    let bytes: Vec<u8> = match map.get("e") {
        Some(v) => {
            redis::from_redis_value(v).map_err(|e| Error::Internal(format!("entry {id}: {e}")))?
        }
        None => return Err(Error::Internal(format!("entry {id} has no field e"))),
    };
    let stored: Stored<'_> =
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("entry {id}: {e}")))?;
    Ok(Event {
        id: EventId(id),
        hash: ChannelHash::parse(stored.hash)?,
        contextid: stored.contextid,
        component: stored.component.to_string(),
        area: stored.area.to_string(),
        itemid: stored.itemid,
        channeldetails: stored.channeldetails.to_string(),
        payload: stored.payload.to_owned(),
        timecreated: stored.timecreated,
    })
}

/// Blocks on `XREAD` for entries after the last one seen, and wakes the hub when some arrive;
/// reconnects with backoff, waking the hub after each reconnect to catch up.
async fn watch(
    client: redis::Client,
    keys: Arc<Keys>,
    changes: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut last = "$".to_string();
    loop {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(10));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(mut conn) => {
                backoff = Duration::from_millis(100);
                changes.notify_one();
                loop {
                    let mut cmd = redis::cmd("XREAD");
                    cmd.arg("COUNT")
                        .arg(1000)
                        .arg("BLOCK")
                        .arg(2000)
                        .arg("STREAMS")
                        .arg(&keys.events)
                        .arg(&last);
                    let read = cmd.query_async::<Option<StreamReadReply>>(&mut conn);
                    let reply = tokio::select! {
                        r = read => r,
                        _ = cancel.cancelled() => return,
                    };
                    match reply {
                        Ok(Some(reply)) => {
                            if let Some(id) =
                                reply.keys.iter().flat_map(|k| k.ids.iter()).next_back()
                            {
                                last = id.id.clone();
                            }
                            changes.notify_one();
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "redis XREAD failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "redis watch connection failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::EngineUnavailable(
                "the redis engine is closed".into(),
            ));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_secs();
        let append = redis::Script::new(APPEND);
        let mut script = append.prepare_invoke();
        script
            .key(&self.keys.events)
            .key(&self.keys.head)
            .key(&self.keys.epoch)
            .arg(random_hex(8));
        for e in &events {
            let stored = Stored {
                hash: e.hash.as_str(),
                contextid: e.channel.contextid,
                component: &e.channel.component,
                area: &e.channel.area,
                itemid: e.channel.itemid,
                channeldetails: &e.channel.details,
                payload: &e.payload,
                timecreated: now,
            };
            let json = serde_json::to_vec(&stored)
                .map_err(|e| Error::Internal(format!("serialising an event: {e}")))?;
            script.arg(json);
        }
        let mut conn = self.conn.clone();
        let (last, epoch): (i64, String) = script
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("append", e))?;
        if !self.same_epoch(&epoch) {
            tracing::warn!(
                "redis: the store was lost or replaced; clients will be told recovered:false"
            );
        }
        self.changes.notify_one();
        let n =
            i64::try_from(events.len()).map_err(|_| Error::Internal("batch too large".into()))?;
        Ok((last - n + 1..)
            .zip(events)
            .map(|(id, e)| Event::from_new(e, EventId(id), now))
            .collect())
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let Some(hashes) = hashes else {
            return self.range(after.0, limit).await;
        };
        // The stream has no index by channel: scan forward in chunks, keep the matches.
        let chunk = limit.max(1_000);
        let mut out = Vec::new();
        let mut cursor = after.0;
        loop {
            let events = self.range(cursor, chunk).await?;
            let done = events.len() < chunk;
            for e in events {
                cursor = e.id.0;
                if hashes.contains(&e.hash) {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    async fn position(&self) -> Result<Position> {
        let mut conn = self.conn.clone();
        let (epoch, head, floor): (String, Option<i64>, Option<i64>) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&self.keys.epoch)
            .arg(random_hex(8))
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.keys.epoch)
            .cmd("GET")
            .arg(&self.keys.head)
            .cmd("GET")
            .arg(&self.keys.floor)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("position", e))?;
        // Whatever epoch the store has now is the one reads are checked against from here on.
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some(epoch.clone());
        Ok(Position {
            epoch: Epoch(epoch),
            head: EventId(head.unwrap_or(0)),
            floor: EventId(floor.unwrap_or(0)),
        })
    }

    async fn purge(&self, before: i64) -> Result<u64> {
        let mut conn = self.conn.clone();
        // Find the first entry young enough to keep, scanning from the oldest.
        let mut after = 0i64;
        let mut last_old: Option<i64> = None;
        let mut removed = 0u64;
        let keep = loop {
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.events)
                .arg(format!("(0-{after}"))
                .arg("+")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("purge", e))?;
            if reply.ids.is_empty() {
                break None;
            }
            let mut young = None;
            for entry in &reply.ids {
                let event = parse_entry(&entry.id, &entry.map)?;
                if event.timecreated >= before {
                    young = Some(event.id.0);
                    break;
                }
                last_old = Some(event.id.0);
                removed += 1;
                after = event.id.0;
            }
            if young.is_some() {
                break young;
            }
        };
        let Some(last_old) = last_old else {
            return Ok(0);
        };
        let min_id = keep.unwrap_or(last_old + 1);
        let _: i64 = redis::cmd("XTRIM")
            .arg(&self.keys.events)
            .arg("MINID")
            .arg(format!("0-{min_id}"))
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("purge", e))?;
        let _: i64 = redis::Script::new(RAISE_FLOOR)
            .key(&self.keys.floor)
            .arg(last_old)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("purge", e))?;
        Ok(removed)
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    async fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.cancel.cancel();
    }
}

/// Deletes every key of `prefix` on the Redis at `url` (for tests and operators who retire a
/// deployment).
///
/// # Errors
/// When Redis cannot be reached.
pub async fn delete_prefix(url: &str, prefix: &str) -> Result<()> {
    let client = redis::Client::open(url).map_err(|e| Error::Config(format!("redis url: {e}")))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| unavailable("connect", e))?;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:events"))
        .arg(format!("{prefix}:head"))
        .arg(format!("{prefix}:epoch"))
        .arg(format!("{prefix}:floor"))
        .query_async(&mut conn)
        .await
        .map_err(|e| unavailable("delete", e))?;
    Ok(())
}
