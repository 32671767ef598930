//! `cargo bench --bench metrics`: what a `/metrics` scrape costs, and that silent connections
//! in every scrape slot do not keep it out. Round trips over loopback to an in-process server.
//!
//! - `metrics/scrape_idle_table`: one scrape of a server with no locks.
//! - `metrics/scrape_behind_16_silent`: 16 new silent connections fill every slot before each
//!   scrape (the issue-10 attack); the scrape still gets through, at the price of an eviction.
//! - `metrics/scrape_100k_locks` and `.._per_lock_100`: scrapes of a table of 100,000 held
//!   locks, without and with 100 per-lock series. The O(locks) pass is reused for a second,
//!   so back-to-back scrapes mostly measure the rest; `metrics/table_pass_100k_locks` times
//!   scrapes a second apart, each of which walks the table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use officer::protocol::{split_frame, Hello, LockRequest, Request};
use officer::server::{BoundAddr, Config, Listen, Server, ShutdownHandle};

struct Bench {
    addr: SocketAddr,
    metrics: SocketAddr,
    handle: ShutdownHandle,
    thread: std::thread::JoinHandle<()>,
}

fn start(per_lock: u32) -> Bench {
    let config = Config {
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
        metrics_per_lock: per_lock,
        max_idle: None,
        ..Config::default()
    };
    let server = Server::bind(config).expect("bind bench server");
    let BoundAddr::Tcp(addr) = *server.local_addr() else { unreachable!() };
    let metrics = server.metrics_addr().unwrap();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run().expect("server run"));
    Bench { addr, metrics, handle, thread }
}

impl Bench {
    fn stop(self) {
        self.handle.shutdown();
        let _ = self.thread.join();
    }
}

/// A whole scrape; panics unless it is a 200.
fn scrape(addr: SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
    let mut text = Vec::new();
    s.read_to_end(&mut text).unwrap();
    assert!(text.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&text[..text.len().min(200)]));
    text.len()
}

/// Holds `n` locks on one raw connection (pipelined), returned so they stay held.
fn hold_locks(addr: SocketAddr, n: u32) -> TcpStream {
    let mut raw = TcpStream::connect(addr).unwrap();
    let mut frames = Vec::new();
    Request::Hello(Hello { version: 1 }).encode(1, &mut frames);
    for i in 0..n {
        let name = format!("bench/{i:06}");
        Request::Lock(LockRequest { name: &name, timeout_ms: None, queue_max: None })
            .encode(i + 2, &mut frames);
    }
    raw.write_all(&frames).unwrap();
    let (mut seen, mut buf, mut chunk) = (0, Vec::new(), vec![0u8; 65536]);
    while seen < n as usize + 1 {
        let got = raw.read(&mut chunk).unwrap();
        assert!(got > 0, "server closed");
        buf.extend_from_slice(&chunk[..got]);
        let mut pos = 0;
        while let Some((_, used)) = split_frame(&buf[pos..], u32::MAX).unwrap() {
            pos += used;
            seen += 1;
        }
        buf.drain(..pos);
    }
    raw
}

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.measurement_time(Duration::from_secs(5));

    let bench = start(0);
    g.bench_function("scrape_idle_table", |b| b.iter(|| scrape(bench.metrics)));
    // The silent crowd is set up outside the timing; each iteration's scrape must evict.
    g.bench_function("scrape_behind_16_silent", |b| {
        b.iter_batched(
            || (0..16).map(|_| TcpStream::connect(bench.metrics).unwrap()).collect::<Vec<_>>(),
            |crowd| {
                let n = scrape(bench.metrics);
                drop(crowd);
                n
            },
            BatchSize::PerIteration,
        )
    });
    let _held = hold_locks(bench.addr, 100_000);
    g.sample_size(20);
    g.bench_function("scrape_100k_locks", |b| b.iter(|| scrape(bench.metrics)));
    // Each sample waits out the reuse window first (not timed), so every timed scrape walks.
    g.sample_size(10);
    g.bench_function("table_pass_100k_locks", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(1100));
                let started = std::time::Instant::now();
                scrape(bench.metrics);
                total += started.elapsed();
            }
            total
        })
    });
    g.sample_size(20);
    bench.stop();

    let bench = start(100);
    let _held = hold_locks(bench.addr, 100_000);
    g.bench_function("scrape_100k_locks_per_lock_100", |b| b.iter(|| scrape(bench.metrics)));
    bench.stop();
    g.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
