#!/usr/bin/env python3
"""Runs the realtime benchmark: our server against Socket.IO 4.8 and a raw broadcast loop.

    python3 bench/run.py quick            # small N, a few seconds each: under 2 minutes
    python3 bench/run.py full             # the published numbers (docs/performance.md)
    python3 bench/run.py full --only broadcast_latency,idle --repeat 3

For every scenario, target and repeat it starts a fresh server (a new SQLite data dir for ours)
pinned to core 0, runs `loadgen` pinned to core 1, stops the server, and keeps the loadgen's
JSON. It writes bench/results/<date>-<mode>-<scenario>.json and .png per scenario, and
<date>-<mode>-summary.json, and prints a summary table. Needs: cargo, node + npm (the Socket.IO
peer), matplotlib for the plots (pip install -r bench/requirements.txt), strace for the
"no engine query per poll" proof.
"""

import argparse
import datetime as dt
import json
import shlex
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RELEASE = ROOT / "target" / "release"
PEER = BENCH / "peers" / "socketio"
API_KEY = "bench-api-key"
PORTS = {"ours": 18787, "socketio": 18788, "raw": 18789}
# Our server's binary (--server-bin picks another build, e.g. one with a proposed patch).
OURS_BIN = [RELEASE / "realtime"]

# name -> (targets, loadgen args, our server's extra env, what it shows)
SCENARIOS = {
    "quick": {
        "idle": (["ours", "socketio", "raw"], dict(scenario="idle", clients=2000, duration=2, settle=1), {}, "idle WebSocket connections"),
        "broadcast_latency": (["ours", "socketio", "raw"], dict(scenario="broadcast", clients=1000, rate=10, duration=2, settle=1), {}, "fan-out at a moderate rate: latency"),
        "broadcast_throughput": (["ours", "socketio", "raw"], dict(scenario="broadcast", clients=1000, rate=100, duration=2, settle=1, drain=5), {}, "fan-out at saturation: delivered/s"),
        "channels": (["ours", "socketio", "raw"], dict(scenario="channels", clients=1000, rate=20, batch=50, duration=2, settle=1), {}, "each client its own channel"),
        "sse_broadcast": (["ours"], dict(scenario="broadcast", transport="sse", clients=1000, rate=10, duration=2, settle=1), {}, "fan-out over SSE"),
        "poll_empty": (["ours"], dict(scenario="poll", transport="poll", clients=50, rate=0, duration=2, settle=1), {"REALTIME_POLL_REQUEST_TIMEOUT_SECS": "0"}, "short polls that carry nothing"),
        "poll_events": (["ours"], dict(scenario="poll", transport="poll", clients=500, rate=10, duration=2, settle=1), {}, "long polls that carry events"),
        "notify_batched": (["ours"], dict(scenario="notify", batch=100, concurrency=8, duration=2), {}, "durable notify, batches of 100"),
        "notify_single": (["ours"], dict(scenario="notify", batch=1, concurrency=64, duration=2), {}, "durable notify, one event per request"),
    },
    # Before/after a server change: run once per binary (--server-bin, --targets ours).
    "ab": {
        "idle": (["ours", "raw"], dict(scenario="idle", clients=10000, duration=5, settle=3), {}, "idle WebSocket connections"),
        "broadcast_latency": (["ours", "raw"], dict(scenario="broadcast", clients=5000, rate=10, duration=10), {}, "fan-out at a moderate rate: latency"),
        "broadcast_throughput": (["ours", "raw"], dict(scenario="broadcast", clients=5000, rate=100, duration=5, drain=20), {}, "fan-out at saturation: delivered/s"),
    },
    "full": {
        "idle": (["ours", "socketio", "raw"], dict(scenario="idle", clients=19000, duration=30, settle=5, connect_timeout=300), {}, "idle WebSocket connections"),
        "broadcast_latency": (["ours", "socketio", "raw"], dict(scenario="broadcast", clients=10000, rate=10, duration=20), {}, "fan-out at 10 msg/s: latency"),
        "broadcast_1hz": (["ours", "socketio", "raw"], dict(scenario="broadcast", clients=10000, rate=1, duration=20), {}, "fan-out at 1 msg/s: the latency of one broadcast"),
        "broadcast_throughput": (["ours", "socketio", "raw"], dict(scenario="broadcast", clients=10000, rate=50, duration=5, drain=30), {}, "fan-out at saturation: delivered/s"),
        "channels": (["ours", "socketio", "raw"], dict(scenario="channels", clients=10000, rate=100, batch=100, duration=15), {}, "each client its own channel, 1 msg/s each"),
        "sse_broadcast": (["ours"], dict(scenario="broadcast", transport="sse", clients=10000, rate=10, duration=15), {}, "fan-out over SSE"),
        "poll_empty": (["ours"], dict(scenario="poll", transport="poll", clients=100, rate=0, duration=10), {"REALTIME_POLL_REQUEST_TIMEOUT_SECS": "0"}, "short polls that carry nothing"),
        "poll_events": (["ours"], dict(scenario="poll", transport="poll", clients=2000, rate=10, duration=15), {}, "long polls that carry events"),
        "notify_batched": (["ours"], dict(scenario="notify", batch=100, concurrency=8, duration=10), {}, "durable notify, batches of 100"),
        "notify_batched_1000": (["ours"], dict(scenario="notify", batch=1000, concurrency=4, duration=10), {}, "durable notify, batches of 1000"),
        "notify_single": (["ours"], dict(scenario="notify", batch=1, concurrency=64, duration=10), {}, "durable notify, one event per request"),
    },
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, **kw).stdout.strip()


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1_048_576
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine():
    lscpu = sh("lscpu")
    pick = lambda key: next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith(key)), "")
    return {
        "cpu": pick("Model name"),
        "cpus": pick("CPU(s)"),
        "hypervisor": pick("Hypervisor vendor"),
        "mem_total_gib": round(int(sh("awk '/MemTotal/ {print $2}' /proc/meminfo") or 0) / 1048576, 1),
        "kernel": sh("uname -r"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "nofile_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "ip_local_port_range": sh("sysctl -n net.ipv4.ip_local_port_range"),
        "fs_file_max": sh("sysctl -n fs.file-max"),
        "somaxconn": sh("sysctl -n net.core.somaxconn"),
        "rustc": sh("rustc --version"),
        "node": sh("node --version"),
        "socketio": json.loads((PEER / "node_modules" / "socket.io" / "package.json").read_text()).get("version")
        if (PEER / "node_modules" / "socket.io" / "package.json").exists() else None,
        "git": sh(f"git -C {ROOT} describe --always --dirty"),
        "server_bin": str(OURS_BIN[0]),
        "git_dirty_files": sh(f"git -C {ROOT} status --porcelain -- crates").splitlines(),
    }


def load_now():
    return {"uptime": sh("uptime"), "top": sh("top -bn1 | head -15").splitlines()}


def build(skip):
    if not skip:
        log("building (release): realtime-server, loadgen, rawloop …")
        for attempt in range(30):
            r = subprocess.run(["cargo", "build", "--release", "-p", "realtime-server", "-p", "realtime-loadgen", "-p", "realtime-rawloop"], cwd=ROOT)
            if r.returncode == 0:
                break
            log("cargo build failed; retrying in 20 s (another build may hold the lock or be half-edited)")
            time.sleep(20)
        else:
            sys.exit("cargo build kept failing")
    if not (PEER / "node_modules" / "socket.io").exists():
        log("installing the Socket.IO peer (npm ci) …")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER, check=True)


