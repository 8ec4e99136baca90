//! The `realtime serve` nodes: real processes of the real binary, each on a free port with a
//! data dir of its own, killed with SIGKILL and started again (on a new port: clients learn
//! the new address from [`Nodes::pick`]). The peak resident memory of each process (`VmHWM`)
//! is kept per node slot across its restarts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use crate::Error;

/// The shared settings every node is started with.
#[derive(Debug, Clone)]
pub(crate) struct NodeEnv {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) engine_url: String,
    pub(crate) api_key: String,
    pub(crate) secret: String,
}

#[derive(Debug, Default)]
struct Slot {
    child: Option<Child>,
    url: Option<String>,
    starts: u32,
    peak_hwm_kib: u64,
}

/// The nodes of a run.
#[derive(Debug)]
pub(crate) struct Nodes {
    env: NodeEnv,
    slots: Vec<Mutex<Slot>>,
}

/// Peak memory of one node slot.
#[derive(Debug, Clone)]
pub struct NodeFigures {
    /// How many processes ran in this slot (1 + restarts).
    pub starts: u32,
    /// The highest `VmHWM` of any of them, KiB.
    pub peak_hwm_kib: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `VmHWM` (peak resident set) of `pid`, KiB; 0 when it cannot be read.
pub(crate) fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Nodes {
    /// Starts `n` nodes.
    pub(crate) fn start(env: NodeEnv, n: usize) -> Result<Arc<Nodes>, Error> {
        let nodes = Arc::new(Nodes {
            env,
            slots: (0..n).map(|_| Mutex::new(Slot::default())).collect(),
        });
        for i in 0..n {
            nodes.restart(i)?;
        }
        Ok(nodes)
    }

    /// How many slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The URL of a random live node, if any is up.
    pub(crate) fn pick(&self) -> Option<String> {
        let start = rand::thread_rng().gen_range(0..self.slots.len());
        (0..self.slots.len())
            .map(|k| (start + k) % self.slots.len())
            .find_map(|i| lock(&self.slots[i]).url.clone())
    }

    /// The URL of node `i`, when it is up.
    pub(crate) fn url(&self, i: usize) -> Option<String> {
        lock(&self.slots[i]).url.clone()
    }

    /// Reads the peak memory of every live node.
    pub(crate) fn sample(&self) {
        for s in &self.slots {
            let mut s = lock(s);
            if let Some(pid) = s.child.as_ref().map(Child::id) {
                s.peak_hwm_kib = s.peak_hwm_kib.max(vm_hwm_kib(pid));
            }
        }
    }

    /// SIGKILLs node `i` (its peak memory read just before).
    pub(crate) fn kill(&self, i: usize) {
        let mut s = lock(&self.slots[i]);
        s.url = None;
        if let Some(mut c) = s.child.take() {
            s.peak_hwm_kib = s.peak_hwm_kib.max(vm_hwm_kib(c.id()));
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` (again), waiting for its `listening on` line.
    pub(crate) fn restart(&self, i: usize) -> Result<(), Error> {
        self.kill(i);
        let (child, url) = spawn(&self.env, i, lock(&self.slots[i]).starts)?;
        let mut s = lock(&self.slots[i]);
        s.child = Some(child);
        s.url = Some(url);
        s.starts += 1;
        Ok(())
    }

    /// Figures per slot.
    pub(crate) fn figures(&self) -> Vec<NodeFigures> {
        self.sample();
        self.slots
            .iter()
            .map(|s| {
                let s = lock(s);
                NodeFigures {
                    starts: s.starts,
                    peak_hwm_kib: s.peak_hwm_kib,
                }
            })
            .collect()
    }

    /// Stops every node (SIGKILL: nothing of theirs is checked after this).
    pub(crate) fn stop_all(&self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }

    /// The log files of every node process, for a scan after the run.
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            for g in 0..lock(s).starts {
                out.push(log_path(&self.env.dir, i, g));
            }
        }
        out
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn log_path(dir: &Path, i: usize, generation: u32) -> PathBuf {
    dir.join(format!("node{i}.{generation}.log"))
}

fn spawn(env: &NodeEnv, i: usize, generation: u32) -> Result<(Child, String), Error> {
    let data = env.dir.join(format!("node{i}"));
    std::fs::create_dir_all(&data).map_err(|e| Error::io(format!("{}", data.display()), e))?;
    let log_file = log_path(&env.dir, i, generation);
    let log = std::fs::File::create(&log_file)
        .map_err(|e| Error::io(format!("{}", log_file.display()), e))?;
    let mut child = Command::new(&env.bin)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(&data)
        .env("REALTIME_API_KEY", &env.api_key)
        .env("REALTIME_SECRET", &env.secret)
        .env("REALTIME_ENGINE_URL", &env.engine_url)
        .env("REALTIME_ENGINE_CHECK_INTERVAL_MS", "200")
        .env("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "3")
        .env(
            "RUST_LOG",
            std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", env.bin.display()), e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(Error::Setup("no stdout of the node".into()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end so that the node never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => Ok((child, url)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            Err(Error::Setup(format!(
                "node {i} printed no `listening on` line in 30 s (log {}: {})",
                log_file.display(),
                tail.join(" | ")
            )))
        }
    }
}
