//! `--metrics-addr`: Prometheus text exposition at `/metrics`, served from the event loop.
//!
//! Scrapers are handled like any other non-blocking socket: the loop never waits on one. A
//! request is read until its blank line (at most 8 KiB), answered once, and the connection is
//! closed. Slots are few (16), so none may be held by a peer that sends nothing: a scrape must
//! send its request head within 1 s and finish within 5 s (both checked once a second), and
//! when every slot is taken a new connection pushes out the oldest one still without a head.
//! A scrape therefore gets through however many silent connections an attacker keeps open.
//!
//! Series have bounded label sets: no lock names unless `--metrics-per-lock N` asks for the
//! top N (and never a holder's ephemeral port). The longest hold and the deepest queue take a
//! pass over the lock table (O(locks)); it is reused for a second, so however often scrapes
//! come, the table is walked at most once a second on their behalf.
//!
//! The text is rendered (exposition.rs) from a `Snapshot` (snapshot.rs) taken once per
//! answer: the rendering never reads the server, so it is tested with hand-built snapshots.

mod exposition;
mod modes;
mod sessions;

use std::io::{ErrorKind, Read, Write};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

pub(super) use exposition::render;
pub(super) use modes::{ModeValue, MODES};
pub(super) use sessions::{SessionFigures, SESSIONS};

use super::snapshot::{ScrapeCounts, TopLocks};
use super::Server;
use crate::locks::ModeCensus;
use crate::protocol::{Response, TopEntry};
use crate::wheel::Tick;

/// Tokens of scrape connections start here, far above any connection slab key.
pub(super) const METRICS_BASE: usize = 1 << 40;
/// Concurrent scrapes. A new one beyond this replaces the oldest without a request head, or
/// is refused when every slot is sending an answer.
const MAX_SCRAPES: usize = 16;
const MAX_REQUEST: usize = 8 * 1024;
/// The request head must arrive this soon after the connect: a silent peer gives its slot up.
const HEAD_DEADLINE_MS: Tick = 1_000;
/// The whole exchange must be over this soon, so stalled readers cannot hold slots forever.
const SCRAPE_DEADLINE_MS: Tick = 5_000;
/// How long one pass over the lock table serves the hold and queue gauges of later scrapes.
const TOP_REUSE_MS: Tick = 1_000;
/// The most per-lock series `--metrics-per-lock` may ask for.
pub const MAX_PER_LOCK: u32 = 100;

