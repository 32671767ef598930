//! `cargo bench --bench table_ops -- SCENARIO [ITERATIONS]`: a plain loop of lock-table
//! commands for counting instructions under callgrind, where criterion's own machinery would
//! drown the table's few hundred instructions. Each iteration builds its commands as
//! `server::dispatch::run` does from a decoded request (a `Name` copied out of the read buffer,
//! the server's timeout rounding, the default or LOCK_EXT options), applies them and clears the
//! outputs, as the server's delivery does. Only `measured` is meant to be counted:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='*measured*' --callgrind-out-file=/tmp/cg.out \
//!     target/release/deps/table_ops-HASH uncontended 100000
//! ```
//!
//! and `Ir / ITERATIONS` is the instructions per iteration (`benches/table_ops.sh` runs every
//! scenario that way). Without valgrind it prints the wall time per iteration, a rough check.
//!
//! Scenarios: `uncontended` (exclusive LOCK and UNLOCK of a free name), `contended` (two
//! sessions hand one name back and forth: every UNLOCK grants the waiter), `shared` and
//! `semaphore` (the uncontended pair in LOCK_EXT's shared mode and with 1 of 10 permits),
//! `shared_beside_4` and `semaphore_beside_4` (the same beside four other holders, whose
//! UNLOCK finds its own grant among them), `semaphore_contended` (a one-permit semaphore
//! handed back and forth).

use std::hint::black_box;
use std::time::Instant;

use officer::locks::{Command, LockOpts, LockTable, Mode, Name, Output, SessionId, TableLimits};
use officer::protocol::{LockExtRequest, LockRequest, Mode as WireMode};

const NAME: &str = "bench:0000000001";
const HOT: &str = "hot";
const SEM: (u32, u32) = (1, 10);

/// The server's rounding of a wait's timeout (`dispatch::server_timeout`).
fn server_timeout(timeout_ms: Option<u32>) -> Option<u32> {
    timeout_ms.map(|ms| if ms == 0 { 0 } else { ms.saturating_add(1) })
}

/// `Request::Lock` as `dispatch::run` turns it into a command.
fn lock(session: u64, rid: u32, req: &LockRequest<'_>) -> Command {
    let timeout_ms = server_timeout(req.timeout_ms);
    let (name, queue_max) = (Name::from(req.name), req.queue_max);
    let opts = LockOpts::default();
    Command::Lock { session: SessionId(session), request_id: rid, name, timeout_ms, queue_max, opts }
}

/// `Request::LockExt` as `dispatch::run` turns it into a command.
fn lock_ext(session: u64, rid: u32, ext: &LockExtRequest<'_>) -> Command {
    let (name, timeout_ms, queue_max) = (Name::from(ext.name), server_timeout(ext.timeout_ms), ext.queue_max);
    let mode = match ext.mode {
        WireMode::Exclusive => Mode::Exclusive,
        WireMode::Shared => Mode::Shared,
        WireMode::Semaphore => Mode::Permits { count: ext.permits, limit: ext.limit },
    };
    let opts = LockOpts {
        mode,
        lease_ms: ext.lease_ms,
        max_hold_ms: ext.max_hold_ms,
        lock_delay_ms: ext.lock_delay_ms,
        notify_contention: ext.notify_contention,
        skip_while_detached: ext.skip_while_detached,
    };
    Command::Lock { session: SessionId(session), request_id: rid, name, timeout_ms, queue_max, opts }
}

/// `Request::Unlock` as `dispatch::run` turns it into a command.
fn unlock(session: u64, rid: u32, name: &str) -> Command {
    Command::Unlock { session: SessionId(session), request_id: rid, name: Name::from(name), token: None }
}

fn plain(name: &str) -> LockRequest<'_> {
    LockRequest { name, timeout_ms: None, queue_max: None }
}

fn ext(name: &str, mode: WireMode) -> LockExtRequest<'_> {
    let (permits, limit) = if mode == WireMode::Semaphore { SEM } else { (0, 0) };
    LockExtRequest {
        name,
        mode,
        timeout_ms: None,
        queue_max: None,
        permits,
        limit,
        lease_ms: None,
        max_hold_ms: None,
        lock_delay_ms: 0,
        notify_contention: false,
        skip_while_detached: false,
    }
}

