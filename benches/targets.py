#!/usr/bin/env python3
"""Checks officer's speed and memory targets (issue: benchmarks) on this machine.

Starts a release server, runs `officer bench` for each scenario interleaved with its
`--ping` floor (RUNS times each, medians), then the memory modes, and prints a Markdown
table for BENCHMARKS.md. Usage: python3 benches/targets.py [--runs 3] [--duration 5]
Build first: cargo build --release
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "officer")


def start_server(extra=()):
    state = tempfile.NamedTemporaryFile(prefix="officer-bench-", suffix=".state", delete=False).name
    os.unlink(state)
    proc = subprocess.Popen(
        [BIN, "run", "-h", "127.0.0.1", "-p", "0", "-m", "0", "--state-file", state, *extra],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    addr = line.rsplit(" ", 1)[-1]
    host, port = addr.rsplit(":", 1)
    return proc, host, port


def bench(host, port, pid, args):
    out = subprocess.run([BIN, "bench", "-h", host, "-p", port, "--server-pid", str(pid), "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


SCENARIOS = [
    ("50 conns, 1 in flight, 1M names", ["-c", "50", "-P", "1", "-k", "1000000"], 0.95),
    ("50 conns, 16 in flight, 1M names", ["-c", "50", "-P", "16", "-k", "1000000"], 0.80),
    ("50 conns, 1 in flight, 10 names", ["-c", "50", "-P", "1", "-k", "10"], 0.85),
    ("1 conn, 1 in flight", ["-c", "1", "-P", "1", "-k", "1000000"], None),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--hold", type=int, default=1_000_000)
    ap.add_argument("--idle", type=int, default=10_000)
    opts = ap.parse_args()
    proc, host, port = start_server()
    rows = []
    try:
        for title, args, target in SCENARIOS:
            lock_runs, ping_runs = [], []
            for _ in range(opts.runs):
                common = args + ["-d", str(opts.duration), "--warmup", "1"]
                lock_runs.append(bench(host, port, proc.pid, common))
                ping_runs.append(bench(host, port, proc.pid, common + ["--ping"]))
            med = lambda runs, f: statistics.median(f(r) for r in runs)
            lock_rate = med(lock_runs, lambda r: r["cycles_per_sec"])
            ping_rate = med(ping_runs, lambda r: r["cycles_per_sec"])
            lock_cpu = med(lock_runs, lambda r: r["server_cpu_us_per_cycle"] or 0)
            ping_cpu = med(ping_runs, lambda r: r["server_cpu_us_per_cycle"] or 0)
            row = {
                "scenario": title,
                "lock_cycles_s": lock_rate, "ping_cycles_s": ping_rate, "ratio": lock_rate / ping_rate,
                "lock_p50": med(lock_runs, lambda r: r["latency_us"]["p50"]),
                "lock_p99": med(lock_runs, lambda r: r["latency_us"]["p99"]),
                "ping_p50": med(ping_runs, lambda r: r["latency_us"]["p50"]),
                "ping_p99": med(ping_runs, lambda r: r["latency_us"]["p99"]),
                "cpu_ratio": (lock_cpu / ping_cpu) if ping_cpu else float("nan"),
                "target": target,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()
    print("| scenario | lock cycles/s | ping cycles/s | ratio (target) | server CPU/cycle vs ping | p50 lock/ping us | p99 lock/ping us |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = f" (>= {r['target']})" if r["target"] else ""
        print(f"| {r['scenario']} | {r['lock_cycles_s']:.0f} | {r['ping_cycles_s']:.0f} | {r['ratio']:.2f}{target} | "
              f"{r['cpu_ratio']:.2f} | {r['lock_p50']:.0f} / {r['ping_p50']:.0f} | {r['lock_p99']:.0f} / {r['ping_p99']:.0f} |")
    for mode, count in (("hold", opts.hold), ("idle", opts.idle)):
        proc, host, port = start_server()
        try:
            r = bench(host, port, proc.pid, ["--mode", mode, "--count", str(count)])
            print(f"| memory: {r['what']} | {r['count']} | {r['bytes_per_item']:.0f} bytes each |")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
