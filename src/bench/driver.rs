//! The cycle driver: every connection on one mio loop, `pipeline` cycles in flight on each.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

use super::{lock_name, process_cpu_time, CycleConfig, CycleReport, Mode, Rng, Target, SEMAPHORE_LIMIT};
use crate::protocol::{
    split_frame, Hello, LockExtRequest, LockRequest, Request, Response, MAX_FRAME_CEILING, PROTOCOL_VERSION,
};
use crate::server::net::Stream;

/// Request ids carry the cycle slot in their low byte, so a reply finds its cycle at once.
const SLOT_BITS: u32 = 8;
pub(crate) const MAX_PIPELINE: usize = 1 << SLOT_BITS;

/// Bench connections are polled both ways from the start: the HELLO is queued as soon as the
/// connection is made, and every cycle writes as soon as a reply is read.
pub(crate) const READ_WRITE: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// The bench's constructor for the server's stream type: a blocking std connect (so a refused
/// or unreachable target fails here, not inside the loop), then handed to mio non-blocking.
impl Stream {
    pub(crate) fn connect(target: &Target) -> io::Result<Stream> {
        match target {
            Target::Tcp(addr) => {
                let s = std::net::TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Tcp(TcpStream::from_std(s)))
            }
            Target::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_nonblocking(true)?;
                Ok(Stream::Unix(UnixStream::from_std(s)))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    First,
    Second,
}

struct Slot {
    name: String,
    phase: Phase,
    started: Instant,
}

/// One benchmark connection with its buffers and cycles in flight.
pub(crate) struct BenchConn {
    sock: Stream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    out_pos: usize,
    slots: Vec<Slot>,
    seq: u32,
    rng: Rng,
    greeted: bool,
}

impl BenchConn {
    pub(crate) fn new(sock: Stream, seed: u64) -> BenchConn {
        let mut conn = BenchConn {
            sock,
            inbuf: Vec::with_capacity(64 * 1024),
            outbuf: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            slots: Vec::new(),
            seq: 0,
            rng: Rng::new(seed),
            greeted: false,
        };
        Request::Hello(Hello { version: PROTOCOL_VERSION }).encode(1, &mut conn.outbuf);
        conn
    }

    fn request_id(&mut self, slot: usize) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        // Never 0: the low byte is the slot, and the high bits are at least 1.
        ((self.seq & 0x00FF_FFFF).max(1) << SLOT_BITS) | slot as u32
    }

    /// A name not used by another cycle of this connection (duplicates would answer
    /// already_acquired / already_waiting and tangle the cycles).
    fn pick_name(&mut self, names: u64) -> String {
        loop {
            let name = lock_name(self.rng.next() % names.max(1));
            if !self.slots.iter().any(|s| s.name == name) {
                return name;
            }
        }
    }

    fn send_first(&mut self, slot: usize, mode: Mode) {
        let rid = self.request_id(slot);
        let s = &self.slots[slot];
        match mode {
            Mode::Lock => {
                Request::Lock(LockRequest { name: &s.name, timeout_ms: None, queue_max: None })
                    .encode(rid, &mut self.outbuf);
            }
            Mode::Shared => Request::LockExt(LockExtRequest::shared(&s.name)).encode(rid, &mut self.outbuf),
            Mode::Semaphore => Request::LockExt(LockExtRequest::semaphore(&s.name, 1, SEMAPHORE_LIMIT))
                .encode(rid, &mut self.outbuf),
            // Same frame size as the LOCK: 10 fixed bytes plus the name.
            Mode::Ping => {
                Request::Ping(&[0u8; 26][..10 + s.name.len().min(16)]).encode(rid, &mut self.outbuf)
            }
        }
    }

    fn send_second(&mut self, slot: usize, mode: Mode) {
        let rid = self.request_id(slot);
        let s = &self.slots[slot];
        match mode {
            Mode::Lock | Mode::Shared | Mode::Semaphore => {
                Request::Unlock(&s.name).encode(rid, &mut self.outbuf)
            }
            Mode::Ping => Request::Ping(&[0u8; 16][..s.name.len().min(16)]).encode(rid, &mut self.outbuf),
        }
    }

    fn start_cycle(&mut self, slot: usize, config: &CycleConfig, now: Instant) {
        let name = self.pick_name(config.names);
        let fresh = Slot { name, phase: Phase::First, started: now };
        if slot == self.slots.len() {
            self.slots.push(fresh);
        } else {
            self.slots[slot] = fresh;
        }
        self.send_first(slot, config.mode);
    }

