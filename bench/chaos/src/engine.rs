//! The engine server of the soak's own, which it stops and starts: a private PostgreSQL (initdb
//! in a temporary directory, `pg_ctl`) or a private `redis-server` without persistence.
//!
//! The same recipe as `PrivatePostgres` / `PrivateRedis` in
//! `crates/realtime-server/tests/common/mod.rs` (which cannot be shared as it is: that module is
//! compiled into the server's tests only), answering errors instead of panicking.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// Which engine the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// A private PostgreSQL cluster: data survives its restart (same epoch).
    Postgres,
    /// A private redis-server without persistence: its restart loses everything (new epoch).
    Redis,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Postgres => "postgres",
            EngineKind::Redis => "redis",
        })
    }
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("local_addr", e))?
        .port())
}

/// A running private engine.
#[derive(Debug)]
pub(crate) enum PrivateEngine {
    Postgres {
        port: u16,
        dir: tempfile::TempDir,
        bin: PathBuf,
    },
    Redis {
        port: u16,
        child: Option<Child>,
    },
}

impl PrivateEngine {
    /// Creates and starts one.
    pub(crate) fn start(kind: EngineKind) -> Result<PrivateEngine, Error> {
        let port = free_port()?;
        let mut engine = match kind {
            EngineKind::Postgres => {
                let bin = std::fs::read_dir("/usr/lib/postgresql")
                    .map_err(|e| {
                        Error::io(
                            "PostgreSQL's server binaries in /usr/lib/postgresql (apt-get install postgresql)",
                            e,
                        )
                    })?
                    .filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .find(|p| p.join("initdb").exists())
                    .ok_or_else(|| Error::Setup("no initdb under /usr/lib/postgresql".into()))?;
                let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
                run(Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()))?;
                run(Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join("initdb"))
                    .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                    .arg(dir.path().join("data")))?;
                PrivateEngine::Postgres { port, dir, bin }
            }
            EngineKind::Redis => PrivateEngine::Redis { port, child: None },
        };
        engine.up()?;
        Ok(engine)
    }

    /// The URL the nodes use.
    pub(crate) fn url(&self) -> String {
        match self {
            PrivateEngine::Postgres { port, .. } => {
                format!("postgres://postgres@127.0.0.1:{port}/postgres")
            }
            PrivateEngine::Redis { port, .. } => format!("redis://127.0.0.1:{port}"),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let PrivateEngine::Postgres { dir, bin, .. } = self else {
            return Ok(());
        };
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(args))
    }

    /// Starts it and waits until it accepts connections.
    pub(crate) fn up(&mut self) -> Result<(), Error> {
        match self {
            PrivateEngine::Postgres { port, dir, .. } => {
                let opts = format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                    dir.path().display()
                );
                let log = dir.path().join("log").display().to_string();
                self.pg_ctl(&["-w", "-o", &opts, "-l", &log, "start"])
            }
            PrivateEngine::Redis { port, child } => {
                let c = Command::new("redis-server")
                    .args([
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| Error::io("redis-server (apt-get install redis-server)", e))?;
                *child = Some(c);
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                    if Instant::now() > deadline {
                        return Err(Error::Setup("redis-server did not start in 10 s".into()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            }
        }
    }

    /// Stops it at once: PostgreSQL `-m immediate` (clients cut, data kept), redis-server
    /// SIGKILL (everything lost: it has no persistence).
    pub(crate) fn down(&mut self) -> Result<(), Error> {
        match self {
            PrivateEngine::Postgres { .. } => self.pg_ctl(&["-w", "-m", "immediate", "stop"]),
            PrivateEngine::Redis { child, .. } => {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                Ok(())
            }
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(what.clone(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