def pin(core, args):
    return ["taskset", "-c", str(core)] + args if core is not None else args


def wait_port_free(port):
    """A server of the previous run may still be closing its connections."""
    for _ in range(100):
        if f":{port} " not in sh(f"ss -ltn 'sport = :{port}'"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} is still taken (a stray server?): {sh(f'ss -ltnp sport = :{port}')}")


class Server:
    """One server process, started fresh for one run."""

    def __init__(self, target, core, env_extra, strace_out=None):
        wait_port_free(PORTS[target])
        self.target = target
        self.port = PORTS[target]
        self.tmp = tempfile.mkdtemp(prefix=f"rtbench-{target}-")
        env = dict(os.environ)
        if target == "ours":
            env.update({
                "REALTIME_API_KEY": API_KEY,
                "REALTIME_SERVER_DEMO": "off",
                # Thousands of clients of one user from one address: the per-user and per-address
                # connection limits and the notify rate are for strangers, not for the load generator.
                "REALTIME_LIMITS_CONNECTIONS_PER_USER": "0",
                "REALTIME_LIMITS_CONNECTIONS_PER_IP": "0",
                "REALTIME_RATE_NOTIFY_PER_SEC": "0",
                "RUST_LOG": "warn",
            })
            env.update(env_extra)
            cmd = [str(OURS_BIN[0]), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.tmp]
        elif target == "socketio":
            cmd = ["node", str(PEER / "server.js"), str(self.port), "127.0.0.1"]
        else:
            cmd = [str(RELEASE / "rawloop"), f"127.0.0.1:{self.port}"]
        if strace_out:
            # Only these syscalls are stopped on (seccomp-bpf): the server runs at near full speed.
            cmd = ["strace", "-f", "--seccomp-bpf", "-c", "-o", strace_out,
                   "-e", "trace=pread64,pwrite64,fdatasync,fsync"] + cmd
        self.cmd = pin(core, cmd)
        self.env_extra = env_extra
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=subprocess.PIPE, stderr=open(Path(self.tmp) / "stderr.log", "w"), text=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{target} exited: {(Path(self.tmp) / 'stderr.log').read_text()[-2000:]}")
                continue
            if line.startswith("listening on"):
                break
        else:
            raise RuntimeError(f"{target} did not start")
        self.pid = self.proc.pid
        if strace_out:
            # The server is strace's child.
            for _ in range(50):
                kids = sh(f"pgrep -P {self.proc.pid}").split()
                if kids:
                    self.pid = int(kids[0])
                    break
                time.sleep(0.1)

    def stop(self):
        if self.pid != self.proc.pid:
            # Under strace: end the server itself; strace then prints its counts and exits.
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def loadgen_cmd(target, params, core, server_pid, out, label, progress):
    args = [str(RELEASE / "loadgen"), "--target", target, "--server", f"127.0.0.1:{PORTS[target]}",
            "--server-pid", str(server_pid), "--api-key", API_KEY, "--out", str(out), "--label", label]
    for k, v in params.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    if not progress:
        args.append("--no-progress")
    return pin(core, args)


