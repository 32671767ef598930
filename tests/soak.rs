//! Soak: a real server under mixed traffic for about two minutes (`OFFICER_SOAK_SECS` changes it):
//! library clients locking and unlocking with timeouts, `officer lock` processes killed while
//! holding or waiting, slow readers, malformed sessions and a pinger. Afterwards the server must
//! be back to its baseline: no locks, only the observer connected, the same descriptors, and
//! its memory not grown beyond a generous bound.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, LockOptions};
use officer::protocol::{op, ErrorCode, LockRequest, Request, Response};
use support::frames::{frame, hello_frame, lock_req, token_of};
use support::process::{LockProcess, ServerProcess};
use support::raw::Raw;
use support::rng::Rng;
use support::WAIT;

const NAMES: usize = 6;
const LOCKERS: u64 = 6;
const MAX_IDLE_SECS: &str = "2";

fn name(n: usize) -> String {
    format!("soak/{n}")
}

#[derive(Default)]
struct Counts {
    holds: AtomicU64,
    timeouts: AtomicU64,
    resets: AtomicU64,
    kills_holding: AtomicU64,
    kills_waiting: AtomicU64,
    slow_readers: AtomicU64,
    bad_sessions: AtomicU64,
    pings: AtomicU64,
    worst_ping_us: AtomicU64,
}

struct Shared {
    addr: SocketAddr,
    stop: AtomicBool,
    /// A library locker holds the name: a second one at once is a broken lock.
    inside: [AtomicBool; NAMES],
    /// The last token a locker saw for each name: grants must carry increasing tokens.
    last_token: [AtomicU64; NAMES],
    counts: Counts,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, waking early when the soak stops.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while self.running() && Instant::now() < end {
            thread::sleep(Duration::from_millis(5).min(end.saturating_duration_since(Instant::now())));
        }
    }
}

