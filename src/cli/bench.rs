//! `officer bench`: flags and report printing around [`crate::bench`].

use std::time::Duration;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchMode {
    /// lock/unlock (or ping/ping with --ping) cycles
    Cycle,
    /// hold --count locks from one connection and report server memory per lock
    Hold,
    /// open --count idle connections and report server memory per connection
    Idle,
    /// run one --pattern of hostile load while another client pings; report its latency
    Bystander,
}

/// How a cycle's LOCK holds its name (`--lock-mode`).
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LockMode {
    /// LOCK (version 1)
    Exclusive,
    /// LOCK_EXT shared
    Shared,
    /// LOCK_EXT of 1 permit of a semaphore of 4
    Semaphore,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    connect: crate::cli::ConnectArgs,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Distinct lock names (large = uncontended, small = contended).
    #[arg(short = 'k', long, default_value_t = 1_000_000)]
    names: u64,
    /// Cycles in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured cycles instead.
    #[arg(short = 'n', long)]
    cycles: Option<u64>,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// PING frames of the same sizes instead of lock/unlock: the floor for the server.
    #[arg(long)]
    ping: bool,
    /// Report the server's CPU time per cycle (cycle mode) and its memory (hold/idle modes).
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, value_enum, default_value = "cycle")]
    mode: BenchMode,
    /// Cycle mode: how each LOCK holds its name.
    #[arg(long, value_enum, default_value = "exclusive", conflicts_with = "ping")]
    lock_mode: LockMode,
    /// Locks (hold mode), connections (idle mode), or by pattern (bystander mode).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Bystander mode: the hostile load.
    #[arg(long, value_enum, default_value = "timeouts")]
    pattern: crate::bench::Pattern,
    /// Bystander mode: requests the hostile client sends (listing and queue-maxed patterns).
    #[arg(long, default_value_t = 4096)]
    requests: u64,
    /// Bystander mode: seconds to keep measuring after an unread burst was sent.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Bystander mode: seconds after the burst before the server's memory is read again.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs the load generator; the process exit code.
pub fn run(args: BenchArgs) -> i32 {
    use crate::bench::{self, Target};
    let target = match args.connect.socket_type {
        crate::cli::SocketType::Unix => Target::Unix(args.connect.socket_file.clone()),
        crate::cli::SocketType::Tcp => {
            use std::net::ToSocketAddrs;
            let endpoint = args.connect.endpoint().map_err(|e| eprintln!("officer bench: {e}"));
            let Ok((host, port)) = endpoint else { return 2 };
            match (host.as_str(), port).to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(addr)) => Target::Tcp(addr),
                _ => {
                    eprintln!("officer bench: cannot resolve {host}:{port}");
                    return 2;
                }
            }
        }
    };
    crate::server::raise_fd_limit();
    let needs_pid =
        || args.server_pid.ok_or_else(|| std::io::Error::other("--server-pid is required for this mode"));
    let result = match args.mode {
        BenchMode::Cycle => {
            let config = bench::CycleConfig {
                target,
                connections: args.connections,
                names: args.names,
                pipeline: args.pipeline,
                duration: args.cycles.is_none().then(|| Duration::from_secs_f64(args.duration)),
                cycles: args.cycles,
                warmup: Duration::from_secs_f64(args.warmup),
                mode: match (args.ping, args.lock_mode) {
                    (true, _) => bench::Mode::Ping,
                    (false, LockMode::Exclusive) => bench::Mode::Lock,
                    (false, LockMode::Shared) => bench::Mode::Shared,
                    (false, LockMode::Semaphore) => bench::Mode::Semaphore,
                },
                server_pid: args.server_pid,
                seed: 0x9E37_79B9_7F4A_7C15,
            };
            bench::run_cycles(&config).map(|r| if args.json { r.json().to_string() } else { r.human() })
        }
        BenchMode::Hold => needs_pid()
            .and_then(|pid| bench::measure_hold(&target, pid, args.count))
            .map(|r| if args.json { r.json().to_string() } else { r.human() }),
        BenchMode::Bystander => needs_pid()
            .and_then(|server_pid| {
                bench::run_bystander(&bench::BystanderConfig {
                    target,
                    pattern: args.pattern,
                    count: args.count,
                    requests: args.requests,
                    server_pid,
                    window: Duration::from_secs_f64(args.window),
                    settle: Duration::from_secs_f64(args.settle),
                })
            })
            .map(|r| if args.json { r.json().to_string() } else { r.human() }),
        BenchMode::Idle => needs_pid()
            .and_then(|pid| bench::measure_idle(&target, pid, args.count as usize))
            .map(|r| if args.json { r.json().to_string() } else { r.human() }),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("officer bench: {e}");
            1
        }
    }
}
