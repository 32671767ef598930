//! `--metrics-addr`: Prometheus text exposition at `/metrics`, served from the event loop.
//!
//! Scrapers are handled like any other non-blocking socket: the loop never waits on one. A
//! request is read until its blank line (at most 8 KiB), answered once, and the connection is
//! closed. Rendering walks the table only for the top-N gauges, which is what a scrape is for.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use super::Server;
use crate::locks::Histogram;
use crate::protocol::Response;
use crate::wheel::Tick;

/// Tokens of scrape connections start here, far above any connection slab key.
pub(super) const METRICS_BASE: usize = 1 << 40;
/// Concurrent scrapes; more are refused (closed) at once.
const MAX_SCRAPES: usize = 16;
const MAX_REQUEST: usize = 8 * 1024;
/// A scrape not finished this long after it connected is dropped, so stalled scrapers cannot
/// hold the slots forever.
const SCRAPE_DEADLINE_MS: Tick = 5_000;
/// Locks named in the top-N gauges.
const TOP_N: u32 = 5;

pub(super) struct Scrape {
    stream: TcpStream,
    deadline: Tick,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
}

pub(super) struct Metrics {
    pub listener: TcpListener,
    pub scrapes: slab::Slab<Scrape>,
    pub served: u64,
}

impl Server {
    pub(super) fn metrics_accept(&mut self, now: Tick) {
        let Some(metrics) = &mut self.metrics else { return };
        // Drained to WouldBlock (edge-triggered); scrapes beyond the limit are closed at once.
        loop {
            match metrics.listener.accept() {
                Ok((mut stream, _)) => {
                    if metrics.scrapes.len() >= MAX_SCRAPES {
                        warn!("refusing metrics scrape: too many in progress max={MAX_SCRAPES}");
                        continue;
                    }
                    let entry = metrics.scrapes.vacant_entry();
                    let token = Token(METRICS_BASE + entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, token, interest).is_ok() {
                        let deadline = now + SCRAPE_DEADLINE_MS;
                        entry.insert(Scrape { stream, deadline, inbuf: Vec::new(), out: Vec::new(), pos: 0 });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("metrics accept failed error={e}");
                    return;
                }
            }
        }
    }

    /// Reads the request, renders the answer once, writes what the socket takes.
    pub(super) fn metrics_event(&mut self, key: usize, now: Tick) {
        let Some(scrape) = self.metrics.as_mut().and_then(|m| m.scrapes.get_mut(key)) else { return };
        let mut done = false;
        if scrape.out.is_empty() {
            let mut chunk = [0u8; 2048];
            loop {
                match scrape.stream.read(&mut chunk) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => scrape.inbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
                if scrape.inbuf.len() > MAX_REQUEST {
                    done = true;
                    break;
                }
            }
            if !done && scrape.inbuf.windows(4).any(|w| w == b"\r\n\r\n") {
                let path_ok =
                    scrape.inbuf.starts_with(b"GET /metrics ") || scrape.inbuf.starts_with(b"GET /metrics?");
                let response = if path_ok {
                    http_response(
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        &self.render_metrics(now),
                    )
                } else {
                    http_response("404 Not Found", "text/plain", "only GET /metrics is served here\n")
                };
                let Some(scrape) = self.metrics.as_mut().and_then(|m| m.scrapes.get_mut(key)) else { return };
                scrape.out = response.into_bytes();
            }
        }
        let Some(metrics) = self.metrics.as_mut() else { return };
        let Some(scrape) = metrics.scrapes.get_mut(key) else { return };
        while !done && scrape.pos < scrape.out.len() {
            match scrape.stream.write(&scrape.out[scrape.pos..]) {
                Ok(n) if n > 0 => scrape.pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => done = true,
            }
        }
        if done || (!scrape.out.is_empty() && scrape.pos == scrape.out.len()) {
            if scrape.pos == scrape.out.len() && !scrape.out.is_empty() {
                metrics.served += 1;
            }
            let mut scrape = metrics.scrapes.remove(key);
            let _ = self.poll.registry().deregister(&mut scrape.stream);
        }
    }

    /// Drops scrapes that are past their deadline (called from housekeeping, once a second).
    pub(super) fn expire_scrapes(&mut self, now: Tick) {
        let Some(metrics) = &mut self.metrics else { return };
        let stale: Vec<usize> =
            metrics.scrapes.iter().filter(|(_, s)| s.deadline <= now).map(|(key, _)| key).collect();
        for key in stale {
            let mut scrape = metrics.scrapes.remove(key);
            let _ = self.poll.registry().deregister(&mut scrape.stream);
        }
    }

    /// The exposition text: counters, gauges, histograms, top-N locks, process basics.
    pub(super) fn render_metrics(&self, now: Tick) -> String {
        let t = self.table.stats();
        let s = &self.stats;
        let mut m = String::with_capacity(8192);
        header(&mut m, "officer_lock_results_total", "counter", "Lock and unlock outcomes by result.");
        for (result, v) in t.results() {
            let _ = writeln!(m, "officer_lock_results_total{{result=\"{result}\"}} {v}");
        }
        gauge(&mut m, "officer_connections", "Connections open now.", self.conns.len() as u64);
        counter(&mut m, "officer_connections_accepted_total", "Connections accepted.", s.accepted);
        header(&mut m, "officer_connections_closed_total", "counter", "Connections closed, by reason.");
        let closed = [
            ("eof", s.closed_eof),
            ("error", s.closed_error),
            ("idle", s.closed_idle),
            ("protocol", s.closed_protocol),
            ("output_overflow", s.closed_output_overflow),
            ("auth", s.closed_auth),
            ("shutdown", s.closed_shutdown),
            ("limit", s.refused),
        ];
        for (reason, v) in closed {
            let _ = writeln!(m, "officer_connections_closed_total{{reason=\"{reason}\"}} {v}");
        }
        gauge(&mut m, "officer_locks_held", "Locks held now.", t.locks_held as u64);
        gauge(&mut m, "officer_waiters", "Lock requests waiting now.", t.waiters as u64);
        counter(&mut m, "officer_requests_total", "Requests decoded.", s.requests);
        counter(&mut m, "officer_bad_requests_total", "Requests answered with an error.", s.bad_requests);
        counter(&mut m, "officer_received_bytes_total", "Bytes read from clients.", s.bytes_in);
        counter(&mut m, "officer_sent_bytes_total", "Bytes written to clients.", s.bytes_out);
        gauge(&mut m, "officer_last_token", "Highest fencing token issued.", t.last_token);
        histogram(&mut m, "officer_lock_wait_seconds", "Time granted waiters waited.", &t.wait_ms);
        histogram(&mut m, "officer_lock_hold_seconds", "Time locks were held until released.", &t.hold_ms);
        self.render_top(&mut m, now);
        render_process(&mut m, now);
        m
    }

    fn render_top(&self, m: &mut String, now: Tick) {
        let Response::Top { longest_held, deepest_queues } = self.table.top(now, TOP_N) else { return };
        header(m, "officer_longest_hold_seconds", "gauge", "The locks held longest, by name and holder.");
        for e in &longest_held {
            let _ = writeln!(
                m,
                "officer_longest_hold_seconds{{name=\"{}\",holder=\"{}\"}} {:.3}",
                escape(&e.name),
                escape(&e.holder),
                e.held_ms as f64 / 1000.0
            );
        }
        header(m, "officer_queue_depth", "gauge", "Waiters of the locks with the deepest queues.");
        for e in &deepest_queues {
            let _ = writeln!(m, "officer_queue_depth{{name=\"{}\"}} {}", escape(&e.name), e.waiters);
        }
    }
}

fn render_process(m: &mut String, now: Tick) {
    gauge_f(m, "officer_uptime_seconds", "Seconds since the server started.", now as f64 / 1000.0);
    if let Some(fds) = crate::procfs::open_fds() {
        gauge(m, "officer_open_fds", "Open file descriptors.", fds);
    }
    if let Some(rss) = crate::procfs::process_rss(std::process::id()) {
        gauge(m, "officer_resident_memory_bytes", "Resident set size.", rss);
    }
}

fn header(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(m: &mut String, name: &str, help: &str, v: u64) {
    header(m, name, "counter", help);
    let _ = writeln!(m, "{name} {v}");
}

fn gauge(m: &mut String, name: &str, help: &str, v: u64) {
    header(m, name, "gauge", help);
    let _ = writeln!(m, "{name} {v}");
}

fn gauge_f(m: &mut String, name: &str, help: &str, v: f64) {
    header(m, name, "gauge", help);
    let _ = writeln!(m, "{name} {v:.3}");
}

fn histogram(m: &mut String, name: &str, help: &str, h: &Histogram) {
    header(m, name, "histogram", help);
    for (bound, count) in h.cumulative() {
        match bound {
            Some(ms) => {
                let _ = writeln!(m, "{name}_bucket{{le=\"{}\"}} {count}", ms as f64 / 1000.0);
            }
            None => {
                let _ = writeln!(m, "{name}_bucket{{le=\"+Inf\"}} {count}");
            }
        }
    }
    let _ = writeln!(m, "{name}_sum {:.3}\n{name}_count {}", h.sum_ms as f64 / 1000.0, h.count);
}

/// Label values escape backslash, double quote and newline (the exposition format's rule).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn histogram_lines_are_cumulative_with_inf() {
        let mut h = Histogram::default();
        h.record(3);
        h.record(2000);
        let mut m = String::new();
        histogram(&mut m, "x", "help", &h);
        assert!(m.contains("x_bucket{le=\"0.005\"} 1\n"), "{m}");
        assert!(m.contains("x_bucket{le=\"+Inf\"} 2\n"), "{m}");
        assert!(m.contains("x_count 2\n"), "{m}");
    }
}
