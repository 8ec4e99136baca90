//! The hub: one per node. It tails the engine once (not once per client), keeps the most
//! recent events in memory already serialised, and wakes the local subscribers of each
//! channel hash when an event for it arrives.
//!
//! - One tail task reads every new event after the hub's head, in id order, woken by the
//!   engine's change signal or, for appends by other processes, every check interval.
//! - Each event is serialised to JSON once, when it enters the cache; every transport sends
//!   those same bytes.
//! - The cache holds a contiguous run of ids `(cache_floor, head]`, indexed by channel; a
//!   channel also remembers the newest of its events that left, so a quiet channel's cursor
//!   below `cache_floor` is still answered from memory. A client whose cursor is
//!   inside it is answered from memory with no engine query; an older cursor is answered by
//!   one engine read (and `recovered: false` when retention has passed it).
//! - The cache is bounded both in events (`hub.cache_events`) and in bytes (`hub.cache_bytes`):
//!   large payloads shorten the span of ids it covers, not the memory it may take.
//! - A cursor ahead of the engine's head (a restored backup, a Redis that lost its last second
//!   of writes) names ids that were never handed out, or that will be handed out again: it is
//!   answered `recovered: false` and continues from the head, never silently.
//! - Listeners are registered per channel hash and must not block (a long-poll's listener
//!   just wakes its request).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channel::ChannelHash;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Cursor, Epoch, Event, EventId};

/// How many events the tail reads per engine query.
const TAIL_BATCH: usize = 1_000;

/// What one cached event costs besides its bytes (the `Arc`, the two indexes, the hash).
const EVENT_OVERHEAD: usize = 256;

/// About how many bytes one engine read of the resume path may bring into memory: with large
/// events a read of `limits.poll_events` could hold tens of MB per client, only to be cut at
/// `limits.batch_bytes` by the transport (and read again for the next batch).
const RESUME_READ_BYTES: usize = 4 * 1024 * 1024;
/// The fewest events one engine read of the resume path asks for.
const RESUME_READ_MIN: usize = 16;

/// How many events one engine read of the resume path asks for: `limit`, lowered so that
/// events of the cache's current average size fill about [`RESUME_READ_BYTES`].
fn resume_page(limit: usize, cached_bytes: usize, cached: usize) -> usize {
    if cached == 0 {
        return limit;
    }
    let average = (cached_bytes / cached).max(1);
    (RESUME_READ_BYTES / average).clamp(RESUME_READ_MIN.min(limit), limit.max(1))
}

/// The default of `hub.cache_bytes`: 64 MiB.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// An event as the hub keeps it: routed by hash, serialised once.
#[derive(Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct CachedEvent {
    /// The event's id.
    pub id: EventId,
    /// The channel it belongs to.
    pub hash: ChannelHash,
    /// The event in its wire shape, as JSON.
    pub json: Bytes,
    /// The WebSocket frame, made on first use and then shared by every connection.
    ws: OnceLock<Utf8Bytes>,
    /// The SSE record, made on first use and then shared by every stream.
    sse: OnceLock<Bytes>,
}

impl CachedEvent {
    fn from_event(e: &Event) -> Result<Arc<Self>> {
        let json = serde_json::to_vec(e)
            .map_err(|err| Error::Internal(format!("serialising event {}: {err}", e.id.0)))?;
        Ok(Arc::new(CachedEvent {
            id: e.id,
            hash: e.hash.clone(),
            json: Bytes::from(json),
            ws: OnceLock::new(),
            sse: OnceLock::new(),
        }))
    }

    /// What this event may cost in memory while it is cached: its JSON, and the WebSocket
    /// frame and SSE record made from it on first use (each about as long), counted up front
    /// so that the bound holds whatever transports ask for it.
    fn cost(&self) -> usize {
        self.json
            .len()
            .saturating_mul(3)
            .saturating_add(EVENT_OVERHEAD)
    }

    fn json_str(&self) -> &str {
        // The JSON came from serde_json, so it is UTF-8.
        std::str::from_utf8(&self.json).unwrap_or("null")
    }

