//! Bursts that fire together, over real sockets (issue 10 items 2 and 3): many waits timing
//! out at once, a storm of QUEUE_MAXED, a RESET and a disconnect of thousands of holds, and the
//! server's memory through a burst. No timed assertions: every test asserts counts, order or
//! the server's own RSS from /proc with a generous bound, and waits only on replies.

mod support;

use std::time::{Duration, Instant};

use officer::locks::REFUSAL_QUEUE_MAX;
use officer::protocol::{ListRequest, LockRequest, Request, Response};
use support::process::spawn_officer;
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

fn lock(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None })
}

fn lock_timeout(name: &str, ms: u32) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(ms), queue_max: None })
}

fn queue_of(raw: &mut Raw, name: &str) -> Vec<String> {
    match raw.call(&Request::Locks(ListRequest { prefix: name, max: 0 })) {
        Response::Locks { locks, .. } => {
            locks.into_iter().find(|l| l.name == name).map(|l| l.queue).unwrap_or_default()
        }
        other => panic!("expected locks, got {other:?}"),
    }
}

fn token_of(response: Response) -> u64 {
    match response {
        Response::Acquired { token } => token,
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// `count` connections, each with one LOCK on `name` that waits `timeout_ms`, all queued.
fn waiters(addr: std::net::SocketAddr, name: &str, count: usize, timeout_ms: u32) -> Vec<Raw> {
    let mut all: Vec<Raw> = (0..count).map(|_| Raw::connect(addr)).collect();
    for raw in &mut all {
        raw.send(&lock_timeout(name, timeout_ms));
    }
    all
}

/// Each waiter's answer: a TIMED_OUT whose queue is the holder then the first waiters left.
fn timed_out_queues(waiters: &mut [Raw], holder: &str) -> Vec<usize> {
    waiters
        .iter_mut()
        .map(|raw| match raw.recv().1 {
            Response::TimedOut { queue } => {
                assert_eq!(queue.first().map(String::as_str), Some(holder), "holder first");
                queue.len()
            }
            other => panic!("expected timed_out, got {other:?}"),
        })
        .collect()
}

#[test]
fn simultaneous_timeouts_report_a_short_queue_head() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    token_of(holder.call(&lock("hot")));
    let holder_label = queue_of(&mut holder, "hot").remove(0);
    // 1,500 waits with one deadline: on a cut at 1,000 the first ones carried 1,000 labels.
    let mut burst = waiters(server.addr(), "hot", 1_500, 400);
    let lengths = timed_out_queues(&mut burst, &holder_label);
    let longest = lengths.iter().copied().max().unwrap_or(0);
    assert_eq!(longest, REFUSAL_QUEUE_MAX, "labels per TIMED_OUT");
    assert!(lengths.iter().all(|&n| n >= 1));
    // The server went on serving through the burst, and the queue is empty now.
    assert_eq!(queue_of(&mut holder, "hot"), vec![holder_label]);
}

#[test]
fn a_queue_maxed_storm_reports_a_short_queue_head() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    token_of(holder.call(&lock("deep")));
    let mut queued: Vec<Raw> = (0..100).map(|_| Raw::connect(server.addr())).collect();
    for raw in &mut queued {
        raw.send(&lock("deep"));
    }
    assert_eq!(queue_of(&mut holder, "deep").len(), 101);
    // One connection pipelines 2,000 LOCKs with queue_max 5 on the 101-deep queue.
    let mut storm = Raw::connect(server.addr());
    let capped = Request::Lock(LockRequest { name: "deep", timeout_ms: None, queue_max: Some(5) });
    for _ in 0..2_000 {
        storm.send(&capped);
    }
    for _ in 0..2_000 {
        match storm.recv().1 {
            Response::QueueMaxed { queue } => assert_eq!(queue.len(), REFUSAL_QUEUE_MAX),
            other => panic!("expected queue_maxed, got {other:?}"),
        }
    }
    assert_eq!(storm.call(&Request::Ping(b"")), Response::Pong);
}

/// A connection holding `count` locks `n0..`, acquired in that order.
fn hold_many(addr: std::net::SocketAddr, count: usize) -> (Raw, Vec<String>) {
    let mut raw = Raw::connect(addr);
    let names: Vec<String> = (0..count).map(|i| format!("n{i}")).collect();
    for name in &names {
        raw.send(&lock(name));
    }
    for _ in &names {
        token_of(raw.recv().1);
    }
    (raw, names)
}