pub(super) struct Scrape {
    stream: TcpStream,
    /// Accept order: the oldest slot without a head is the one given up when all are taken.
    serial: u64,
    accepted: Tick,
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` already searched for the blank line.
    scanned: usize,
    /// The answer; empty until the head is complete.
    out: Vec<u8>,
    pos: usize,
}

impl Scrape {
    fn has_head(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Why scrape connections ended without an answer, for `officer_metrics_scrapes_dropped_total`.
#[derive(Debug, Default)]
struct Dropped {
    evicted: u64,
    head_timeout: u64,
    deadline: u64,
    busy: u64,
    bad_request: u64,
    closed: u64,
}

impl Dropped {
    /// Each counter with its `reason` label, in exposition order. The destructuring names
    /// every field, so a new reason does not compile until it is given a label here.
    fn by_reason(&self) -> [(&'static str, u64); 6] {
        let Dropped { evicted, head_timeout, deadline, busy, bad_request, closed } = *self;
        [
            ("evicted", evicted),
            ("head_timeout", head_timeout),
            ("deadline", deadline),
            ("busy", busy),
            ("bad_request", bad_request),
            ("closed", closed),
        ]
    }
}

/// One pass over the lock table for the hold, queue and mode gauges, reused by the scrapes of
/// the next TOP_REUSE_MS: a stream of scrapes costs at most one O(locks) pass a second.
struct TopPass {
    at: Tick,
    longest_held: Vec<TopEntry>,
    deepest_queues: Vec<TopEntry>,
    modes: ModeCensus,
}

pub(super) struct Metrics {
    listener: TcpListener,
    scrapes: slab::Slab<Scrape>,
    next_serial: u64,
    served: u64,
    dropped: Dropped,
    top: Option<TopPass>,
    table_scans: u64,
}

impl Metrics {
    pub(super) fn new(listener: TcpListener) -> Metrics {
        Metrics {
            listener,
            scrapes: slab::Slab::new(),
            next_serial: 0,
            served: 0,
            dropped: Dropped::default(),
            top: None,
            table_scans: 0,
        }
    }

    pub(super) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    fn remove(&mut self, registry: &Registry, key: usize) {
        let mut scrape = self.scrapes.remove(key);
        let _ = registry.deregister(&mut scrape.stream);
    }

    /// Frees the slot of the oldest scrape that has not sent its request head; false when
    /// every slot is answering one (those end by their deadline).
    fn evict_oldest_without_head(&mut self, registry: &Registry) -> bool {
        let oldest = self.scrapes.iter().filter(|(_, s)| !s.has_head()).min_by_key(|(_, s)| s.serial);
        let Some((key, _)) = oldest else { return false };
        self.remove(registry, key);
        self.dropped.evicted += 1;
        true
    }

    fn admit(&mut self, registry: &Registry, mut stream: TcpStream, now: Tick) {
        if self.scrapes.len() >= MAX_SCRAPES && !self.evict_oldest_without_head(registry) {
            self.dropped.busy += 1;
            // One non-blocking try at telling it why; a peer may cause this at will, so the
            // log line is debug (the counter is the signal).
            let busy = http_response("503 Service Unavailable", "text/plain", "Retry-After: 1\r\n", "busy\n");
            let _ = stream.write(busy.as_bytes());
            debug!("refusing metrics scrape: every slot is answering max={MAX_SCRAPES}");
            return;
        }
        let entry = self.scrapes.vacant_entry();
        let token = Token(METRICS_BASE + entry.key());
        if registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_ok() {
            let serial = self.next_serial;
            self.next_serial += 1;
            entry.insert(Scrape {
                stream,
                serial,
                accepted: now,
                inbuf: Vec::new(),
                scanned: 0,
                out: Vec::new(),
                pos: 0,
            });
        }
    }

    /// Drops scrapes past their head or whole-exchange deadline.
    fn expire(&mut self, registry: &Registry, now: Tick) {
        // At most MAX_SCRAPES entries: the scan and the list are bounded.
        let stale: Vec<(usize, bool)> = self
            .scrapes
            .iter()
            .filter_map(|(key, s)| {
                let head_late = !s.has_head() && s.accepted + HEAD_DEADLINE_MS <= now;
                (head_late || s.accepted + SCRAPE_DEADLINE_MS <= now).then_some((key, head_late))
            })
            .collect();
        for (key, head_late) in stale {
            self.remove(registry, key);
            if head_late {
                self.dropped.head_timeout += 1;
            } else {
                self.dropped.deadline += 1;
            }
        }
    }
}

/// What reading a scrape's socket came to.
enum HeadRead {
    /// More of the head may come.
    Pending,
    /// The head is complete (the peer may have closed its side after it).
    Head,
    /// EOF or an error before a complete head.
    Closed,
    TooLarge,
}

/// The answer a request head gets.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn read_head(scrape: &mut Scrape) -> HeadRead {
    let mut chunk = [0u8; 2048];
    let mut eof = false;
    loop {
        match scrape.stream.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => scrape.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return HeadRead::Closed,
        }
        if scrape.inbuf.len() > MAX_REQUEST {
            break;
        }
    }
    // Search only the new bytes (and 2 before them, for a blank line split across reads).
    let from = scrape.scanned.saturating_sub(2);
    scrape.scanned = scrape.inbuf.len();
    if has_blank_line(&scrape.inbuf[from..]) {
        HeadRead::Head
    } else if scrape.inbuf.len() > MAX_REQUEST {
        HeadRead::TooLarge
    } else if eof {
        HeadRead::Closed
    } else {
        HeadRead::Pending
    }
}

/// The end of an HTTP head: an empty line (CRLF as the standard says, bare LF tolerated).
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// The request line decides: GET /metrics (any query) is served, another GET path is 404,
/// another method 405, and a line that is not HTTP 400.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !version.starts_with(b"HTTP/1.") {
        return Route::BadRequest;
    }
    if method != b"GET" {
        return Route::MethodNotAllowed;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path == b"/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

impl Server {
    pub(super) fn metrics_accept(&mut self, now: Tick) {
        let Some(metrics) = &mut self.metrics else { return };
        let registry = self.poll.registry();
        // Drained to WouldBlock (edge-triggered).
        loop {
            match metrics.listener.accept() {
                Ok((stream, _)) => metrics.admit(registry, stream, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("metrics accept failed error={e}");
                    return;
                }
            }
        }
    }

    /// Reads the request head, renders the answer once, writes what the socket takes.
    pub(super) fn metrics_event(&mut self, key: usize, now: Tick) {
        let Some(metrics) = self.metrics.as_mut() else { return };
        let Some(scrape) = metrics.scrapes.get_mut(key) else { return };
        if !scrape.has_head() {
            match read_head(scrape) {
                HeadRead::Pending => return,
                HeadRead::Closed => return self.drop_scrape(key, |d| &mut d.closed),
                HeadRead::TooLarge => return self.drop_scrape(key, |d| &mut d.bad_request),
                HeadRead::Head => {
                    let route = route(&scrape.inbuf);
                    let answer = self.answer(&route, now);
                    let Some(scrape) = self.metrics.as_mut().and_then(|m| m.scrapes.get_mut(key)) else {
                        return;
                    };
                    scrape.inbuf = Vec::new();
                    scrape.out = answer.into_bytes();
                }
            }
        }
        self.write_answer(key);
    }

    fn write_answer(&mut self, key: usize) {
        let Some(metrics) = self.metrics.as_mut() else { return };
        let Some(scrape) = metrics.scrapes.get_mut(key) else { return };
        while scrape.pos < scrape.out.len() {
            match scrape.stream.write(&scrape.out[scrape.pos..]) {
                Ok(n) if n > 0 => scrape.pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => return self.drop_scrape(key, |d| &mut d.closed),
            }
        }
        metrics.served += 1;
        metrics.remove(self.poll.registry(), key);
    }

    fn drop_scrape(&mut self, key: usize, reason: impl FnOnce(&mut Dropped) -> &mut u64) {
        let Some(metrics) = self.metrics.as_mut() else { return };
        metrics.remove(self.poll.registry(), key);
        *reason(&mut metrics.dropped) += 1;
    }

    fn answer(&mut self, route: &Route, now: Tick) -> String {
        match route {
            Route::Metrics => http_response(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                &render(&self.metrics_snapshot(now)),
            ),
            Route::NotFound => {
                http_response("404 Not Found", "text/plain", "", "only GET /metrics is served here\n")
            }
            Route::MethodNotAllowed => http_response(
                "405 Method Not Allowed",
                "text/plain",
                "Allow: GET\r\n",
                "only GET is allowed\n",
            ),
            Route::BadRequest => {
                http_response("400 Bad Request", "text/plain", "", "not an HTTP/1 request\n")
            }
        }
    }

    /// Drops scrapes that are past their deadlines (called from housekeeping, once a second).
    pub(super) fn expire_scrapes(&mut self, now: Tick) {
        if let Some(metrics) = &mut self.metrics {
            metrics.expire(self.poll.registry(), now);
        }
    }

    /// The longest holds, deepest queues and the census by mode `/metrics` shows: from the
    /// endpoint's pass when it is at most TOP_REUSE_MS old (hold times advanced to `now`; a lock
    /// released since may still show, and the census be as old, until the next pass), else from
    /// a new pass, which is counted.
    pub(super) fn top_locks(&mut self, now: Tick) -> TopLocks {
        let per_lock = self.config.metrics_per_lock.min(MAX_PER_LOCK);
        let n = per_lock.max(1);
        let table = {
            #[cfg(feature = "cluster")]
            let table = match &self.cluster {
                Some(cluster) => cluster.table(),
                None => &self.table,
            };
            #[cfg(not(feature = "cluster"))]
            let table = &self.table;
            table
        };
        let scan = || {
            let modes = table.mode_census();
            match table.top(now, n) {
                Response::Top { longest_held, deepest_queues } => (longest_held, deepest_queues, modes),
                _ => (Vec::new(), Vec::new(), modes),
            }
        };
        let (longest_held, deepest_queues, modes) = match &mut self.metrics {
            None => scan(),
            Some(metrics) => match metrics.top.as_ref().filter(|p| now < p.at + TOP_REUSE_MS) {
                Some(pass) => {
                    let age = now.saturating_sub(pass.at);
                    let held =
                        pass.longest_held.iter().map(|e| TopEntry { held_ms: e.held_ms + age, ..e.clone() });
                    (held.collect(), pass.deepest_queues.clone(), pass.modes)
                }
                None => {
                    let (longest_held, deepest_queues, modes) = scan();
                    metrics.table_scans += 1;
                    metrics.top = Some(TopPass {
                        at: now,
                        longest_held: longest_held.clone(),
                        deepest_queues: deepest_queues.clone(),
                        modes,
                    });
                    (longest_held, deepest_queues, modes)
                }
            },
        };
        TopLocks { per_lock, longest_held, deepest_queues, modes }
    }

    /// The endpoint's own counters, when it is enabled.
    pub(super) fn scrape_counts(&self) -> Option<ScrapeCounts> {
        let metrics = self.metrics.as_ref()?;
        Some(ScrapeCounts {
            served: metrics.served,
            table_scans: metrics.table_scans,
            dropped: metrics.dropped.by_reason(),
        })
    }
}

/// `extra` is more header lines, each ending in CRLF.
fn http_response(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::snapshot::Snapshot;

    /// A scrape connection as the server holds it, and the peer's end.
    fn pair(peers: &std::net::TcpListener) -> (TcpStream, std::net::TcpStream) {
        let client = std::net::TcpStream::connect(peers.local_addr().unwrap()).unwrap();
        let (server_end, _) = peers.accept().unwrap();
        server_end.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server_end), client)
    }

    #[test]
    fn slots_go_to_headless_peers_last_and_a_full_house_is_told_503() {
        let poll = mio::Poll::new().unwrap();
        let registry = poll.registry();
        let mut metrics = Metrics::new(TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        let peers = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for _ in 0..MAX_SCRAPES {
            let (stream, client) = pair(&peers);
            metrics.admit(registry, stream, 0);
            clients.push(client);
        }
        // Every slot but the second has sent its head and is being answered.
        let keys: Vec<usize> = metrics.scrapes.iter().map(|(k, _)| k).collect();
        let headless = keys[1];
        for &k in &keys {
            if k != headless {
                metrics.scrapes[k].out = b"answer".to_vec();
            }
        }
        let (stream, newcomer) = pair(&peers);
        metrics.admit(registry, stream, 10);
        assert_eq!(
            (metrics.scrapes.len(), metrics.dropped.evicted, metrics.dropped.busy),
            (MAX_SCRAPES, 1, 0)
        );
        assert!(!metrics.scrapes.iter().any(|(_, s)| s.serial == 1), "the headless slot went");
        // Now every slot is answering except the newcomer's; give it a head too.
        let newest = metrics.scrapes.iter().max_by_key(|(_, s)| s.serial).map(|(k, _)| k).unwrap();
        metrics.scrapes[newest].out = b"answer".to_vec();
        let (stream, mut refused) = pair(&peers);
        metrics.admit(registry, stream, 20);
        assert_eq!((metrics.scrapes.len(), metrics.dropped.busy), (MAX_SCRAPES, 1));
        refused.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut text = String::new();
        refused.read_to_string(&mut text).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && text.contains("Retry-After: 1"),
            "{text}"
        );
        // Deadlines: nothing headless is left, so only the 5 s deadline ends the others.
        metrics.expire(registry, HEAD_DEADLINE_MS + 10);
        assert_eq!((metrics.scrapes.len(), metrics.dropped.head_timeout), (MAX_SCRAPES, 0));
        metrics.expire(registry, SCRAPE_DEADLINE_MS + 10);
        assert_eq!((metrics.scrapes.len(), metrics.dropped.deadline), (0, MAX_SCRAPES as u64));
        drop((clients, newcomer));
    }

    #[test]
    fn every_dropped_scrape_reason_is_rendered_with_its_own_count() {
        let mut metrics = Metrics::new(TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        metrics.dropped =
            Dropped { evicted: 1, head_timeout: 2, deadline: 3, busy: 4, bad_request: 5, closed: 6 };
        let scrapes = ScrapeCounts { served: 0, table_scans: 0, dropped: metrics.dropped.by_reason() };
        let m = render(&Snapshot { scrapes: Some(scrapes), ..Snapshot::default() });
        let reasons = ["evicted", "head_timeout", "deadline", "busy", "bad_request", "closed"];
        for (i, reason) in reasons.iter().enumerate() {
            let series = format!("officer_metrics_scrapes_dropped_total{{reason=\"{reason}\"}} {}\n", i + 1);
            assert!(m.contains(&series), "{series:?} missing:\n{m}");
        }
        assert_eq!(m.matches("officer_metrics_scrapes_dropped_total{").count(), reasons.len(), "{m}");
    }

    #[test]
    fn request_lines_are_routed_by_method_and_path() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n"), Route::Metrics);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SSH-2.0\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert!(has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(has_blank_line(b"GET / HTTP/1.1\n\n"));
        assert!(!has_blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!has_blank_line(b"GET /metr"));
    }
}
