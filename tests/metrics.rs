//! `/metrics` over HTTP on loopback: the counters match the traffic sent, per-lock series
//! exist only when asked for and are bounded, process metrics carry the standard names, only
//! GET is served, and neither a scraper nor a crowd of silent connections can keep a real
//! scrape out or disturb lock clients.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use officer::protocol::{LockRequest, Request, Response};
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// Sends `raw` and reads the answer until the server closes.
fn request(addr: SocketAddr, raw: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
}

/// The lines of series `name` (any labels).
fn series<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .collect()
}

fn with_metrics(per_lock: u32) -> TestServer {
    TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.metrics_per_lock = per_lock;
    })
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{body}"))
        .parse()
        .unwrap()
}

fn lock<'a>(name: &'a str, timeout_ms: Option<u32>) -> Request<'a> {
    Request::Lock(LockRequest { name, timeout_ms, queue_max: None })
}

#[test]
fn counters_match_the_traffic() {
    let server = with_metrics(5);
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    for i in 0..10 {
        let name = format!("m{i}");
        assert!(matches!(a.call(&lock(&name, None)), Response::Acquired { .. }));
    }
    for i in 0..3 {
        let name = format!("m{i}");
        assert!(matches!(b.call(&lock(&name, Some(0))), Response::TimedOut { .. }));
    }
    let wait_id = b.send(&lock("m9", None));
    assert_eq!(b.call(&Request::Ping(b"")), Response::Pong);
    for i in 0..5 {
        let name = format!("m{i}");
        assert_eq!(a.call(&Request::Unlock(&name)), Response::Released);
    }
    assert_eq!(a.call(&Request::Unlock("nope")), Response::ReleaseFailed);

    let (head, body) = scrape(server.metrics_addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(value(&body, "officer_lock_results_total{result=\"acquired\"}"), 10.0);
    assert_eq!(value(&body, "officer_lock_results_total{result=\"timed_out\"}"), 3.0);
    assert_eq!(value(&body, "officer_lock_results_total{result=\"released\"}"), 5.0);
    assert_eq!(value(&body, "officer_lock_results_total{result=\"release_failed\"}"), 1.0);
    assert_eq!(value(&body, "officer_locks_held"), 5.0);
    assert_eq!(value(&body, "officer_waiters"), 1.0);
    assert_eq!(value(&body, "officer_connections"), 2.0);
    assert_eq!(value(&body, "officer_lock_hold_seconds_count"), 5.0);
    assert_eq!(value(&body, "officer_queue_depth{name=\"m9\"}"), 1.0);
    assert!(body.contains("officer_longest_hold_seconds{name=\"m5\"}"), "{body}");
    assert_eq!(value(&body, "officer_max_queue_depth"), 1.0);
    assert!(value(&body, "process_open_fds") > 0.0);
    assert!(value(&body, "process_resident_memory_bytes") > 0.0);

    // The waiter is granted when its lock is released, and the wait shows in the histogram.
    assert_eq!(a.call(&Request::Unlock("m9")), Response::Released);
    let (rid, response) = b.recv();
    assert_eq!(rid, wait_id);
    assert!(matches!(response, Response::Acquired { .. }));
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    assert_eq!(value(&body, "officer_lock_wait_seconds_count"), 1.0);
    assert_eq!(value(&body, "officer_lock_results_total{result=\"acquired\"}"), 11.0);
}

#[test]
fn other_paths_get_404_and_slow_scrapers_do_not_block_clients() {
    let server = TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let (head, _) = scrape(server.metrics_addr(), "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A scraper that connects and sends half a request, then stalls.
    let mut stalled = TcpStream::connect(server.metrics_addr()).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    let mut a = Raw::connect(server.addr());
    assert!(matches!(a.call(&lock("x", None)), Response::Acquired { .. }));
    let (head, _) = scrape(server.metrics_addr(), "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"));
}

#[test]
fn scrapes_during_load_rise_and_end_at_the_traffic_sent() {
    const CLIENTS: usize = 4;
    const CYCLES: usize = 300;
    let server = TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    let addr = server.addr();
    let load: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                for n in 0..CYCLES {
                    let name = format!("load-{i}-{n}");
                    assert!(matches!(raw.call(&lock(&name, None)), Response::Acquired { .. }));
                    assert_eq!(raw.call(&Request::Unlock(&name)), Response::Released);
                }
            })
        })
        .collect();
    // Scrape while the load runs: the counter never goes down and never passes the total.
    let mut last = 0.0;
    let mut scrapes = 0;
    while !load.iter().all(|t| t.is_finished()) && scrapes < 200 {
        let (head, body) = scrape(server.metrics_addr(), "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"));
        let acquired = value(&body, "officer_lock_results_total{result=\"acquired\"}");
        assert!(acquired >= last && acquired <= (CLIENTS * CYCLES) as f64, "{acquired} after {last}");
        last = acquired;
        scrapes += 1;
    }
    for t in load {
        t.join().unwrap();
    }
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    let total = (CLIENTS * CYCLES) as f64;
    assert_eq!(value(&body, "officer_lock_results_total{result=\"acquired\"}"), total);
    assert_eq!(value(&body, "officer_lock_results_total{result=\"released\"}"), total);
    assert_eq!(value(&body, "officer_lock_hold_seconds_count"), total);
    assert_eq!(value(&body, "officer_locks_held"), 0.0);
    assert_eq!(value(&body, "officer_connections_accepted_total"), CLIENTS as f64);
}

