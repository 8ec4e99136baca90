//! `loadgen`: the load generator of the realtime benchmark. One run = one target (our server,
//! the Socket.IO peer, or the raw loop), one scenario, one JSON result on stdout (and in
//! `--out`). `bench/run.py` starts the servers, pins them to cores, calls this for every
//! scenario and peer, and plots the results.
//!
//! Scenarios:
//! - `idle`: N connections subscribed and left idle; connect rate, server RSS and CPU per
//!   connection.
//! - `broadcast`: N clients on one channel (one room); `--rate` publishes per second for
//!   `--duration` seconds; delivered messages/s, publish → receive latency, lost messages.
//! - `channels`: each client its own channel; every publish carries `--batch` events to the
//!   next channels round robin.
//! - `poll`: N long-poll (or short-poll) clients on one channel; with `--rate 0` only empty
//!   polls (run the server with `REALTIME_POLL_REQUEST_TIMEOUT_SECS=0`), else polls that
//!   carry events.
//! - `notify`: no clients; `--concurrency` publishers send batches of `--batch` events as fast
//!   as they are acknowledged (durable) for `--duration` seconds.
//!
//! The payload of every event is `{"bt":SEND_NANOS,"bs":SEQ,"pad":"…"}`: the send time on this
//! process's monotonic clock (publisher and receivers are this process: one clock) and the
//! sequence number in its channel, so every client checks that it got each message once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

mod client;
mod http1;
mod procfs;
mod publish;
mod stats;

use client::{PollStats, Shared, Subscription};
use publish::{Plan, Published, Publisher};
use stats::{now_ns, summary_ms, Stats};

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// `realtime serve`.
    Ours,
    /// `bench/peers/socketio/server.js`.
    Socketio,
    /// `bench/rawloop`.
    Raw,
}

/// How clients receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// WebSocket (every target).
    Ws,
    /// Server-Sent Events (ours).
    Sse,
    /// Long-polling (ours).
    Poll,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scenario {
    /// Idle connections: how many, how much memory each.
    Idle,
    /// One channel, N subscribers, `--rate` publishes per second.
    Broadcast,
    /// Each client its own channel.
    Channels,
    /// Long-poll round trips.
    Poll,
    /// Durable notify throughput.
    Notify,
}

/// The load generator of the realtime benchmark.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Args {
    /// The server measured.
    #[arg(long, value_enum, default_value = "ours")]
    target: Target,
    /// The scenario.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The clients' transport.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:8787")]
    server: String,
    /// Our application API key.
    #[arg(long, env = "REALTIME_API_KEY", default_value = "")]
    api_key: String,
    /// The server's process id, for its RSS and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Publish requests per second (0: none, or as fast as acknowledged for `notify`).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Events per publish request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds of publishing (or of idling).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for the last deliveries after publishing, at most.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Seconds between connecting and measuring.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds to wait for the connections to be ready.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Bytes of padding in each payload.
    #[arg(long, default_value_t = 64)]
    pad: usize,
    /// Client sockets are bound to 127.0.0.2 ..= 127.0.0.(1 + this).
    #[arg(long, default_value_t = 32)]
    source_ips: u8,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Channels the `notify` scenario spreads its events over.
    #[arg(long, default_value_t = 100)]
    notify_channels: usize,
    /// Write the JSON result here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Free text kept in the result (e.g. the cores each process had).
    #[arg(long, default_value = "")]
    label: String,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
}