#[test]
fn a_reset_of_thousands_of_holds_answers_after_its_releases_and_before_later_requests() {
    let server = TestServer::start();
    // 5,000 holds: more than one release batch, so the RESET spans several turns.
    let (mut holder, names) = hold_many(server.addr(), 5_000);
    let mut first = Raw::connect(server.addr());
    let mut last = Raw::connect(server.addr());
    first.send(&lock(&names[0]));
    last.send(&lock(&names[4_999]));
    assert_eq!(queue_of(&mut first, &names[0]).len(), 2);
    assert_eq!(queue_of(&mut last, &names[4_999]).len(), 2);
    let reset = holder.send(&Request::Reset);
    let fresh = holder.send(&lock("fresh"));
    let ping = holder.send(&Request::Ping(b""));
    assert_eq!(holder.recv(), (reset, Response::ResetOk));
    let (rid, response) = holder.recv();
    assert_eq!(rid, fresh);
    let fresh_token = token_of(response);
    assert_eq!(holder.recv(), (ping, Response::Pong));
    // Released in acquisition order: the first hold's waiter got the older token, and both
    // grants came before the RESET was answered.
    let first_token = token_of(first.recv().1);
    let last_token = token_of(last.recv().1);
    assert!(first_token < last_token && last_token < fresh_token, "{first_token} {last_token} {fresh_token}");
    match holder.call(&Request::MyLocks) {
        Response::MyLocks { held, waiting } => {
            assert_eq!(held, vec!["fresh".to_owned()]);
            assert!(waiting.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_disconnect_of_thousands_of_holds_grants_each_waiter_once_in_release_order() {
    let server = TestServer::start();
    let (holder, names) = hold_many(server.addr(), 5_000);
    let picks = [0usize, 999, 1_000, 2_500, 4_999];
    let mut waiting: Vec<Raw> = picks.iter().map(|_| Raw::connect(server.addr())).collect();
    for (raw, &i) in waiting.iter_mut().zip(&picks) {
        raw.send(&lock(&names[i]));
        assert_eq!(queue_of(raw, &names[i]).len(), 2);
    }
    // A waiter on a hold in a later batch leaves before its turn: it must never be granted.
    let mut leaver = Raw::connect(server.addr());
    leaver.send(&lock(&names[4_000]));
    assert_eq!(queue_of(&mut leaver, &names[4_000]).len(), 2);
    drop(leaver);
    drop(holder);
    let tokens: Vec<u64> = waiting.iter_mut().map(|raw| token_of(raw.recv().1)).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens in release order: {tokens:?}");
    let mut probe = Raw::connect(server.addr());
    // The gone waiter's lock is free: it was released to nobody.
    token_of(probe.call(&lock(&names[4_000])));
    for (raw, &i) in waiting.iter_mut().zip(&picks) {
        assert_eq!(raw.call(&Request::Unlock(&names[i])), Response::Released);
    }
    match probe.call(&Request::Stats) {
        Response::Stats(entries) => {
            let locks = entries.iter().find(|(k, _)| k == "locks_held").map(|(_, v)| *v);
            assert_eq!(locks, Some(1), "only the probe's lock is left");
        }
        other => panic!("{other:?}"),
    }
}

/// `VmRSS` or `VmHWM` of a process in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The real binary, killed when the test ends (also when an assertion fails).
struct Officer(std::process::Child);

impl Drop for Officer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn memory_stays_bounded_through_a_timeout_burst_and_is_given_back() {
    let (child, addr) = spawn_officer(&[]);
    let child = Officer(child);
    let pid = child.0.id();
    let mut holder = Raw::connect(addr);
    token_of(holder.call(&lock("hot")));
    let holder_label = queue_of(&mut holder, "hot").remove(0);
    let before = status_kib(pid, "VmRSS:");
    let mut burst = waiters(addr, "hot", 3_000, 1_000);
    timed_out_queues(&mut burst, &holder_label);
    // With a report cut at 1,000 labels, this burst peaked above 150 MB.
    let peak = status_kib(pid, "VmHWM:");
    assert!(peak < before + 48 * 1024, "peak {peak} KiB, before {before} KiB");
    let loaded = status_kib(pid, "VmRSS:");
    drop(burst);
    // Housekeeping runs once a second: RSS comes back down within a few rounds.
    let deadline = Instant::now() + WAIT;
    let target = before + (loaded.saturating_sub(before)) / 2;
    let mut now_kib = status_kib(pid, "VmRSS:");
    while now_kib > target && Instant::now() < deadline {
        // Each PING is a reply to wait on; it also keeps the test from spinning.
        assert_eq!(holder.call(&Request::Ping(b"")), Response::Pong);
        std::thread::sleep(Duration::from_millis(50));
        now_kib = status_kib(pid, "VmRSS:");
    }
    drop(child);
    eprintln!("rss: before {before} KiB, peak {peak} KiB, loaded {loaded} KiB, after {now_kib} KiB");
    assert!(now_kib <= target, "RSS {now_kib} KiB after the burst, {loaded} KiB loaded, {before} KiB before");
}

#[test]
fn a_json_reset_of_thousands_of_holds_is_answered_before_the_lines_after_it() {
    use std::io::{BufRead, BufReader, Write};
    let server = TestServer::start();
    let stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut lines = String::new();
    for i in 0..2_500 {
        lines.push_str(&format!("{{\"command\":\"lock\",\"name\":\"j{i}\"}}\n"));
    }
    // RESET spans several release batches; the lock and my_locks behind it wait for it.
    lines.push_str(
        "{\"command\":\"reset\"}\n{\"command\":\"lock\",\"name\":\"j7\"}\n{\"command\":\"my_locks\"}\n",
    );
    writer.write_all(lines.as_bytes()).unwrap();
    let mut recv = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    for _ in 0..2_500 {
        assert_eq!(recv()["result"], "acquired");
    }
    assert_eq!(recv()["result"], "reset_succeeded");
    let relock = recv();
    assert_eq!((&relock["result"], &relock["name"]), (&"acquired".into(), &"j7".into()), "{relock}");
    let mine = recv();
    assert_eq!(mine["result"], "my_locks", "{mine}");
    assert_eq!(mine["value"], serde_json::json!(["j7"]), "{mine}");
}
