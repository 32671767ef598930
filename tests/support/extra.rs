//! Helpers for the hardening, fault-injection and soak suites: real server processes that die
//! with the test, `officer lock` client processes in their own process group, a raw connection
//! that tolerates a server hanging up on it, `/proc` probes, a seeded RNG and frame builders.
//!
//! Declared by each suite with `#[path = "support/extra.rs"] mod extra;` next to `mod support;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use officer::protocol::{split_frame, Hello, ListRequest, LockRequest, Request, Response, PROTOCOL_VERSION};

use crate::support::WAIT;

pub const OFFICER: &str = env!("CARGO_BIN_EXE_officer");

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Sends `sig` to `pid`; a process that is already gone only makes it fail.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// A real `officer run` child, killed (SIGCONT first, in case it is stopped, then SIGKILL) and
/// reaped on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// `officer run -h 127.0.0.1 -p 0 ARGS`, once it has printed its address.
    pub fn spawn(args: &[&str]) -> ServerProcess {
        let (child, addr) = crate::support::spawn_officer(args);
        ServerProcess { child, addr }
    }

    /// The same, run by `sh` after `ulimit -n NOFILE` (soft and hard), so the server cannot
    /// raise its own open-file limit.
    pub fn spawn_with_nofile(nofile: u32, args: &[&str]) -> ServerProcess {
        let script = format!("ulimit -n {nofile} && exec \"$0\" run -h 127.0.0.1 -p 0 \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(OFFICER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sh");
        let addr =
            crate::support::read_listening_line(&mut child).expect("officer did not report its address");
        ServerProcess { child, addr: addr.parse().expect("TCP address") }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        signal(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.reap();
    }
}

// ---------------------------------------------------------------------------------------------
// `officer lock` client processes

