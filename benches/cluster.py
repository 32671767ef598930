#!/usr/bin/env python3
"""Cluster mode benchmarks (BENCHMARKS.md "Cluster mode"): a 3-node `officer run --cluster` on
loopback against a single `officer run`, and the time a client waits for a grant when the
leader is killed.

`throughput`: starts the cluster and one single server in the same run, finds the leader (the
node that answers HELLO with HELLO_OK; the others answer the fatal `not_leader`), and runs
`officer bench --json` against both with each load of LOADS, --runs times in turn, so a burst of
load from other work on the machine hits both alike. With --etcd it also runs the etcd rows of
benches/etcd_lock.py (a 3-member etcd, same machine, same run) for the ratio to etcd.

`failover`: one client loops LOCK/UNLOCK of one name on the leader (timeout 10 s). The script
kills the leader with SIGKILL at a random moment; the client, seeing its connection end or
`not_leader`, goes round the nodes (following the leader named in `not_leader`, 5 ms between
rounds that find no leader) and sends LOCK again. The time from just before the kill to that
client's first ACQUIRED from another node is one sample. The killed node is restarted with the
same flags and data dir, and the next round starts once it names the leader again. Reported per
--tick-ms: p50 and max over --kills rounds.

Usage: benches/cluster.py [--bin PATH] [throughput] [failover] [--runs 2] [--duration 5]
                          [--kills 10] [--ticks 50 100] [--etcd] [--data-root /tmp]
The binary must be built with the cluster feature: `cargo build --release -F cluster`.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import etcd_lock  # noqa: E402  (the etcd side, for --etcd)

HELLO, PING, LOCK, UNLOCK = 0x01, 0x02, 0x03, 0x04
HELLO_OK, ACQUIRED, RELEASED, ERROR = 0x81, 0x83, 0x89, 0xFF
NOT_LEADER = 23

# (label, `officer bench` flags): 1 client 1 in flight (latency), 50 clients 1 in flight each
# (the usual row of BENCHMARKS.md), then pipelined: the same clients with many cycles in flight.
LOADS = [
    ("c=1 P=1", ["-c", "1", "-P", "1"]),
    ("c=50 P=1", ["-c", "50", "-P", "1"]),
    ("c=1 P=64", ["-c", "1", "-P", "64"]),
    ("c=8 P=64", ["-c", "8", "-P", "64"]),
    ("c=50 P=32", ["-c", "50", "-P", "32"]),
]


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    return os.path.join(target, "release", "officer")


class Conn:
    """A minimal blocking client of the binary protocol (PROTOCOL.md §2, §3.1, §3.3, §3.4)."""

    def __init__(self, addr, timeout=2.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 1

    def send(self, opcode, payload):
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(struct.pack(">IBI", 5 + len(payload), opcode, rid) + payload)
        return rid

    def recv(self):
        """The next frame as (opcode, request id, payload); raises ConnectionError at EOF."""
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    frame, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return frame[0], struct.unpack(">I", frame[1:5])[0], frame[5:]
            got = self.sock.recv(65536)
            if not got:
                raise ConnectionError("closed by the server")
            self.buf += got

    def hello(self):
        """HELLO; None when the server is the leader (HELLO_OK), else the not_leader hint
        (the leader's client address, '' while none is known)."""
        self.send(HELLO, b"OFCR" + struct.pack(">HH", 1, 0))
        op, _, payload = self.recv()
        if op == HELLO_OK:
            return None
        if op == ERROR and struct.unpack(">H", payload[:2])[0] == NOT_LEADER:
            return payload[2:].decode(errors="replace")
        raise ConnectionError(f"unexpected answer to HELLO: opcode {op:#x} {payload!r}")

    def lock(self, name, timeout_ms):
        self.send(LOCK, struct.pack(">HII", 0, timeout_ms, 0) + name)
        return self.recv()

    def unlock(self, name):
        self.send(UNLOCK, name)
        return self.recv()

    def close(self):
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(addr):
    """What a node says to HELLO: 'leader', the not_leader hint (str), or None if unreachable."""
    try:
        conn = Conn(addr, timeout=1.0)
    except OSError:
        return None
    try:
        hint = conn.hello()
        return "leader" if hint is None else hint
    except (OSError, ConnectionError, struct.error):
        return None
    finally:
        conn.close()


class Cluster:
    """A 3-node officer cluster on loopback, each node with its data dir under `root`."""

    def __init__(self, binary, root, tick_ms, nodes=3):
        self.bin = binary
        self.dir = tempfile.mkdtemp(prefix="officer-cluster-", dir=root)
        self.tick_ms = tick_ms
        self.ids = list(range(1, nodes + 1))
        self.client = {i: f"127.0.0.1:{free_port()}" for i in self.ids}
        self.peer = {i: f"127.0.0.1:{free_port()}" for i in self.ids}
        self.procs = {}
        for i in self.ids:
            self.start(i)

    def argv(self, i):
        peers = [a for j in self.ids for a in ("--peer", f"{j}={self.peer[j]}/{self.client[j]}")]
        host, port = self.client[i].rsplit(":", 1)
        return [self.bin, "run", "-h", host, "-p", port, "--cluster", "--cluster-id", "1",
                "--node-id", str(i), *peers, "--data-dir", os.path.join(self.dir, f"n{i}"),
                "--tick-ms", str(self.tick_ms), "-m", "0"]

    def start(self, i):
        log = open(os.path.join(self.dir, f"n{i}.log"), "a")
        self.procs[i] = subprocess.Popen(self.argv(i), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def leader(self, timeout=30.0, exclude=()):
        """The id of the node that answers HELLO_OK (polls until one does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in self.ids:
                if i not in exclude and self.procs[i].poll() is None and probe(self.client[i]) == "leader":
                    return i
            time.sleep(0.02)
        raise RuntimeError(f"no leader after {timeout} s; logs in {self.dir}")

    def wait_follower(self, i, timeout=30.0):
        """Until node i answers not_leader naming a leader (it has heard from the leader)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"node {i} exited with {self.procs[i].returncode}; see {self.dir}/n{i}.log")
            said = probe(self.client[i])
            if said and said != "leader" and said in self.client.values():
                return
            time.sleep(0.02)
        raise RuntimeError(f"node {i} named no leader after {timeout} s")

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Single:
    """One `officer run` on a free loopback port (its state file under `root`)."""

    def __init__(self, binary, root):
        self.dir = tempfile.mkdtemp(prefix="officer-single-", dir=root)
        self.proc = subprocess.Popen([binary, "run", "-h", "127.0.0.1", "-p", "0", "-m", "0",
                                      "--state-file", os.path.join(self.dir, "officer.state")],
                                     stdout=subprocess.PIPE, text=True)
        self.addr = self.proc.stdout.readline().strip().rsplit(" ", 1)[-1]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def bench(binary, addr, pid, flags, duration):
    host, port = addr.rsplit(":", 1)
    out = subprocess.run([binary, "bench", "-h", host, "-p", port, "--server-pid", str(pid), "--json",
                          "-d", str(duration), "--warmup", "1", *flags],
                         check=True, capture_output=True, text=True).stdout
    row = json.loads(out)
    row["load"] = float(loadavg())
    return row


def stats(binary, addr):
    """The node's STATS as a dict of ints (`officer stats`), for the cluster_* counters."""
    host, port = addr.rsplit(":", 1)
    out = subprocess.run([binary, "stats", "-h", host, "-p", port], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines()[1:] if len(line.split()) == 2)
            if v.isdigit()}


