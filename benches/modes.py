#!/usr/bin/env python3
"""The uncontended 50-connection row of the targets (benches/targets.py) for each lock mode of
issue 13: `officer bench` cycles of exclusive LOCK, LOCK_EXT shared and LOCK_EXT of one permit of
a semaphore of 4, each against the ping floor, on one server. The four kinds run in turn, --runs
times (so a burst of load from other work on the machine hits all of them alike); the median of
each is reported with its ratio to the median ping rate.

Usage: benches/modes.py [--bin target/release/officer] [--runs 3] [--duration 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

KINDS = [("ping", ["--ping"]), ("exclusive", []), ("shared", ["--lock-mode", "shared"]),
         ("semaphore", ["--lock-mode", "semaphore"])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "officer"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    state = tempfile.NamedTemporaryFile(prefix="officer-bench-", suffix=".state", delete=False).name
    os.unlink(state)
    proc = subprocess.Popen([args.bin, "run", "-h", "127.0.0.1", "-p", "0", "-m", "0", "--state-file", state],
                            stdout=subprocess.PIPE, text=True)
    try:
        host, port = proc.stdout.readline().strip().rsplit(" ", 1)[-1].rsplit(":", 1)
        common = ["-c", "50", "-P", "1", "-k", "1000000", "-d", str(args.duration), "--warmup", "1"]
        runs = {kind: [] for kind, _ in KINDS}
        for _ in range(args.runs):
            for kind, extra in KINDS:
                out = subprocess.run([args.bin, "bench", "-h", host, "-p", port, "--server-pid", str(proc.pid),
                                      "--json", *common, *extra], check=True, capture_output=True, text=True).stdout
                runs[kind].append(json.loads(out))
        floor = statistics.median(r["cycles_per_sec"] for r in runs["ping"])
        floor_cpu = statistics.median(r["server_cpu_us_per_cycle"] for r in runs["ping"])
        for kind, _ in KINDS:
            rates = [r["cycles_per_sec"] for r in runs[kind]]
            cpu = statistics.median(r["server_cpu_us_per_cycle"] for r in runs[kind])
            bad = sum(r["unexpected"] for r in runs[kind])
            print(f"{kind:10} median {statistics.median(rates):>10,.0f} cycles/s  ratio {statistics.median(rates) / floor:.2f}"
                  f"  server CPU {cpu:.2f} us/cycle ({cpu / floor_cpu:.2f} of ping)  runs {[round(x) for x in rates]}"
                  f"  unexpected {bad}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
