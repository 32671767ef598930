//! `officer bench --mode bystander`: one hostile pattern against a running server while an
//! unrelated client pings it, one PING in flight at a time.
//!
//! It checks the server's central rule from the outside: no request, timer batch or disconnect
//! may cost more than a bounded amount of work and memory before the loop serves others. The
//! report gives the bystander's ping latency while the burst runs (p50 / p99 / max) and the
//! server's resident memory before the hostile client started, at its peak, and once the burst
//! is over and its clients are gone (after `settle`).
//!
//! Blocking sockets and threads are enough here: what is measured is the server's loop, and
//! the patterns are mostly "send a lot, then wait".

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::{lock_name, process_rss, Target};
use crate::protocol::{
    split_frame, Hello, ListRequest, LockRequest, Request, Response, SessionOpen, SessionResume,
    MAX_FRAME_CEILING, PROTOCOL_VERSION,
};

/// What the hostile client does (also `officer bench --pattern`, whose help is these lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// One connection holds --count locks, pipelines --requests MY_LOCKS and never reads.
    MyLocksUnread,
    /// One connection holds --count locks and sends --requests MY_LOCKS, reading every answer.
    MyLocksRead,
    /// One connection holds --count locks; another pipelines --requests LOCKS and never reads.
    ListingUnread,
    /// --count connections wait on one held name with timeouts that all end at the same tick.
    Timeouts,
    /// --count connections queue on one held name; another sends --requests LOCKs with
    /// `queue_max` 1, each answered QUEUE_MAXED with the queue.
    QueueMaxed,
    /// One connection holding --count locks disconnects.
    Disconnect,
    /// --count connections holding 10 locks each disconnect together.
    MassDisconnect,
    /// A network partition: --count resumable sessions holding 10 locks each lose their
    /// connections together and are kept detached (the server needs `--max-session-grace`).
    SessionsDetach,
    /// The partition heals: --count detached sessions holding 10 locks each are resumed
    /// together by new connections.
    SessionsResume,
}

impl Pattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::MyLocksUnread => "my-locks-unread",
            Pattern::MyLocksRead => "my-locks-read",
            Pattern::ListingUnread => "listing-unread",
            Pattern::Timeouts => "timeouts",
            Pattern::QueueMaxed => "queue-maxed",
            Pattern::Disconnect => "disconnect",
            Pattern::MassDisconnect => "mass-disconnect",
            Pattern::SessionsDetach => "sessions-detach",
            Pattern::SessionsResume => "sessions-resume",
        }
    }
}

/// Parameters of one bystander run.
#[derive(Debug, Clone)]
pub struct BystanderConfig {
    pub target: Target,
    pub pattern: Pattern,
    /// Locks held or connections opened, by pattern.
    pub count: u64,
    /// Requests the hostile client sends, by pattern.
    pub requests: u64,
    /// The server process, for its resident memory.
    pub server_pid: u32,
    /// How long to keep measuring after an unread burst was sent.
    pub window: Duration,
    /// How long after the burst (and its clients) ended the memory is read again.
    pub settle: Duration,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct BystanderReport {
    pub pattern: Pattern,
    pub count: u64,
    pub requests: u64,
    /// From the burst's start to its end as the hostile side saw it.
    pub burst: Duration,
    /// Bystander pings answered during the burst, and their latency in microseconds.
    pub pings: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Server RSS before the hostile client connected, at the highest sample, and `settle`
    /// after the burst's clients were gone.
    pub rss_base: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
}

impl BystanderReport {
    pub fn human(&self) -> String {
        let mib = |b: u64| b as f64 / 1048576.0;
        format!(
            "{}: count {} requests {}, burst {:.0} ms; bystander {} pings p50 {} us p99 {} us max {} us; \
             server RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after ({:.2}x)",
            self.pattern.as_str(),
            self.count,
            self.requests,
            self.burst.as_secs_f64() * 1000.0,
            self.pings,
            self.p50_us,
            self.p99_us,
            self.max_us,
            mib(self.rss_base),
            mib(self.rss_peak),
            mib(self.rss_after),
            self.rss_after as f64 / self.rss_base.max(1) as f64,
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "pattern": self.pattern.as_str(), "count": self.count, "requests": self.requests,
            "burst_ms": self.burst.as_secs_f64() * 1000.0, "pings": self.pings,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us,
            "rss_base": self.rss_base, "rss_peak": self.rss_peak, "rss_after": self.rss_after,
        })
    }
}

