//! Metrics, through the `metrics` facade: the library records, the application chooses the
//! recorder (the `realtime` binary exports them in Prometheus format at `/metrics`). Without a
//! recorder every call is a no-op.

use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

/// Events appended through this node.
pub(crate) const EVENTS_NOTIFIED: &str = "realtime_events_notified_total";
/// Events written to clients, by transport.
pub(crate) const EVENTS_DELIVERED: &str = "realtime_events_delivered_total";
/// Reads the hub made of the engine: `tail` (one per batch of new events, per node) and
/// `resume` (a cursor older than the cache). Polls answered from the cache add none.
pub(crate) const ENGINE_READS: &str = "realtime_engine_reads_total";
/// Long-poll requests answered.
pub(crate) const POLLS: &str = "realtime_polls_total";
/// Open WebSocket connections and SSE streams, by transport.
pub(crate) const CONNECTIONS: &str = "realtime_connections";
/// WebSocket clients cut off for not reading (close code 4008).
pub(crate) const SLOW_CONSUMERS: &str = "realtime_slow_consumers_total";
/// Sends to server, by path (`websocket`, `http`) and outcome (`ok`, `error`).
pub(crate) const SENDS: &str = "realtime_sends_total";
/// Events in this node's cache.
pub(crate) const CACHED_EVENTS: &str = "realtime_hub_cached_events";

/// Registers the descriptions (once per process is enough; repeating is harmless).
pub(crate) fn describe() {
    describe_counter!(
        EVENTS_NOTIFIED,
        Unit::Count,
        "Events appended through this node."
    );
    describe_counter!(
        EVENTS_DELIVERED,
        Unit::Count,
        "Events written to clients, by transport."
    );
    describe_counter!(ENGINE_READS, Unit::Count, "Engine reads by the hub: tail (per batch of new events) and resume (cursor older than the cache).");
    describe_counter!(POLLS, Unit::Count, "Long-poll requests answered.");
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open WebSocket connections and SSE streams."
    );
    describe_counter!(
        SLOW_CONSUMERS,
        Unit::Count,
        "WebSocket clients cut off for not reading."
    );
    describe_counter!(SENDS, Unit::Count, "Sends to server, by path and outcome.");
    describe_gauge!(CACHED_EVENTS, Unit::Count, "Events in this node's cache.");
}

/// Counts one send's outcome.
pub(crate) fn send(path: &'static str, ok: bool) {
    counter!(SENDS, "path" => path, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// Counts events written to clients of `transport`.
pub(crate) fn delivered(transport: &'static str, n: usize) {
    if n > 0 {
        counter!(EVENTS_DELIVERED, "transport" => transport).increment(n as u64);
    }
}

/// Counts one open connection of `transport` while it lives.
pub(crate) struct Connection(&'static str);

impl Connection {
    pub(crate) fn open(transport: &'static str) -> Self {
        gauge!(CONNECTIONS, "transport" => transport).increment(1.0);
        Connection(transport)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        gauge!(CONNECTIONS, "transport" => self.0).decrement(1.0);
    }
}