    /// `{"type":"event","cursor":"EPOCH:ID","event":{...}}`: the same frame for every connection.
    pub(crate) fn ws_frame(&self, epoch: &Epoch) -> Utf8Bytes {
        self.ws
            .get_or_init(|| {
                Utf8Bytes::from(format!(
                    "{{\"type\":\"event\",\"cursor\":\"{}:{}\",\"event\":{}}}",
                    epoch.0,
                    self.id.0,
                    self.json_str()
                ))
            })
            .clone()
    }

    /// `id: EPOCH:ID` and `data: {...}`: the same SSE record for every stream.
    pub(crate) fn sse_frame(&self, epoch: &Epoch) -> Bytes {
        self.sse
            .get_or_init(|| {
                Bytes::from(format!(
                    "id: {}:{}\ndata: {}\n\n",
                    epoch.0,
                    self.id.0,
                    self.json_str()
                ))
            })
            .clone()
    }
}

/// Something that wants to hear about events of some channels. Called on the tail task with
/// the listeners' lock held: it must return at once.
pub(crate) trait Listener: Send + Sync {
    /// An event for one of the listener's channels has arrived.
    fn on_event(&self, event: &Arc<CachedEvent>);
    /// The engine's store changed: every cursor of the old epoch is void.
    fn on_reset(&self) {}
}

/// A listener that wakes one waiting task (a long-poll request).
#[derive(Debug, Default)]
pub(crate) struct Wake(pub Notify);

impl Listener for Wake {
    fn on_event(&self, _event: &Arc<CachedEvent>) {
        self.0.notify_one();
    }

    fn on_reset(&self) {
        self.0.notify_one();
    }
}

/// What a poll (or a resume) gets: the events, where to continue, and whether the stream was
/// continuous since the cursor the client gave.
#[derive(Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct Batch {
    /// Events after the cursor, ascending.
    pub events: Vec<Arc<CachedEvent>>,
    /// Where the client continues.
    pub cursor: Cursor,
    /// False when events after the client's cursor may have been lost (another epoch, or
    /// older than retention): the client should reload its state.
    pub recovered: bool,
}

/// Recent events in id order, and the same events indexed by channel, so that a client reads
/// only its own channels' events after its cursor (not every event since, which made the cost
/// of a wake-up grow with the traffic of all other channels).
#[derive(Debug, Default)]
struct Cache {
    all: VecDeque<Arc<CachedEvent>>,
    /// Per channel: its cached events, and the newest of its events that left the cache. A
    /// channel whose events have all left keeps its entry (bounded by `forget_quiet`), so that
    /// the cursor of a channel quieter than the cache's span is still answered from memory:
    /// the cache holds the last N events of all channels, which at a high total rate is a short
    /// time, and a quiet channel's client would otherwise need an engine read at every wake-up.
    by_hash: HashMap<ChannelHash, Chan>,
    /// Below this id the per-channel record is incomplete: the hub's start, a reset, the
    /// retention floor, or channels forgotten to bound the map.
    known_from: EventId,
    /// The sum of the cached events' [`CachedEvent::cost`].
    bytes: usize,
}

/// One channel in the cache.
#[derive(Debug, Default)]
struct Chan {
    events: VecDeque<Arc<CachedEvent>>,
    /// The newest event of this channel that has left the cache.
    gone: EventId,
}

impl Cache {
    /// An empty cache that knows nothing below `id`.
    fn starting_at(id: EventId) -> Self {
        Cache {
            known_from: id,
            ..Cache::default()
        }
    }

    fn len(&self) -> usize {
        self.all.len()
    }

    fn push(&mut self, e: Arc<CachedEvent>) {
        self.bytes = self.bytes.saturating_add(e.cost());
        self.by_hash
            .entry(e.hash.clone())
            .or_default()
            .events
            .push_back(e.clone());
        self.all.push_back(e);
    }

    /// Drops the oldest event (also the oldest of its channel) and returns its id.
    fn pop(&mut self) -> Option<EventId> {
        let old = self.all.pop_front()?;
        self.bytes = self.bytes.saturating_sub(old.cost());
        if let Some(c) = self.by_hash.get_mut(&old.hash) {
            c.events.pop_front();
            c.gone = old.id;
        }
        Some(old.id)
    }

