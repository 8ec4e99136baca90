//! The clients: each renders its page once (`POST /api/page`, one to three channels), then,
//! until the run ends, connects to a random live node over a random transport (WebSocket, SSE,
//! long-poll), reads for a few seconds, and moves on with its cursor — sometimes stalling (it
//! stops reading for a while), sometimes cut off by a node's kill -9. It records what it was
//! told, in order, as segments: a segment starts at a cursor it was handed (the page's, or the
//! one of a `not_recovered` / `recovered: false`) and holds the events that followed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::{sleep, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::notify::payload_intact;
use crate::Shared;

/// Events told to a client from one cursor on.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) epoch: String,
    /// The cursor id it starts after.
    pub(crate) start: i64,
    /// When the client received that cursor.
    pub(crate) received_at: Instant,
    /// The furthest id the server said the client has (last event, or a poll's cursor).
    pub(crate) last: i64,
    /// (id, seq) in the order delivered.
    pub(crate) events: Vec<(i64, u64)>,
}

/// What one client saw.
#[derive(Debug)]
pub(crate) struct ClientLog {
    pub(crate) idx: usize,
    pub(crate) chans: Vec<usize>,
    pub(crate) segments: Vec<Segment>,
    /// Protocol breaches seen while reading (order, corruption, foreign events…).
    pub(crate) violations: Vec<String>,
    /// Order breaches among them.
    pub(crate) order_violations: u64,
    /// Events whose channel or payload differed from what was sent.
    pub(crate) corrupt: u64,
    /// Closes that tell a page not to retry (4001, 4002): under valid credentials, a
    /// transient fault must never end a page.
    pub(crate) final_closes: u64,
    /// Whether it caught up with the final head before the end.
    pub(crate) caught_up: bool,
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Ws,
    Sse,
    Poll,
}

fn parse_cursor(c: &str) -> Option<(String, i64)> {
    let (e, id) = c.rsplit_once(':')?;
    Some((e.to_string(), id.parse().ok()?))
}

struct Client {
    shared: Arc<Shared>,
    log: ClientLog,
    usertoken: String,
    subs: Vec<Value>,
    /// Final (epoch, id) to reach once the drain starts, computed once.
    target: Option<Option<(String, i64)>>,
}

/// The outcome of one connection.
enum End {
    /// Its time was up (or the run is ending).
    Done,
    /// It failed (node killed, cut off…): the reason.
    Failed(String),
}

impl Client {
    fn seg(&mut self) -> &mut Segment {
        // invariant: a client has a segment from its page on.
        let n = self.log.segments.len();
        &mut self.log.segments[n - 1]
    }

    fn cursor(&self) -> String {
        let s = &self.log.segments[self.log.segments.len() - 1];
        format!("{}:{}", s.epoch, s.last)
    }

    fn violation(&mut self, what: String) {
        if self.log.violations.len() < 20 {
            self.log.violations.push(what);
        }
    }

    /// Told that events were missed: the check starts again from `cursor`.
    fn on_reset(&mut self, cursor: &str) {
        self.shared
            .counters
            .not_recovered
            .fetch_add(1, Ordering::Relaxed);
        match parse_cursor(cursor) {
            Some((epoch, id)) => self.log.segments.push(Segment {
                epoch,
                start: id,
                received_at: Instant::now(),
                last: id,
                events: Vec::new(),
            }),
            None => self.violation(format!("bad cursor in a recovery notice: {cursor}")),
        }
    }

    /// The server said that everything up to `cursor` was delivered (a poll's answer).
    fn on_checked(&mut self, cursor: &str) {
        let Some((epoch, id)) = parse_cursor(cursor) else {
            self.violation(format!("bad poll cursor {cursor}"));
            return;
        };
        let seg = self.seg();
        if seg.epoch != epoch || id < seg.last {
            let was = format!("{}:{}", seg.epoch, seg.last);
            self.log.order_violations += 1;
            self.violation(format!(
                "poll cursor went from {was} to {cursor} without notice"
            ));
            return;
        }
        seg.last = id;
    }