def run_one(name, target, params, env_extra, cores, progress, strace=False):
    server_core, load_core = cores
    out = Path(tempfile.mkstemp(prefix="rtbench-", suffix=".json")[1])
    strace_out = str(out) + ".strace" if strace else None
    server = Server(target, server_core, env_extra, strace_out)
    label = f"server core {server_core}, loadgen core {load_core}" if server_core is not None else "no pinning"
    cmd = loadgen_cmd(target, params, load_core, server.pid, out, label, progress)
    try:
        time.sleep(0.5)
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text()) if r.returncode == 0 and out.stat().st_size else {"error": f"loadgen exited {r.returncode}"}
    finally:
        server.stop()
    result["server_cmd"] = shlex.join(server.cmd)
    result["server_env"] = env_extra
    result["loadgen_cmd"] = shlex.join(cmd)
    if strace_out and Path(strace_out).exists():
        result["strace"] = parse_strace(Path(strace_out).read_text())
        Path(strace_out).unlink()
    out.unlink(missing_ok=True)
    return result


def parse_strace(text):
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("pread64", "pwrite64", "fdatasync", "fsync"):
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return calls


def metric(r, path):
    cur = r
    for p in path.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


# The figures a scenario is judged by: (label, json path, higher is better).
KEY_METRICS = {
    "idle": [("rss/conn (KB)", "server.rss_per_conn", False, 1 / 1000), ("connect/s", "connect.per_s", True, 1),
             ("connect CPU/conn (µs)", "server.connect_cpu_per_conn_us", False, 1), ("idle CPU %", "server.cpu_pct", False, 1)],
    "broadcast": [("delivered/s", "delivered_per_s", True, 1), ("p50 ms", "latency_ms.p50", False, 1), ("p99 ms", "latency_ms.p99", False, 1),
                  ("p99.9 ms", "latency_ms.p999", False, 1), ("server CPU µs/msg", "server.cpu_per_delivered_us", False, 1),
                  ("loadgen CPU %", "loadgen.cpu_pct", False, 1), ("lost", "lost", False, 1), ("errors", "errors", False, 1)],
    "channels": [("delivered/s", "delivered_per_s", True, 1), ("p50 ms", "latency_ms.p50", False, 1), ("p99 ms", "latency_ms.p99", False, 1),
                 ("p99.9 ms", "latency_ms.p999", False, 1), ("server CPU µs/msg", "server.cpu_per_delivered_us", False, 1),
                 ("rss/conn (KB)", "server.rss_per_conn", False, 1 / 1000), ("lost", "lost", False, 1), ("errors", "errors", False, 1)],
    "poll": [("polls/s", "polls.per_s", True, 1), ("poll rtt p50 ms", "polls.rtt_ms.p50", False, 1), ("poll rtt p99 ms", "polls.rtt_ms.p99", False, 1),
             ("event p99 ms", "latency_ms.p99", False, 1), ("server CPU %", "server.cpu_pct", False, 1), ("lost", "lost", False, 1), ("errors", "errors", False, 1)],
    "notify": [("events/s", "published.events_per_s", True, 1), ("requests/s", "published.requests_per_s", True, 1),
               ("ack p50 ms", "published.ack_ms.p50", False, 1), ("ack p99 ms", "published.ack_ms.p99", False, 1),
               ("server CPU µs/event", "server.cpu_per_event_us", False, 1), ("errors", "errors", False, 1)],
}