/// Runs one pattern and returns what the bystander saw.
pub fn run_bystander(config: &BystanderConfig) -> io::Result<BystanderReport> {
    let rss = || {
        process_rss(config.server_pid)
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, format!("no /proc/{}", config.server_pid)))
    };
    let mut observer = Peer::connect(&config.target, 0)?;
    observer.greet()?;
    let rss_base = rss()?;
    let sampler = Sampler::start(config.server_pid);
    let pinger = Pinger::start(&config.target)?;
    let mut run = Run { config, pinger: &pinger, observer: &mut observer, burst: Duration::ZERO };
    let outcome = run.pattern();
    let burst = run.burst;
    let hist = pinger.stop();
    outcome?;
    // The hostile clients are gone: wait until the table agrees, then let housekeeping work.
    wait_stat(&mut observer, "locks_held", |v| v == 0, Duration::from_secs(120))?;
    wait_stat(&mut observer, "connections", |v| v <= 1, Duration::from_secs(120))?;
    thread::sleep(config.settle);
    let rss_after = rss()?;
    Ok(BystanderReport {
        pattern: config.pattern,
        count: config.count,
        requests: config.requests,
        burst,
        pings: hist.len(),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        rss_base,
        rss_peak: sampler.stop().max(rss_after),
        rss_after,
    })
}

/// One run: sets its pattern up, starts the bystander's recording at the burst, ends it after.
struct Run<'a> {
    config: &'a BystanderConfig,
    pinger: &'a Pinger,
    observer: &'a mut Peer,
    burst: Duration,
}