    /// Writes pending output until done or `WouldBlock`.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.outbuf.len() {
            match self.sock.write(&self.outbuf[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.outbuf.len() {
            self.outbuf.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads until `WouldBlock`, calling `on_frame` for each response.
    pub(crate) fn read_frames(
        &mut self,
        mut on_frame: impl FnMut(&mut Self, u32, Response),
    ) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed the connection"))
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    // A short read drained the socket; later data is a new edge-triggered event.
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut pos = 0;
        let inbuf = std::mem::take(&mut self.inbuf);
        while let Some((frame, used)) = split_frame(&inbuf[pos..], MAX_FRAME_CEILING)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
        {
            pos += used;
            let response = Response::decode(&frame).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            on_frame(self, frame.request_id, response);
        }
        let mut inbuf = inbuf;
        inbuf.drain(..pos);
        self.inbuf = inbuf;
        Ok(())
    }

    pub(crate) fn is_greeted(&self) -> bool {
        self.greeted
    }

    /// Marks the handshake done when `response` is HELLO_OK.
    pub(crate) fn on_hello(&mut self, response: &Response) {
        if matches!(response, Response::HelloOk(_)) {
            self.greeted = true;
        }
    }

    /// Appends already-encoded frames to the output.
    pub(crate) fn queue(&mut self, frames: &[u8]) {
        self.outbuf.extend_from_slice(frames);
    }
}

/// Runs the cycle benchmark and returns its report.
pub fn run_cycles(config: &CycleConfig) -> io::Result<CycleReport> {
    if config.pipeline == 0 || config.pipeline > MAX_PIPELINE || config.pipeline as u64 > config.names {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("pipeline must be 1..={MAX_PIPELINE} and at most the number of names"),
        ));
    }
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let mut sock = Stream::connect(&config.target)?;
        poll.registry().register(&mut sock, Token(i), READ_WRITE)?;
        conns.push(BenchConn::new(sock, config.seed.wrapping_add(i as u64 * 7919)));
    }
    let mut events = Events::with_capacity(1024);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?;
    let started = Instant::now();
    let measure_from = started + config.warmup;
    let mut measure_end = config.duration.map(|d| measure_from + d);
    let mut cpu_start = None;
    let mut unexpected = 0u64;
    let mut measuring = false;
    for conn in &mut conns {
        conn.flush()?;
    }
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            hist.reset();
            unexpected = 0;
            cpu_start = config.server_pid.and_then(process_cpu_time);
            measure_end = config.duration.map(|d| now + d);
        }
        let done = measure_end.is_some_and(|end| now >= end)
            || config.cycles.is_some_and(|n| measuring && hist.len() >= n);
        if done {
            let elapsed = now.duration_since(measure_from.min(now));
            let cpu = match (cpu_start, config.server_pid.and_then(process_cpu_time)) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            return Ok(CycleReport::new(config, &hist, elapsed, cpu, unexpected));
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if event.is_readable() {
                conn.read_frames(|c, rid, response| {
                    on_response(c, rid, response, config, now, measuring, &mut hist, &mut unexpected)
                })?;
            }
            conn.flush()?;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn on_response(
    conn: &mut BenchConn,
    rid: u32,
    response: Response,
    config: &CycleConfig,
    now: Instant,
    measuring: bool,
    hist: &mut Histogram<u64>,
    unexpected: &mut u64,
) {
    if !conn.greeted {
        if let Response::HelloOk(_) = response {
            conn.greeted = true;
            for slot in 0..config.pipeline {
                conn.start_cycle(slot, config, now);
            }
        }
        return;
    }
    let slot = (rid & ((1 << SLOT_BITS) - 1)) as usize;
    let Some(phase) = conn.slots.get(slot).map(|s| s.phase) else { return };
    match (phase, response) {
        (Phase::First, Response::Acquired { .. } | Response::AlreadyAcquired { .. } | Response::Pong) => {
            conn.slots[slot].phase = Phase::Second;
            conn.send_second(slot, config.mode);
        }
        (Phase::Second, Response::Released | Response::Pong) => {
            if measuring {
                let us = now.duration_since(conn.slots[slot].started).as_micros() as u64;
                let _ = hist.record(us.max(1));
            }
            conn.start_cycle(slot, config, now);
        }
        _ => {
            *unexpected += 1;
            conn.start_cycle(slot, config, now);
        }
    }
}