fn bar(args: &Args, len: u64, prefix: &str) -> ProgressBar {
    if args.no_progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>11} [{bar:32}] {pos}/{len} {per_sec:>12} {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(prefix.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: starting tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(result) => {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            println!("{text}");
            if let Some(path) = &args.out {
                if let Err(e) = std::fs::write(path, &text) {
                    eprintln!("loadgen: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            runtime.shutdown_timeout(Duration::from_secs(1));
            ExitCode::FAILURE
        }
    }
}

/// Credentials for `channels` channels from our `POST /api/page`, 100 channels a page.
async fn ours_subscriptions(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    channels: usize,
) -> Result<Vec<Subscription>, String> {
    const PER_PAGE: usize = 100;
    let pages: Vec<(usize, usize)> = (0..channels)
        .step_by(PER_PAGE)
        .map(|s| (s, (s + PER_PAGE).min(channels)))
        .collect();
    let answers: Vec<Result<Vec<Subscription>, String>> = futures_util::stream::iter(pages)
        .map(|(from, to)| async move {
            let list: Vec<String> = (from..to).map(publish::channel_json).collect();
            let body = format!(r#"{{"user":1,"channels":[{}]}}"#, list.join(","));
            let resp = http
                .post(format!("{base}/api/page"))
                .bearer_auth(key)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("/api/page: {e}"))?;
            let status = resp.status();
            let page: Value = resp
                .json()
                .await
                .map_err(|e| format!("/api/page answer: {e}"))?;
            if !status.is_success() {
                return Err(format!("/api/page answered {status}: {page}"));
            }
            let text = |v: &Value| -> Result<Arc<str>, String> {
                v.as_str()
                    .map(Arc::from)
                    .ok_or_else(|| format!("/api/page answer lacks a field: {page}"))
            };
            let usertoken = text(&page["usertoken"])?;
            let cursor = text(&page["cursor"])?;
            let subs = page["subscriptions"]
                .as_array()
                .ok_or_else(|| "/api/page answer lacks subscriptions".to_string())?;
            subs.iter()
                .map(|s| {
                    Ok(Subscription::Ours {
                        usertoken: usertoken.clone(),
                        channel: text(&s["channel"])?,
                        token: text(&s["token"])?,
                        cursor: cursor.clone(),
                    })
                })
                .collect()
        })
        .buffered(8)
        .collect()
        .await;
    let mut out = Vec::with_capacity(channels);
    for a in answers {
        out.extend(a?);
    }
    Ok(out)
}

fn server_sample(args: &Args) -> procfs::Sample {
    procfs::sample(args.server_pid).unwrap_or_default()
}

async fn run(args: &Args) -> Result<Value, String> {
    let server: SocketAddr = args
        .server
        .parse()
        .map_err(|e| format!("--server {}: {e}", args.server))?;
    let base = format!("http://{}", args.server);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let _ = now_ns();
    let started = Instant::now();
    let pad = "x".repeat(args.pad);
    let mut result = json!({
        "target": args.target,
        "scenario": args.scenario,
        "transport": args.transport,
        "clients": args.clients,
        "rate": args.rate,
        "batch": args.batch,
        "duration_s": args.duration,
        "payload_bytes": format!(r#"{{"bt":1000000000000,"bs":1000,"pad":"{pad}"}}"#).len(),
        "label": args.label,
    });
    let publisher = match args.target {
        Target::Ours => Publisher::Ours {
            http: http.clone(),
            base: base.clone(),
            key: args.api_key.clone(),
        },
        Target::Socketio => Publisher::Socketio {
            http: http.clone(),
            base: base.clone(),
        },
        Target::Raw if args.scenario == Scenario::Idle => Publisher::Socketio {
            http: http.clone(),
            base: base.clone(),
        },
        Target::Raw => Publisher::raw(&args.server).await?,
    };
    let publisher = Arc::new(publisher);
    if args.scenario == Scenario::Notify {
        return notify(args, publisher, result, pad).await;
    }

    let n = args.clients;
    let broadcast = args.scenario != Scenario::Channels;
    let channels = if broadcast { 1 } else { n };
    let channel_of = move |i: usize| if broadcast { 0 } else { i };
    let stats = Arc::new(Stats::new(n));
    let shared = Arc::new(Shared {
        target: args.target,
        transport: args.transport,
        server,
        host: args.server.clone(),
        source_ips: args.source_ips,
        stats: stats.clone(),
        polls: PollStats::default(),
        stop: CancellationToken::new(),
    });
    let subs: Vec<Subscription> = match args.target {
        Target::Ours => ours_subscriptions(&http, &base, &args.api_key, channels).await?,
        _ => (0..channels)
            .map(|c| Subscription::Room(publish::room(c, broadcast)))
            .collect(),
    };
    if subs.len() != channels {
        return Err(format!(
            "{} subscriptions for {channels} channels",
            subs.len()
        ));
    }

    // Connect.
    let srv0 = server_sample(args);
    let me0 = procfs::sample(None).unwrap_or_default();
    let connecting = bar(args, n as u64, "connect");
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let t0 = Instant::now();
    {
        let (gate, shared, subs) = (gate.clone(), shared.clone(), subs.clone());
        tokio::spawn(async move {
            for i in 0..n {
                match gate.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
                let sub = subs[channel_of(i)].clone();
                tokio::spawn(client::run(shared.clone(), i, sub, ready_tx.clone()));
            }
        });
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    let connect_deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    while ok + failed < n {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(true)) => ok += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) => break,
            Err(_) => {
                stats.error(format!("only {ok} of {n} clients ready in time"));
                break;
            }
        }
        gate.add_permits(1);
        connecting.inc(1);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    connecting.finish_and_clear();
    client::pause(
        &CancellationToken::new(),
        Duration::from_secs_f64(args.settle),
    )
    .await;
    let srv1 = server_sample(args);
    result["connect"] = json!({
        "ok": ok,
        "failed": failed,
        "secs": connect_secs,
        "per_s": ok as f64 / connect_secs.max(1e-9),
    });
    let per_conn = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / (ok.max(1) as f64);
    result["server"] = json!({
        "pid": args.server_pid,
        "rss_before": srv0.rss,
        "rss_connected": srv1.rss,
        "rss_per_conn": per_conn(srv0.rss, srv1.rss),
        "connect_cpu_s": srv1.cpu - srv0.cpu,
        "connect_cpu_per_conn_us": (srv1.cpu - srv0.cpu) * 1e6 / (ok.max(1) as f64),
        "threads": srv1.threads,
    });

    // Measure: idle, or publish and drain.
    let srv_a = server_sample(args);
    let me_a = procfs::sample(None).unwrap_or_default();
    let polls_a = shared.polls.polls.load(Ordering::Relaxed);
    let empty_a = shared.polls.empty.load(Ordering::Relaxed);
    // Round trips of the measured window only (not the first polls, which waited for it).
    shared
        .polls
        .rtt
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reset();
    let t_a = Instant::now();
    let published = Arc::new(Published::new(channels));
    let requests = (args.rate * args.duration).round() as u64;
    if args.scenario == Scenario::Idle || requests == 0 {
        let secs = args.duration.max(0.0) as u64;
        let idle = bar(args, secs, "idle");
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            idle.inc(1);
        }
        idle.finish_and_clear();
    } else {
        let plan = Plan {
            rate: args.rate,
            batch: args.batch.max(1),
            requests,
            until: None,
            channels,
            broadcast,
            concurrency: args.concurrency,
            pad: pad.clone(),
        };
        let publishing = bar(args, requests, "publish");
        publish::run(
            publisher.clone(),
            plan,
            published.clone(),
            stats.clone(),
            || publishing.inc(1),
        )
        .await;
        publishing.finish_and_clear();
        let expected: u64 = (0..n)
            .map(|i| published.count[channel_of(i)].load(Ordering::Relaxed))
            .sum();
        let draining = bar(args, expected, "deliver");
        let mut last = stats.delivered.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            let now = stats.delivered.load(Ordering::Relaxed);
            draining.set_position(now);
            if now >= expected {
                break;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed().as_secs_f64() > args.drain {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        draining.finish_and_clear();
    }
    let window = t_a.elapsed().as_secs_f64();
    let srv_b = server_sample(args);
    let me_b = procfs::sample(None).unwrap_or_default();
    let polls_b = shared.polls.polls.load(Ordering::Relaxed);
    shared.stop.cancel();

    // Exactly once, per client.
    let (mut expected, mut lost, mut duplicates, mut mismatched) = (0u64, 0u64, 0u64, 0u64);
    for (i, c) in stats.clients.iter().enumerate() {
        let ch = channel_of(i);
        let want = published.count[ch].load(Ordering::Relaxed);
        let got = c.received.load(Ordering::Relaxed);
        expected += want;
        lost += want.saturating_sub(got);
        duplicates += got.saturating_sub(want);
        if got == want
            && c.seq_sum.load(Ordering::Relaxed) != published.seq_sum[ch].load(Ordering::Relaxed)
        {
            mismatched += 1;
        }
    }
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let first_send = published.first_send.load(Ordering::Relaxed);
    let last_recv = stats.last_recv.load(Ordering::Relaxed);
    let delivery_window = if first_send != u64::MAX && last_recv > first_send {
        (last_recv - first_send) as f64 / 1e9
    } else {
        window
    };
    let server_cpu = srv_b.cpu - srv_a.cpu;
    let me_cpu = me_b.cpu - me_a.cpu;
    result["server"]["cpu_s"] = json!(server_cpu);
    result["server"]["cpu_pct"] = json!(100.0 * server_cpu / window.max(1e-9));
    result["server"]["idle_cpu_pct_per_1k_conn"] =
        json!(100.0 * server_cpu / window.max(1e-9) / (ok.max(1) as f64 / 1000.0));
    result["server"]["cpu_per_delivered_us"] = json!(if delivered > 0 {
        server_cpu * 1e6 / delivered as f64
    } else {
        0.0
    });
    result["server"]["rss_after"] = json!(srv_b.rss);
    result["loadgen"] = json!({
        "cpu_s": me_cpu,
        "cpu_pct": 100.0 * me_cpu / window.max(1e-9),
        "rss_connected": me_b.rss,
        "rss_before": me0.rss,
    });
    let ack = published
        .ack
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    result["published"] = json!({
        "requests": published.requests.load(Ordering::Relaxed),
        "failed": published.failed.load(Ordering::Relaxed),
        "events": published.total(),
        "late_ticks": published.late.load(Ordering::Relaxed),
        "ack_ms": summary_ms(&ack),
    });
    let latency = stats
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    result["expected"] = json!(expected);
    result["delivered"] = json!(delivered);
    result["lost"] = json!(lost);
    result["duplicates"] = json!(duplicates);
    result["mismatched_clients"] = json!(mismatched);
    result["out_of_order"] = json!(stats.out_of_order.load(Ordering::Relaxed));
    result["window_s"] = json!(delivery_window);
    result["delivered_per_s"] = json!(delivered as f64 / delivery_window.max(1e-9));
    result["latency_ms"] = summary_ms(&latency);
    if args.transport == Transport::Poll {
        let rtt = shared
            .polls
            .rtt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        result["polls"] = json!({
            "count": polls_b - polls_a,
            "empty": shared.polls.empty.load(Ordering::Relaxed) - empty_a,
            "per_s": (polls_b - polls_a) as f64 / window.max(1e-9),
            "rtt_ms": summary_ms(&rtt),
        });
    }
    // Give the clients a moment to see the stop before the errors are counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    result["errors"] = json!(stats.errors.load(Ordering::Relaxed));
    result["error_samples"] = json!(stats.error_samples());
    result["wall_s"] = json!(started.elapsed().as_secs_f64());
    eprintln!("{}", one_line(&result));
    Ok(result)
}

/// Durable notify throughput: `--concurrency` publishers, batches of `--batch`, for
/// `--duration` seconds, no clients.
async fn notify(
    args: &Args,
    publisher: Arc<Publisher>,
    mut result: Value,
    pad: String,
) -> Result<Value, String> {
    let stats = Arc::new(Stats::new(0));
    let channels = args.notify_channels.max(1);
    let published = Arc::new(Published::new(channels));
    let srv_a = server_sample(args);
    let me_a = procfs::sample(None).unwrap_or_default();
    let t0 = Instant::now();
    let secs = args.duration.max(0.0);
    let progress = bar(args, secs.ceil() as u64, "notify");
    let plan = Plan {
        rate: 0.0,
        batch: args.batch.max(1),
        requests: u64::MAX,
        until: Some(Instant::now() + Duration::from_secs_f64(secs)),
        channels,
        broadcast: false,
        concurrency: args.concurrency,
        pad,
    };
    let ticker = progress.clone();
    publish::run(
        publisher,
        plan,
        published.clone(),
        stats.clone(),
        move || {
            ticker.set_position(t0.elapsed().as_secs());
        },
    )
    .await;
    progress.finish_and_clear();
    let window = t0.elapsed().as_secs_f64();
    let srv_b = server_sample(args);
    let me_b = procfs::sample(None).unwrap_or_default();
    let events = published.total();
    let ack = published
        .ack
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let server_cpu = srv_b.cpu - srv_a.cpu;
    result["clients"] = json!(0);
    result["concurrency"] = json!(args.concurrency);
    result["published"] = json!({
        "requests": published.requests.load(Ordering::Relaxed),
        "failed": published.failed.load(Ordering::Relaxed),
        "events": events,
        "events_per_s": events as f64 / window.max(1e-9),
        "requests_per_s": published.requests.load(Ordering::Relaxed) as f64 / window.max(1e-9),
        "ack_ms": summary_ms(&ack),
    });
    result["server"] = json!({
        "pid": args.server_pid,
        "rss_after": srv_b.rss,
        "cpu_s": server_cpu,
        "cpu_pct": 100.0 * server_cpu / window.max(1e-9),
        "cpu_per_event_us": if events > 0 { server_cpu * 1e6 / events as f64 } else { 0.0 },
    });
    result["loadgen"] = json!({"cpu_s": me_b.cpu - me_a.cpu, "cpu_pct": 100.0 * (me_b.cpu - me_a.cpu) / window.max(1e-9)});
    result["window_s"] = json!(window);
    result["errors"] = json!(stats.errors.load(Ordering::Relaxed));
    result["error_samples"] = json!(stats.error_samples());
    result["lost"] = json!(0);
    eprintln!("{}", one_line(&result));
    Ok(result)
}

fn one_line(r: &Value) -> String {
    let f = |p: &str| r.pointer(p).cloned().unwrap_or(Value::Null);
    format!(
        "{} {} {}: clients {} connect/s {} delivered/s {} p50 {} p99 {} p999 {} ms, lost {} errors {}, server rss/conn {} cpu {}%, notify ev/s {}",
        f("/target"), f("/scenario"), f("/transport"), f("/clients"),
        f("/connect/per_s"), f("/delivered_per_s"), f("/latency_ms/p50"), f("/latency_ms/p99"),
        f("/latency_ms/p999"), f("/lost"), f("/errors"), f("/server/rss_per_conn"),
        f("/server/cpu_pct"), f("/published/events_per_s"),
    )
}