impl Run<'_> {
    fn pattern(&mut self) -> io::Result<()> {
        let (count, requests) = (self.config.count, self.config.requests);
        match self.config.pattern {
            Pattern::MyLocksUnread => {
                let mut holder = self.holder(count)?;
                self.unread_burst(&mut holder, requests, |rid, out| Request::MyLocks.encode(rid, out))
            }
            Pattern::MyLocksRead => {
                let mut holder = self.holder(count)?;
                let started = self.begin();
                pipeline_window(&mut holder, requests, 16, |rid, out| Request::MyLocks.encode(rid, out))?;
                self.end(started);
                Ok(())
            }
            Pattern::ListingUnread => {
                let _holder = self.holder(count)?;
                let mut lister = Peer::connect(&self.config.target, 1)?;
                lister.greet()?;
                let everything = ListRequest { prefix: "", max: 0 };
                self.unread_burst(&mut lister, requests, |rid, out| {
                    Request::Locks(everything).encode(rid, out)
                })
            }
            Pattern::Timeouts => self.timeouts(count),
            Pattern::QueueMaxed => self.queue_maxed(count, requests),
            Pattern::Disconnect => {
                let holder = self.holder(count)?;
                let started = self.begin();
                drop(holder);
                wait_stat(self.observer, "locks_held", |v| v == 0, Duration::from_secs(120))?;
                self.end(started);
                Ok(())
            }
            Pattern::MassDisconnect => self.mass_disconnect(count),
            Pattern::SessionsDetach => self.partition(count, false),
            Pattern::SessionsResume => self.partition(count, true),
        }
    }

    fn begin(&self) -> Instant {
        self.pinger.recording.store(true, Ordering::SeqCst);
        Instant::now()
    }

    fn end(&mut self, started: Instant) {
        self.burst = started.elapsed();
        self.pinger.recording.store(false, Ordering::SeqCst);
    }

    /// A connection holding --count locks named like `officer bench`'s.
    fn holder(&self, count: u64) -> io::Result<Peer> {
        let mut holder = Peer::connect(&self.config.target, 1)?;
        holder.greet()?;
        let mut next = 0u64;
        pipeline(&mut holder, count, |_, out| {
            let name = lock_name(next);
            next += 1;
            Request::Lock(LockRequest { name: &name, timeout_ms: None, queue_max: None }).encode(1, out)
        })?;
        Ok(holder)
    }

    /// Sends `requests` frames in one go, never reads them, and measures for `window`.
    fn unread_burst(
        &mut self,
        peer: &mut Peer,
        requests: u64,
        mut encode: impl FnMut(u32, &mut Vec<u8>),
    ) -> io::Result<()> {
        let mut frames = Vec::new();
        for i in 0..requests {
            encode((i % 0xFFFF_FFFE + 1) as u32, &mut frames);
        }
        let started = self.begin();
        // The server may stop reading (its output limit): a writer thread keeps us measuring.
        let mut writer = peer.try_clone()?;
        let sent = thread::spawn(move || writer.send(&frames));
        thread::sleep(self.config.window);
        self.end(started);
        peer.shutdown();
        let _ = sent.join();
        Ok(())
    }

    fn timeouts(&mut self, count: u64) -> io::Result<()> {
        let _holder = self.holder(1)?;
        let hot = lock_name(0);
        let mut waiters = Vec::with_capacity(count as usize);
        for i in 0..count {
            waiters.push(Peer::connect(&self.config.target, i + 2)?);
        }
        // Every wait ends at the same instant, however long the LOCKs take to send.
        let fire_at = Instant::now() + Duration::from_millis(2000 + count / 10);
        for peer in &mut waiters {
            let left = fire_at.checked_duration_since(Instant::now()).ok_or_else(|| {
                io::Error::new(ErrorKind::TimedOut, "sending the LOCKs took longer than their timeout")
            })?;
            let timeout_ms = Some(left.as_millis().max(1) as u32);
            let mut out = Vec::new();
            Request::Lock(LockRequest { name: &hot, timeout_ms, queue_max: None }).encode(2, &mut out);
            peer.send(&out)?;
        }
        thread::sleep(fire_at.saturating_duration_since(Instant::now()).saturating_sub(ms(200)));
        let started = self.begin();
        for peer in &mut waiters {
            peer.recv_until(|rid, r| rid == 2 && matches!(r, Response::TimedOut { .. }))?;
        }
        self.end(started);
        Ok(())
    }

    fn queue_maxed(&mut self, count: u64, requests: u64) -> io::Result<()> {
        let _holder = self.holder(1)?;
        let hot = lock_name(0);
        let mut waiters = Vec::with_capacity(count as usize);
        for i in 0..count {
            let mut peer = Peer::connect(&self.config.target, i + 2)?;
            let mut out = Vec::new();
            Request::Lock(LockRequest { name: &hot, timeout_ms: None, queue_max: None }).encode(2, &mut out);
            peer.send(&out)?;
            waiters.push(peer);
        }
        wait_stat(self.observer, "waiters", |v| v >= count, Duration::from_secs(120))?;
        let mut storm = Peer::connect(&self.config.target, count + 2)?;
        storm.greet()?;
        let started = self.begin();
        pipeline_window(&mut storm, requests, 64, |rid, out| {
            Request::Lock(LockRequest { name: &hot, timeout_ms: None, queue_max: Some(1) }).encode(rid, out)
        })?;
        self.end(started);
        Ok(())
    }

    fn mass_disconnect(&mut self, count: u64) -> io::Result<()> {
        let mut peers = Vec::with_capacity(count as usize);
        for i in 0..count {
            let mut peer = Peer::connect(&self.config.target, i + 2)?;
            let mut out = Vec::new();
            for j in 0..10 {
                let name = lock_name(i * 10 + j);
                Request::Lock(LockRequest { name: &name, timeout_ms: None, queue_max: None })
                    .encode(2, &mut out);
            }
            peer.send(&out)?;
            peers.push(peer);
        }
        wait_stat(self.observer, "locks_held", |v| v >= count * 10, Duration::from_secs(120))?;
        let started = self.begin();
        drop(peers);
        wait_stat(self.observer, "locks_held", |v| v == 0, Duration::from_secs(120))?;
        self.end(started);
        Ok(())
    }
}

