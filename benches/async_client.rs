//! `cargo bench --bench async_client -F tokio`: the async client against `officer bench` on the
//! same server in the same run (issue 15's targets), printing the ratios itself.
//!
//! Each round runs, one after the other against one server:
//! (p) `officer bench -c 1 -P <tasks>`'s pipelined load ([`officer::bench::run_cycles`]);
//! (a) one `AsyncClient` shared by `<tasks>` concurrent tasks, each doing lock/unlock cycles;
//!     (a)/(p) should reach 0.8;
//! with each load's client-thread CPU time per cycle (both run on this thread: what each client
//! costs, which a neighbour's load on a shared machine disturbs far less than the rates);
//! and once at the end:
//! (b) p50 latency of one task's lock/unlock cycle on the async client;
//! (c) the same p50 on the blocking `Client`; (b)/(c) should stay within 1.2.
//!
//! Fair by construction: the same server, the same pipeline depth (64 in flight on one
//! connection), the same warm-up and measuring time, and the same names: `bench:` and ten
//! digits drawn uniformly from `--names` (1,000,000) with no two cycles in flight on one name
//! (each task draws from its own residue class, where `officer bench` re-draws on a clash).
//! The rounds alternate, so a neighbour's load on a shared machine hits both sides; the
//! median and spread of the per-round ratios are what to report.
//!
//! ```text
//! cargo bench --bench async_client -F tokio                  # an in-process server on 127.0.0.1:0
//! officer run --port 11500 &                                 # or a release server of its own
//! cargo bench --bench async_client -F tokio -- --port 11500 --rounds 5 --seconds 3
//! cargo bench --bench async_client -F tokio -- --only async  # (a) alone, e.g. under `perf record`
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use officer::bench::{run_cycles, CycleConfig, Mode, Target};
use officer::client::tokio::AsyncClient;
use officer::client::{Client, LockOptions};
use officer::server::{Config, Listen, Server};

/// What the command line asks for.
struct Args {
    host: String,
    port: Option<u16>,
    tasks: usize,
    names: u64,
    seconds: f64,
    warmup: f64,
    rounds: usize,
    /// `async`, `pipelined` or `latency`: one part only (for profiling).
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        host: "127.0.0.1".to_owned(),
        port: None,
        tasks: 64,
        names: 1_000_000,
        seconds: 2.0,
        warmup: 0.5,
        rounds: 5,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--host" => args.host = value(),
            "--port" => args.port = Some(value().parse().expect("--port: a number")),
            "--tasks" => args.tasks = value().parse().expect("--tasks: a number"),
            "--names" => args.names = value().parse().expect("--names: a number"),
            "--seconds" => args.seconds = value().parse().expect("--seconds: a number"),
            "--warmup" => args.warmup = value().parse().expect("--warmup: a number"),
            "--rounds" => args.rounds = value().parse().expect("--rounds: a number"),
            "--only" => args.only = Some(value()),
            // `cargo bench` passes `--bench`; anything else is a mistake worth saying.
            "--bench" => {}
            other => panic!(
                "unknown argument {other} (--host, --port, --tasks, --names, --seconds, --warmup, \
                 --rounds, --only async|pipelined|latency)"
            ),
        }
    }
    assert!(args.tasks > 0 && args.names >= args.tasks as u64, "--names must be at least --tasks");
    args
}

/// The port of the server to measure: the given one, or an in-process server's (its thread
/// named `officer-server`, so a profile tells it from the clients).
fn server_port(args: &Args) -> u16 {
    if let Some(port) = args.port {
        return port;
    }
    let config = Config { listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")), ..Config::default() };
    let server = Server::bind(config).expect("bind an in-process server");
    let port = match server.local_addr() {
        officer::server::BoundAddr::Tcp(addr) => addr.port(),
        officer::server::BoundAddr::Unix(_) => unreachable!("bound to TCP"),
    };
    std::thread::Builder::new()
        .name("officer-server".into())
        .spawn(move || server.run().expect("server run"))
        .expect("spawn the server thread");
    eprintln!("in-process server on 127.0.0.1:{port} (pass --port for a server of its own)");
    port
}

fn main() {
    let args = parse_args();
    let port = server_port(&args);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let part = |name: &str| args.only.as_deref().is_none_or(|only| only == name);

    let (mut ratios, mut cpu) = (Vec::new(), (Vec::new(), Vec::new()));
    for round in 1..=args.rounds {
        let pipelined = part("pipelined").then(|| measured(|| pipelined(&args, port)));
        let asynced = part("async").then(|| measured(|| rt.block_on(throughput(&args, port))));
        let show = |v: Option<Measured>| {
            v.map_or("-".to_owned(), |m| {
                format!("{:.0} cycles/s ({:.2} us client CPU/cycle)", m.rate, m.cpu_us)
            })
        };
        print!(
            "round {round}: (p) officer bench -c 1 -P {}: {}, (a) async {} tasks: {}",
            args.tasks,
            show(pipelined),
            args.tasks,
            show(asynced)
        );
        if let (Some(p), Some(a)) = (pipelined, asynced) {
            print!(", (a)/(p) = {:.2}", a.rate / p.rate);
            ratios.push(a.rate / p.rate);
        }
        cpu.0.extend(pipelined.map(|m| m.cpu_us));
        cpu.1.extend(asynced.map(|m| m.cpu_us));
        println!();
    }
    if !ratios.is_empty() {
        let (mid, lo, hi) = spread(&mut ratios);
        println!(
            "(a)/(p) over {} rounds: median {mid:.2}, min {lo:.2}, max {hi:.2} (target >= 0.8)",
            ratios.len()
        );
        let ((p, _, _), (a, _, _)) = (spread(&mut cpu.0), spread(&mut cpu.1));
        println!("client thread CPU per cycle, median: (p) {p:.2} us, (a) {a:.2} us");
    }

    if part("latency") {
        let run = Duration::from_secs_f64(args.seconds);
        let async_p50 = rt.block_on(async_latency(&args.host, port, run));
        println!("(b) async, 1 task: p50 cycle {:.1} us", micros(async_p50));
        let blocking_p50 = blocking_latency(&args.host, port, run);
        println!("(c) blocking, 1 thread: p50 cycle {:.1} us", micros(blocking_p50));
        println!("(b)/(c) = {:.2} (target <= 1.2)", micros(async_p50) / micros(blocking_p50));
    }
}

/// A load's rate, and the CPU time this thread spent per cycle (user and system: the client's
/// side of a cycle, its sends' loopback delivery included). Both loads run on this thread, so
/// this compares what each client costs without the neighbours' load on a shared machine.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cpu_us: f64,
}

