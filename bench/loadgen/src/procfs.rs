//! A process's resident memory and CPU time, read from `/proc` (Linux).

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`, 100 on Linux/x86_64
/// and arm64).
const CLK_TCK: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Sample {
    /// Resident set size, bytes (`VmRSS`).
    pub(crate) rss: u64,
    /// User + system CPU time of all threads so far, seconds.
    pub(crate) cpu: f64,
    /// Threads.
    pub(crate) threads: u64,
}

/// Reads `pid` (or this process for `None`); `None` when it cannot be read.
pub(crate) fn sample(pid: Option<u32>) -> Option<Sample> {
    let base = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let rss = field("VmRSS:")? * 1024;
    let threads = field("Threads:").unwrap_or(0);
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Sample {
        rss,
        cpu: (utime + stime) / CLK_TCK,
        threads,
    })
}
