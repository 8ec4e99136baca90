//! Chaos soak of realtime.
//!
//! Several `realtime serve` nodes (the real binary) share a private PostgreSQL or Redis; hundreds
//! of clients move between nodes and transports (WebSocket, SSE, long-poll) with their cursors;
//! notifiers append events over `/api/notify` to many channels (a few with quotes, backslashes
//! and emoji in their area, details and payload) and record every acknowledged id; meanwhile
//! nodes are killed with SIGKILL and started again, the engine is restarted, some clients stop
//! reading for seconds at a time, and slowloris connections dribble request heads.
//!
//! Then the notifiers stop, every client catches up with the final head, and [`verify`] checks
//! that each acknowledged event reached every client subscribed to its channel once and in
//! order — or that the client was told `recovered: false` for it — and the peak memory of each
//! node (`VmHWM`) is compared with a stated bound.
//!
//! Run the short form with `cargo test -p chaos`, the long one with
//! `cargo run --release -p chaos -- --minutes 10 --engine postgres` (see `docs/reliability.md`).

mod client;
pub mod engine;
mod nodes;
mod notify;
mod slowloris;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use engine::EngineKind;
pub use nodes::NodeFigures;
pub use verify::Verdict;

use engine::PrivateEngine;
use nodes::{NodeEnv, Nodes};
use notify::Ledger;

/// Errors that stop a run before it can say anything about the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation of the harness failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The harness could not set something up (an engine, a node, the binary).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The engine the nodes share.
    pub engine: EngineKind,
    /// The `realtime` binary.
    pub bin: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Clients (each one page, one to three channels).
    pub clients: usize,
    /// Share of clients that sometimes stop reading for 3–12 s (they also subscribe to the
    /// heavy channel: 8 events of 48 KB every 500 ms).
    pub stallers: f64,
    /// Slowloris connections held at once.
    pub slowloris: usize,
    /// Notifier tasks.
    pub notifiers: usize,
    /// Pause of each notifier between notifies.
    pub notify_interval: Duration,
    /// Plain channels (four hostile ones are added when `hostile_share` > 0).
    pub channels: usize,
    /// Share of notifies that go to a hostile channel.
    pub hostile_share: f64,
    /// Length of the chaos phase.
    pub duration: Duration,
    /// Time between two kill -9 of a node.
    pub kill_every: Duration,
    /// Engine restarts, spread over the chaos phase.
    pub engine_restarts: usize,
    /// Longest wait for every client to catch up after the chaos phase.
    pub drain_timeout: Duration,
    /// Bound on each node's peak resident memory (`VmHWM`), MiB.
    pub rss_bound_mib: u64,
    /// Keep the node logs and data dirs here instead of a temporary directory.
    pub keep_dir: Option<PathBuf>,
}

impl Options {
    /// The short form run by `cargo test`: 3 nodes, 150 clients, 20 s of chaos.
    pub fn short(engine: EngineKind, bin: PathBuf) -> Options {
        Options {
            engine,
            bin,
            nodes: 3,
            clients: 150,
            stallers: 0.1,
            slowloris: 30,
            notifiers: 3,
            notify_interval: Duration::from_millis(60),
            channels: 16,
            hostile_share: 0.05,
            duration: Duration::from_secs(20),
            kill_every: Duration::from_secs(5),
            engine_restarts: 1,
            drain_timeout: Duration::from_secs(25),
            rss_bound_mib: 256,
            keep_dir: None,
        }
    }

    /// The long form: `minutes` of chaos, 3 nodes, 300 clients, a kill every 15 s, an engine
    /// restart every 3 minutes.
    pub fn long(engine: EngineKind, bin: PathBuf, minutes: u64) -> Options {
        Options {
            clients: 300,
            slowloris: 100,
            notifiers: 4,
            notify_interval: Duration::from_millis(40),
            duration: Duration::from_secs(minutes * 60),
            kill_every: Duration::from_secs(15),
            engine_restarts: usize::try_from((minutes / 3).max(1)).unwrap_or(1),
            drain_timeout: Duration::from_secs(60),
            ..Options::short(engine, bin)
        }
    }
}

/// Counters shared by every task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) seq: AtomicU64,
    pub(crate) notifies_ok: AtomicU64,
    pub(crate) notifies_failed: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) ready: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) not_recovered: AtomicU64,
    pub(crate) ws: AtomicU64,
    pub(crate) sse: AtomicU64,
    pub(crate) poll: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) cut: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) slow_closes: AtomicU64,
    pub(crate) slow_opened: AtomicU64,
    pub(crate) slow_open: AtomicU64,
    pub(crate) slow_cut: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) engine_restarts: AtomicU64,
    pub(crate) failed_starts: AtomicU64,
}