def bench_leader(binary, addr, pid, flags, duration):
    """`bench` against the leader, with its fsyncs per second and entries per fsync over the run."""
    before, t0 = stats(binary, addr), time.monotonic()
    row = bench(binary, addr, pid, flags, duration)
    after, t1 = stats(binary, addr), time.monotonic()
    fsyncs = after["cluster_fsyncs"] - before["cluster_fsyncs"]
    row["fsyncs_per_sec"] = fsyncs / (t1 - t0)
    row["entries_per_fsync"] = (after["cluster_entries_persisted"] - before["cluster_entries_persisted"]) / max(fsyncs, 1)
    # Commands per applied entry (a server before batching has no such counters: nan).
    entries = after.get("cluster_entries_applied", 0) - before.get("cluster_entries_applied", 0)
    commands = after.get("cluster_commands_applied", 0) - before.get("cluster_commands_applied", 0)
    row["commands_per_entry"] = commands / entries if entries else float("nan")
    return row


def throughput(args):
    cluster = Cluster(args.bin, args.data_root, args.tick)
    single = Single(args.bin, args.data_root)
    etcd = etcd_lock.Etcd(args.data_root) if args.etcd else None
    try:
        leader = cluster.leader()
        print(f"cluster leader: node {leader} at {cluster.client[leader]}, tick {args.tick} ms; "
              f"single server at {single.addr}; data under {args.data_root}", flush=True)
        rows = {(label, kind): [] for label, _ in LOADS for kind in ("single", "cluster")}
        for run in range(args.runs):
            for label, flags in LOADS:
                rows[(label, "single")].append(bench(args.bin, single.addr, single.proc.pid, flags, args.duration))
                for attempt in range(3):
                    try:
                        row = bench_leader(args.bin, cluster.client[leader], cluster.procs[leader].pid, flags,
                                           args.duration)
                    except subprocess.CalledProcessError as e:
                        row = None
                        print(f"officer bench failed on the leader: {e.stderr.strip()}", flush=True)
                    now = cluster.leader()
                    if now == leader and row:
                        rows[(label, "cluster")].append(row)
                        break
                    print(f"the lead moved from node {leader} to node {now} during {label}: run again", flush=True)
                    leader = now
        etcd_rows = []
        if etcd:
            port = etcd.leader_port()
            for n in args.etcd_clients:
                etcd_rows.append(etcd_lock.run_load(port, n, args.duration, 1.0, [p.pid for p in etcd.procs], f"c{n}"))
                etcd_rows[-1]["load"] = float(loadavg())
        report_throughput(rows, etcd_rows, args.runs)
    finally:
        cluster.stop()
        single.stop()
        if etcd:
            etcd.stop()


