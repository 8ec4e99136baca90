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
//! - `<prefix>:floor` — the newest id removed by retention. The purge raises it and trims the
//!   stream (`XTRIM MINID`) in one script, so no reader ever sees the trim without the floor.
//! - `<prefix>:ch:<hash>` — the channel index: a sorted set of the ids of one channel's events
//!   (score = member = id), written by the append script and trimmed by the purge script. A
//!   resume filtered by channel reads the index and then only the entries it names, instead of
//!   scanning the whole retained stream.
//! - `<prefix>:indexed` — the first id from which every entry is in the channel index (set by
//!   the first append of a version that indexes). Entries older than it, written by an older
//!   version, are found by scanning, as before; they leave with retention.
//!
//! Every node on one prefix must run a version that indexes: an older node's appends would be
//! missing from the index (upgrade all nodes of a deployment together).
//!
//! ## Unreadable entries
//! An entry that cannot be parsed (written by hand, or by an older version that stored text it
//! cannot read back) is skipped with an error in the log and one count of
//! [`UNREADABLE_EVENTS`]; every other event is delivered, and the purge removes it with its run.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` an acknowledged event
//! survives a crash; without persistence it survives only while Redis runs. The keys must not
//! be evicted (`maxmemory-policy noeviction`).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use realtime::engine::now_secs;
use realtime::engine::{Engine, Position};
use realtime::random_hex;
use realtime::NewEvent;
use realtime::{ChannelHash, Epoch, Error, Event, EventId, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Stream entries that could not be parsed and were skipped (see the crate doc).
pub const UNREADABLE_EVENTS: &str = "realtime_engine_unreadable_events_total";

/// Appends a batch atomically: makes sure the epoch exists, takes `n` ids from the head
/// counter, adds the entries with those ids and their ids to the channel index, and answers the
/// last id and the epoch. `KEYS`: events, head, epoch, indexed, then one index key per event.
const APPEND: &str = r"
redis.call('SET', KEYS[3], ARGV[1], 'NX')
local n = #ARGV - 1
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n
redis.call('SET', KEYS[4], first + 1, 'NX')
for i = 1, n do
  local id = first + i
  redis.call('XADD', KEYS[1], '0-' .. id, 'e', ARGV[i + 1])
  redis.call('ZADD', KEYS[4 + i], id, id)
end
return {last, redis.call('GET', KEYS[3])}
";

/// Reads up to `ARGV[2]` entries after `ARGV[1]` of the channels whose index keys are
/// `KEYS[4..]`, in id order, in one atomic step with the epoch and the indexed mark.
/// `KEYS`: epoch, events, indexed, index keys. Answers `{epoch, indexed, {id, json, ...}}`;
/// an indexed id whose entry is gone is left out (it was trimmed, and the floor says so).
const READ_INDEXED: &str = r"
local epoch = redis.call('GET', KEYS[1])
local indexed = tonumber(redis.call('GET', KEYS[3]) or '0')
local limit = tonumber(ARGV[2])
local ids = {}
for j = 4, #KEYS do
  local got = redis.call('ZRANGEBYSCORE', KEYS[j], '(' .. ARGV[1], '+inf', 'LIMIT', 0, limit)
  for _, m in ipairs(got) do ids[#ids + 1] = tonumber(m) end
end
table.sort(ids)
local out = {}
local prev = -1
local taken = 0
for _, id in ipairs(ids) do
  if taken >= limit then break end
  if id ~= prev then
    prev = id
    local entry = redis.call('XRANGE', KEYS[2], '0-' .. id, '0-' .. id)[1]
    if entry then
      local value = ''
      local fields = entry[2]
      for k = 1, #fields - 1, 2 do
        if fields[k] == 'e' then value = fields[k + 1] end
      end
      out[#out + 1] = entry[1]
      out[#out + 1] = value
      taken = taken + 1
    end
  end
end
return {epoch or false, indexed, out}
";

/// Removes entries up to `ARGV[1]`: raises the floor (never lowers it) first, trims the stream
/// and the index keys `KEYS[3..]` of the channels those entries belonged to, all in one atomic
/// step, so that no reader sees trimmed entries with the old floor. `KEYS`: events, floor.
const PURGE: &str = r"
local last = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if last > current then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. (last + 1))
for j = 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', ARGV[1])
end
return 1
";

/// Entries one purge step examines (and at most removes) in one script.
const PURGE_CHUNK: usize = 500;

/// An event as written into the stream entry (borrowed: serialising escapes what needs it).
#[derive(Serialize)]
struct StoredRef<'a> {
    hash: &'a str,
    contextid: i64,
    component: &'a str,
    area: &'a str,
    itemid: i64,
    channeldetails: &'a str,
    payload: &'a RawValue,
    timecreated: i64,
}

/// An event as read back from the stream entry: owned, because a JSON string with an escape
/// (`\\`, `\"`, `\u00e9`) cannot be borrowed from the entry's bytes.
#[derive(Deserialize)]
struct Stored {
    hash: String,
    contextid: i64,
    component: String,
    area: String,
    itemid: i64,
    channeldetails: String,
    payload: Box<RawValue>,
    timecreated: i64,
}

struct Keys {
    prefix: String,
    events: String,
    head: String,
    epoch: String,
    floor: String,
    indexed: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            events: format!("{prefix}:events"),
            head: format!("{prefix}:head"),
            epoch: format!("{prefix}:epoch"),
            floor: format!("{prefix}:floor"),
            indexed: format!("{prefix}:indexed"),
        }
    }

    /// The channel index of `hash`.
    fn channel(&self, hash: &str) -> String {
        format!("{}:ch:{hash}", self.prefix)
    }
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
    /// Ids of unreadable entries already reported, so that the log and the metric count each
    /// once per process however often the tail passes over it.
    reported: Mutex<HashSet<i64>>,
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
        let keys = Arc::new(Keys::new(&prefix));
        let engine = RedisEngine {
            conn,
            keys: keys.clone(),
            epoch: Mutex::new(None),
            changes: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            reported: Mutex::new(HashSet::new()),
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

    /// Fails unless `seen` (the epoch read with the data) is the one this engine knows.
    fn check_epoch(&self, seen: Option<&str>) -> Result<()> {
        match seen {
            Some(e) if self.same_epoch(e) => Ok(()),
            // A lost or replaced store: fail this read; the hub's next position check sees the
            // new epoch and starts over in it.
            _ => Err(unavailable(
                "read",
                "the store was lost or replaced (epoch changed)",
            )),
        }
    }

    /// Parses one entry; an unreadable one is reported (once) and skipped.
    fn parse_or_skip(&self, id: &str, value: Option<&redis::Value>) -> Option<Event> {
        match parse_entry(id, value) {
            Ok(event) => Some(event),
            Err(e) => {
                let n = entry_id(id).unwrap_or(-1);
                let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
                if reported.len() > 10_000 {
                    reported.clear();
                }
                if reported.insert(n) {
                    tracing::error!(entry = id, error = %e, "redis: an unreadable stream entry is skipped");
                    metrics::counter!(UNREADABLE_EVENTS).increment(1);
                }
                None
            }
        }
    }

    /// Reads entries after `after` (exclusive), up to `count`, checking the epoch in the same
    /// atomic step, and stopping at `until` (inclusive) when given. Unreadable entries are
    /// skipped; fewer than `count` events means there are no more.
    async fn range(&self, after: i64, until: Option<i64>, count: usize) -> Result<Vec<Event>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut after = after;
        let end = until.map_or_else(|| "+".to_string(), |u| format!("0-{u}"));
        loop {
            let want = count - out.len();
            let (epoch, reply): (Option<String>, StreamRangeReply) = redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(&self.keys.epoch)
                .cmd("XRANGE")
                .arg(&self.keys.events)
                .arg(format!("(0-{after}"))
                .arg(&end)
                .arg("COUNT")
                .arg(want)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("read", e))?;
            self.check_epoch(epoch.as_deref())?;
            let full = reply.ids.len() == want;
            for entry in &reply.ids {
                after = entry_id(&entry.id)?;
                out.extend(self.parse_or_skip(&entry.id, entry.map.get("e")));
            }
            // Skipped entries leave room: read on so that a short answer still means "no more".
            if !full || out.len() == count {
                return Ok(out);
            }
        }
    }

    /// Scans entries after `after` up to `until` for those of `hashes`: how events written
    /// before the channel index existed are found.
    async fn scan(
        &self,
        after: i64,
        until: Option<i64>,
        hashes: &[ChannelHash],
        limit: usize,
    ) -> Result<Vec<Event>> {
        let chunk = limit.max(1_000);
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let events = self.range(cursor, until, chunk).await?;
            let done = events.len() < chunk;
            for e in events {
                cursor = e.id.get();
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

    /// One page of the channel index: the epoch, the indexed mark, and up to `limit` entries
    /// `(id, value)` of `hashes` after `after`, in one atomic step.
    async fn index_page(
        &self,
        after: i64,
        hashes: &[ChannelHash],
        limit: usize,
    ) -> Result<(i64, Vec<(String, redis::Value)>)> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(READ_INDEXED);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.epoch)
            .key(&self.keys.events)
            .key(&self.keys.indexed);
        for h in hashes {
            invocation.key(self.keys.channel(h.as_str()));
        }
        invocation.arg(after).arg(limit);
        let (epoch, indexed, flat): (Option<String>, i64, Vec<redis::Value>) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable("read", e))?;
        self.check_epoch(epoch.as_deref())?;
        let mut page = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(id), Some(value)) = (flat.next(), flat.next()) {
            let id: String = redis::from_redis_value(&id)
                .map_err(|e| Error::Internal(format!("redis index read: {e}")))?;
            page.push((id, value));
        }
        Ok((indexed, page))
    }

    /// Up to `limit` events of `hashes` after `after`, through the channel index.
    async fn read_indexed(
        &self,
        after: i64,
        hashes: &[ChannelHash],
        limit: usize,
    ) -> Result<Vec<Event>> {
        let (indexed, mut page) = self.index_page(after, hashes, limit).await?;
        let mut out = Vec::new();
        if indexed == 0 || after + 1 < indexed {
            // Some entries after `after` predate the index: scan those first (they are older
            // than every indexed one, and leave with retention).
            let until = (indexed > 0).then(|| indexed - 1);
            out = self.scan(after, until, hashes, limit).await?;
            if indexed == 0 || out.len() == limit {
                return Ok(out);
            }
        }
        let mut want = limit;
        loop {
            let full = page.len() == want;
            let mut cursor = after;
            for (id, value) in &page {
                if out.len() == limit {
                    return Ok(out);
                }
                cursor = entry_id(id)?;
                // The index names channels by hash; check it, in case a store was replaced
                // under a surviving index.
                if let Some(e) = self.parse_or_skip(id, Some(value)) {
                    if hashes.contains(&e.hash) {
                        out.push(e);
                    }
                }
            }
            // A skipped entry leaves room: read on so that a short answer means "no more".
            if !full || out.len() >= limit {
                return Ok(out);
            }
            want = limit - out.len();
            page = self.index_page(cursor, hashes, want).await?.1;
        }
    }
}