/// What every task of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) opts: Options,
    pub(crate) nodes: Arc<Nodes>,
    /// For requests with an answer (notify, page, poll).
    pub(crate) http: reqwest::Client,
    /// For SSE streams: one connection each.
    pub(crate) stream_http: reqwest::Client,
    pub(crate) api_key: String,
    pub(crate) channels: Vec<notify::ChannelDef>,
    /// The chaos phase is over: notifiers, killers and stalls stop.
    pub(crate) stop: CancellationToken,
    /// Every acknowledged event is in the ledger: clients catch up with the final head.
    pub(crate) drain: CancellationToken,
    /// Everything stops.
    pub(crate) end: CancellationToken,
    /// The engine generation; notifiers hold it for reading around each notify, an engine
    /// restart for writing.
    pub(crate) gate: tokio::sync::RwLock<usize>,
    ledger: Mutex<Ledger>,
    pub(crate) counters: Counters,
    notes: Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something worth showing in the report that is not a verdict (an unexpected status…).
    pub(crate) fn note(&self, what: String) {
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if n.len() < 10 {
            n.push(what);
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options it ran with.
    pub engine: EngineKind,
    /// Nodes.
    pub nodes: usize,
    /// Clients that rendered their page.
    pub clients: u64,
    /// Seconds of chaos, and of the whole run.
    pub chaos_secs: f64,
    /// Seconds of the whole run.
    pub total_secs: f64,
    /// Acknowledged events.
    pub events_acked: u64,
    /// Notifies refused or failed (nothing acknowledged).
    pub notifies_failed: u64,
    /// Answers 429 / closes 1013 seen by notifiers and clients.
    pub rate_limited: u64,
    /// Events delivered, over every client.
    pub deliveries: u64,
    /// Connections opened per transport (WebSocket, SSE, poll).
    pub connections: [u64; 3],
    /// Long-polls answered.
    pub polls: u64,
    /// Connections that ended in an error (a kill, a cut).
    pub cut: u64,
    /// Stalls of readers.
    pub stalls: u64,
    /// WebSocket closes 4008 (slow consumer).
    pub slow_consumer_closes: u64,
    /// Recovery notices (`not_recovered` / `recovered: false`).
    pub not_recovered: u64,
    /// Node kills (SIGKILL).
    pub kills: u64,
    /// Engine restarts.
    pub engine_restarts: u64,
    /// Node starts that printed no address within 30 s.
    pub failed_starts: u64,
    /// Slowloris connections opened, ended by the server (an answer, a close or a kill), held
    /// open when the chaos phase ended.
    pub slowloris: [u64; 3],
    /// Peak memory per node slot.
    pub node_figures: Vec<NodeFigures>,
    /// The stated bound, MiB.
    pub rss_bound_mib: u64,
    /// Lines with `panicked` in the node logs.
    pub panics: u64,
    /// `/proc/loadavg` at the end.
    pub loadavg: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Unexpected answers seen on the way.
    pub notes: Vec<String>,
    /// Where the node logs are (kept when the run failed or was asked to).
    pub logs: Option<PathBuf>,
}

impl Report {
    /// Whether the run passed: nothing lost, duplicated, reordered or corrupted, every client
    /// caught up, no panic, memory under the bound.
    pub fn passed(&self) -> bool {
        let v = &self.verdict;
        self.events_acked > 0
            && v.lost == 0
            && v.duplicates == 0
            && v.order == 0
            && v.corrupt == 0
            && v.id_mismatch == 0
            && v.not_caught_up == 0
            && v.final_closes == 0
            && self.panics == 0
            && self.failed_starts == 0
            && self
                .node_figures
                .iter()
                .all(|n| n.peak_hwm_kib <= self.rss_bound_mib * 1024)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "chaos soak, {} engine: {} nodes, {} clients, {:.0} s of chaos ({:.0} s in all)",
            self.engine, self.nodes, self.clients, self.chaos_secs, self.total_secs
        )?;
        writeln!(
            f,
            "  events acknowledged {}, notifies failed {}, rate limited {}",
            self.events_acked, self.notifies_failed, self.rate_limited
        )?;
        writeln!(
            f,
            "  connections ws {} sse {} poll {} (polls {}), cut {}, stalls {}, 4008 closes {}",
            self.connections[0],
            self.connections[1],
            self.connections[2],
            self.polls,
            self.cut,
            self.stalls,
            self.slow_consumer_closes
        )?;
        writeln!(
            f,
            "  kills {}, engine restarts {}, failed node starts {}, recovery notices {}, slowloris opened {} ended by server {} held at end {}",
            self.kills,
            self.engine_restarts,
            self.failed_starts,
            self.not_recovered,
            self.slowloris[0],
            self.slowloris[1],
            self.slowloris[2]
        )?;
        writeln!(
            f,
            "  deliveries {}, expected {}, excused by a notice {}",
            self.deliveries, v.expected, v.excused
        )?;
        writeln!(
            f,
            "  LOST {} (acknowledged events no expecting client got: {}), DUPLICATES {}, order {}, corrupt {}, id mismatch {}, clients not caught up {}, final closes {}",
            v.lost, v.lost_everywhere, v.duplicates, v.order, v.corrupt, v.id_mismatch, v.not_caught_up, v.final_closes
        )?;
        let peaks: Vec<String> = self
            .node_figures
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "node{i} {} MiB ({} starts)",
                    n.peak_hwm_kib / 1024,
                    n.starts
                )
            })
            .collect();
        writeln!(
            f,
            "  peak RSS (VmHWM) {} — bound {} MiB; panics in logs {}",
            peaks.join(", "),
            self.rss_bound_mib,
            self.panics
        )?;
        writeln!(f, "  load average {}", self.loadavg.trim())?;
        for e in &v.examples {
            writeln!(f, "  ! {e}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        if let Some(l) = &self.logs {
            writeln!(f, "  node logs in {}", l.display())?;
        }
        write!(
            f,
            "  => {}",
            if self.passed() { "PASSED" } else { "FAILED" }
        )
    }
}

