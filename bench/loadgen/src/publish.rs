//! Publishing the benchmark payload `{"bt":SEND_NANOS,"bs":SEQ,"pad":"…"}` the way each target
//! takes it: our `POST /api/notify` (one event or a batch; answered once durable), the Socket.IO
//! peer's `POST /publish`, the raw loop's publish WebSocket (`ROOM<TAB>PAYLOAD` frames).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{new_histogram, now_ns, Stats};

/// Where and how to publish.
#[derive(Debug)]
pub(crate) enum Publisher {
    /// Our server's application API.
    Ours {
        http: reqwest::Client,
        base: String,
        key: String,
    },
    /// The Socket.IO peer's HTTP endpoint.
    Socketio { http: reqwest::Client, base: String },
    /// The raw loop's publish connection.
    Raw(Box<tokio::sync::Mutex<WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>>>),
}

/// The JSON of channel `ch` (client `ch`'s own channel; 0 is the broadcast channel).
pub(crate) fn channel_json(ch: usize) -> String {
    format!(
        r#"{{"contextid":{},"component":"mod_bench","area":"bench"}}"#,
        ch + 1
    )
}

/// The room of channel `ch` on the peers.
pub(crate) fn room(ch: usize, broadcast: bool) -> String {
    if broadcast {
        "bench".into()
    } else {
        format!("r{ch}")
    }
}

impl Publisher {
    /// A publisher for the raw loop: opens its publish WebSocket.
    pub(crate) async fn raw(host: &str) -> Result<Self, String> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{host}/publish"))
            .await
            .map_err(|e| format!("raw publish connection: {e}"))?;
        Ok(Publisher::Raw(Box::new(tokio::sync::Mutex::new(ws))))
    }

    /// Publishes `events` (channel index, payload JSON) in one request.
    pub(crate) async fn publish(
        &self,
        events: &[(usize, String)],
        broadcast: bool,
    ) -> Result<(), String> {
        match self {
            Publisher::Ours { http, base, key } => {
                let body = if let [(ch, payload)] = events {
                    format!(r#"{{"channel":{},"payload":{payload}}}"#, channel_json(*ch))
                } else {
                    let items: Vec<String> = events
                        .iter()
                        .map(|(ch, p)| {
                            format!(r#"{{"channel":{},"payload":{p}}}"#, channel_json(*ch))
                        })
                        .collect();
                    format!(r#"{{"events":[{}]}}"#, items.join(","))
                };
                let resp = http
                    .post(format!("{base}/api/notify"))
                    .bearer_auth(key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("notify: {e}"))?;
                let status = resp.status();
                if !status.is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    return Err(format!("notify answered {status}: {text}"));
                }
                resp.bytes()
                    .await
                    .map_err(|e| format!("notify answer: {e}"))?;
                Ok(())
            }
            Publisher::Socketio { http, base } => {
                let items: Vec<String> = events
                    .iter()
                    .map(|(ch, p)| {
                        format!(r#"{{"room":"{}","payload":{p}}}"#, room(*ch, broadcast))
                    })
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
                let resp = http
                    .post(format!("{base}/publish"))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("publish answered {status}"));
                }
                resp.bytes()
                    .await
                    .map_err(|e| format!("publish answer: {e}"))?;
                Ok(())
            }
            Publisher::Raw(ws) => {
                let mut ws = ws.lock().await;
                for (ch, p) in events {
                    ws.feed(Message::text(format!("{}\t{p}", room(*ch, broadcast))))
                        .await
                        .map_err(|e| format!("raw publish: {e}"))?;
                }
                ws.flush().await.map_err(|e| format!("raw publish: {e}"))
            }
        }
    }
}

/// What a publishing run produced.
#[derive(Debug)]
pub(crate) struct Published {
    /// Per channel: events acknowledged, and the sum of their sequence numbers.
    pub(crate) count: Vec<AtomicU64>,
    pub(crate) seq_sum: Vec<AtomicU64>,
    /// Requests sent and failed.
    pub(crate) requests: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Request → acknowledgement, µs.
    pub(crate) ack: Mutex<Histogram<u64>>,
    /// When the first request was sent and the last acknowledged (ns).
    pub(crate) first_send: AtomicU64,
    pub(crate) last_ack: AtomicU64,
    /// Ticks that found every request slot busy (the publisher fell behind its rate).
    pub(crate) late: AtomicU64,
}

impl Published {
    pub(crate) fn new(channels: usize) -> Self {
        Published {
            count: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            seq_sum: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ack: Mutex::new(new_histogram()),
            first_send: AtomicU64::new(u64::MAX),
            last_ack: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    /// Events acknowledged in all.
    pub(crate) fn total(&self) -> u64 {
        self.count.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// How to publish.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Requests per second (0: as fast as `concurrency` allows).
    pub(crate) rate: f64,
    /// Events per request.
    pub(crate) batch: usize,
    /// How many requests in all.
    pub(crate) requests: u64,
    /// No request is sent after this.
    pub(crate) until: Option<std::time::Instant>,
    /// Channels the events go to, round robin.
    pub(crate) channels: usize,
    /// All events to channel 0 / room `bench`.
    pub(crate) broadcast: bool,
    /// Requests in flight at most.
    pub(crate) concurrency: usize,
    /// The `pad` string of the payload.
    pub(crate) pad: String,
}

/// Publishes `plan.requests` requests at `plan.rate`, each stamped with its send time; calls
/// `tick` after each request is sent.
pub(crate) async fn run(
    publisher: Arc<Publisher>,
    plan: Plan,
    out: Arc<Published>,
    stats: Arc<Stats>,
    tick: impl Fn(),
) {
    let slots = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut ticker = (plan.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let channels = plan.channels.max(1);
    let mut seq = vec![0u64; channels];
    let mut next = 0usize;
    for _ in 0..plan.requests {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        if plan.until.is_some_and(|u| std::time::Instant::now() >= u) {
            break;
        }
        let mut events = Vec::with_capacity(plan.batch);
        for _ in 0..plan.batch {
            let ch = if plan.broadcast { 0 } else { next % channels };
            next += 1;
            seq[ch] += 1;
            events.push((ch, seq[ch]));
        }
        if slots.available_permits() == 0 {
            out.late.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (publisher, out, stats, pad, broadcast) = (
            publisher.clone(),
            out.clone(),
            stats.clone(),
            plan.pad.clone(),
            plan.broadcast,
        );
        tokio::spawn(async move {
            let sent = now_ns();
            out.first_send.fetch_min(sent, Ordering::Relaxed);
            let payloads: Vec<(usize, String)> = events
                .iter()
                .map(|&(ch, s)| (ch, format!(r#"{{"bt":{sent},"bs":{s},"pad":"{pad}"}}"#)))
                .collect();
            out.requests.fetch_add(1, Ordering::Relaxed);
            match publisher.publish(&payloads, broadcast).await {
                Ok(()) => {
                    let done = now_ns();
                    out.last_ack.fetch_max(done, Ordering::Relaxed);
                    out.ack
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .saturating_record((done.saturating_sub(sent) / 1000).max(1));
                    for (ch, s) in events {
                        if let (Some(c), Some(sum)) = (out.count.get(ch), out.seq_sum.get(ch)) {
                            c.fetch_add(1, Ordering::Relaxed);
                            sum.fetch_add(s, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    out.failed.fetch_add(1, Ordering::Relaxed);
                    stats.error(e);
                }
            }
            drop(permit);
        });
        tick();
    }
    // Every request answered.
    let _ = slots
        .acquire_many(u32::try_from(plan.concurrency.max(1)).unwrap_or(u32::MAX))
        .await;
}
