#!/usr/bin/env python3
"""Bystander latency under hostile load (issue: hostile load, round 2), on this machine.

For each hostile pattern: starts a fresh release server, runs
`officer bench --mode bystander --pattern P` against it (an unrelated client pings, one PING in
flight, while the pattern runs), and prints a Markdown table for BENCHMARKS.md: the bystander's
p50 / p99 / max latency during the burst, and the server's RSS before the hostile client
connected, at its peak, and 5 s after the burst's clients left.

Targets: bystander p99 < 10 ms and max < 50 ms; RSS after <= 2x RSS before.

Usage: python3 benches/bystander.py [--bin target/release/officer] [--bench-bin BIN]
                                    [--only PATTERN ...] [--scale 1.0]
--bin is the server under test (to compare two builds, run once with each); --bench-bin the
load generator (default: the same binary). --scale multiplies every count (0.1 for a quick look).
Build first: cargo build --release
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "officer")

# (pattern, count, requests, what it is)
PATTERNS = [
    ("my-locks-unread", 1_000_000, 4096, "1,000,000 locks held, 4,096 MY_LOCKS pipelined, never read"),
    ("my-locks-read", 100_000, 400, "100,000 locks held, 400 MY_LOCKS read"),
    ("listing-unread", 1_000_000, 4096, "1,000,000 locks, 4,096 LOCKS listings pipelined, never read"),
    ("timeouts", 15_000, 0, "15,000 waiters on one name time out at the same tick"),
    ("queue-maxed", 5_000, 20_000, "5,000 waiters queued, 20,000 LOCKs answered QUEUE_MAXED"),
    ("disconnect", 1_000_000, 0, "one connection holding 1,000,000 locks disconnects"),
    ("mass-disconnect", 10_000, 0, "10,000 connections holding 10 locks each close together"),
    ("sessions-detach", 10_000, 0, "10,000 sessions holding 10 locks each lose their connections together"),
    ("sessions-resume", 10_000, 0, "10,000 detached sessions holding 10 locks each resume together"),
]

# Server flags a pattern needs beyond the defaults.
SERVER_FLAGS = {
    "sessions-detach": ["--max-session-grace", "600000"],
    "sessions-resume": ["--max-session-grace", "600000"],
}


def start_server(server_bin, extra=()):
    state = tempfile.NamedTemporaryFile(prefix="officer-bystander-", suffix=".state", delete=False).name
    os.unlink(state)
    proc = subprocess.Popen(
        [server_bin, "run", "-h", "127.0.0.1", "-p", "0", "-m", "0", "--state-file", state, *extra],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    host, port = line.rsplit(" ", 1)[-1].rsplit(":", 1)
    return proc, host, port, state


def run(server_bin, bench_bin, pattern, count, requests):
    proc, host, port, state = start_server(server_bin, SERVER_FLAGS.get(pattern, ()))
    try:
        out = subprocess.run(
            [bench_bin, "bench", "-h", host, "-p", port, "--server-pid", str(proc.pid), "--json",
             "--mode", "bystander", "--pattern", pattern, "--count", str(count),
             "--requests", str(requests), "--settle", "5"],
            capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            return {"error": out.stderr.strip()}
        return json.loads(out.stdout)
    finally:
        proc.terminate()
        proc.wait()
        if os.path.exists(state):
            os.unlink(state)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=BIN)
    parser.add_argument("--bench-bin")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    bench_bin = args.bench_bin or args.bin
    mib = lambda b: b / 1048576
    print("| pattern | burst | bystander pings | p50 | p99 | max | RSS before | peak | after | after/before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = False
    for pattern, count, requests, what in PATTERNS:
        if args.only and pattern not in args.only:
            continue
        count = max(1, int(count * args.scale))
        requests = int(requests * args.scale) if requests else 0
        r = run(args.bin, bench_bin, pattern, count, requests)
        if "error" in r:
            print(f"| {what} | error: {r['error']} | | | | | | | | |")
            failed = True
            continue
        ratio = r["rss_after"] / max(1, r["rss_base"])
        print(f"| {what} | {r['burst_ms']:.0f} ms | {r['pings']} | {r['p50_us']} us | {r['p99_us']} us "
              f"| {r['max_us'] / 1000:.1f} ms | {mib(r['rss_base']):.1f} MiB | {mib(r['rss_peak']):.1f} MiB "
              f"| {mib(r['rss_after']):.1f} MiB | {ratio:.2f}x |")
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