/// The newest modification time of the files under `dir` (recursively), if any.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut out = None;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        out = out.max(t);
    }
    out
}

/// Answers the `realtime` binary of this workspace in `profile_dir` (a `target/debug` or
/// `target/release` directory), building it with cargo (same profile) unless it is newer than
/// every source of the crates, the browser client it embeds and `Cargo.lock` — as it is when `cargo test --workspace` has
/// just built it for the server's own tests, which spares a second build with other features.
///
/// # Errors
/// When cargo fails or the binary is not where it should be.
pub fn build_realtime(profile_dir: &Path) -> Result<PathBuf, Error> {
    let bin = profile_dir.join("realtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let sources = newest(&root.join("crates"))
        .max(newest(&root.join("clients/js")))
        .max(
            std::fs::metadata(root.join("Cargo.lock"))
                .and_then(|m| m.modified())
                .ok(),
        );
    if let (Some(built), Some(sources)) = (built, sources) {
        if built > sources {
            return Ok(bin);
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", "realtime-server", "--bin", "realtime"])
        .current_dir(&root);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd
        .status()
        .map_err(|e| Error::io("running cargo build -p realtime-server", e))?;
    if !status.success() || !bin.exists() {
        return Err(Error::Setup(format!(
            "cargo build -p realtime-server did not make {}",
            bin.display()
        )));
    }
    Ok(bin)
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

/// Notifies one event through a live node until it is acknowledged (within 60 s), then asks
/// that node for the epoch: the engine generation's epoch.
async fn learn_epoch(shared: &Shared, generation: usize) -> Result<String, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            return Err(Error::Setup(
                "no notify was acknowledged within 60 s of the engine's start".into(),
            ));
        }
        let Some(url) = shared.nodes.pick() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let seq = shared.counters.seq.fetch_add(1, Ordering::Relaxed);
        let events = [(seq, 0usize)];
        let sent_at = Instant::now();
        let Ok(ids) = notify::notify(shared, &url, &events).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let status: Option<serde_json::Value> = match shared
            .http
            .get(format!("{url}/api/status"))
            .bearer_auth(&shared.api_key)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        notify::record(shared, &events, &ids, generation, sent_at);
        shared.counters.notifies_ok.fetch_add(1, Ordering::Relaxed);
        if let Some(epoch) = status.as_ref().and_then(|s| s["epoch"].as_str()) {
            return Ok(epoch.to_string());
        }
    }
}

/// (Re)starts node `i`; a node that does not come up is counted and noted, and tried again
/// at the next kill.
async fn start_node(shared: &Arc<Shared>, i: usize) {
    let nodes = shared.nodes.clone();
    let up = tokio::task::spawn_blocking(move || nodes.restart(i)).await;
    let failure = match up {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("node restart task: {e}"),
    };
    shared
        .counters
        .failed_starts
        .fetch_add(1, Ordering::Relaxed);
    shared.note(failure);
}

/// Stops the engine, waits, starts it again and learns its epoch, while no notify is in
/// flight.
async fn restart_engine(
    shared: &Arc<Shared>,
    engine: &Arc<Mutex<PrivateEngine>>,
) -> Result<(), Error> {
    let mut gate = shared.gate.write().await;
    let e = engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut e = e.lock().unwrap_or_else(|p| p.into_inner());
        e.down()?;
        std::thread::sleep(Duration::from_millis(1500));
        e.up()
    })
    .await
    .map_err(|e| Error::Setup(format!("engine restart task: {e}")))??;
    *gate += 1;
    shared
        .counters
        .engine_restarts
        .fetch_add(1, Ordering::Relaxed);
    let epoch = learn_epoch(shared, *gate).await?;
    shared.ledger().epochs.push(epoch);
    Ok(())
}