impl Run<'_> {
    /// `count` sessions holding 10 locks each lose their connections together; with `resume`,
    /// the measured burst is instead their resumption by `count` new connections, all sent
    /// before any answer is read, as clients reconnecting after a partition would. Either way
    /// the sessions are resumed and said GOODBYE to at the end, so their locks go at once.
    fn partition(&mut self, count: u64, resume: bool) -> io::Result<()> {
        let mut sessions = Vec::with_capacity(count as usize);
        let mut peers = Vec::with_capacity(count as usize);
        for i in 0..count {
            let mut peer = Peer::connect(&self.config.target, i + 2)?;
            let mut out = Vec::new();
            Request::SessionOpen(SessionOpen { grace_ms: PARTITION_GRACE_MS, skip_while_detached: false })
                .encode(2, &mut out);
            for j in 0..10 {
                let name = lock_name(i * 10 + j);
                Request::Lock(LockRequest { name: &name, timeout_ms: None, queue_max: None })
                    .encode(3, &mut out);
            }
            peer.send(&out)?;
            peers.push(peer);
        }
        for peer in &mut peers {
            match peer.recv_until(|rid, _| rid == 2)? {
                (_, Response::SessionOk(ok)) if ok.grace_ms > 0 => sessions.push(ok),
                (_, other) => {
                    let why = format!(
                        "no resumable session (start the server with --max-session-grace): {other:?}"
                    );
                    return Err(io::Error::new(ErrorKind::Unsupported, why));
                }
            }
        }
        wait_stat(self.observer, "locks_held", |v| v >= count * 10, Duration::from_secs(120))?;
        let started = (!resume).then(|| self.begin());
        drop(peers);
        wait_stat(self.observer, "sessions_detached", |v| v == count, Duration::from_secs(120))?;
        if let Some(started) = started {
            self.end(started);
        }
        // The new connections are made (and greeted) first: the burst is the resumption alone,
        // not the client's connection set-up.
        let mut peers = Vec::with_capacity(count as usize);
        for i in 0..count {
            // From the next source address: the lost connections' ports are in TIME_WAIT.
            let mut peer = Peer::connect(&self.config.target, i + 2 + 20_000)?;
            peer.greet()?;
            peers.push(peer);
        }
        let started = resume.then(|| self.begin());
        for (peer, ok) in peers.iter_mut().zip(&sessions) {
            let mut out = Vec::new();
            Request::SessionResume(SessionResume { session_id: ok.session_id, secret: ok.secret })
                .encode(4, &mut out);
            peer.send(&out)?;
        }
        for peer in &mut peers {
            match peer.recv_until(|rid, _| rid == 4)? {
                (_, Response::Resumed(_)) => {}
                (_, other) => {
                    return Err(io::Error::new(ErrorKind::InvalidData, format!("resume: {other:?}")))
                }
            }
        }
        if let Some(started) = started {
            self.end(started);
        }
        let mut goodbye = Vec::new();
        Request::Goodbye.encode(5, &mut goodbye);
        for peer in &mut peers {
            peer.send(&goodbye)?;
        }
        Ok(())
    }
}