fn entry_id(id: &str) -> Result<i64> {
    id.strip_prefix("0-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Internal(format!("a stream entry id {id:?} is not 0-N")))
}

fn parse_entry(id: &str, value: Option<&redis::Value>) -> Result<Event> {
    let id = entry_id(id)?;
    let bytes: Vec<u8> = match value {
        Some(v) => {
            redis::from_redis_value(v).map_err(|e| Error::Internal(format!("entry {id}: {e}")))?
        }
        None => return Err(Error::Internal(format!("entry {id} has no field e"))),
    };
    let stored: Stored =
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("entry {id}: {e}")))?;
    Ok(Event {
        id: EventId::new(id)?,
        hash: ChannelHash::parse(&stored.hash)?,
        contextid: stored.contextid,
        component: stored.component,
        area: stored.area,
        itemid: stored.itemid,
        channeldetails: stored.channeldetails,
        payload: stored.payload,
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
            .key(&self.keys.indexed)
            .arg(random_hex(8));
        for e in &events {
            script.key(self.keys.channel(e.hash.as_str()));
            let stored = StoredRef {
                hash: e.hash.as_str(),
                contextid: e.channel.contextid(),
                component: e.channel.component(),
                area: e.channel.area(),
                itemid: e.channel.itemid(),
                channeldetails: e.channel.details(),
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
        (last - n + 1..)
            .zip(events)
            .map(|(id, e)| EventId::new(id).map(|id| Event::from_new(e, id, now)))
            .collect()
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        match hashes {
            None => self.range(after.get(), None, limit).await,
            Some([]) => Ok(Vec::new()),
            Some(hashes) => self.read_indexed(after.get(), hashes, limit).await,
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
            epoch: Epoch::new(epoch)?,
            head: EventId::new(head.unwrap_or(0))?,
            floor: EventId::new(floor.unwrap_or(0))?,
        })
    }

    async fn purge(&self, before: i64) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut removed = 0u64;
        // From the oldest entry, a chunk at a time: the run of entries older than `before` in
        // the chunk goes, with the floor raised in the same script. An unreadable entry goes
        // with the run it sits in.
        loop {
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.events)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(PURGE_CHUNK)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("purge", e))?;
            let mut last_old = None;
            let mut hashes = BTreeSet::new();
            let mut young = false;
            for entry in &reply.ids {
                let id = entry_id(&entry.id)?;
                if let Some(event) = self.parse_or_skip(&entry.id, entry.map.get("e")) {
                    if event.timecreated >= before {
                        young = true;
                        break;
                    }
                    hashes.insert(event.hash);
                }
                last_old = Some(id);
                removed += 1;
            }
            let Some(last_old) = last_old else {
                return Ok(removed);
            };
            let purge = redis::Script::new(PURGE);
            let mut script = purge.prepare_invoke();
            script.key(&self.keys.events).key(&self.keys.floor);
            for h in &hashes {
                script.key(self.keys.channel(h.as_str()));
            }
            let _: i64 = script
                .arg(last_old)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable("purge", e))?;
            if young || reply.ids.len() < PURGE_CHUNK {
                return Ok(removed);
            }
        }
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
    let keys = Keys::new(prefix);
    let mut doomed = vec![keys.events, keys.head, keys.epoch, keys.floor, keys.indexed];
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:ch:*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("delete", e))?;
        doomed.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in doomed.chunks(500) {
        let _: i64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("delete", e))?;
    }
    Ok(())
}
