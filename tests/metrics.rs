//! `/metrics` over HTTP on loopback: the counters match the traffic sent, the top-N gauges
//! name the busiest locks, and a scraper cannot disturb lock clients.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use officer::protocol::{LockRequest, Request, Response};
use support::{Raw, TestServer, WAIT};

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
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
    let server = TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
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
    assert!(body.contains("officer_longest_hold_seconds{name=\"m5\""), "{body}");
    assert!(value(&body, "officer_open_fds") > 0.0);
    assert!(value(&body, "officer_resident_memory_bytes") > 0.0);

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
fn stalled_scrapers_are_dropped_after_their_deadline() {
    let server = TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap()));
    // Fill every scrape slot with a scraper that never finishes its request.
    let stalled: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(server.metrics_addr()).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    let started = std::time::Instant::now();
    // Scrapes are refused while the slots are taken, and served again once the stalled ones
    // pass their 5 s deadline.
    loop {
        assert!(started.elapsed() < WAIT, "scraping never recovered");
        let mut s = TcpStream::connect(server.metrics_addr()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = write!(s, "GET /metrics HTTP/1.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(3), "slots were never full?");
    drop(stalled);
}
