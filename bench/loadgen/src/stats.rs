//! What the clients and publishers count: one clock for send and receive timestamps, latency
//! histograms, per-client sequence checks (lost, duplicated, out of order), and error samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use memchr::memmem;
use serde_json::{json, Value};

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's first call: the one clock that the payload's send timestamp
/// (`bt`) and the receive time are both read from (publisher and clients share this process).
pub(crate) fn now_ns() -> u64 {
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of microseconds, 1 µs to 10 min, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("invariant: valid histogram bounds")
}

/// p50/p90/p99/p99.9/max/mean of a histogram of microseconds, in milliseconds.
pub(crate) fn summary_ms(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64) / 1000.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": h.mean() / 1000.0,
    })
}

/// No sequence number seen yet on a client.
const NONE: u64 = u64::MAX;

/// One client's counters.
#[derive(Debug)]
pub(crate) struct ClientCounter {
    /// Messages carrying a benchmark payload that this client received.
    pub(crate) received: AtomicU64,
    /// The sum of the `bs` (sequence in its channel) received: with the count, it tells an
    /// exactly-once delivery from a loss hidden by a duplicate.
    pub(crate) seq_sum: AtomicU64,
    /// The last `bs` received.
    last_seq: AtomicU64,
}

impl Default for ClientCounter {
    fn default() -> Self {
        ClientCounter {
            received: AtomicU64::new(0),
            seq_sum: AtomicU64::new(0),
            last_seq: AtomicU64::new(NONE),
        }
    }
}

/// Everything counted during one run, shared by every task.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Per client, by index.
    pub(crate) clients: Vec<ClientCounter>,
    /// Benchmark messages received by all clients.
    pub(crate) delivered: AtomicU64,
    /// A sequence number at or below the last one seen on that client: a duplicate, or two
    /// publishes in flight at once that the server ordered the other way (not an error by
    /// itself; the final count per client decides).
    pub(crate) out_of_order: AtomicU64,
    /// Protocol errors, refused handshakes, unexpected closes, failed publishes.
    pub(crate) errors: AtomicU64,
    /// Receive time (ns) of the first and last benchmark message.
    pub(crate) first_recv: AtomicU64,
    pub(crate) last_recv: AtomicU64,
    /// Publish → receive latency, µs.
    pub(crate) latency: Mutex<Histogram<u64>>,
    /// A few error messages to show.
    error_samples: Mutex<Vec<String>>,
}

impl Stats {
    /// Counters for `n` clients.
    pub(crate) fn new(n: usize) -> Self {
        Stats {
            clients: (0..n).map(|_| ClientCounter::default()).collect(),
            delivered: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_recv: AtomicU64::new(u64::MAX),
            last_recv: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    /// Counts an error and keeps its message among the first few.
    pub(crate) fn error(&self, what: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < 10 {
            s.push(what.into());
        }
    }

    /// The first error messages.
    pub(crate) fn error_samples(&self) -> Vec<String> {
        self.error_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records every benchmark payload (`"bt":NANOS,"bs":SEQ`) found in `bytes`, received now
    /// by client `idx`; returns how many there were.
    pub(crate) fn record(&self, idx: usize, bytes: &[u8]) -> u64 {
        let now = now_ns();
        let finder = memmem::Finder::new(b"\"bt\":");
        let mut found = 0;
        let mut lat = Vec::new();
        let Some(client) = self.clients.get(idx) else {
            return 0;
        };
        let mut at = 0;
        while let Some(pos) = finder.find(&bytes[at..]) {
            let start = at + pos + 5;
            let (bt, used) = parse_u64(&bytes[start..]);
            at = start + used;
            let seq = match memmem::find(&bytes[at..], b"\"bs\":") {
                Some(p) if p < 8 => {
                    let s = at + p + 5;
                    let (v, used) = parse_u64(&bytes[s..]);
                    at = s + used;
                    v
                }
                _ => NONE,
            };
            found += 1;
            lat.push(now.saturating_sub(bt) / 1000);
            if seq != NONE {
                client.seq_sum.fetch_add(seq, Ordering::Relaxed);
                let last = client.last_seq.swap(seq, Ordering::Relaxed);
                if last != NONE && seq <= last {
                    self.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if found > 0 {
            client.received.fetch_add(found, Ordering::Relaxed);
            self.delivered.fetch_add(found, Ordering::Relaxed);
            self.first_recv.fetch_min(now, Ordering::Relaxed);
            self.last_recv.fetch_max(now, Ordering::Relaxed);
            let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            for us in lat {
                h.saturating_record(us.max(1));
            }
        }
        found
    }
}

/// The decimal number at the start of `b`, and how many bytes it took.
fn parse_u64(b: &[u8]) -> (u64, usize) {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(u64::from(c - b'0'));
        n += 1;
    }
    (v, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_payloads_and_checks_sequences() {
        let s = Stats::new(1);
        let frame = br#"{"type":"event","event":{"payload":{"bt":5,"bs":1,"pad":"x"}}}"#;
        assert_eq!(s.record(0, frame), 1);
        let two = br#"data: {"payload":{"bt":5,"bs":2}}\n\ndata: {"payload":{"bt":6,"bs":4}}"#;
        assert_eq!(s.record(0, two), 2);
        assert_eq!(s.record(0, br#"42["ev",{"bt":7,"bs":4}]"#), 1);
        assert_eq!(s.out_of_order.load(Ordering::Relaxed), 1);
        assert_eq!(s.delivered.load(Ordering::Relaxed), 4);
        assert_eq!(s.clients[0].seq_sum.load(Ordering::Relaxed), 11);
    }
}
