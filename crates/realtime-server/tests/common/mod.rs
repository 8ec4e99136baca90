//! The real `realtime` binary as a child process, for tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_realtime");

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `realtime serve` in `cwd` with `args` and `env`, and waits for its address line.
    pub fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped());
        // REALTIME_TEST_LOG=1 shows the servers' logs (with RUST_LOG) while debugging a test.
        if std::env::var_os("REALTIME_TEST_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        cmd.env_remove("REALTIME_API_KEY")
            .env_remove("REALTIME_SECRET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("realtime serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a `listening on` line");
        Server { child, url }
    }

    /// Starts `realtime serve` on a free port with a fresh data dir (and working directory),
    /// with `env`; the directory lives as long as the returned guard.
    pub fn fresh(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8").to_string();
        let server = Server::start(
            dir.path(),
            &["--listen", "127.0.0.1:0", "--data-dir", &data],
            env,
        );
        (dir, server)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A PostgreSQL server of a test's own (initdb in a temporary directory, a free port), so that
/// the test can stop and start it without disturbing other tests.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL's server binaries in /usr/lib/postgresql (apt-get install postgresql)",
            )
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        let data = dir.path().join("data");
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(ok.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut pg = PrivatePostgres { port, dir, bin };
        pg.up();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        assert!(
            self.ctl(&[
                "-w",
                "-o",
                &opts,
                "-l",
                &self.dir.path().join("log").display().to_string(),
                "start"
            ]),
            "pg_ctl start"
        );
    }

    /// Stops it at once (clients are disconnected).
    pub fn down(&mut self) {
        assert!(self.ctl(&["-w", "-m", "immediate", "stop"]), "pg_ctl stop");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl(&["-w", "-m", "immediate", "stop"]);
    }
}

/// A Redis server of a test's own, without persistence (as the machine's) unless made with
/// [`PrivateRedis::with_rdb`], on a free port, so that the test can kill and restart it without
/// disturbing other tests.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    /// Where it keeps `dump.rdb` (written by `SAVE` only, loaded at start), when it persists.
    rdb_dir: Option<std::path::PathBuf>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        Self::start_in(None)
    }

    /// One that loads `dir/dump.rdb` when it starts and writes it on `SAVE` (never by itself):
    /// a backup is a copy of that file, a restore puts one back before a start.
    pub fn with_rdb(dir: &Path) -> PrivateRedis {
        Self::start_in(Some(dir.to_path_buf()))
    }

    fn start_in(rdb_dir: Option<std::path::PathBuf>) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut r = PrivateRedis {
            port,
            child: None,
            rdb_dir,
        };
        r.up();
        r
    }

    /// The RDB file it loads at start and writes on `SAVE`, when it persists.
    pub fn rdb(&self) -> Option<std::path::PathBuf> {
        self.rdb_dir.as_ref().map(|d| d.join("dump.rdb"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server (empty, or with what its RDB file holds) and waits until it answers.
    pub fn up(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(dir) = &self.rdb_dir {
            cmd.arg("--dir").arg(dir).args(["--dbfilename", "dump.rdb"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL): everything it held (since its last `SAVE`, when it persists) is gone.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A page config for `user` and one `channel`, from `POST /api/page` with `key`.
pub async fn page(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    user: i64,
    channel: serde_json::Value,
) -> serde_json::Value {
    let res = http
        .post(format!("{url}/api/page"))
        .bearer_auth(key)
        .json(&serde_json::json!({"user": user, "channels": [channel]}))
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

/// One `POST /poll` with the page's first subscription, from `cursor`, through `url`.
pub async fn poll(
    http: &reqwest::Client,
    url: &str,
    page: &serde_json::Value,
    cursor: &serde_json::Value,
) -> serde_json::Value {
    let sub = &page["subscriptions"][0];
    http.post(format!("{url}/poll"))
        .bearer_auth(page["usertoken"].as_str().expect("usertoken"))
        .json(&serde_json::json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": cursor}))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json")
}

/// Runs `node [flags] --test --test-reporter=spec <dir>/` in `cwd` against this build of the
/// binary, prints its output, and asserts that it passed with at least `min_passed` tests run
/// and none skipped (a runner that ran nothing must not look green).
pub fn run_node_tests(cwd: &Path, flags: &[&str], dir: &str, min_passed: u32, what: &str) {
    let out = Command::new("node")
        .args(flags)
        .args(["--test", "--test-reporter=spec", dir])
        .current_dir(cwd)
        .env("REALTIME_BIN", BIN)
        .output()
        .expect("node runs (install Node.js 20 or later: .ci/run does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    // The spec reporter ends with counts.
    let count = |word: &str| {
        stdout
            .lines()
            .find_map(|l| {
                l.trim_start_matches(|c: char| !c.is_ascii_alphabetic())
                    .strip_prefix(word)
            })
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let (passed, skipped) = (count("pass "), count("skipped "));
    assert!(
        passed >= min_passed && skipped == 0,
        "expected {what} to run and pass ({min_passed}+), saw {passed} passing, {skipped} skipped:\n{stdout}"
    );
}