#[test]
fn silent_connections_in_every_slot_cannot_keep_a_scrape_out() {
    let server = with_metrics(0);
    let addr = server.metrics_addr();
    // The attack: every slot held by a peer that sends nothing (or half a request line), and
    // renewed as fast as the server lets go of them. Each real scrape still gets its answer.
    let mut crowd: Vec<TcpStream> = Vec::new();
    for round in 0..3 {
        crowd.extend((0..16).map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /metr").unwrap();
            }
            s
        }));
        let (head, body) = scrape(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        // A silent slot was given up for it (pushed out, or past its head deadline).
        let evicted = value(&body, "officer_metrics_scrapes_dropped_total{reason=\"evicted\"}");
        let timed_out = value(&body, "officer_metrics_scrapes_dropped_total{reason=\"head_timeout\"}");
        assert!(evicted + timed_out >= 1.0, "{body}");
    }
    // The first silent peer was pushed out (or timed out): the server closed it.
    crowd[0].set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(crowd[0].read(&mut [0u8; 16]).unwrap(), 0);
}

#[test]
fn a_peer_that_sends_no_request_head_loses_its_slot_to_the_head_deadline() {
    let server = with_metrics(0);
    let mut silent = TcpStream::connect(server.metrics_addr()).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    // Waits for the server to hang up (1 s head deadline, checked once a second).
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap(), 0);
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    assert_eq!(value(&body, "officer_metrics_scrapes_dropped_total{reason=\"head_timeout\"}"), 1.0);
    assert_eq!(value(&body, "officer_metrics_scrapes_dropped_total{reason=\"deadline\"}"), 0.0);
    assert_eq!(value(&body, "officer_metrics_scrapes_total"), 0.0, "this answer is counted once sent");
}