    fn on_event(&mut self, epoch: &str, id: i64, event: &Value) {
        self.shared
            .counters
            .deliveries
            .fetch_add(1, Ordering::Relaxed);
        let Some(seq) = event["payload"]["seq"].as_u64() else {
            self.log.corrupt += 1;
            self.violation(format!("an event without seq: {event}"));
            return;
        };
        if event["id"].as_i64() != Some(id) {
            self.log.corrupt += 1;
            self.violation(format!("event id {} under cursor {id}", event["id"]));
        }
        let chan = self.shared.ledger().sent.get(&seq).copied();
        match chan {
            None => {
                self.log.corrupt += 1;
                self.violation(format!("event seq {seq} was never sent"));
            }
            Some(c) if !self.log.chans.contains(&c) => {
                self.log.corrupt += 1;
                self.violation(format!("event seq {seq} of channel {c}, not subscribed"));
            }
            Some(c) => {
                let def = &self.shared.channels[c];
                if !def.matches(event) || !payload_intact(seq, def.heavy, &event["payload"]) {
                    self.log.corrupt += 1;
                    self.violation(format!("event seq {seq} differs from what was sent"));
                }
            }
        }
        let seg = self.seg();
        if seg.epoch != epoch {
            let was = seg.epoch.clone();
            self.log.order_violations += 1;
            self.violation(format!(
                "event {epoch}:{id} in epoch {was} without a recovery notice"
            ));
            // Go on from there, so that one breach is not counted again for every event.
            self.log.segments.push(Segment {
                epoch: epoch.to_string(),
                start: id - 1,
                received_at: Instant::now(),
                last: id - 1,
                events: Vec::new(),
            });
        } else if id <= seg.last {
            let last = seg.last;
            self.log.order_violations += 1;
            self.violation(format!("event {id} after {last}: out of order or repeated"));
        }
        let seg = self.seg();
        seg.events.push((id, seq));
        seg.last = seg.last.max(id);
    }

    /// Once the drain has started: whether the client has reached the last acknowledged event
    /// of its channels in the final epoch.
    fn caught_up(&mut self) -> bool {
        if !self.shared.drain.is_cancelled() {
            return false;
        }
        if self.target.is_none() {
            let l = self.shared.ledger();
            let target = l.epochs.last().map(|final_epoch| {
                let id = l
                    .acks
                    .iter()
                    .filter(|a| {
                        l.epochs.get(a.generation) == Some(final_epoch)
                            && self.log.chans.contains(&a.chan)
                    })
                    .map(|a| a.id)
                    .max()
                    .unwrap_or(0);
                (final_epoch.clone(), id)
            });
            drop(l);
            self.target = Some(target);
        }
        let Some(Some((epoch, id))) = self.target.clone() else {
            return true;
        };
        let seg = self.seg();
        seg.epoch == epoch && seg.last >= id
    }