/// `officer lock -h 127.0.0.1 -p PORT [ARGS] NAME -- sh -c SCRIPT` in its own process group;
/// its stdout lines arrive on a channel. Drop kills the whole group (officer and the command).
pub struct LockProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl LockProcess {
    pub fn spawn(port: u16, name: &str, args: &[&str], script: &str) -> LockProcess {
        let mut child = Command::new(OFFICER)
            .args(["lock", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .arg(name)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn officer lock");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LockProcess { child, lines }
    }

    /// Holds `name` and prints `held` once it has it, then sleeps a minute.
    pub fn holder(port: u16, name: &str) -> LockProcess {
        LockProcess::spawn(port, name, &[], "echo held; exec sleep 60")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` on EOF or after `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// True once the command has printed `held`; false if stdout ended first or after `limit`.
    pub fn wait_held(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "held" => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Whether `held` was printed so far (without waiting).
    pub fn printed_held(&self) -> bool {
        self.lines.try_iter().any(|l| l == "held")
    }

    /// SIGKILL to `officer lock` alone (a client crash); the command lives on until drop.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Waits for `officer lock` to exit, at most `limit`; its exit code, if it exited.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LockProcess {
    fn drop(&mut self) {
        // SAFETY: killpg has no memory-safety preconditions; the group outlives its leader
        // while the command runs, and the id is not reused while the group exists.
        unsafe { libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc probes

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((utime + stime) * 1000 / hz)
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------------
// A seeded RNG (xorshift64*), so a failing run can be replayed.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// One frame with any opcode, id and payload (length prefix computed).
pub fn frame(opcode: u8, request_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = ((5 + payload.len()) as u32).to_be_bytes().to_vec();
    f.push(opcode);
    f.extend_from_slice(&request_id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn encode(request: &Request<'_>, request_id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(request_id, &mut out);
    out
}

pub fn hello_frame(request_id: u32) -> Vec<u8> {
    encode(&Request::Hello(Hello { version: PROTOCOL_VERSION }), request_id)
}

pub fn lock_req(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None })
}

pub fn try_lock_req(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(0), queue_max: None })
}

pub fn locks_req(prefix: &str) -> Request<'_> {
    Request::Locks(ListRequest { prefix, max: 0 })
}

pub fn token_of(response: &Response) -> u64 {
    match response {
        Response::Acquired { token } => *token,
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A raw connection that expects the server to hang up on it

/// Like `support::Raw`, but on a plain `TcpStream`: writes report errors instead of panicking
/// (the server may close first), and it can half-close or wait for the close with a bound.
pub struct Wire {
    pub stream: TcpStream,
    pub label: String,
    buf: Vec<u8>,
    next_id: u32,
}

impl Wire {
    pub fn connect_no_hello(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        Wire { stream, label, buf: Vec::new(), next_id: 1 }
    }

    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Wire {
        let mut w = Wire::connect_no_hello(addr);
        let id = w.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }));
        match w.recv() {
            (rid, Response::HelloOk(_)) if rid == id => w,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    /// Sends under a fresh id (panics if the write fails).
    pub fn send(&mut self, request: &Request<'_>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&encode(request, id)).expect("write");
        id
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next response; `None` on EOF, reset, or after the read timeout.
    pub fn try_recv(&mut self) -> Option<(u32, Response)> {
        loop {
            if let Some((frame, used)) = split_frame(&self.buf, u32::MAX).expect("server sent a bad frame") {
                let response = Response::decode(&frame).expect("server sent an undecodable response");
                let rid = frame.request_id;
                self.buf.drain(..used);
                return Some((rid, response));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn recv(&mut self) -> (u32, Response) {
        self.try_recv().expect("connection closed while waiting for a response")
    }

    pub fn call(&mut self, request: &Request<'_>) -> Response {
        let id = self.send(request);
        let (rid, response) = self.recv();
        assert_eq!(rid, id, "reply for another request: {response:?}");
        response
    }

    /// Reads until the server closes the connection, at most `limit`. Returns the frames seen
    /// and whether it was closed (EOF or reset) in time. Bytes left that do not form a whole
    /// frame are an error: a server closing after a fatal ERROR sends that frame whole.
    pub fn wait_closed(&mut self, limit: Duration) -> (Vec<(u32, Response)>, bool) {
        let (seen, closed, partial) = self.read_to_close(limit);
        assert!(partial == 0, "the server sent {partial} bytes of a partial frame before closing");
        (seen, closed)
    }

    /// Like `wait_closed`, for a connection closed for not reading: what was pending may be
    /// cut anywhere. Returns whether it was closed and the bytes of the cut frame.
    pub fn wait_closed_cut(&mut self, limit: Duration) -> (bool, usize) {
        let (_, closed, partial) = self.read_to_close(limit);
        (closed, partial)
    }

    fn read_to_close(&mut self, limit: Duration) -> (Vec<(u32, Response)>, bool, usize) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    seen = self.drain_frames(seen);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
                Err(_) => break true,
            }
        };
        let partial = if closed { self.buf.len() } else { 0 };
        (seen, closed, partial)
    }

    fn drain_frames(&mut self, mut seen: Vec<(u32, Response)>) -> Vec<(u32, Response)> {
        while let Some((frame, used)) = split_frame(&self.buf, u32::MAX).expect("server sent a bad frame") {
            let response = Response::decode(&frame).expect("server sent an undecodable response");
            seen.push((frame.request_id, response));
            self.buf.drain(..used);
        }
        seen
    }
}

/// A connection holding one lock that must come through every abuse of other connections
/// untouched: same token, sole entry of its queue.
pub struct Bystander {
    pub wire: Wire,
    pub name: String,
    pub token: u64,
}

impl Bystander {
    pub fn new(addr: SocketAddr, name: &str) -> Bystander {
        let mut wire = Wire::connect(addr);
        let token = token_of(&wire.call(&lock_req(name)));
        Bystander { wire, name: name.to_owned(), token }
    }

    pub fn check(&mut self, after: &str) {
        let name = self.name.clone();
        assert_eq!(
            self.wire.call(&lock_req(&name)),
            Response::AlreadyAcquired { token: self.token },
            "bystander lost its lock after {after}"
        );
        match self.wire.call(&locks_req(&name)) {
            Response::Locks { locks, .. } => {
                let queue = locks.into_iter().find(|l| l.name == name).map(|l| l.queue);
                assert_eq!(queue, Some(vec![self.wire.label.clone()]), "bystander's queue after {after}");
            }
            other => panic!("expected LOCKS, got {other:?}"),
        }
    }
}

/// One STATS counter, asked on `wire`.
pub fn stat(wire: &mut Wire, key: &str) -> u64 {
    match wire.call(&Request::Stats) {
        Response::Stats(entries) => entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no stats key {key}")),
        other => panic!("expected STATS, got {other:?}"),
    }
}
