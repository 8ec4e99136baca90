//! `chaos`: the chaos soak from the command line.
//!
//! ```text
//! cargo run --release -p chaos -- --minutes 10 --engine postgres
//! cargo run --release -p chaos -- --minutes 10 --engine redis
//! ```
//! Builds the `realtime` binary of the same profile first (unless `--realtime-bin` is given),
//! prints the figures, and exits non-zero when the run failed.

use std::path::PathBuf;
use std::process::ExitCode;

use chaos::{build_realtime, EngineKind, Options};
use clap::Parser;

/// Chaos soak of realtime: nodes killed, engine restarted, clients moving between nodes and
/// transports; checks that no acknowledged event was lost or duplicated.
#[derive(Debug, Parser)]
struct Args {
    /// The engine the nodes share (a private one, started by the soak).
    #[arg(long, value_enum, default_value_t = EngineKind::Postgres)]
    engine: EngineKind,
    /// Minutes of chaos (0: the short form that `cargo test -p chaos` runs, 20 s).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Clients (default: 300 for the long form, 150 for the short).
    #[arg(long)]
    clients: Option<usize>,
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Bound on each node's peak resident memory, MiB.
    #[arg(long)]
    rss_bound_mib: Option<u64>,
    /// The `realtime` binary (default: built with cargo, same profile as this one).
    #[arg(long)]
    realtime_bin: Option<PathBuf>,
    /// Share of notifies sent to the channels with quotes, backslashes and emoji (0 leaves
    /// them out).
    #[arg(long)]
    hostile_share: Option<f64>,
    /// Keep node logs and data dirs here.
    #[arg(long)]
    keep_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let bin = match args.realtime_bin {
        Some(b) => b,
        None => {
            let profile_dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from));
            let Some(profile_dir) = profile_dir else {
                eprintln!("chaos: cannot tell where this binary is; pass --realtime-bin");
                return ExitCode::FAILURE;
            };
            match build_realtime(&profile_dir) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("chaos: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut opts = if args.minutes == 0 {
        Options::short(args.engine, bin)
    } else {
        Options::long(args.engine, bin, args.minutes)
    };
    opts.nodes = args.nodes;
    if let Some(c) = args.clients {
        opts.clients = c;
    }
    if let Some(r) = args.rss_bound_mib {
        opts.rss_bound_mib = r;
    }
    if let Some(h) = args.hostile_share {
        opts.hostile_share = h.clamp(0.0, 1.0);
    }
    opts.keep_dir = args.keep_dir;
    match chaos::run(opts).await {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::FAILURE
        }
    }
}