/// Runs the soak.
///
/// # Errors
/// When the engine, a node or the first notify cannot be brought up; a server that misbehaves
/// during the run is reported in the [`Report`], not here.
pub async fn run(mut opts: Options) -> Result<Report, Error> {
    let started = Instant::now();
    // The nodes run in their data dirs: a relative path would not find the binary.
    opts.bin = std::fs::canonicalize(&opts.bin)
        .map_err(|e| Error::io(format!("the realtime binary {}", opts.bin.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix("realtime-chaos-")
        .tempdir()
        .map_err(|e| Error::io("tempdir", e))?;
    // Kept until the run has passed, so that a run that stops early leaves its logs.
    let tmp = tmp.keep();
    let dir = opts.keep_dir.clone().unwrap_or_else(|| tmp.clone());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("{}", dir.display()), e))?;
    let kind = opts.engine;
    let engine = tokio::task::spawn_blocking(move || PrivateEngine::start(kind))
        .await
        .map_err(|e| Error::Setup(format!("engine start task: {e}")))??;
    let engine_url = engine.url();
    let engine = Arc::new(Mutex::new(engine));
    let api_key = format!("chaos-key-{}", random_hex(16));
    let env = NodeEnv {
        bin: opts.bin.clone(),
        dir: dir.clone(),
        engine_url,
        api_key: api_key.clone(),
        secret: format!("chaos-secret-{}", random_hex(32)),
    };
    let n = opts.nodes;
    let nodes = tokio::task::spawn_blocking(move || Nodes::start(env, n))
        .await
        .map_err(|e| Error::Setup(format!("node start task: {e}")))??;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Setup(format!("http client: {e}")))?;
    let stream_http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Setup(format!("http client: {e}")))?;
    let shared = Arc::new(Shared {
        channels: notify::channels(opts.channels, opts.hostile_share > 0.0),
        opts: opts.clone(),
        nodes: nodes.clone(),
        http,
        stream_http,
        api_key,
        stop: CancellationToken::new(),
        drain: CancellationToken::new(),
        end: CancellationToken::new(),
        gate: tokio::sync::RwLock::new(0),
        ledger: Mutex::new(Ledger::default()),
        counters: Counters::default(),
        notes: Mutex::new(Vec::new()),
    });
    let epoch = learn_epoch(&shared, 0).await?;
    shared.ledger().epochs.push(epoch);

    // Clients, rendered while the notifiers already run, so that their first cursors differ.
    let mut notifiers = JoinSet::new();
    for _ in 0..opts.notifiers {
        notifiers.spawn(notify::notifier(shared.clone(), false));
    }
    notifiers.spawn(notify::notifier(shared.clone(), true));
    let mut clients = JoinSet::new();
    {
        let mut rng = rand::thread_rng();
        let heavy = notify::heavy(&shared.channels);
        let all: Vec<usize> = (0..heavy).collect();
        for idx in 0..opts.clients {
            let k = rng.gen_range(1..=3);
            let mut chans: Vec<usize> = all.choose_multiple(&mut rng, k).copied().collect();
            // Readers that stall also take the heavy channel: a stall then leaves megabytes
            // for the server to hold, or to cut off.
            let staller = rng.gen_bool(opts.stallers);
            if staller {
                chans.push(heavy);
            }
            clients.spawn(client::client(shared.clone(), idx, chans, staller));
        }
    }
    let mut others = JoinSet::new();
    for _ in 0..opts.slowloris {
        others.spawn(slowloris::slowloris(shared.clone()));
    }
    {
        let shared = shared.clone();
        others.spawn(async move {
            while !shared.end.is_cancelled() {
                shared.nodes.sample();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    let chaos_started = Instant::now();
    let mut result = Ok(());
    // The chaos: kills at a steady pace, engine restarts spread over the phase.
    let mut next_kill = chaos_started + opts.kill_every;
    let restart_at: Vec<Instant> = (1..=opts.engine_restarts)
        .map(|k| {
            chaos_started
                + opts
                    .duration
                    .mul_f64(k as f64 / (opts.engine_restarts as f64 + 1.0))
        })
        .collect();
    let mut restarts_done = 0;
    while chaos_started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if restarts_done < restart_at.len() && Instant::now() >= restart_at[restarts_done] {
            restarts_done += 1;
            if let Err(e) = restart_engine(&shared, &engine).await {
                result = Err(e);
                break;
            }
        }
        if Instant::now() >= next_kill {
            next_kill += opts.kill_every;
            let i = rand::thread_rng().gen_range(0..nodes.len());
            nodes.kill(i);
            shared.counters.kills.fetch_add(1, Ordering::Relaxed);
            let down = rand::thread_rng().gen_range(300..1500);
            tokio::time::sleep(Duration::from_millis(down)).await;
            // Start every node that is down (this one, and any that failed to start before).
            for j in 0..nodes.len() {
                if nodes.url(j).is_none() {
                    start_node(&shared, j).await;
                }
            }
        }
    }
    let chaos_secs = chaos_started.elapsed().as_secs_f64();
    let slow_held = shared.counters.slow_open.load(Ordering::Relaxed);
    // Stop notifying; once every notify has its answer, the ledger is final: clients catch up.
    shared.stop.cancel();
    while notifiers.join_next().await.is_some() {}
    for i in 0..nodes.len() {
        if nodes.url(i).is_none() {
            start_node(&shared, i).await;
        }
    }
    shared.drain.cancel();
    let drain_deadline = tokio::time::Instant::now() + opts.drain_timeout;
    let mut logs = Vec::new();
    loop {
        let next = tokio::time::timeout_at(drain_deadline, clients.join_next()).await;
        match next {
            Ok(Some(Ok(log))) => logs.push(log),
            Ok(Some(Err(e))) => shared.note(format!("a client task failed: {e}")),
            Ok(None) => break,
            Err(_) => {
                // Whoever has not caught up by now is reported as such.
                shared.end.cancel();
            }
        }
    }
    shared.end.cancel();
    while others.join_next().await.is_some() {}
    result.map_err(|e| Error::Setup(format!("{e} (node logs in {})", dir.display())))?;
    let node_figures = nodes.figures();
    nodes.stop_all();
    let mut panics = 0;
    for log in nodes.logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        panics += text.lines().filter(|l| l.contains("panicked")).count() as u64;
    }
    let verdict = verify::verify(&shared.ledger(), &logs);
    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut report = Report {
        engine: opts.engine,
        nodes: opts.nodes,
        clients: get(&c.ready),
        chaos_secs,
        total_secs: started.elapsed().as_secs_f64(),
        events_acked: shared.ledger().acks.len() as u64,
        notifies_failed: get(&c.notifies_failed),
        rate_limited: get(&c.rate_limited),
        deliveries: get(&c.deliveries),
        connections: [get(&c.ws), get(&c.sse), get(&c.poll)],
        polls: get(&c.polls),
        cut: get(&c.cut),
        stalls: get(&c.stalls),
        slow_consumer_closes: get(&c.slow_closes),
        not_recovered: get(&c.not_recovered),
        kills: get(&c.kills),
        engine_restarts: get(&c.engine_restarts),
        failed_starts: get(&c.failed_starts),
        slowloris: [get(&c.slow_opened), get(&c.slow_cut), slow_held],
        node_figures,
        rss_bound_mib: opts.rss_bound_mib,
        panics,
        loadavg: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        verdict,
        notes: shared
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        logs: None,
    };
    if opts.keep_dir.is_some() {
        // Unused: the caller's directory holds the logs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if opts.keep_dir.is_some() || !report.passed() {
        report.logs = Some(dir);
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(report)
}