fn locker(shared: &Shared, seed: u64) {
    let client = Client::connect("127.0.0.1", shared.addr.port()).expect("connect");
    let mut rng = Rng::new(seed);
    while shared.running() {
        let n = rng.below(NAMES as u64) as usize;
        let timeout = Duration::from_millis(rng.below(300));
        match client.lock(&name(n), LockOptions::with_timeout(timeout)) {
            Ok(acquired) => {
                assert!(!acquired.already_acquired(), "a lock this client released is still held");
                assert!(!shared.inside[n].swap(true, Ordering::SeqCst), "two clients hold {}", name(n));
                let before = shared.last_token[n].swap(acquired.token(), Ordering::SeqCst);
                assert!(before < acquired.token(), "{}: token {} after {before}", name(n), acquired.token());
                thread::sleep(Duration::from_micros(rng.below(3000)));
                shared.inside[n].store(false, Ordering::SeqCst);
                client.unlock(&name(n)).expect("unlock");
                shared.counts.holds.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_timeout() => {
                shared.counts.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("locker: {e}"),
        }
        if rng.below(50) == 0 {
            client.reset().expect("reset");
            shared.counts.resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `officer lock` processes on the shared names, killed with SIGKILL while holding or waiting
/// (every other one queues behind a lock this thread holds, so some surely die waiting).
fn killer(shared: &Shared, seed: u64) {
    let blocker = Client::connect("127.0.0.1", shared.addr.port()).expect("connect");
    let mut rng = Rng::new(seed);
    for i in 0.. {
        if !shared.running() {
            break;
        }
        let n = rng.below(NAMES as u64) as usize;
        let block = i % 2 == 1 && blocker.lock(&name(n), LockOptions::with_timeout(WAIT)).is_ok();
        let mut p = LockProcess::holder(shared.addr.port(), &name(n));
        let held = p.wait_held(Duration::from_millis(50 + rng.below(400)));
        shared.pause(Duration::from_millis(rng.below(100)));
        p.crash();
        if block {
            blocker.unlock(&name(n)).expect("unlock");
        }
        assert!(!(block && held), "officer lock ran its command while another client held the lock");
        let counter = if held { &shared.counts.kills_holding } else { &shared.counts.kills_waiting };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Connections that hold a lock, wait for a shared one, then pipeline requests and never read.
fn slow_reader(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let one = support::frames::encode(&Request::Stats, 9);
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 200).collect();
    for i in 0.. {
        if !shared.running() {
            break;
        }
        let mut w = Raw::connect(shared.addr);
        token_of(&w.call(&lock_req(&format!("soak/slow/{i}"))));
        let shared_name = name(rng.below(NAMES as u64) as usize);
        w.send(&Request::Lock(LockRequest { name: &shared_name, timeout_ms: Some(5000), queue_max: None }));
        for _ in 0..1000 {
            if w.send_bytes(&chunk).is_err() {
                break;
            }
        }
        // Never read: reading would drain the output the server must find over its limit.
        assert!(w.wait_hangup_unread(WAIT), "slow reader {i} was not closed");
        shared.counts.slow_readers.fetch_add(1, Ordering::Relaxed);
        shared.pause(Duration::from_millis(300 + rng.below(700)));
    }
}

/// Sessions that break the protocol in assorted ways; each must end with a close.
fn bad_frames(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    while shared.running() {
        let mut w = Raw::connect_no_hello(shared.addr);
        let case = rng.below(5);
        match case {
            0 => {
                let len = 4 + rng.below(40) as usize;
                let mut bytes = rng.bytes(len);
                if bytes[0] == b'{' {
                    bytes[0] = 0xFF;
                }
                let _ = w.send_bytes(&bytes);
            }
            1 => {
                let mut bytes = hello_frame(1);
                for _ in 0..10 {
                    let len = rng.below(20) as usize;
                    let payload = rng.bytes(len);
                    bytes.extend_from_slice(&frame(1 + rng.below(12) as u8, rng.next_u64() as u32, &payload));
                }
                let _ = w.send_bytes(&bytes);
            }
            2 => {
                // A truncated frame, then silence until max-idle.
                let mut bytes = hello_frame(1);
                bytes.extend_from_slice(&frame(op::LOCK, 2, b"\0\0\0\0\0\0\0\0\0\0soak/0")[..8]);
                let _ = w.send_bytes(&bytes);
            }
            3 => {
                let mut bytes = hello_frame(1);
                bytes.extend_from_slice(&[0x00, 0xFF, 0xFF, 0xFF, op::PING]);
                let _ = w.send_bytes(&bytes);
            }
            _ => {
                let mut bytes = hello_frame(1);
                bytes.extend_from_slice(&support::frames::encode(&lock_req(&name(0)), 2));
                for b in bytes {
                    if w.send_bytes(&[b]).is_err() {
                        break;
                    }
                }
                // Whatever the LOCK got (granted or queued), leaving releases it.
            }
        }
        if case != 2 && case != 3 {
            w.shutdown_write();
        }
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "bad session (case {case}) was not closed");
        if case == 3 {
            assert!(
                matches!(
                    frames.as_slice(),
                    [(1, Response::HelloOk(_)), (0, Response::Error { code: ErrorCode::BadFrameLength, .. })]
                ),
                "{frames:?}"
            );
        }
        shared.counts.bad_sessions.fetch_add(1, Ordering::Relaxed);
    }
}

fn pinger(shared: &Shared) {
    let client = Client::connect("127.0.0.1", shared.addr.port()).expect("connect");
    while shared.running() {
        let rtt = client.ping().expect("ping");
        shared.counts.worst_ping_us.fetch_max(rtt.as_micros() as u64, Ordering::Relaxed);
        shared.counts.pings.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(10));
    }
}

fn soak_duration() -> Duration {
    let secs = std::env::var("OFFICER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(110);
    Duration::from_secs(secs)
}

#[test]
fn soak_mixed_traffic_returns_to_baseline() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path()).to_str().expect("utf-8 path").to_owned();
    let server =
        ServerProcess::spawn(&["-m", MAX_IDLE_SECS, "--max-output", "131072", "--state-file", &state]);
    let pid = server.pid();
    let observer = Client::connect("127.0.0.1", server.port()).expect("connect");
    let fds_before = support::process::fd_count(pid);
    let rss_before = support::process::status_kib(pid, "VmRSS");

    let shared = Arc::new(Shared {
        addr: server.addr,
        stop: AtomicBool::new(false),
        inside: Default::default(),
        last_token: Default::default(),
        counts: Counts::default(),
    });
    let duration = soak_duration();
    let start = Instant::now();
    let mut workers = Vec::new();
    for t in 0..LOCKERS {
        let s = shared.clone();
        workers.push(thread::spawn(move || locker(&s, 0x50AC_0000 + t)));
    }
    let s = shared.clone();
    workers.push(thread::spawn(move || killer(&s, 0x50AC_1000)));
    let s = shared.clone();
    workers.push(thread::spawn(move || slow_reader(&s, 0x50AC_2000)));
    let s = shared.clone();
    workers.push(thread::spawn(move || bad_frames(&s, 0x50AC_3000)));
    let s = shared.clone();
    workers.push(thread::spawn(move || pinger(&s)));

    let (mut peak_fds, mut peak_rss) = (0, 0);
    while start.elapsed() < duration && workers.iter().all(|w| !w.is_finished()) {
        peak_fds = peak_fds.max(support::process::fd_count(pid));
        peak_rss = peak_rss.max(support::process::status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(250));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a soak worker failed");
    }
    let ran = start.elapsed();
    assert!(server_alive(&server), "the server died during the soak");

    // Back to the baseline: nothing held or queued, only the observer connected.
    support::process::wait_until("every lock to be released", WAIT, || {
        observer.locks().expect("locks").is_empty()
    });
    support::process::wait_until("every other connection to close", WAIT, || {
        observer.connections().expect("connections").len() == 1
    });
    support::process::wait_until("descriptors back to the baseline", WAIT, || {
        support::process::fd_count(pid) <= fds_before + 2
    });
    let fds_after = support::process::fd_count(pid);
    let rss_after = support::process::status_kib(pid, "VmRSS");
    let stats = observer.stats().expect("stats");
    let c = &shared.counts;
    let get = |k: &str| stats.get(k).unwrap_or(0);
    eprintln!(
        "soak {ran:.1?}: {} holds, {} timeouts, {} resets by lockers; {} officer lock processes killed \
         holding, {} killed waiting; {} slow readers; {} bad sessions; {} pings, worst {} µs\n\
         server: {} connections accepted, closed eof {} / error {} / idle {} / protocol {} / output {}; \
         {} acquired, {} timed out; fds {fds_before} -> peak {peak_fds} -> {fds_after}; \
         RSS {rss_before} kB -> peak {peak_rss} kB -> {rss_after} kB",
        c.holds.load(Ordering::Relaxed),
        c.timeouts.load(Ordering::Relaxed),
        c.resets.load(Ordering::Relaxed),
        c.kills_holding.load(Ordering::Relaxed),
        c.kills_waiting.load(Ordering::Relaxed),
        c.slow_readers.load(Ordering::Relaxed),
        c.bad_sessions.load(Ordering::Relaxed),
        c.pings.load(Ordering::Relaxed),
        c.worst_ping_us.load(Ordering::Relaxed),
        get("connections_accepted"),
        get("connections_closed_eof"),
        get("connections_closed_error"),
        get("connections_closed_idle"),
        get("connections_closed_protocol"),
        get("connections_closed_output_overflow"),
        get("acquired"),
        get("timed_out"),
    );
    assert_eq!(get("locks_held"), 0);
    assert_eq!(get("waiters"), 0);
    assert!(fds_after.abs_diff(fds_before) <= 2, "descriptors {fds_before} before, {fds_after} after");
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "RSS grew by {grown_mib} MiB over the soak");
    assert!(c.holds.load(Ordering::Relaxed) > 100, "the lockers hardly ran");
    assert!(c.kills_holding.load(Ordering::Relaxed) + c.kills_waiting.load(Ordering::Relaxed) > 0);
    assert!(c.slow_readers.load(Ordering::Relaxed) > 0 && c.bad_sessions.load(Ordering::Relaxed) > 0);
    let worst = Duration::from_micros(c.worst_ping_us.load(Ordering::Relaxed));
    assert!(worst < Duration::from_secs(5), "a ping took {worst:?} during the soak");
}

fn server_alive(server: &ServerProcess) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