/// Runs `load` (which returns cycles per second over its measured window) and charges this
/// thread's CPU over the whole run to the cycles of the whole run (the warm-up is run at
/// about the same rate), the same way for both loads.
fn measured(load: impl FnOnce() -> f64) -> Measured {
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let rate = load();
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    Measured { rate, cpu_us: cpu.as_secs_f64() * 1e6 / (rate * wall.as_secs_f64()).max(1.0) }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median, min and max.
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `officer bench -c 1 -P <tasks> -k <names>`: cycles per second.
fn pipelined(args: &Args, port: u16) -> f64 {
    let addr: SocketAddr = format!("{}:{port}", args.host).parse().expect("--host: an IP address");
    let config = CycleConfig {
        target: Target::Tcp(addr),
        connections: 1,
        names: args.names,
        pipeline: args.tasks,
        duration: Some(Duration::from_secs_f64(args.seconds)),
        cycles: None,
        warmup: Duration::from_secs_f64(args.warmup),
        mode: Mode::Lock,
        server_pid: None,
        seed: 0x5eed,
    };
    let report = run_cycles(&config).expect("officer bench run");
    assert_eq!(report.unexpected, 0, "officer bench saw unexpected answers");
    report.cycles_per_sec()
}

/// The names `officer bench` uses: `bench:` and ten digits.
fn lock_name(index: u64) -> String {
    format!("bench:{index:010}")
}

/// One client shared by `tasks` tasks, each cycling on random names of its own residue class
/// modulo `tasks`: cycles per second over the measured window, after the warm-up. A timer task
/// moves the phase (warm-up, measuring, stop), so a cycle costs no clock read, as `officer
/// bench` reads the clock once per wake-up rather than per cycle.
async fn throughput(args: &Args, port: u16) -> f64 {
    const WARMUP: u8 = 0;
    const MEASURING: u8 = 1;
    const STOP: u8 = 2;
    let client = Arc::new(AsyncClient::connect(&args.host, port).await.expect("connect"));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let (warmup, seconds) = (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.seconds));
    let timer = tokio::spawn({
        let phase = Arc::clone(&phase);
        async move {
            tokio::time::sleep(warmup).await;
            let from = Instant::now();
            phase.store(MEASURING, Ordering::Relaxed);
            tokio::time::sleep(seconds).await;
            phase.store(STOP, Ordering::Relaxed);
            from.elapsed()
        }
    });
    let (tasks, per_task) = (args.tasks as u64, args.names / args.tasks as u64);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (client, phase) = (Arc::clone(&client), Arc::clone(&phase));
            tokio::spawn(async move {
                let mut rng = 0x5eed_u64.wrapping_add(i * 7919) | 1;
                let mut done = 0u64;
                loop {
                    let now = phase.load(Ordering::Relaxed);
                    if now == STOP {
                        return done;
                    }
                    // xorshift64*, as `officer bench` draws its names.
                    rng ^= rng >> 12;
                    rng ^= rng << 25;
                    rng ^= rng >> 27;
                    let pick = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % per_task;
                    let name = lock_name(pick * tasks + i);
                    client.lock(&name, LockOptions::new()).await.expect("lock");
                    client.unlock(&name).await.expect("unlock");
                    if now == MEASURING {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await.expect("task");
    }
    let measured = timer.await.expect("timer");
    total as f64 / measured.as_secs_f64()
}

/// The median of one task's lock/unlock cycles over `run`.
async fn async_latency(host: &str, port: u16, run: Duration) -> Duration {
    let client = AsyncClient::connect(host, port).await.expect("connect");
    let mut samples = Vec::new();
    let deadline = Instant::now() + run;
    while Instant::now() < deadline {
        let start = Instant::now();
        client.lock("async-bench:latency", LockOptions::new()).await.expect("lock");
        client.unlock("async-bench:latency").await.expect("unlock");
        samples.push(start.elapsed());
    }
    median(samples)
}

/// The same for the blocking client on this thread.
fn blocking_latency(host: &str, port: u16, run: Duration) -> Duration {
    let client = Client::connect(host, port).expect("connect");
    let mut samples = Vec::new();
    let deadline = Instant::now() + run;
    while Instant::now() < deadline {
        let start = Instant::now();
        client.lock("async-bench:blocking", LockOptions::new()).expect("lock");
        client.unlock("async-bench:blocking").expect("unlock");
        samples.push(start.elapsed());
    }
    median(samples)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