    /// Bounds the map: past `max` channels, those with no cached event are forgotten, and
    /// `known_from` rises to the newest id any of them had seen leave.
    fn forget_quiet(&mut self, max: usize) {
        if self.by_hash.len() <= max {
            return;
        }
        let mut known = self.known_from;
        self.by_hash.retain(|_, c| {
            if c.events.is_empty() {
                known = known.max(c.gone);
                false
            } else {
                true
            }
        });
        self.known_from = known;
    }

    /// Whether every event of `hashes` after `after` is still cached, for a cursor below the
    /// oldest cached event: no event of these channels has left the cache since `after`.
    fn complete_after(&self, hashes: &[ChannelHash], after: EventId) -> bool {
        after >= self.known_from
            && hashes
                .iter()
                .all(|h| self.by_hash.get(h).is_none_or(|c| after >= c.gone))
    }

    fn oldest(&self) -> Option<EventId> {
        self.all.front().map(|e| e.id)
    }

    /// Events of `hashes` with an id above `after`, ascending, at most `limit`.
    fn after(&self, hashes: &[ChannelHash], after: EventId, limit: usize) -> Vec<Arc<CachedEvent>> {
        let mut out: Vec<Arc<CachedEvent>> = Vec::new();
        for h in hashes {
            if let Some(c) = self.by_hash.get(h) {
                let start = c.events.partition_point(|e| e.id <= after);
                out.extend(c.events.range(start..).take(limit).cloned());
            }
        }
        if hashes.len() > 1 {
            out.sort_unstable_by_key(|e| e.id);
        }
        out.truncate(limit);
        out
    }
}

#[derive(Debug)]
struct State {
    cache: Cache,
    /// Every event with `cache_floor < id <= head` is in `cache`.
    cache_floor: EventId,
    /// The store's incarnation; it changes when the engine's store is replaced or lost.
    epoch: Epoch,
    /// The epoch before the last change, and where its clients continue in the new one: the
    /// start of the new store, so that events appended since the change are not skipped.
    previous: Option<(Epoch, EventId)>,
    /// The newest id the hub has taken from the engine.
    head: EventId,
    /// The engine's floor, as last read.
    floor: EventId,
}

type ListenerMap = HashMap<ChannelHash, Vec<(u64, Arc<dyn Listener>)>>;

/// This node's subscribers and its view of the engine. Shared as `Arc<Hub>`.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct Hub {
    engine: Arc<dyn Engine>,
    /// Most events in the cache.
    capacity: usize,
    /// Most bytes in the cache (as [`CachedEvent::cost`] counts them).
    capacity_bytes: usize,
    state: RwLock<State>,
    listeners: Mutex<ListenerMap>,
    next_listener: AtomicU64,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("engine", &self.engine.name())
            .field("epoch", &self.epoch())
            .finish()
    }
}

/// Removes a listener when dropped.
pub(crate) struct ListenGuard {
    hub: Arc<Hub>,
    id: u64,
    hashes: Vec<ChannelHash>,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        let mut map = self.hub.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for h in &self.hashes {
            if let Some(v) = map.get_mut(h) {
                v.retain(|(id, _)| *id != self.id);
                if v.is_empty() {
                    map.remove(h);
                }
            }
        }
    }
}

