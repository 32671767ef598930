//! `cargo bench --bench async_client -F tokio`: the async client's numbers to set beside
//! `officer bench` (issue 15's targets), against a running server or an in-process one.
//!
//! (a) throughput of one `AsyncClient` with `--tasks` (64) concurrent tasks, each doing
//!     lock/unlock cycles on its own name; compare with `officer bench -c 1 -P 64`;
//! (b) p50 latency of one task's lock/unlock cycle on the async client;
//! (c) the same p50 on the blocking `Client`, which (b) should stay within 1.2x of.
//!
//! ```text
//! officer run --port 11500 &            # a release server, on a quiet machine
//! cargo bench --bench async_client -F tokio -- --host 127.0.0.1 --port 11500 --seconds 5
//! cargo bench --bench async_client -F tokio     # no --port: an in-process server on 127.0.0.1:0
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use officer::client::tokio::AsyncClient;
use officer::client::{Client, LockOptions};
use officer::server::{Config, Listen, Server};

/// What the command line asks for.
struct Args {
    host: String,
    port: Option<u16>,
    tasks: usize,
    seconds: f64,
}

fn parse_args() -> Args {
    let mut args = Args { host: "127.0.0.1".to_owned(), port: None, tasks: 64, seconds: 3.0 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--host" => args.host = value(),
            "--port" => args.port = Some(value().parse().expect("--port: a number")),
            "--tasks" => args.tasks = value().parse().expect("--tasks: a number"),
            "--seconds" => args.seconds = value().parse().expect("--seconds: a number"),
            // `cargo bench` passes `--bench`; anything else is a mistake worth saying.
            "--bench" => {}
            other => panic!("unknown argument {other} (--host, --port, --tasks, --seconds)"),
        }
    }
    args
}

/// The port of the server to measure: the given one, or an in-process server's.
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
    std::thread::spawn(move || server.run().expect("server run"));
    eprintln!("in-process server on 127.0.0.1:{port} (pass --port for a release server)");
    port
}

fn main() {
    let args = parse_args();
    let port = server_port(&args);
    let run = Duration::from_secs_f64(args.seconds);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    let cycles = rt.block_on(throughput(&args.host, port, args.tasks, run));
    let per_sec = cycles as f64 / run.as_secs_f64();
    println!("(a) async, 1 connection, {} tasks: {per_sec:.0} lock/unlock cycles/s", args.tasks);

    let async_p50 = rt.block_on(async_latency(&args.host, port, run));
    println!("(b) async, 1 task: p50 cycle {:.1} us", micros(async_p50));

    let blocking_p50 = blocking_latency(&args.host, port, run);
    println!("(c) blocking, 1 thread: p50 cycle {:.1} us", micros(blocking_p50));
    println!("(b)/(c) = {:.2} (target <= 1.2)", micros(async_p50) / micros(blocking_p50));
}

/// Cycles completed by `tasks` tasks sharing one client within `run`.
async fn throughput(host: &str, port: u16, tasks: usize, run: Duration) -> u64 {
    let client = Arc::new(AsyncClient::connect(host, port).await.expect("connect"));
    let deadline = Instant::now() + run;
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let name = format!("async-bench:{i}");
                let mut done = 0u64;
                while Instant::now() < deadline {
                    client.lock(&name, LockOptions::new()).await.expect("lock");
                    client.unlock(&name).await.expect("unlock");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for handle in handles {
        total += handle.await.expect("task");
    }
    total
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
