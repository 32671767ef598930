#!/usr/bin/env python3
"""Before/after comparison of two officer servers in the same run (a hot-path change's check).

Starts one release server of each build side by side, then for every scenario runs `officer
bench` (always the same client binary, so only the server differs) against both, alternating
which goes first, each run of the lock/unlock cycle next to its `--ping` floor. Reports each
side's lock/ping ratio and server CPU per cycle relative to ping (medians of RUNS runs), so
machine noise that hits both sides alike cancels out.

Usage: python3 benches/ab.py --before OLD/target/release/officer --after target/release/officer
       [--client BIN] [--runs 3] [--duration 5]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import os

SCENARIOS = [
    ("50 conns, 1 in flight, 1M names", ["-c", "50", "-P", "1", "-k", "1000000"]),
    ("50 conns, 16 in flight, 1M names", ["-c", "50", "-P", "16", "-k", "1000000"]),
    ("50 conns, 1 in flight, 10 names", ["-c", "50", "-P", "1", "-k", "10"]),
    ("1 conn, 1 in flight", ["-c", "1", "-P", "1", "-k", "1000000"]),
]


def start_server(binary):
    state = os.path.join(tempfile.mkdtemp(prefix="officer-ab-"), "officer.state")
    proc = subprocess.Popen([binary, "run", "-h", "127.0.0.1", "-p", "0", "-m", "0", "--state-file", state],
                            stdout=subprocess.PIPE, text=True)
    addr = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
    host, port = addr.rsplit(":", 1)
    return proc, host, port


def bench(client, server, args):
    proc, host, port = server
    out = subprocess.run([client, "bench", "-h", host, "-p", port, "--server-pid", str(proc.pid), "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--client", help="the officer binary whose `bench` drives both (default: --after)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    opts = ap.parse_args()
    client = opts.client or opts.after
    servers = {"before": start_server(opts.before), "after": start_server(opts.after)}
    results = []
    try:
        for title, args in SCENARIOS:
            runs = {side: {"lock": [], "ping": []} for side in servers}
            common = args + ["-d", str(opts.duration), "--warmup", "1"]
            for i in range(opts.runs):
                order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
                for side in order:
                    runs[side]["lock"].append(bench(client, servers[side], common))
                    runs[side]["ping"].append(bench(client, servers[side], common + ["--ping"]))
            row = {"scenario": title}
            for side in servers:
                med = lambda kind, f: statistics.median(f(r) for r in runs[side][kind])
                lock_rate = med("lock", lambda r: r["cycles_per_sec"])
                ping_rate = med("ping", lambda r: r["cycles_per_sec"])
                lock_cpu = med("lock", lambda r: r["server_cpu_us_per_cycle"] or 0)
                ping_cpu = med("ping", lambda r: r["server_cpu_us_per_cycle"] or 0)
                row[side] = {
                    "lock_cycles_s": lock_rate,
                    "ratio": lock_rate / ping_rate,
                    "cpu_ratio": lock_cpu / ping_cpu if ping_cpu else float("nan"),
                    "cpu_us": lock_cpu,
                    "p50_us": med("lock", lambda r: r["latency_us"]["p50"]),
                }
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait()
    print("| scenario | lock/ping before | lock/ping after | CPU/cycle vs ping before | after | lock cycles/s before | after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b, a = r["before"], r["after"]
        print(f"| {r['scenario']} | {b['ratio']:.2f} | {a['ratio']:.2f} | {b['cpu_ratio']:.2f} | {a['cpu_ratio']:.2f} | "
              f"{b['lock_cycles_s']:.0f} | {a['lock_cycles_s']:.0f} |")


if __name__ == "__main__":
    main()