/// The grace of the partition patterns' sessions: long enough for 10,000 of them to be set up,
/// lost and resumed on a slow machine (the server grants at most its `--max-session-grace`).
const PARTITION_GRACE_MS: u32 = 600_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sends `n` requests built by `encode`, at most a window at a time, reading every answer.
fn pipeline(peer: &mut Peer, n: u64, encode: impl FnMut(u32, &mut Vec<u8>)) -> io::Result<()> {
    pipeline_window(peer, n, 1024, encode)
}

/// `pipeline` with `window` requests in flight: big answers need a small window, or a client
/// that writes before it reads runs into the server's output limit.
fn pipeline_window(
    peer: &mut Peer,
    n: u64,
    window: u64,
    mut encode: impl FnMut(u32, &mut Vec<u8>),
) -> io::Result<()> {
    let mut done = 0u64;
    let mut out = Vec::new();
    while done < n {
        let batch = window.min(n - done);
        out.clear();
        for i in 0..batch {
            encode(((done + i) % 0xFFFF_FFFE + 1) as u32, &mut out);
        }
        peer.send(&out)?;
        for _ in 0..batch {
            match peer.recv()? {
                (_, Response::Error { code, message }) => {
                    return Err(io::Error::other(format!("server refused: {code:?} {message}")))
                }
                (_, Response::Shutdown { .. }) => return Err(io::Error::other("server shut down")),
                _ => {}
            }
        }
        done += batch;
    }
    Ok(())
}

/// Polls STATS every 10 ms until `key` satisfies `ok`.
fn wait_stat(observer: &mut Peer, key: &str, ok: impl Fn(u64) -> bool, limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut out = Vec::new();
        Request::Stats.encode(3, &mut out);
        observer.send(&out)?;
        let (_, response) = observer.recv_until(|rid, _| rid == 3)?;
        if let Response::Stats(entries) = response {
            if entries.iter().any(|(k, v)| k == key && ok(*v)) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, format!("STATS {key} never reached its value")));
        }
        thread::sleep(ms(10));
    }
}

/// The unrelated client: PING, wait for PONG, repeat; records latencies while `recording`.
struct Pinger {
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Histogram<u64>>,
}

impl Pinger {
    fn start(target: &Target) -> io::Result<Pinger> {
        let mut peer = Peer::connect(target, 0)?;
        peer.greet()?;
        let recording = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, halt) = (recording.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
            let mut ping = Vec::new();
            Request::Ping(b"bystander").encode(7, &mut ping);
            while !halt.load(Ordering::SeqCst) {
                let measuring = rec.load(Ordering::SeqCst);
                let sent = Instant::now();
                if peer.send(&ping).is_err() || peer.recv_until(|rid, _| rid == 7).is_err() {
                    break;
                }
                // A ping in flight at any moment of the burst counts, whenever it was sent.
                if measuring || rec.load(Ordering::SeqCst) {
                    let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                }
            }
            hist
        });
        Ok(Pinger { recording, stop, thread })
    }

    fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| Histogram::new(3).expect("valid precision"))
    }
}

