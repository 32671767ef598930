#!/usr/bin/env python3
"""The etcd side of the cluster comparison (BENCHMARKS.md "Cluster mode"): a 3-member etcd on
loopback, and lock/unlock cycles through its v3 lock service the way `etcdctl lock` takes a lock
(a lease, then `Lock(name, lease)` and `Unlock(key)`), timed per cycle.

The client speaks etcd's gRPC-gateway JSON API (`POST /v3/lease/grant`, `/v3/lock/lock`,
`/v3/lock/unlock`) over persistent HTTP/1.1 connections, one per simulated client, on raw
sockets: each request is a prebuilt byte string and each answer is read by its Content-Length, so
the client costs little CPU beside etcd on the 2 cores (the script prints the client's CPU per
cycle next to etcd's, so the reader can check). Clients are spread over several processes,
several threads each, to get past Python's GIL. Every client locks its own name (uncontended), as
`officer bench` does with its default keys.

etcd 3.4 fsyncs its write-ahead log before it acknowledges an entry (leader and followers), and
has no switch to turn that off (`--unsafe-no-fsync` came in 3.5): that is the same durability as
officer's cluster mode, which fsyncs its raft log before it acknowledges a commit. `--data-root
/dev/shm` puts the data dirs on tmpfs, where an fsync costs nothing, as a reference row.

Usage: benches/etcd_lock.py [--clients 1 8 32 64] [--duration 10] [--warmup 2]
                            [--data-root /tmp] [--json]
Needs `etcd` on PATH (Debian: apt-get install etcd-server).
"""

import argparse
import base64
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (released at once for etcd to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    """One persistent HTTP/1.1 connection to an etcd member's gateway."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def request(path, body):
        """The bytes of one POST with a JSON body (prebuilt once per distinct request)."""
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        return head + data

    def call(self, raw):
        """Send one prebuilt request and return the answer's body; raise on a non-200 status."""
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)[1]
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if fields.get(b"transfer-encoding") == b"chunked":
            body = self.chunked()
        else:
            n = int(fields.get(b"content-length", b"0"))
            while len(self.buf) < n:
                self.fill()
            body, self.buf = self.buf[:n], self.buf[n:]
        if status != b"200":
            raise RuntimeError(f"etcd answered {status.decode()}: {body[:200]!r}")
        return body

    def chunked(self):
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self.fill()
            size, self.buf = self.buf.split(b"\r\n", 1)
            n = int(size.split(b";")[0], 16)
            while len(self.buf) < n + 2:
                self.fill()
            body, self.buf = body + self.buf[:n], self.buf[n + 2:]
            if n == 0:
                return body

    def fill(self):
        got = self.sock.recv(65536)
        if not got:
            raise RuntimeError("etcd closed the connection")
        self.buf += got


def client_loop(port, name, start, warm_end, end, out):
    """One client: a lease, then lock/unlock cycles of its own name until `end`; the cycles that
    start after `warm_end` are timed into `out`."""
    http = Http(port)
    lease = json.loads(http.call(Http.request("/v3/lease/grant", {"TTL": 600})))["ID"]
    lock = Http.request("/v3/lock/lock", {"name": base64.b64encode(name.encode()).decode(), "lease": lease})
    unlock_cache = {}
    while time.time() < start:
        time.sleep(0.001)
    lat = []
    now = time.time()
    while now < end:
        key = json.loads(http.call(lock))["key"]
        raw = unlock_cache.get(key)
        if raw is None:
            raw = unlock_cache[key] = Http.request("/v3/lock/unlock", {"key": key})
        http.call(raw)
        done = time.time()
        if now >= warm_end and done <= end:
            lat.append(done - now)
        now = done
    http.sock.close()
    out.append(lat)