def median_row(runs):
    """The run of median throughput (its latencies are reported with it), and all the rates."""
    ordered = sorted(runs, key=lambda r: r["cycles_per_sec"])
    return ordered[len(ordered) // 2], [round(r["cycles_per_sec"]) for r in runs]


def report_throughput(rows, etcd_rows, runs):
    best_etcd = max((r["cycles_per_sec"] for r in etcd_rows), default=None)
    print(f"\nofficer bench, median of {runs} runs (cycles/s; latency p50/p99 in us; server CPU us/cycle; load)")
    print("(leader fsyncs/s, entries/fsync and commands/entry: the leader's STATS cluster_fsyncs,"
          " cluster_entries_persisted, cluster_entries_applied and cluster_commands_applied over the bench,"
          " warm-up included)")
    print(f"| load | single cycles/s | cluster cycles/s | cluster/single | single p50/p99 | cluster p50/p99 "
          f"| single CPU | leader CPU | leader fsyncs/s | entries/fsync | commands/entry |"
          f"{' cluster/best etcd |' if best_etcd else ''} load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if best_etcd else "") + "---:|")
    for label, _ in LOADS:
        s, s_all = median_row(rows[(label, "single")])
        c, c_all = median_row(rows[(label, "cluster")])
        loads = [r["load"] for r in rows[(label, "single")] + rows[(label, "cluster")]]
        bad = sum(r["unexpected"] for r in rows[(label, "single")] + rows[(label, "cluster")])
        etcd_col = f" {c['cycles_per_sec'] / best_etcd:.1f}x |" if best_etcd else ""
        print(f"| {label} | {s['cycles_per_sec']:,.0f} | {c['cycles_per_sec']:,.0f} "
              f"| {c['cycles_per_sec'] / s['cycles_per_sec']:.2f} "
              f"| {s['latency_us']['p50']}/{s['latency_us']['p99']} | {c['latency_us']['p50']}/{c['latency_us']['p99']} "
              f"| {s.get('server_cpu_us_per_cycle', float('nan')):.2f} | {c.get('server_cpu_us_per_cycle', float('nan')):.2f} "
              f"| {c['fsyncs_per_sec']:.0f} | {c['entries_per_fsync']:.0f} | {c['commands_per_entry']:.1f} |{etcd_col} {min(loads):.1f}-{max(loads):.1f} |"
              + (f"  runs single {s_all} cluster {c_all}" if runs > 1 else "")
              + (f"  UNEXPECTED {bad}" if bad else ""), flush=True)
    if etcd_rows:
        print("\netcd 3-member lock/unlock (benches/etcd_lock.py client), same run")
        print("| clients | cycles/s | p50 us | p99 us | etcd CPU us/cycle | client CPU us/cycle | load |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in etcd_rows:
            print(f"| {r['clients']} | {r['cycles_per_sec']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} "
                  f"| {r['etcd_cpu_us_per_cycle']:,.0f} | {r['client_cpu_us_per_cycle']:,.0f} | {r['load']:.1f} |")


class LockLoop(threading.Thread):
    """LOCK/UNLOCK of one name in a loop on whichever node is the leader; records, for every
    ACQUIRED, (monotonic time, node address). Reconnects round the nodes when the connection ends."""

    def __init__(self, addrs, name=b"bench/failover"):
        super().__init__(daemon=True)
        self.addrs = list(addrs)
        self.lock_name = name
        self.grants = []
        self.stopping = False
        self.errors = []

    def connect(self):
        """A connection to the leader: try the hinted address first, then every node in turn."""
        hint = None
        while not self.stopping:
            for addr in ([hint] if hint else []) + self.addrs:
                try:
                    conn = Conn(addr)
                except OSError:
                    continue
                try:
                    said = conn.hello()
                except (OSError, ConnectionError, struct.error):
                    conn.close()
                    continue
                if said is None:
                    return conn, addr
                conn.close()
                if said in self.addrs and said != addr:
                    hint = said
                    break
            else:
                hint = None
                time.sleep(0.005)
        return None, None

    def run(self):
        while not self.stopping:
            conn, addr = self.connect()
            if conn is None:
                return
            conn.sock.settimeout(15.0)
            try:
                while not self.stopping:
                    op, _, payload = conn.lock(self.lock_name, 10_000)
                    if op != ACQUIRED:
                        self.errors.append(f"LOCK answered {op:#x} {payload!r} by {addr}")
                        break
                    self.grants.append((time.monotonic(), addr))
                    op, _, payload = conn.unlock(self.lock_name)
                    if op != RELEASED:
                        self.errors.append(f"UNLOCK answered {op:#x} {payload!r} by {addr}")
                        break
            except (OSError, ConnectionError, struct.error):
                pass
            finally:
                conn.close()

    def first_grant_after(self, t, not_from, timeout):
        """The time of the first grant after `t` by a node other than `not_from` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [at for at, addr in self.grants[-1000:] if at > t and addr != not_from]
            if after:
                return after[0]
            time.sleep(0.005)
        return None


def failover(args):
    results = {}
    for tick in args.ticks:
        cluster = Cluster(args.bin, args.data_root, tick)
        samples = []
        try:
            cluster.leader()
            loop = LockLoop(cluster.client.values())
            loop.start()
            for round_no in range(args.kills):
                leader = cluster.leader()
                n = len(loop.grants)
                wait_until(lambda: len(loop.grants) > n + 20, 30, "the lock loop to cycle on the leader")
                time.sleep(random.uniform(0.1, 0.5))
                t_kill = time.monotonic()
                cluster.kill(leader)
                first = loop.first_grant_after(t_kill, cluster.client[leader], 60)
                if first is None:
                    raise RuntimeError(f"no grant within 60 s of killing node {leader}; errors {loop.errors[-3:]}")
                samples.append(first - t_kill)
                new = cluster.leader(exclude=(leader,))
                print(f"tick {tick} ms round {round_no + 1}: killed node {leader}, node {new} granted after "
                      f"{samples[-1] * 1000:.0f} ms (load {loadavg()})", flush=True)
                cluster.start(leader)
                cluster.wait_follower(leader)
            loop.stopping = True
        finally:
            cluster.stop()
        results[tick] = samples
        if loop.errors:
            print(f"lock loop refusals at tick {tick}: {loop.errors}")
    print("\n| --tick-ms | kills | p50 ms | max ms | min ms | load |")
    print("|---:|---:|---:|---:|---:|---:|")
    for tick, s in results.items():
        print(f"| {tick} | {len(s)} | {statistics.median(s) * 1000:.0f} | {max(s) * 1000:.0f} "
              f"| {min(s) * 1000:.0f} | {loadavg()} |")


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="*", help="throughput, failover (default: both)")
    ap.add_argument("--bin", default=default_bin())
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--tick", type=int, default=100, help="--tick-ms of the throughput cluster")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--ticks", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--etcd", action="store_true", help="also run the etcd rows (etcd on PATH)")
    ap.add_argument("--etcd-clients", type=int, nargs="+", default=[1, 64, 256])
    ap.add_argument("--data-root", default=tempfile.gettempdir())
    args = ap.parse_args()
    parts = args.parts or ["throughput", "failover"]
    if set(parts) - {"throughput", "failover"}:
        ap.error("parts are throughput and failover")
    if "throughput" in parts:
        throughput(args)
    if "failover" in parts:
        failover(args)


if __name__ == "__main__":
    main()
