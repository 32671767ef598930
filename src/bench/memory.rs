//! Memory measurements: server resident memory per held lock and per idle connection.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use serde_json::json;

use super::driver::{BenchConn, READ_WRITE};
use super::{lock_name, process_rss, Target};
use crate::protocol::{LockRequest, Request, Response};
use crate::server::net::Stream;

#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub what: &'static str,
    pub count: u64,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl MemoryReport {
    pub fn bytes_per_item(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.count.max(1) as f64
    }

    pub fn human(&self) -> String {
        format!(
            "{}: {} items, server RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes each",
            self.what,
            self.count,
            self.rss_before as f64 / 1048576.0,
            self.rss_after as f64 / 1048576.0,
            self.bytes_per_item()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({"what": self.what, "count": self.count, "rss_before": self.rss_before,
               "rss_after": self.rss_after, "bytes_per_item": self.bytes_per_item()})
    }
}

fn rss(pid: u32) -> io::Result<u64> {
    process_rss(pid).ok_or_else(|| io::Error::new(ErrorKind::NotFound, format!("no /proc/{pid}/status")))
}

/// Holds `count` locks with 16-byte names from one connection and measures the server's RSS.
pub fn measure_hold(target: &Target, server_pid: u32, count: u64) -> io::Result<MemoryReport> {
    let mut poll = Poll::new()?;
    let mut sock = Stream::connect(target)?;
    poll.registry().register(&mut sock, Token(0), READ_WRITE)?;
    let mut conn = BenchConn::new(sock, 1);
    let mut events = Events::with_capacity(64);
    wait(&mut poll, &mut events, &mut conn, |c| c.is_greeted(), |_| {})?;
    let rss_before = rss(server_pid)?;
    let mut sent = 0u64;
    let mut acquired = 0u64;
    const WINDOW: u64 = 4096;
    let deadline = Instant::now() + Duration::from_secs(600);
    while acquired < count {
        if Instant::now() > deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "hold measurement took too long"));
        }
        let mut batch = Vec::new();
        while sent < count && sent - acquired < WINDOW {
            let name = lock_name(sent);
            Request::Lock(LockRequest { name: &name, timeout_ms: None, queue_max: None })
                .encode((sent % 0xFFFF_FFFE + 1) as u32, &mut batch);
            sent += 1;
        }
        conn.queue(&batch);
        conn.flush()?;
        poll_once(&mut poll, &mut events, &mut conn, |r| {
            if matches!(r, Response::Acquired { .. }) {
                acquired += 1;
            }
        })?;
    }
    Ok(MemoryReport { what: "held locks", count, rss_before, rss_after: rss(server_pid)? })
}

/// Opens `count` connections, completes each handshake, and measures the server's RSS.
pub fn measure_idle(target: &Target, server_pid: u32, count: usize) -> io::Result<MemoryReport> {
    let rss_before = rss(server_pid)?;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(count);
    let mut events = Events::with_capacity(1024);
    for i in 0..count {
        let mut sock = Stream::connect(target)?;
        poll.registry().register(&mut sock, Token(i), READ_WRITE)?;
        let mut conn = BenchConn::new(sock, 1);
        conn.flush()?;
        conns.push(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while conns.iter().any(|c| !c.is_greeted()) {
        if Instant::now() > deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "handshakes took too long"));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            conn.read_frames(|c, _, r| c.on_hello(&r))?;
            conn.flush()?;
        }
    }
    let rss_after = rss(server_pid)?;
    drop(conns);
    Ok(MemoryReport { what: "idle connections", count: count as u64, rss_before, rss_after })
}

fn poll_once(
    poll: &mut Poll,
    events: &mut Events,
    conn: &mut BenchConn,
    mut on_response: impl FnMut(Response),
) -> io::Result<()> {
    poll.poll(events, Some(Duration::from_millis(50)))?;
    conn.read_frames(|c, _, r| {
        c.on_hello(&r);
        on_response(r)
    })?;
    conn.flush()
}

fn wait(
    poll: &mut Poll,
    events: &mut Events,
    conn: &mut BenchConn,
    done: impl Fn(&BenchConn) -> bool,
    mut on_response: impl FnMut(Response),
) -> io::Result<()> {
    conn.flush()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(conn) {
        if Instant::now() > deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "no handshake from the server"));
        }
        poll_once(poll, events, conn, &mut on_response)?;
    }
    Ok(())
}
