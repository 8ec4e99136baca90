#!/usr/bin/env python3
"""Markdown tables for docs/performance.md from the JSON that bench/run.py wrote.

    python3 bench/report.py --tag 2026-11-25-full [--tag 2026-11-25-full-1hz] \
        [--after 2026-11-25-full-patched --after-label "ours + patch"]

Runs of the same scenario from several --tag are merged (each target once: the first tag that
has it wins). --after adds a column for our server built another way (e.g. with a proposed
patch), and the ratios are given for both builds.
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # importing run.py must not leave __pycache__ in bench/
from run import KEY_METRICS, fmt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load(tag):
    out = {}
    for f in sorted(RESULTS.glob(f"{tag}-*.json")):
        name = f.stem[len(tag) + 1:]
        if name in ("summary", "poll_proof"):
            continue
        doc = json.loads(f.read_text())
        # Another tag that starts with this one (2026-11-25-full-patched for 2026-11-25-full).
        if "summary" in doc and doc.get("scenario") == name:
            out[name] = doc
    return out


def cell(m):
    if not m:
        return "-"
    if m["min"] == m["max"]:
        return fmt(m["median"])
    return f"{fmt(m['median'])} ({fmt(m['min'])}–{fmt(m['max'])})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", action="append", required=True)
    ap.add_argument("--after", default=None)
    ap.add_argument("--after-label", default="ours + patch")
    ap.add_argument("--base-label", default="ours")
    ap.add_argument("--png", default=None, help="also draw the headline figures into this PNG")
    a = ap.parse_args()
    docs = {}
    for tag in a.tag:
        for name, doc in load(tag).items():
            if name not in docs:
                docs[name] = doc
            else:
                for t, row in doc["summary"]["targets"].items():
                    docs[name]["summary"]["targets"].setdefault(t, row)
    after = load(a.after) if a.after else {}
    figures = {}
    order = ["idle", "broadcast_1hz", "broadcast_latency", "broadcast_throughput", "channels", "sse_broadcast",
             "poll_empty", "poll_events", "notify_batched", "notify_batched_1000", "notify_single"]
    for name, doc in sorted(docs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        kind = doc["kind"]
        targets = doc["summary"]["targets"]
        cols = []
        if "ours" in targets:
            cols.append((a.base_label, targets["ours"]))
        if name in after and "ours" in after[name]["summary"]["targets"]:
            cols.append((a.after_label, after[name]["summary"]["targets"]["ours"]))
        for peer, label in (("socketio", "Socket.IO 4.8"), ("raw", "raw loop")):
            if peer in targets:
                cols.append((label, targets[peer]))
        figures[name] = cols
        ours_cols = [c for c in cols if c[0] in (a.base_label, a.after_label)]
        peer_cols = [c for c in cols if c[0] not in (a.base_label, a.after_label)]
        p = doc["params"]
        print(f"\n#### {name}: {doc['what']}")
        print(f"`{json.dumps(p)}`" + (f", server env `{json.dumps(doc['server_env'])}`" if doc.get("server_env") else "")
              + f"; {doc['repeat']} runs each, median (min–max)\n")
        head = ["metric"] + [c[0] for c in cols]
        for oc in ours_cols:
            for pc in peer_cols:
                head.append(f"{oc[0]} / {pc[0]}")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for label, _, _, _ in KEY_METRICS[kind]:
            row = [label] + [cell(c[1].get(label)) for c in cols]
            for oc in ours_cols:
                for pc in peer_cols:
                    x, y = oc[1].get(label), pc[1].get(label)
                    row.append(f"{x['median'] / y['median']:.2f}×" if x and y and y["median"] else "-")
            print("| " + " | ".join(row) + " |")
    if a.png:
        headline(figures, a.png)


# (scenario, metric, log scale)
HEADLINE = [
    ("idle", "rss/conn (KB)", False),
    ("broadcast_throughput", "delivered/s", False),
    ("broadcast_throughput", "server CPU µs/msg", False),
    ("broadcast_1hz", "p99 ms", False),
    ("broadcast_latency", "server CPU µs/msg", False),
    ("channels", "p99 ms", True),
]


def headline(figures, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = ["#9ecae1", "#2b7bb9", "#e07b39", "#6a9f4f"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (scenario, metric, log) in zip(axes.flat, HEADLINE):
        cols = figures.get(scenario, [])
        names = [c[0] for c in cols if c[1].get(metric)]
        meds = [c[1][metric]["median"] for c in cols if c[1].get(metric)]
        lo = [c[1][metric]["median"] - c[1][metric]["min"] for c in cols if c[1].get(metric)]
        hi = [c[1][metric]["max"] - c[1][metric]["median"] for c in cols if c[1].get(metric)]
        ax.bar(range(len(names)), meds, yerr=[lo, hi], capsize=4, color=colors[: len(names)])
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
        ax.set_title(f"{scenario}: {metric}", fontsize=9)
        if log:
            ax.set_yscale("log")
        for i, v in enumerate(meds):
            ax.annotate(f"{v:,.3g}" if v < 100 else f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle("realtime vs Socket.IO 4.8 vs raw loop — 2 vCPU, server on 1 core, load generator on the other", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