def summarise(name, scenario, runs):
    """Median and spread (min..max) of each key metric per target, and ratios to ours."""
    kind = scenario
    out = {}
    for target, rs in runs.items():
        row = {}
        for label, path, _, scale in KEY_METRICS[kind]:
            vals = [metric(r, path) for r in rs]
            vals = [v * scale for v in vals if isinstance(v, (int, float))]
            if vals:
                row[label] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}
        out[target] = row
    ratios = {}
    if "ours" in out:
        for peer in ("socketio", "raw"):
            if peer not in out:
                continue
            r = {}
            for label, _, higher, _ in KEY_METRICS[kind]:
                a, b = out["ours"].get(label), out[peer].get(label)
                if a and b and b["median"]:
                    r[label] = a["median"] / b["median"]
            ratios[f"ours/{peer}"] = r
    return {"targets": out, "ratios": ratios}


def plot(name, kind, summary, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (pip install -r bench/requirements.txt): no PNG")
        return False
    metrics = [m for m in KEY_METRICS[kind] if m[0] not in ("lost", "errors")]
    targets = list(summary["targets"].keys())
    colors = {"ours": "#2b7bb9", "socketio": "#e07b39", "raw": "#6a9f4f"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6))
    if len(metrics) == 1:
        axes = [axes]
    for ax, (label, _, higher, _) in zip(axes, metrics):
        meds, lo, hi = [], [], []
        for t in targets:
            m = summary["targets"][t].get(label)
            meds.append(m["median"] if m else 0)
            lo.append(m["median"] - m["min"] if m else 0)
            hi.append(m["max"] - m["median"] if m else 0)
        ax.bar(targets, meds, yerr=[lo, hi], capsize=4, color=[colors.get(t, "grey") for t in targets])
        ax.set_title(label + (" ↑" if higher else " ↓"), fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(all_summaries):
    lines = []
    for name, s in all_summaries.items():
        lines.append(f"\n## {name}: {s['what']}  ({s['params']})")
        targets = list(s["summary"]["targets"].keys())
        labels = [m[0] for m in KEY_METRICS[s["kind"]]]
        head = ["metric"] + [f"{t} (median [min..max])" for t in targets] + list(s["summary"]["ratios"].keys())
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for label in labels:
            row = [label]
            for t in targets:
                m = s["summary"]["targets"][t].get(label)
                row.append(f"{fmt(m['median'])} [{fmt(m['min'])}..{fmt(m['max'])}]" if m else "-")
            for _, r in s["summary"]["ratios"].items():
                row.append(f"{r[label]:.2f}×" if label in r else "-")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["quick", "full", "ab"])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--targets", default="ours,socketio,raw")
    ap.add_argument("--repeat", type=int, default=None, help="runs of each (default: quick 1, full 2)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to core 0 and loadgen to core 1")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-strace", action="store_true", help="skip the 'no engine query per poll' proof")
    ap.add_argument("--results", default=str(BENCH / "results"))
    ap.add_argument("--tag", default=None, help="file name prefix (default: today's date and the mode)")
    ap.add_argument("--server-bin", default=None, help="our server's binary (default: target/release/realtime)")
    a = ap.parse_args()

    nofile = raise_nofile()
    if a.server_bin:
        OURS_BIN[0] = Path(a.server_bin).resolve()
    build(a.no_build)
    repeat = a.repeat or (1 if a.mode == "quick" else 2)
    cores = (None, None) if a.no_pin else (0, 1)
    scenarios = SCENARIOS[a.mode]
    if a.only:
        scenarios = {k: v for k, v in scenarios.items() if k in a.only.split(",")}
    wanted = set(a.targets.split(","))
    results_dir = Path(a.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    tag = a.tag or f"{dt.date.today().isoformat()}-{a.mode}"
    info = machine()
    log(f"open files limit {nofile}; machine {info['cpu']} × {info['cpus']}, {info['mem_total_gib']} GiB, kernel {info['kernel']}")
    before = load_now()
    log(before["uptime"])
    all_summaries = {}
    t_start = time.time()
    for name, (targets, params, env_extra, what) in scenarios.items():
        targets = [t for t in targets if t in wanted]
        runs = {t: [] for t in targets}
        load = load_now()
        for i in range(repeat):
            # Alternate the order so that a slow moment of the machine does not always hit the same target.
            order = targets if i % 2 == 0 else list(reversed(targets))
            for t in order:
                log(f"[{name}] {t} run {i + 1}/{repeat} …")
                r = run_one(name, t, params, env_extra, cores, not a.no_progress)
                runs[t].append(r)
        kind = params["scenario"]
        summary = summarise(name, kind, runs)
        doc = {
            "scenario": name, "what": what, "kind": kind, "mode": a.mode, "params": params,
            "server_env": env_extra, "repeat": repeat,
            "cores": {"server": cores[0], "loadgen": cores[1]} if cores[0] is not None else "not pinned (2 cores shared)",
            "machine": info, "load_at_start": load, "load_at_end": load_now(),
            "summary": summary, "runs": runs,
        }
        base = results_dir / f"{tag}-{name}"
        base.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        plot(name, kind, summary, base.with_suffix(".png"), f"{name}: {what} ({a.mode}, {params.get('clients', 0)} clients)")
        all_summaries[name] = {"what": what, "kind": kind, "params": params, "summary": summary}
        log(table({name: all_summaries[name]}))

    # The proof that a poll makes no engine query: count the server's SQLite reads (pread64)
    # while it answers polls, empty and with events.
    proof = {}
    if not a.no_strace and "ours" in wanted and shutil.which("strace") and (not a.only or "poll_proof" in a.only.split(",")):
        for name in ("poll_empty", "poll_events"):
            _, params, env_extra, _ = SCENARIOS[a.mode][name]
            log(f"[poll_proof] {name} under strace …")
            r = run_one(name, "ours", params, env_extra, cores, not a.no_progress, strace=True)
            proof[name] = {"polls": metric(r, "polls.count"), "events_delivered": r.get("delivered"),
                           "sqlite_syscalls": r.get("strace"), "errors": r.get("errors"),
                           "server_cmd": r.get("server_cmd"), "loadgen_cmd": r.get("loadgen_cmd")}
        (results_dir / f"{tag}-poll_proof.json").write_text(json.dumps(proof, indent=1))
        log(json.dumps(proof, indent=1))

    summary_doc = {"mode": a.mode, "machine": info, "load_before": before, "load_after": load_now(),
                   "cores": {"server": cores[0], "loadgen": cores[1]}, "repeat": repeat,
                   "minutes": round((time.time() - t_start) / 60, 1), "scenarios": all_summaries, "poll_proof": proof}
    (results_dir / f"{tag}-summary.json").write_text(json.dumps(summary_doc, indent=1))
    text = table(all_summaries)
    (results_dir / f"{tag}-summary.md").write_text(text + "\n")
    print(text)
    log(f"done in {summary_doc['minutes']} min; results in {results_dir}/{tag}-*")


if __name__ == "__main__":
    main()