#[test]
fn a_scraper_that_half_closes_after_its_request_is_answered() {
    let server = with_metrics(0);
    let mut s = TcpStream::connect(server.metrics_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap(); // as `nc -N` and `curl --http1.0` may do
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}

#[test]
fn per_lock_series_are_off_by_default_and_never_name_a_port() {
    let server = with_metrics(0);
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    for name in ["customer-4711/invoice", "customer-4712/invoice"] {
        assert!(matches!(a.call(&lock(name, None)), Response::Acquired { .. }));
    }
    b.send(&lock("customer-4711/invoice", None));
    assert_eq!(b.call(&Request::Ping(b"")), Response::Pong);
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    assert!(!body.contains("customer-"), "lock names leaked:\n{body}");
    assert!(!body.contains("name=") && !body.contains("holder="), "{body}");
    assert!(!body.contains(&a.label) && !body.contains("127.0.0.1:"), "ports leaked:\n{body}");
    assert!(
        series(&body, "officer_longest_hold_seconds").is_empty()
            && series(&body, "officer_queue_depth").is_empty()
    );
    // The aggregate gauges still answer "is anything stuck?".
    assert!(value(&body, "officer_oldest_hold_seconds") >= 0.0);
    assert_eq!(value(&body, "officer_max_queue_depth"), 1.0);
}

#[test]
fn per_lock_series_are_bounded_to_the_top_n_and_carry_only_the_name() {
    let server = with_metrics(2);
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    for i in 0..6 {
        assert!(matches!(a.call(&lock(&format!("k{i}"), None)), Response::Acquired { .. }));
    }
    for i in 0..4 {
        b.send(&lock(&format!("k{i}"), None));
    }
    assert_eq!(b.call(&Request::Ping(b"")), Response::Pong);
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    let holds = series(&body, "officer_longest_hold_seconds");
    let queues = series(&body, "officer_queue_depth");
    assert_eq!(holds.len(), 2, "{body}");
    assert_eq!(queues.len(), 2, "{body}");
    // Oldest first: k0 was granted first.
    assert!(holds[0].starts_with("officer_longest_hold_seconds{name=\"k0\"} "), "{holds:?}");
    for line in holds.iter().chain(&queues) {
        assert!(!line.contains("holder") && !line.contains(&a.label), "{line}");
        assert_eq!(line.matches('=').count(), 1, "one label only: {line}");
    }
    // Even a huge N is capped.
    let server = with_metrics(u32::MAX);
    let mut c = Raw::connect(server.addr());
    for i in 0..150 {
        assert!(matches!(c.call(&lock(&format!("n{i}"), None)), Response::Acquired { .. }));
    }
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    assert_eq!(series(&body, "officer_longest_hold_seconds").len(), 100);
}

#[test]
fn process_metrics_have_the_standard_names_and_build_info_is_there() {
    let server = with_metrics(0);
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"), "{body}");
    assert!(value(&body, "process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = value(&body, "process_start_time_seconds");
    // This test process started the server: a moment ago, not at the epoch or in the future.
    assert!(started <= now + 1.0 && started > now - 3600.0, "{started} vs {now}");
    let open = value(&body, "process_open_fds");
    assert!(open > 0.0 && value(&body, "process_max_fds") >= open);
    assert!(value(&body, "process_resident_memory_bytes") > 0.0);
    assert!(value(&body, "process_virtual_memory_bytes") >= value(&body, "process_resident_memory_bytes"));
    let build = format!("officer_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&body, &build), 1.0);
    assert!(body.contains("# TYPE officer_build_info gauge\n"));
    for old in ["officer_open_fds", "officer_resident_memory_bytes", "officer_uptime_seconds"] {
        assert!(series(&body, old).is_empty(), "{old} is still exported");
    }
}

#[test]
fn only_get_is_allowed() {
    let server = with_metrics(0);
    for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        let (head, _) =
            request(server.metrics_addr(), &format!("{method} /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{method}: {head}");
        assert!(head.contains("\r\nAllow: GET\r\n") || head.ends_with("\r\nAllow: GET"), "{method}: {head}");
    }
    let (head, _) = request(server.metrics_addr(), "SSH-2.0-OpenSSH_9.6\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = scrape(server.metrics_addr(), "/metrics?name[]=x");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn the_binary_takes_metrics_per_lock_and_refuses_more_than_100() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    let mut command = Command::new(env!("CARGO_BIN_EXE_officer"));
    command.args([
        "run",
        "-h",
        "127.0.0.1",
        "-p",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-per-lock",
        "1",
    ]);
    let mut child = command.arg("--state-file").arg(&state).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("officer printed its addresses").unwrap();
    let addr: SocketAddr = next().strip_prefix("officer listening on ").unwrap().parse().unwrap();
    let metrics_line = next();
    let metrics =
        metrics_line.strip_prefix("officer metrics on http://").and_then(|r| r.strip_suffix("/metrics"));
    let metrics: SocketAddr = metrics.unwrap_or_else(|| panic!("{metrics_line}")).parse().unwrap();
    let mut a = Raw::connect(addr);
    for name in ["one", "two"] {
        assert!(matches!(a.call(&lock(name, None)), Response::Acquired { .. }));
    }
    let (_, body) = scrape(metrics, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let holds = series(&body, "officer_longest_hold_seconds");
    assert_eq!(holds.len(), 1, "{body}");
    assert!(holds[0].starts_with("officer_longest_hold_seconds{name=\"one\"} "), "{holds:?}");

    let output = Command::new(env!("CARGO_BIN_EXE_officer"))
        .args(["run", "-h", "127.0.0.1", "-p", "0", "--metrics-per-lock", "101", "--state-file"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--metrics-per-lock"));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}

#[test]
fn a_stream_of_scrapes_does_not_walk_the_lock_table_each_time() {
    let server = with_metrics(3);
    let mut a = Raw::connect(server.addr());
    for i in 0..50 {
        assert!(matches!(a.call(&lock(&format!("w{i}"), None)), Response::Acquired { .. }));
    }
    // Scrapes back to back, as an attacker on the metrics port would send them.
    let mut bodies: Vec<String> = (0..30).map(|_| scrape(server.metrics_addr(), "/metrics").1).collect();
    let last = bodies.pop().unwrap();
    let scans = value(&last, "officer_metrics_table_scans_total");
    assert!((1.0..30.0).contains(&scans), "{scans} passes over the table for 30 scrapes");
    // A reused pass still reports every gauge, and hold times never go backwards.
    let mut previous = 0.0;
    for body in bodies.iter().chain([&last]) {
        assert_eq!(series(body, "officer_longest_hold_seconds").len(), 3);
        let oldest = value(body, "officer_oldest_hold_seconds");
        assert!(oldest >= previous, "{oldest} after {previous}");
        previous = oldest;
    }
}

/// The gauges by mode (README "Metrics") count what is held: names and grants per mode, and
/// the permits in use of the semaphores held with their limits summed.
#[test]
fn the_gauges_by_mode_count_held_names_grants_and_permits() {
    use officer::client::{Client, LockOptions};
    let server = with_metrics(0);
    let connect = || Client::connect("127.0.0.1", server.addr().port()).expect("connect");
    let (a, b) = (connect(), connect());
    a.lock("m/x", LockOptions::try_once()).expect("exclusive");
    a.lock("m/r", LockOptions::try_once().shared()).expect("reader");
    b.lock("m/r", LockOptions::try_once().shared()).expect("reader");
    a.lock("m/p", LockOptions::try_once().permits(2, 5)).expect("permits");
    b.lock("m/p", LockOptions::try_once().permits(1, 5)).expect("permits");
    let (_, body) = scrape(server.metrics_addr(), "/metrics");
    for (line, v) in [
        ("officer_locks_held_by_mode{mode=\"exclusive\"}", 1.0),
        ("officer_locks_held_by_mode{mode=\"shared\"}", 1.0),
        ("officer_locks_held_by_mode{mode=\"semaphore\"}", 1.0),
        ("officer_grants_by_mode{mode=\"exclusive\"}", 1.0),
        ("officer_grants_by_mode{mode=\"shared\"}", 2.0),
        ("officer_grants_by_mode{mode=\"semaphore\"}", 2.0),
        ("officer_semaphore_permits_in_use", 3.0),
        ("officer_semaphore_permits_limit", 5.0),
    ] {
        assert_eq!(value(&body, line), v, "{line} in\n{body}");
    }
}