/// Samples the server's RSS every 20 ms and keeps the highest value.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(rss) = process_rss(pid) {
                    p.fetch_max(rss, Ordering::SeqCst);
                }
                thread::sleep(ms(20));
            }
        });
        Sampler { peak, stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.peak.load(Ordering::SeqCst)
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A blocking connection with its input buffer.
struct Peer {
    stream: Stream,
    inbuf: Vec<u8>,
    pos: usize,
}

impl Peer {
    /// Connects and sends HELLO (not yet read). Connection `index` picks its source address
    /// among 127.0.0.1..=127.0.0.254 so that more connections than one address has ephemeral
    /// ports can reach a loopback server.
    fn connect(target: &Target, index: u64) -> io::Result<Peer> {
        let stream = match target {
            Target::Tcp(addr @ SocketAddr::V4(v4)) if v4.ip().is_loopback() => {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (index / 20_000 % 254) as u8);
                let s = connect_from(source, *v4).or_else(|_| TcpStream::connect(addr))?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        let mut peer = Peer { stream, inbuf: Vec::new(), pos: 0 };
        let mut hello = Vec::new();
        Request::Hello(Hello { version: PROTOCOL_VERSION }).encode(1, &mut hello);
        peer.send(&hello)?;
        Ok(peer)
    }

    fn greet(&mut self) -> io::Result<()> {
        self.recv_until(|_, r| matches!(r, Response::HelloOk(_))).map(drop)
    }

    fn try_clone(&self) -> io::Result<Peer> {
        let stream = match &self.stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        };
        Ok(Peer { stream, inbuf: Vec::new(), pos: 0 })
    }

    fn shutdown(&self) {
        let _ = match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        }
    }

    /// The next response frame.
    fn recv(&mut self) -> io::Result<(u32, Response)> {
        loop {
            let parsed = split_frame(&self.inbuf[self.pos..], MAX_FRAME_CEILING)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            if let Some((frame, used)) = parsed {
                let response =
                    Response::decode(&frame).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                let rid = frame.request_id;
                self.pos += used;
                return Ok((rid, response));
            }
            self.inbuf.drain(..self.pos);
            self.pos = 0;
            let mut chunk = [0u8; 64 * 1024];
            let n = match &mut self.stream {
                Stream::Tcp(s) => s.read(&mut chunk)?,
                Stream::Unix(s) => s.read(&mut chunk)?,
            };
            if n == 0 {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            self.inbuf.extend_from_slice(&chunk[..n]);
        }
    }

    fn recv_until(&mut self, want: impl Fn(u32, &Response) -> bool) -> io::Result<(u32, Response)> {
        loop {
            let (rid, response) = self.recv()?;
            if want(rid, &response) {
                return Ok((rid, response));
            }
        }
    }
}

/// A TCP connection from a chosen loopback source address (std cannot bind before connect).
fn connect_from(source: Ipv4Addr, dest: SocketAddrV4) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses are valid
    // sockaddr_in values that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let src = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(fd, &src as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let dst = sockaddr(dest);
        if libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{BoundAddr, Config, Listen, Server};

    /// Every pattern runs to its end against an embedded server (small counts) and reports a
    /// burst the bystander pinged through. The server runs in this process, so its RSS is ours.
    #[test]
    fn every_pattern_runs_and_reports_the_bystander() {
        let config = Config {
            listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            max_session_grace: Duration::from_secs(600),
            ..Config::default()
        };
        let server = Server::bind(config).unwrap();
        let BoundAddr::Tcp(addr) = server.local_addr().clone() else { panic!("tcp") };
        let handle = server.shutdown_handle();
        let thread = thread::spawn(move || server.run().unwrap());
        let patterns = [
            (Pattern::MyLocksUnread, 200, 50),
            (Pattern::MyLocksRead, 200, 20),
            (Pattern::ListingUnread, 200, 50),
            (Pattern::Timeouts, 30, 0),
            (Pattern::QueueMaxed, 10, 100),
            (Pattern::Disconnect, 500, 0),
            (Pattern::MassDisconnect, 20, 0),
            (Pattern::SessionsDetach, 20, 0),
            (Pattern::SessionsResume, 20, 0),
        ];
        for (pattern, count, requests) in patterns {
            let report = run_bystander(&BystanderConfig {
                target: Target::Tcp(addr),
                pattern,
                count,
                requests,
                server_pid: std::process::id(),
                window: ms(50),
                settle: Duration::ZERO,
            })
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
            assert_eq!(report.pattern, pattern);
            assert!(report.burst > Duration::ZERO, "{pattern:?}");
            assert!(report.rss_base > 0 && report.rss_peak >= report.rss_after, "{pattern:?}");
            assert!(report.human().contains(pattern.as_str()));
            assert_eq!(report.json()["count"], count);
        }
        handle.shutdown();
        thread.join().unwrap();
    }
}
