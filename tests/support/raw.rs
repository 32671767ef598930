//! The one raw binary-protocol connection of the test suites: TCP or UNIX, it writes frames
//! (well-formed or not) and reads responses, and it tolerates a server hanging up on it: it can
//! half-close, read everything up to the close, or wait for the close with a bound. Also the
//! bystander (a connection whose lock must survive others' abuse) and a STATS probe.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use officer::protocol::{split_frame, Hello, Request, Response, PROTOCOL_VERSION};

use super::frames::{encode, lock_req, locks_req, token_of};
use super::WAIT;

/// The socket under a `Raw`: an enum rather than a trait object, so a test can still set a read
/// timeout or half-close whichever kind it has.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A raw binary-protocol connection that speaks frames directly. Reads and writes are bounded
/// by `WAIT`, so a server that stops answering fails the test instead of hanging it.
pub struct Raw {
    pub stream: Stream,
    /// The local address as the server labels it (`ip:port`); empty for UNIX connections.
    pub label: String,
    buf: Vec<u8>,
    next_id: u32,
}

impl Raw {
    /// Connects over TCP and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_no_hello(addr).hello()
    }

    /// Connects over TCP and sends nothing.
    pub fn connect_no_hello(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        Raw::over(Stream::Tcp(stream), label)
    }

    /// Connects to a UNIX socket and completes the handshake.
    pub fn connect_unix(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).expect("connect unix");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Raw::over(Stream::Unix(stream), String::new()).hello()
    }

    fn over(stream: Stream, label: String) -> Raw {
        Raw { stream, label, buf: Vec::new(), next_id: 1 }
    }

    fn hello(mut self) -> Raw {
        let id = self.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }));
        match self.recv() {
            (rid, Response::HelloOk(_)) if rid == id => self,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    /// Sends a request under a fresh id and returns the id (panics if the write fails).
    pub fn send(&mut self, request: &Request<'_>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.stream.write_all(&encode(request, id)).expect("write");
        id
    }

    /// Writes raw bytes; the error is the caller's, since the server may have closed first.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes: the server sees EOF, and the replies it still owes can be read.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads the next response; panics on EOF or when the read times out.
    pub fn recv(&mut self) -> (u32, Response) {
        self.try_recv().expect("connection closed while waiting for a response")
    }

    /// The next response, or `None` on EOF or reset. Any other read error (a timeout above all)
    /// panics: a test that waits for a close must not take a silent server for one.
    pub fn try_recv(&mut self) -> Option<(u32, Response)> {
        loop {
            if let Some(next) = self.next_frame() {
                return Some(next);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if is_hang_up(&e) => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Sends and waits for the reply to that request (fails on any other frame first).
    pub fn call(&mut self, request: &Request<'_>) -> Response {
        let id = self.send(request);
        let (rid, response) = self.recv();
        assert_eq!(rid, id, "reply for another request: {response:?}");
        response
    }

    /// Reads to EOF (or reset) and returns the responses seen on the way; panics if the server
    /// stays silent for `WAIT` without closing.
    pub fn responses_until_closed(&mut self) -> Vec<Response> {
        let mut seen = Vec::new();
        while let Some((_, r)) = self.try_recv() {
            seen.push(r);
        }
        seen
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

    /// Waits until the server has closed the connection, without reading what it sent: a
    /// client that never reads must be closed by the server's output limit, and reading here
    /// would drain that output and let it stay under the limit. The hang-up is seen through
    /// poll (POLLRDHUP, or POLLHUP / POLLERR after a reset). False if `limit` passes first.
    pub fn wait_hangup_unread(&self, limit: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for a descriptor this connection owns.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                return true;
            }
        }
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
                    while let Some(next) = self.next_frame() {
                        seen.push(next);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
                Err(_) => break true,
            }
        };
        let partial = if closed { self.buf.len() } else { 0 };
        (seen, closed, partial)
    }

    /// Takes one whole response off the read buffer, if there is one.
    fn next_frame(&mut self) -> Option<(u32, Response)> {
        let (frame, used) = split_frame(&self.buf, u32::MAX).expect("server sent a bad frame")?;
        let response = Response::decode(&frame).expect("server sent an undecodable response");
        let rid = frame.request_id;
        self.buf.drain(..used);
        Some((rid, response))
    }
}

/// A read error that means the peer hung up rather than that it went quiet.
fn is_hang_up(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted)
}

/// A connection holding one lock that must come through every abuse of other connections
/// untouched: same token, sole entry of its queue.
pub struct Bystander {
    pub wire: Raw,
    pub name: String,
    pub token: u64,
}

impl Bystander {
    pub fn new(addr: SocketAddr, name: &str) -> Bystander {
        let mut wire = Raw::connect(addr);
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
pub fn stat(wire: &mut Raw, key: &str) -> u64 {
    match wire.call(&Request::Stats) {
        Response::Stats(entries) => entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no stats key {key}")),
        other => panic!("expected STATS, got {other:?}"),
    }
}
