//! The notifiers and what they record: the channels of a run (a few with hostile-but-valid
//! areas and details), the payload of each event (its sequence number, sometimes hostile text,
//! sometimes a large pad), and the ledger of every acknowledged id.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::Shared;

/// One channel of the run.
#[derive(Debug, Clone)]
pub(crate) struct ChannelDef {
    pub(crate) contextid: i64,
    pub(crate) component: &'static str,
    pub(crate) area: String,
    pub(crate) itemid: i64,
    pub(crate) details: String,
    pub(crate) hostile: bool,
    /// The channel of large events that stalling readers subscribe to.
    pub(crate) heavy: bool,
}

impl ChannelDef {
    pub(crate) fn json(&self) -> Value {
        json!({"contextid": self.contextid, "component": self.component, "area": self.area,
               "itemid": self.itemid, "details": self.details})
    }

    /// Whether a delivered event names this channel.
    pub(crate) fn matches(&self, event: &Value) -> bool {
        event["contextid"].as_i64() == Some(self.contextid)
            && event["component"].as_str() == Some(self.component)
            && event["area"].as_str() == Some(self.area.as_str())
            && event["itemid"].as_i64() == Some(self.itemid)
            && event["channeldetails"].as_str() == Some(self.details.as_str())
    }
}

/// `n` plain channels followed, when `hostile`, by four whose area or details hold quotes,
/// backslashes and emoji — valid under the channel rules, and exactly what an engine that
/// stores events as text must escape — and by the heavy channel.
pub(crate) fn channels(n: usize, hostile: bool) -> Vec<ChannelDef> {
    let mut out: Vec<ChannelDef> = (0..n)
        .map(|i| ChannelDef {
            contextid: 1 + (i as i64 % 3),
            component: "mod_chaos",
            area: format!("area{i}"),
            itemid: i as i64,
            details: String::new(),
            hostile: false,
            heavy: false,
        })
        .collect();
    if hostile {
        let odd: [(&str, &str); 4] = [
            (r"C:\temp", ""),
            (r#"say "hi""#, r"back\slash"),
            ("emoji 🎉", r#""quoted" \ 😀"#),
            ("a", r#"C:\\temp\new "x" {"json":1}"#),
        ];
        for (k, (area, details)) in odd.iter().enumerate() {
            out.push(ChannelDef {
                contextid: 9,
                component: "mod_chaos",
                area: (*area).to_string(),
                itemid: k as i64,
                details: (*details).to_string(),
                hostile: true,
                heavy: false,
            });
        }
    }
    out.push(ChannelDef {
        contextid: 8,
        component: "mod_chaos",
        area: "heavy".into(),
        itemid: 0,
        details: String::new(),
        hostile: false,
        heavy: true,
    });
    out
}

/// The index of the heavy channel (the last one).
pub(crate) fn heavy(channels: &[ChannelDef]) -> usize {
    channels.len() - 1
}

/// The text of event `seq`'s payload: one in 20 hostile.
pub(crate) fn payload_text(seq: u64) -> &'static str {
    if seq % 20 == 3 {
        "quote \" backslash \\ C:\\temp\\new emoji 🎉 </script> \u{2028} end"
    } else {
        "plain"
    }
}

/// The pad of event `seq`'s payload: 48 KB on the heavy channel, 24 KB for one in 50 of the
/// others, so that readers that stall hold real bytes.
pub(crate) fn payload_pad(seq: u64, heavy: bool) -> usize {
    if heavy {
        48 * 1024
    } else if seq % 50 == 7 {
        24 * 1024
    } else {
        0
    }
}

/// The payload of event `seq`.
pub(crate) fn payload(seq: u64, heavy: bool) -> Value {
    json!({"seq": seq, "text": payload_text(seq), "pad": "x".repeat(payload_pad(seq, heavy))})
}

/// Whether a delivered payload is exactly what was sent for its `seq`.
pub(crate) fn payload_intact(seq: u64, heavy: bool, payload: &Value) -> bool {
    payload["text"].as_str() == Some(payload_text(seq))
        && payload["pad"].as_str().map(str::len) == Some(payload_pad(seq, heavy))
}

/// One acknowledged event.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) seq: u64,
    pub(crate) id: i64,
    /// The engine generation (0, then +1 per engine restart) it was acknowledged in.
    pub(crate) generation: usize,
    pub(crate) chan: usize,
    /// When its notify was sent.
    pub(crate) sent_at: Instant,
}

/// What the notifiers did.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub(crate) acks: Vec<Ack>,
    /// seq -> channel index, for every event sent (acknowledged or not).
    pub(crate) sent: HashMap<u64, usize>,
    /// The epoch of each engine generation.
    pub(crate) epochs: Vec<String>,
}

