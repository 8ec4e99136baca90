//! `realtime`: the server binary. `realtime serve` runs the server; `realtime notify` appends
//! an event from any process (a cron job, a script) to the same data dir or engine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod cli;
mod datadir;
mod demo;
mod serve;
mod settings;

/// Real-time events for web applications.
#[derive(Debug, Parser)]
#[command(name = "realtime", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Append one event to a channel and print its id.
    Notify(NotifyArgs),
}

/// Where settings come from; shared by every subcommand.
#[derive(Debug, Args)]
struct Common {
    /// The settings file (TOML); every key can also come from `REALTIME_<SECTION>_<KEY>`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the SQLite file, the secret and the generated API key live [default: ./realtime-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8787].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

#[derive(Debug, Args)]
struct NotifyArgs {
    #[command(flatten)]
    common: Common,
    /// The channel's context id.
    #[arg(long = "context", value_name = "ID", allow_negative_numbers = true)]
    contextid: i64,
    /// The channel's component, such as `mod_quiz`.
    #[arg(long)]
    component: String,
    /// The channel's area.
    #[arg(long)]
    area: String,
    /// The channel's item id.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    itemid: i64,
    /// The channel's details.
    #[arg(long, default_value = "")]
    details: String,
    /// The event's payload, as JSON.
    #[arg(long, default_value = "null")]
    payload: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: settings::Env = std::env::vars()
        .filter(|(k, _)| k.starts_with("REALTIME_") || k == "RUST_LOG")
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("realtime: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::main(args, env).await,
            Command::Notify(args) => cli::notify(args, env).await,
        }
    });
    // Tasks still running (a stream the drain dropped, a blocking engine call) must not keep
    // the process alive: `serve` has already spent the drain timeout on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realtime: error: {e}");
            ExitCode::FAILURE
        }
    }
}