fn table(sessions: u64) -> LockTable {
    let limits = TableLimits { max_lock_delay_ms: 0, ..TableLimits::default() };
    let mut table = LockTable::new(1, limits);
    for s in 0..sessions {
        let cmd = Command::Attach { session: SessionId(s), label: format!("127.0.0.1:{}", 40_000 + s) };
        table.apply(0, &cmd, &mut Vec::new());
    }
    table
}

/// The loop callgrind counts: `n` iterations of `step`.
#[inline(never)]
fn measured(
    n: u64,
    table: &mut LockTable,
    out: &mut Vec<Output>,
    mut step: impl FnMut(u64, &mut LockTable, &mut Vec<Output>),
) {
    for i in 0..n {
        step(i, table, out);
        out.clear();
    }
}

fn run(scenario: &str, n: u64) -> Option<LockTable> {
    let mut out: Vec<Output> = Vec::with_capacity(16);
    let t = match scenario {
        "uncontended" => {
            let mut t = table(1);
            measured(n, &mut t, &mut out, |_, t, out| {
                t.apply(0, &lock(0, 1, &plain(black_box(NAME))), out);
                t.apply(0, &unlock(0, 2, black_box(NAME)), out);
            });
            t
        }
        "contended" | "semaphore_contended" => {
            let mode = if scenario == "contended" { None } else { Some(ext(HOT, WireMode::Semaphore)) };
            let one = mode.map(|e| LockExtRequest { permits: 1, limit: 1, ..e });
            let take = move |s: u64, rid: u32| match &one {
                None => lock(s, rid, &plain(black_box(HOT))),
                Some(e) => lock_ext(s, rid, &LockExtRequest { name: black_box(HOT), ..*e }),
            };
            let mut t = table(2);
            t.apply(0, &take(0, 1), &mut out);
            out.clear();
            measured(n, &mut t, &mut out, |i, t, out| {
                let holder = i & 1;
                t.apply(0, &take(1 - holder, 3), out);
                t.apply(0, &unlock(holder, 4, black_box(HOT)), out);
            });
            t
        }
        "shared" | "semaphore" | "shared_beside_4" | "semaphore_beside_4" => {
            let mode = if scenario.starts_with("shared") { WireMode::Shared } else { WireMode::Semaphore };
            let others = if scenario.ends_with("beside_4") { 4 } else { 0 };
            let mut t = table(1 + others);
            for s in 1..=others {
                t.apply(0, &lock_ext(s, 1, &ext(NAME, mode)), &mut out);
            }
            out.clear();
            measured(n, &mut t, &mut out, |_, t, out| {
                t.apply(0, &lock_ext(0, 1, &ext(black_box(NAME), mode)), out);
                t.apply(0, &unlock(0, 2, black_box(NAME)), out);
            });
            t
        }
        _ => return None,
    };
    Some(t)
}

const SCENARIOS: [&str; 7] = [
    "uncontended",
    "contended",
    "shared",
    "semaphore",
    "shared_beside_4",
    "semaphore_beside_4",
    "semaphore_contended",
];

fn main() {
    // `cargo bench` passes `--bench`; every argument starting with `-` is not ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let n: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let chosen: Vec<&str> = match args.first().map(String::as_str) {
        None | Some("all") => SCENARIOS.to_vec(),
        Some(one) => vec![one],
    };
    for scenario in chosen {
        let start = Instant::now();
        let Some(table) = run(scenario, n) else {
            eprintln!("unknown scenario {scenario:?}; one of {SCENARIOS:?} or all");
            std::process::exit(2);
        };
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        // The table is checked after the loop, so a loop that went wrong cannot pass unseen.
        let stats = table.stats();
        assert!(stats.release_failed == 0 && stats.acquired >= n, "{scenario}: {stats:?}");
        println!("{scenario:<20} {n:>9} iterations {per:>8.1} ns/iteration");
    }
}