/// Sends `events` (seq, channel) to `url` in one notify (a batch when more than one); the ids
/// on success.
pub(crate) async fn notify(
    shared: &Shared,
    url: &str,
    events: &[(u64, usize)],
) -> Result<Vec<i64>, (u16, String)> {
    {
        let mut l = shared.ledger();
        for (seq, chan) in events {
            l.sent.insert(*seq, *chan);
        }
    }
    let item = |(seq, chan): &(u64, usize)| {
        let c = &shared.channels[*chan];
        json!({"channel": c.json(), "payload": payload(*seq, c.heavy)})
    };
    let body = if events.len() == 1 {
        item(&events[0])
    } else {
        json!({"events": events.iter().map(item).collect::<Vec<_>>()})
    };
    let res = shared
        .http
        .post(format!("{url}/api/notify"))
        .bearer_auth(&shared.api_key)
        .timeout(Duration::from_secs(15))
        .json(&body)
        .send()
        .await
        .map_err(|e| (0, format!("notify: {e}")))?;
    let status = res.status().as_u16();
    let text = res
        .text()
        .await
        .map_err(|e| (status, format!("body: {e}")))?;
    if status != 200 {
        return Err((status, text));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| (status, format!("{e}: {text}")))?;
    let ids: Vec<i64> = if events.len() == 1 {
        v["id"].as_i64().into_iter().collect()
    } else {
        v["ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    if ids.len() != events.len() {
        return Err((status, format!("ids do not match the events: {text}")));
    }
    Ok(ids)
}

/// Records acknowledged events.
pub(crate) fn record(
    shared: &Shared,
    events: &[(u64, usize)],
    ids: &[i64],
    generation: usize,
    sent_at: Instant,
) {
    let mut l = shared.ledger();
    for ((seq, chan), id) in events.iter().zip(ids) {
        l.acks.push(Ack {
            seq: *seq,
            id: *id,
            generation,
            chan: *chan,
            sent_at,
        });
    }
}

/// Picks a channel: hostile ones with probability `hostile_share`.
fn pick_channel(shared: &Shared, rng: &mut impl Rng) -> usize {
    let plain = shared
        .channels
        .iter()
        .filter(|c| !c.hostile && !c.heavy)
        .count();
    let hostile = shared.channels.iter().filter(|c| c.hostile).count();
    if hostile > 0 && rng.gen_bool(shared.opts.hostile_share) {
        plain + rng.gen_range(0..hostile)
    } else {
        rng.gen_range(0..plain)
    }
}

/// One notifier: until the chaos phase stops, a notify (one event, or a batch of 2..=5) to a
/// random live node every `notify_interval`, holding the engine gate so that an engine restart
/// waits for it and every acknowledgement belongs to a known engine generation.
///
/// The heavy notifier (`heavy`) sends a batch of 8 events of 48 KB to the heavy channel
/// instead, every 500 ms.
pub(crate) async fn notifier(shared: Arc<Shared>, heavy: bool) {
    while !shared.stop.is_cancelled() {
        let gate = shared.gate.read().await;
        let generation = *gate;
        let Some(url) = shared.nodes.pick() else {
            drop(gate);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let events: Vec<(u64, usize)> = if heavy {
            let chan = self::heavy(&shared.channels);
            (0..8)
                .map(|_| (shared.counters.seq.fetch_add(1, Ordering::Relaxed), chan))
                .collect()
        } else {
            let mut rng = rand::thread_rng();
            let n = if rng.gen_bool(0.7) {
                1
            } else {
                rng.gen_range(2..=5)
            };
            (0..n)
                .map(|_| {
                    (
                        shared.counters.seq.fetch_add(1, Ordering::Relaxed),
                        pick_channel(&shared, &mut rng),
                    )
                })
                .collect()
        };
        let sent_at = Instant::now();
        match notify(&shared, &url, &events).await {
            Ok(ids) => {
                record(&shared, &events, &ids, generation, sent_at);
                shared.counters.notifies_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((429, _)) => {
                shared.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            Err((status, e)) => {
                shared
                    .counters
                    .notifies_failed
                    .fetch_add(1, Ordering::Relaxed);
                // 503 while a node or the engine is down is expected; anything else is worth
                // showing.
                if status != 0 && status != 503 {
                    shared.note(format!("notify answered {status}: {e}"));
                }
            }
        }
        drop(gate);
        let pause = if heavy {
            Duration::from_millis(500)
        } else {
            shared.opts.notify_interval
        };
        tokio::time::sleep(pause).await;
    }
}