impl Hub {
    /// A hub positioned at the engine's current head (older events are read on demand), its
    /// cache bounded to `capacity` events and [`DEFAULT_CACHE_BYTES`].
    ///
    /// # Errors
    /// When the engine cannot tell its position.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub async fn new(engine: Arc<dyn Engine>, capacity: usize) -> Result<Arc<Self>> {
        Self::with_limits(engine, capacity, DEFAULT_CACHE_BYTES).await
    }

    /// As [`Hub::new`], the cache bounded to `capacity` events and `bytes` bytes, whichever
    /// is reached first (`hub.cache_events`, `hub.cache_bytes`).
    ///
    /// # Errors
    /// When the engine cannot tell its position.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub async fn with_limits(
        engine: Arc<dyn Engine>,
        capacity: usize,
        bytes: usize,
    ) -> Result<Arc<Self>> {
        let pos = engine.position().await?;
        Ok(Arc::new(Hub {
            engine,
            capacity: capacity.max(1),
            capacity_bytes: bytes,
            state: RwLock::new(State {
                epoch: pos.epoch,
                cache: Cache::starting_at(pos.head),
                cache_floor: pos.head,
                head: pos.head,
                floor: pos.floor,
                previous: None,
            }),
            listeners: Mutex::new(HashMap::new()),
            next_listener: AtomicU64::new(1),
            healthy: AtomicBool::new(true),
        }))
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine's epoch.
    pub(crate) fn epoch(&self) -> Epoch {
        self.read_state().epoch.clone()
    }

    /// The cursor of the newest event this node has seen.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub fn head(&self) -> Cursor {
        let st = self.read_state();
        Cursor {
            epoch: st.epoch.clone(),
            id: st.head,
        }
    }

    /// Whether the last engine operation of the tail succeeded.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// How many events the cache holds now.
    pub(crate) fn cached(&self) -> usize {
        self.read_state().cache.len()
    }

    /// How many bytes the cache holds now, as its bound (`hub.cache_bytes`) counts them: each
    /// event's JSON and the frames made from it.
    #[cfg(test)]
    pub(crate) fn cached_bytes(&self) -> usize {
        self.read_state().cache.bytes
    }

    /// How many channel hashes have at least one local listener.
    pub(crate) fn channels(&self) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Registers `listener` for `hashes` until the guard is dropped.
    pub(crate) fn listen(
        self: &Arc<Self>,
        hashes: &[ChannelHash],
        listener: Arc<dyn Listener>,
    ) -> ListenGuard {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for h in hashes {
            map.entry(h.clone())
                .or_default()
                .push((id, listener.clone()));
        }
        ListenGuard {
            hub: self.clone(),
            id,
            hashes: hashes.to_vec(),
        }
    }

    /// Tails the engine until `cancel`: reads new events when the engine signals a change and
    /// at least every `interval`, and refreshes the floor.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub async fn run_tail(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let changes = self.engine.changes();
        let mut checked = tokio::time::Instant::now();
        loop {
            let mut failed = !self.catch_up().await;
            // The position (epoch, floor) is checked once per interval however often the
            // change signal fires, so a busy engine cannot starve the check.
            if checked.elapsed() >= interval {
                checked = tokio::time::Instant::now();
                match self.engine.position().await {
                    Ok(pos) if pos.epoch != self.epoch() => self.reset(pos),
                    // Same store, but behind what this node already read: the store went back
                    // (a restored backup, a Redis that lost its last writes). The ids above its
                    // head will be handed out again, to other events.
                    Ok(pos) if pos.head < self.read_state().head => self.rewind(pos),
                    Ok(pos) => self.raise_floor(pos.floor),
                    Err(e) => {
                        tracing::warn!(error = %e, "engine position failed");
                        failed = true;
                    }
                }
            }
            if failed {
                self.healthy.store(false, Ordering::Relaxed);
            }
            tokio::select! {
                _ = changes.notified() => {}
                _ = tokio::time::sleep_until(checked + interval) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// The engine's store was replaced or lost (a Redis restart without persistence, a new
    /// database): start over at its position and wake every listener, so that each client is
    /// told `recovered: false` and continues in the new epoch.
    fn reset(&self, pos: crate::engine::Position) {
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            if st.epoch == pos.epoch {
                // Another caller (the tail, or a fetch with a cursor of the new epoch) was first.
                return;
            }
            tracing::warn!(old = %st.epoch.0, new = %pos.epoch.0, "the engine's store changed; clients will resume with recovered:false");
            let previous = Some((st.epoch.clone(), pos.floor));
            *st = State {
                cache: Cache::starting_at(pos.head),
                cache_floor: pos.head,
                head: pos.head,
                floor: pos.floor,
                epoch: pos.epoch,
                previous,
            };
        }
        let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for ls in map.values() {
            for (_, l) in ls {
                l.on_reset();
            }
        }
    }

    /// The store went back to `pos.head` in the same epoch: forget what was read above it (those
    /// ids will name other events) and wake every listener, so that each client whose cursor
    /// is now ahead of the head is told `recovered: false` and continues from it.
    fn rewind(&self, pos: crate::engine::Position) {
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            tracing::warn!(epoch = %st.epoch.0, read = st.head.0, head = pos.head.0, "the engine's head went back (a restored backup?); clients ahead of it will resume with recovered:false");
            st.cache = Cache::starting_at(pos.head);
            st.cache_floor = pos.head;
            st.head = pos.head;
            st.floor = pos.floor;
        }
        let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for ls in map.values() {
            for (_, l) in ls {
                l.on_reset();
            }
        }
    }

    /// Reads and dispatches everything new; false when the engine failed.
    async fn catch_up(&self) -> bool {
        loop {
            let after = self.read_state().head;
            metrics::counter!(crate::telemetry::ENGINE_READS, "path" => "tail").increment(1);
            match self.engine.read(after, None, TAIL_BATCH).await {
                Ok(events) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    let n = events.len();
                    if let Err(e) = self.ingest(&events) {
                        tracing::error!(error = %e, "ingesting events");
                        return false;
                    }
                    if n < TAIL_BATCH {
                        return true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "engine tail read failed; retrying at the next interval");
                    return false;
                }
            }
        }
    }

    fn ingest(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let cached = events
            .iter()
            .map(CachedEvent::from_event)
            .collect::<Result<Vec<_>>>()?;
        let mut fresh = Vec::with_capacity(cached.len());
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            for c in cached {
                if c.id <= st.head {
                    continue;
                }
                st.head = c.id;
                st.cache.push(c.clone());
                fresh.push(c);
            }
            while st.cache.len() > self.capacity
                || (st.cache.bytes > self.capacity_bytes && st.cache.len() > 0)
            {
                if let Some(old) = st.cache.pop() {
                    st.cache_floor = old;
                }
            }
            st.cache
                .forget_quiet(self.capacity.saturating_mul(2).max(1024));
            metrics::gauge!(crate::telemetry::CACHED_EVENTS).set(st.cache.len() as f64);
        }
        let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for c in &fresh {
            if let Some(ls) = map.get(&c.hash) {
                for (_, l) in ls {
                    l.on_event(c);
                }
            }
        }
        Ok(())
    }

    /// Events of `hashes` after `after` from the cache, and how far they were checked; `None`
    /// when the cache no longer reaches back to `after`.
    fn cached_after(
        &self,
        hashes: &[ChannelHash],
        cursor: &Cursor,
        limit: usize,
    ) -> Option<(Vec<Arc<CachedEvent>>, EventId)> {
        let st = self.read_state();
        let after = cursor.id;
        if cursor.epoch != st.epoch
            || (after < st.cache_floor && !st.cache.complete_after(hashes, after))
        {
            return None;
        }
        let out = st.cache.after(hashes, after, limit);
        // Everything up to the head was looked at, unless the answer was cut at `limit`.
        let checked = match out.last() {
            Some(e) if out.len() == limit => e.id,
            _ => after.max(st.head),
        };
        Some((out, checked))
    }

    /// Events of `hashes` after `cursor`, at once: from the cache when it reaches back that far,
    /// else from the engine. `recovered` is false (with no events and the current head as the
    /// cursor) when the cursor is from another epoch or older than retention.
    ///
    /// # Errors
    /// When the engine had to be read and failed.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub async fn fetch(
        &self,
        hashes: &[ChannelHash],
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Batch> {
        let (epoch, head) = {
            let st = self.read_state();
            (st.epoch.clone(), st.head)
        };
        let (epoch, head) = if cursor.epoch == epoch {
            (epoch, head)
        } else {
            // Another epoch: the cursor's store is gone, or this node has not noticed yet that
            // the engine's store changed (its tail checks once per interval) while a client of
            // a node that has comes here. Ask the engine rather than send that client back to
            // the old store.
            let pos = self.engine.position().await?;
            if pos.epoch != cursor.epoch || pos.epoch == epoch {
                return Ok(self.not_recovered(cursor));
            }
            self.reset(pos);
            let st = self.read_state();
            if st.epoch != cursor.epoch {
                return Ok(self.not_recovered(cursor));
            }
            (st.epoch.clone(), st.head)
        };
        if cursor.id > head {
            // Ahead of this node: the hub may only lag the engine (a client of a faster node),
            // or the id was never handed out in this store, or the store went back (a restored
            // backup): then those ids will name other events, and the client would never get
            // them while being told it missed nothing.
            let pos = self.engine.position().await?;
            if pos.epoch != cursor.epoch {
                return Ok(self.not_recovered(cursor));
            }
            if cursor.id > pos.head {
                tracing::debug!(cursor = %cursor, head = pos.head.0, "a cursor ahead of the engine's head");
                return Ok(Batch {
                    events: Vec::new(),
                    cursor: Cursor {
                        epoch,
                        id: pos.head.min(self.read_state().head),
                    },
                    recovered: false,
                });
            }
        }
        if let Some((events, checked)) = self.cached_after(hashes, cursor, limit) {
            return Ok(Batch {
                events,
                cursor: Cursor {
                    epoch: cursor.epoch.clone(),
                    id: checked,
                },
                recovered: true,
            });
        }
        // Older than the cache: one engine read, then the floor (read after, so that a purge
        // racing with the read is noticed).
        let (head_before, limit) = {
            let st = self.read_state();
            (st.head, resume_page(limit, st.cache.bytes, st.cache.len()))
        };
        metrics::counter!(crate::telemetry::ENGINE_READS, "path" => "resume").increment(1);
        let events = self.engine.read(cursor.id, Some(hashes), limit).await?;
        let pos = self.engine.position().await?;
        if pos.epoch != cursor.epoch || cursor.id < pos.floor {
            return Ok(self.not_recovered(cursor));
        }
        let last = events.last().map(|e| e.id);
        let checked = match last {
            Some(id) if events.len() == limit => id,
            _ => cursor.id.max(head_before).max(last.unwrap_or_default()),
        };
        let events = events
            .iter()
            .map(CachedEvent::from_event)
            .collect::<Result<Vec<_>>>()?;
        Ok(Batch {
            events,
            cursor: Cursor {
                epoch: cursor.epoch.clone(),
                id: checked,
            },
            recovered: true,
        })
    }

    /// The answer for a cursor that cannot be resumed: continue from the head now or, for a
    /// cursor of the epoch just replaced, from the start of the new store (so that a client
    /// connected across an engine restart misses nothing appended after it).
    fn not_recovered(&self, cursor: &Cursor) -> Batch {
        let st = self.read_state();
        let id = match &st.previous {
            Some((old, start)) if *old == cursor.epoch => *start,
            _ => st.head,
        };
        Batch {
            events: Vec::new(),
            cursor: Cursor {
                epoch: st.epoch.clone(),
                id,
            },
            recovered: false,
        }
    }

    /// A long-poll: answers at once when events after `cursor` exist, else waits until one
    /// arrives, `timeout` passes, or `cancel` fires (then it answers empty with the cursor
    /// advanced to what was checked). A zero timeout is short polling.
    ///
    /// # Errors
    /// When the engine had to be read and failed.
    pub(crate) async fn wait(
        self: &Arc<Self>,
        hashes: &[ChannelHash],
        cursor: Cursor,
        limit: usize,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Batch> {
        let wake = Arc::new(Wake::default());
        // Listen before looking, so that an event landing in between still wakes us.
        let _guard = self.listen(hashes, wake.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        let mut cursor = cursor;
        loop {
            let batch = self.fetch(hashes, &cursor, limit).await?;
            if !batch.events.is_empty() || !batch.recovered || timeout.is_zero() {
                return Ok(batch);
            }
            cursor = batch.cursor;
            tokio::select! {
                _ = wake.0.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Batch { events: Vec::new(), cursor, recovered: true }),
                _ = cancel.cancelled() => return Ok(Batch { events: Vec::new(), cursor, recovered: true }),
            }
        }
    }

    /// Raises the known floor (after a purge here or elsewhere) and drops cached events at or
    /// below it, so that every node answers a cursor older than retention alike
    /// (`recovered: false`), whatever its cache still holds.
    pub(crate) fn raise_floor(&self, floor: EventId) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if floor <= st.floor {
            return;
        }
        st.floor = floor;
        while st.cache.oldest().is_some_and(|id| id <= floor) {
            st.cache.pop();
        }
        st.cache_floor = st.cache_floor.max(floor);
        st.cache.known_from = st.cache.known_from.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use serde_json::value::RawValue;

    use super::*;
    use crate::channel::Channel;
    use crate::engine::{MemoryEngine, Position};
    use crate::event::NewEvent;
    use crate::secret::Secret;

    /// The memory engine, counting the reads of the resume path (filtered by channel; the
    /// tail's reads are not).
    #[derive(Debug, Default)]
    struct Counting(MemoryEngine, AtomicUsize);

    #[async_trait]
    impl Engine for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
            self.0.append(events).await
        }
        async fn read(
            &self,
            after: EventId,
            hashes: Option<&[ChannelHash]>,
            limit: usize,
        ) -> Result<Vec<Event>> {
            if hashes.is_some() {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
            self.0.read(after, hashes, limit).await
        }
        async fn position(&self) -> Result<Position> {
            self.0.position().await
        }
        async fn purge(&self, before: i64) -> Result<u64> {
            self.0.purge(before).await
        }
        fn changes(&self) -> Arc<Notify> {
            self.0.changes()
        }
    }

    fn event(contextid: i64) -> NewEvent {
        let channel = Channel::new(contextid, "mod_x", "a", 0, "").expect("a valid channel");
        let hash = channel.hash(&Secret::from_bytes(b"hub".to_vec()));
        let payload = RawValue::from_string("1".into()).expect("JSON");
        NewEvent {
            channel,
            hash,
            payload,
        }
    }

    fn big_event(contextid: i64, bytes: usize) -> NewEvent {
        let mut e = event(contextid);
        e.payload = RawValue::from_string(format!("\"{}\"", "x".repeat(bytes))).expect("JSON");
        e
    }

    /// 100 events of 60 KB: far under `cache_events`, but the cache stays under its byte
    /// bound, and a cursor older than what it kept is answered by the engine, complete.
    #[tokio::test]
    async fn the_cache_is_bounded_in_bytes_and_older_cursors_go_to_the_engine() {
        let engine = Arc::new(Counting::default());
        let bound = 1024 * 1024;
        let hub = Hub::with_limits(engine.clone(), 10_000, bound)
            .await
            .expect("hub");
        let start = Cursor {
            epoch: hub.epoch(),
            id: hub.head().id,
        };
        let hash = event(1).hash;
        for _ in 0..10 {
            let batch = (0..10).map(|_| big_event(1, 60_000)).collect();
            engine.append(batch).await.expect("append");
            assert!(hub.catch_up().await);
            assert!(
                hub.cached_bytes() <= bound,
                "{} bytes cached, bound {bound}",
                hub.cached_bytes()
            );
        }
        assert_eq!(hub.head().id, EventId(100));
        let kept = hub.cached();
        assert!(kept > 0 && kept < 100, "{kept} events cached");
        // 3 × 60 KB per event: at most 5 fit in 1 MiB.
        assert!(kept <= 5, "{kept} events cached");

        // The newest events: from memory.
        let recent = Cursor {
            epoch: hub.epoch(),
            id: EventId(99),
        };
        let batch = hub
            .fetch(std::slice::from_ref(&hash), &recent, 1000)
            .await
            .expect("fetch");
        assert!(batch.recovered);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(engine.1.load(Ordering::Relaxed), 0, "no engine read");

        // From the start: engine reads of a few MB each (not 1000 events of 60 KB at once),
        // continued by cursor: every event, in order, once.
        let mut cursor = start;
        let mut ids = Vec::new();
        let mut reads = 0;
        while cursor.id < EventId(100) {
            let batch = hub
                .fetch(std::slice::from_ref(&hash), &cursor, 1000)
                .await
                .expect("fetch");
            assert!(batch.recovered);
            assert!(!batch.events.is_empty(), "progress from {cursor}");
            let bytes: usize = batch.events.iter().map(|e| e.json.len()).sum();
            assert!(bytes <= 2 * RESUME_READ_BYTES, "{bytes} bytes in one read");
            ids.extend(batch.events.iter().map(|e| e.id.0));
            cursor = batch.cursor;
            reads += 1;
        }
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        assert_eq!(engine.1.load(Ordering::Relaxed), reads);
        assert!(reads > 1, "large events are read in pages");
    }

    /// A memory engine that can be replaced by a new one (a new store, a new epoch), as a Redis
    /// restart without persistence replaces its store.
    #[derive(Default)]
    struct Replaceable(std::sync::Mutex<Arc<MemoryEngine>>);

    impl Replaceable {
        fn now(&self) -> Arc<MemoryEngine> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
        fn replace(&self) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(MemoryEngine::default());
        }
    }

    #[async_trait]
    impl Engine for Replaceable {
        fn name(&self) -> &'static str {
            "replaceable"
        }
        async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
            self.now().append(events).await
        }
        async fn read(
            &self,
            after: EventId,
            hashes: Option<&[ChannelHash]>,
            limit: usize,
        ) -> Result<Vec<Event>> {
            self.now().read(after, hashes, limit).await
        }
        async fn position(&self) -> Result<Position> {
            self.now().position().await
        }
        async fn purge(&self, before: i64) -> Result<u64> {
            self.now().purge(before).await
        }
        fn changes(&self) -> Arc<Notify> {
            self.now().changes()
        }
    }

    /// A client that comes from a node which already saw the engine's new store, to a node
    /// whose tail has not checked yet: it continues in the new store (recovered, with its
    /// events), and is not sent back to the old one.
    #[tokio::test]
    async fn a_cursor_of_the_engines_new_epoch_is_served_before_the_tail_notices() {
        let engine = Arc::new(Replaceable::default());
        let hub = Hub::new(engine.clone(), 100).await.expect("hub");
        let old = hub.epoch();
        engine.append(vec![event(1)]).await.expect("append");
        engine.replace();
        let stored = engine
            .append(vec![event(1), event(1)])
            .await
            .expect("append");
        let pos = engine.position().await.expect("position");
        assert_ne!(pos.epoch, old, "a new store has a new epoch");
        let cursor = Cursor {
            epoch: pos.epoch.clone(),
            id: stored[0].id,
        };
        let hash = event(1).hash;
        let batch = hub
            .fetch(std::slice::from_ref(&hash), &cursor, 100)
            .await
            .expect("fetch");
        assert!(batch.recovered, "{batch:?}");
        assert_eq!(batch.cursor.epoch, pos.epoch);
        let ids: Vec<EventId> = batch.events.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![stored[1].id]);
        assert_eq!(hub.epoch(), pos.epoch, "the hub moved to the new store");
        // A cursor of the old store is told it cannot be resumed, in the new epoch.
        let gone = Cursor {
            epoch: old,
            id: EventId(1),
        };
        let batch = hub
            .fetch(std::slice::from_ref(&hash), &gone, 100)
            .await
            .expect("fetch");
        assert!(!batch.recovered);
        assert_eq!(batch.cursor.epoch, pos.epoch);
    }

    /// A channel quieter than the cache's span: its client's cursor falls below the oldest
    /// cached event, yet nothing of its channel left the cache since, so it is answered from
    /// memory — and an event of its own that did leave still sends it to the engine.
    #[tokio::test]
    async fn a_quiet_channel_below_the_cache_floor_is_answered_from_memory() {
        let engine = Arc::new(Counting::default());
        let hub = Hub::new(engine.clone(), 4).await.expect("hub");
        let quiet = event(1).hash;
        let stored = engine.append(vec![event(1)]).await.expect("append");
        assert!(hub.catch_up().await);
        let cursor = Cursor {
            epoch: hub.epoch(),
            id: stored[0].id,
        };
        // Ten events of other channels push the quiet one's event out of a 4-event cache.
        for c in 2..12 {
            engine.append(vec![event(c)]).await.expect("append");
        }
        assert!(hub.catch_up().await);
        let batch = hub
            .fetch(std::slice::from_ref(&quiet), &cursor, 100)
            .await
            .expect("fetch");
        assert!(batch.recovered && batch.events.is_empty());
        assert_eq!(batch.cursor.id, hub.head().id);
        assert_eq!(engine.1.load(Ordering::Relaxed), 0, "no engine read");
        // From before its own event (which has left the cache), the engine must answer.
        let older = Cursor {
            epoch: hub.epoch(),
            id: EventId(0),
        };
        let batch = hub
            .fetch(std::slice::from_ref(&quiet), &older, 100)
            .await
            .expect("fetch");
        assert_eq!(batch.events.len(), 1);
        assert_eq!(engine.1.load(Ordering::Relaxed), 1);
    }
}