    async fn page(&mut self) -> bool {
        let channels: Vec<Value> = self
            .log
            .chans
            .iter()
            .map(|c| self.shared.channels[*c].json())
            .collect();
        let body = json!({"user": self.log.idx + 1, "channels": channels});
        while !self.shared.end.is_cancelled() {
            let Some(url) = self.shared.nodes.pick() else {
                sleep(Duration::from_millis(200)).await;
                continue;
            };
            let res = self
                .shared
                .http
                .post(format!("{url}/api/page"))
                .bearer_auth(&self.shared.api_key)
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            let page: Option<Value> = match res {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            let Some(page) = page else {
                sleep(Duration::from_millis(300)).await;
                continue;
            };
            let (Some(cursor), Some(ut), Some(subs)) = (
                page["cursor"].as_str().and_then(parse_cursor),
                page["usertoken"].as_str(),
                page["subscriptions"].as_array(),
            ) else {
                self.violation(format!("a page config without cursor or tokens: {page}"));
                return false;
            };
            self.usertoken = ut.to_string();
            self.subs = subs
                .iter()
                .map(|s| json!({"channel": s["channel"], "token": s["token"]}))
                .collect();
            self.log.segments.push(Segment {
                epoch: cursor.0,
                start: cursor.1,
                received_at: Instant::now(),
                last: cursor.1,
                events: Vec::new(),
            });
            return true;
        }
        false
    }

    async fn run(mut self, staller: bool) -> ClientLog {
        if !self.page().await {
            return self.log;
        }
        let shared = self.shared.clone();
        let c = &shared.counters;
        c.ready.fetch_add(1, Ordering::Relaxed);
        while !self.shared.end.is_cancelled() {
            if self.caught_up() {
                self.log.caught_up = true;
                break;
            }
            let Some(url) = self.shared.nodes.pick() else {
                sleep(Duration::from_millis(200)).await;
                continue;
            };
            let draining = self.shared.drain.is_cancelled();
            let (transport, life, stall) = {
                let mut rng = rand::thread_rng();
                let t = match rng.gen_range(0..3) {
                    0 => Transport::Ws,
                    1 => Transport::Sse,
                    _ => Transport::Poll,
                };
                let life = if draining {
                    Duration::from_secs(20)
                } else {
                    Duration::from_millis(rng.gen_range(2000..8000))
                };
                let stall = (staller && !draining && rng.gen_bool(0.5)).then(|| {
                    (
                        Duration::from_millis(rng.gen_range(0..1500)),
                        Duration::from_millis(rng.gen_range(3000..12000)),
                    )
                });
                (t, life, stall)
            };
            let deadline = tokio::time::Instant::now() + life;
            let end = match transport {
                Transport::Ws => {
                    c.ws.fetch_add(1, Ordering::Relaxed);
                    self.ws(&url, deadline, stall).await
                }
                Transport::Sse => {
                    c.sse.fetch_add(1, Ordering::Relaxed);
                    self.sse(&url, deadline, stall).await
                }
                Transport::Poll => {
                    c.poll.fetch_add(1, Ordering::Relaxed);
                    self.poll(&url, deadline, stall).await
                }
            };
            if let End::Failed(why) = end {
                c.cut.fetch_add(1, Ordering::Relaxed);
                // Refusals for load (429, close 1013), not port numbers that happen to hold
                // those digits.
                if why.starts_with("poll answered 429")
                    || why.starts_with("sse answered 429")
                    || why == "ws closed 1013"
                {
                    c.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                let wait = rand::thread_rng().gen_range(100..500);
                sleep(Duration::from_millis(wait)).await;
            }
        }
        self.log
    }

    /// Waits out a stall when its time has come; true when it did.
    async fn maybe_stall(
        &self,
        stall: &mut Option<(Duration, Duration)>,
        opened: tokio::time::Instant,
    ) -> bool {
        if let Some((at, dur)) = *stall {
            if opened.elapsed() >= at {
                *stall = None;
                self.shared.counters.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = sleep(dur) => {}
                    _ = self.shared.end.cancelled() => {}
                }
                return true;
            }
        }
        false
    }

    async fn ws(
        &mut self,
        url: &str,
        deadline: tokio::time::Instant,
        mut stall: Option<(Duration, Duration)>,
    ) -> End {
        let ws_url = format!("{}/ws", url.replacen("http://", "ws://", 1));
        let mut sock = match timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(ws_url),
        )
        .await
        {
            Ok(Ok((s, _))) => s,
            Ok(Err(e)) => return End::Failed(format!("ws connect: {e}")),
            Err(_) => return End::Failed("ws connect timed out".into()),
        };
        let frame = json!({"type": "subscribe", "usertoken": self.usertoken,
                           "subscriptions": self.subs, "cursor": self.cursor()});
        if let Err(e) = sock.send(Message::text(frame.to_string())).await {
            return End::Failed(format!("ws write: {e}"));
        }
        let opened = tokio::time::Instant::now();
        let end = loop {
            if self.shared.end.is_cancelled() || self.caught_up() {
                break End::Done;
            }
            self.maybe_stall(&mut stall, opened).await;
            let msg = match timeout_at(deadline, sock.next()).await {
                Err(_) => break End::Done,
                Ok(m) => m,
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(f))) => {
                    let code = f.as_ref().map(|f| u16::from(f.code)).unwrap_or(0);
                    if code == 4008 {
                        self.shared
                            .counters
                            .slow_closes
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if code == 4001 || code == 4002 {
                        self.log.final_closes += 1;
                        self.violation(format!("ws closed {code}: {f:?}"));
                    }
                    break End::Failed(format!("ws closed {code}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => break End::Failed(format!("ws read: {e}")),
                None => break End::Failed("ws ended".into()),
            };
            let Ok(f) = serde_json::from_str::<Value>(text.as_str()) else {
                self.violation(format!("ws frame not JSON: {}", text.as_str()));
                continue;
            };
            match f["type"].as_str() {
                Some("event") => match f["cursor"].as_str().and_then(parse_cursor) {
                    Some((epoch, id)) => self.on_event(&epoch, id, &f["event"]),
                    None => self.violation(format!("ws event without cursor: {f}")),
                },
                Some("not_recovered") => {
                    let c = f["cursor"].as_str().unwrap_or("").to_string();
                    self.on_reset(&c);
                }
                Some("recovered") | Some("pong") => {}
                Some("error") => {
                    let code = f["error"]["code"].as_str().unwrap_or("");
                    if code != "engine_unavailable" && code != "shutting_down" {
                        self.shared.note(format!("ws error frame: {f}"));
                    }
                }
                _ => self.violation(format!("unexpected ws frame {f}")),
            }
        };
        let _ = timeout(Duration::from_millis(500), sock.close(None)).await;
        end
    }

    async fn sse(
        &mut self,
        url: &str,
        deadline: tokio::time::Instant,
        mut stall: Option<(Duration, Duration)>,
    ) -> End {
        let mut q: Vec<(&str, String)> = vec![("usertoken", self.usertoken.clone())];
        for s in &self.subs {
            q.push(("channel", s["channel"].as_str().unwrap_or("").to_string()));
            q.push(("token", s["token"].as_str().unwrap_or("").to_string()));
        }
        q.push(("cursor", self.cursor()));
        let res = match timeout(
            Duration::from_secs(10),
            self.shared
                .stream_http
                .get(format!("{url}/sse"))
                .query(&q)
                .header("accept", "text/event-stream")
                .send(),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return End::Failed(format!("sse: {e}")),
            Err(_) => return End::Failed("sse open timed out".into()),
        };
        if res.status() != 200 {
            return End::Failed(format!("sse answered {}", res.status()));
        }
        let mut body = res.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let opened = tokio::time::Instant::now();
        loop {
            if self.shared.end.is_cancelled() || self.caught_up() {
                return End::Done;
            }
            self.maybe_stall(&mut stall, opened).await;
            let chunk = match timeout_at(deadline, body.next()).await {
                Err(_) => return End::Done,
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => return End::Failed(format!("sse read: {e}")),
                Ok(None) => return End::Failed("sse ended".into()),
            };
            buf.extend_from_slice(&chunk);
            while let Some(p) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..p + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                match (event.as_deref(), id) {
                    (Some("not_recovered"), Some(c)) => self.on_reset(&c),
                    (None, Some(c)) => match (parse_cursor(&c), serde_json::from_str(&data)) {
                        (Some((epoch, n)), Ok(ev)) => self.on_event(&epoch, n, &ev),
                        _ => self.violation(format!("bad SSE record: {block}")),
                    },
                    (Some(other), _) => self.violation(format!("unexpected SSE event {other}")),
                    (None, None) => {}
                }
            }
        }
    }

    async fn poll(
        &mut self,
        url: &str,
        deadline: tokio::time::Instant,
        mut stall: Option<(Duration, Duration)>,
    ) -> End {
        let opened = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            if self.shared.end.is_cancelled() || self.caught_up() {
                return End::Done;
            }
            let body = json!({"subscriptions": self.subs, "cursor": self.cursor()});
            let res = self
                .shared
                .http
                .post(format!("{url}/poll"))
                .bearer_auth(&self.usertoken)
                .timeout(Duration::from_secs(30))
                .json(&body)
                .send()
                .await;
            let res = match res {
                Ok(r) => r,
                Err(e) => return End::Failed(format!("poll: {e}")),
            };
            let status = res.status().as_u16();
            // A stalled poller: the answer is there, it does not read it for a while.
            self.maybe_stall(&mut stall, opened).await;
            let text = match res.text().await {
                Ok(t) => t,
                Err(e) => return End::Failed(format!("poll body: {e}")),
            };
            self.shared.counters.polls.fetch_add(1, Ordering::Relaxed);
            if status != 200 {
                return End::Failed(format!("poll answered {status}: {text}"));
            }
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                self.violation(format!("poll answer not JSON: {text}"));
                return End::Failed("poll answer".into());
            };
            let cursor = v["cursor"].as_str().unwrap_or("").to_string();
            if v["recovered"] == false {
                self.on_reset(&cursor);
                continue;
            }
            let Some((epoch, _)) = parse_cursor(&cursor) else {
                self.violation(format!("poll answer without cursor: {text}"));
                return End::Failed("poll answer".into());
            };
            for ev in v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let id = ev["id"].as_i64().unwrap_or(-1);
                self.on_event(&epoch, id, ev);
            }
            self.on_checked(&cursor);
        }
        End::Done
    }
}

/// Runs client `idx` on `chans` until the run ends; answers what it saw.
pub(crate) async fn client(
    shared: Arc<Shared>,
    idx: usize,
    chans: Vec<usize>,
    staller: bool,
) -> ClientLog {
    let c = Client {
        shared,
        log: ClientLog {
            idx,
            chans,
            segments: Vec::new(),
            violations: Vec::new(),
            order_violations: 0,
            corrupt: 0,
            final_closes: 0,
            caught_up: false,
        },
        usertoken: String::new(),
        subs: Vec::new(),
        target: None,
    };
    c.run(staller).await
}