def worker(port, names, start, warm_end, end, queue):
    """One process running a thread per client; puts the latencies of its clients."""
    out = []
    threads = [threading.Thread(target=client_loop, args=(port, n, start, warm_end, end, out)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put([x for lat in out for x in lat])


def proc_cpu(pid):
    """User + system CPU seconds of a process, from /proc/PID/stat (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def run_load(port, clients, duration, warmup, etcd_pids, tag):
    """`clients` concurrent lock/unlock loops against `port`; returns the row's numbers."""
    procs = min(clients, max(1, os.cpu_count() * 2))
    groups = [[f"bench/{tag}/{c}" for c in range(p, clients, procs)] for p in range(procs)]
    start = time.time() + 1.0 + clients * 0.01
    warm_end, end = start + warmup, start + warmup + duration
    queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=worker, args=(port, g, start, warm_end, end, queue)) for g in groups]
    for w in workers:
        w.start()
    while time.time() < warm_end:
        time.sleep(0.01)
    etcd_before = sum(proc_cpu(p) for p in etcd_pids)
    client_before = sum(proc_cpu(w.pid) for w in workers)
    while time.time() < end:
        time.sleep(0.01)
    etcd_after = sum(proc_cpu(p) for p in etcd_pids)
    client_after = sum(proc_cpu(w.pid) for w in workers)
    results = [queue.get(timeout=60 + duration) for _ in workers]
    for w in workers:
        w.join()
    lat = sorted(x for r in results for x in r)
    cycles = len(lat)
    return {
        "clients": clients,
        "cycles": cycles,
        "cycles_per_sec": cycles / duration,
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "max_us": (lat[-1] if lat else float("nan")) * 1e6,
        "etcd_cpu_us_per_cycle": (etcd_after - etcd_before) / max(cycles, 1) * 1e6,
        "client_cpu_us_per_cycle": (client_after - client_before) / max(cycles, 1) * 1e6,
    }


class Etcd:
    """A 3-member etcd cluster on loopback with its data dirs under `root`."""

    def __init__(self, root, members=3):
        self.dir = tempfile.mkdtemp(prefix="etcd-bench-", dir=root)
        self.ports = [(free_port(), free_port()) for _ in range(members)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(self.ports))
        self.procs = []
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        for i, (client, peer) in enumerate(self.ports):
            self.procs.append(subprocess.Popen([
                "etcd", "--name", f"m{i}", "--data-dir", os.path.join(self.dir, f"m{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", os.path.basename(self.dir),
                "--log-level", "warn"], stdout=self.log, stderr=subprocess.STDOUT))

    def leader_port(self, timeout=30.0):
        """The client port of the member that reports itself leader (waits for an election)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for client, _ in self.ports:
                try:
                    status = json.loads(Http(client).call(Http.request("/v3/maintenance/status", {})))
                except (OSError, RuntimeError, ValueError):
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return client
            time.sleep(0.1)
        raise RuntimeError(f"no etcd leader after {timeout} s; see {self.log.name}")

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--data-root", default=tempfile.gettempdir())
    ap.add_argument("--json", action="store_true", help="one JSON object per row instead of the table")
    args = ap.parse_args()
    etcd = Etcd(args.data_root)
    try:
        port = etcd.leader_port()
        pids = [p.pid for p in etcd.procs]
        if not args.json:
            print(f"etcd {etcd_version()} 3 members, data under {args.data_root}, leader client port {port}")
            print(f"{'clients':>7} {'cycles/s':>10} {'p50 us':>9} {'p99 us':>9} {'max us':>9}"
                  f" {'etcd CPU us/cycle':>18} {'client CPU us/cycle':>20} load")
        for n in args.clients:
            row = run_load(port, n, args.duration, args.warmup, pids, f"c{n}")
            row["load"] = loadavg()
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{n:>7} {row['cycles_per_sec']:>10,.0f} {row['p50_us']:>9,.0f} {row['p99_us']:>9,.0f}"
                      f" {row['max_us']:>9,.0f} {row['etcd_cpu_us_per_cycle']:>18,.0f}"
                      f" {row['client_cpu_us_per_cycle']:>20,.0f} {row['load']}", flush=True)
    finally:
        etcd.stop()


def etcd_version():
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return out.split("\n")[0].split()[-1] if out else "?"


if __name__ == "__main__":
    sys.exit(main())
