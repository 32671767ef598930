//! Shared helpers for integration tests: an in-process server on 127.0.0.1:0, the real
//! binary as a child process, and a minimal raw binary-protocol connection.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use officer::protocol::{split_frame, Hello, Request, Response, PROTOCOL_VERSION};
use officer::server::{BoundAddr, Config, Listen, Server, ShutdownHandle};

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// A server running on its own thread in this process.
pub struct TestServer {
    addr: BoundAddr,
    metrics: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// TCP on 127.0.0.1 with an OS-chosen port and default limits.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() };
        configure(&mut config);
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr().clone();
        let metrics = server.metrics_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("server run"));
        TestServer { addr, metrics, handle, thread: Some(thread) }
    }

    /// The TCP address (panics for a UNIX-socket server).
    pub fn addr(&self) -> SocketAddr {
        match &self.addr {
            BoundAddr::Tcp(a) => *a,
            BoundAddr::Unix(p) => panic!("server listens on {}", p.display()),
        }
    }

    /// Where `/metrics` is served (when the config enabled it).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("metrics not enabled")
    }

    pub fn bound(&self) -> &BoundAddr {
        &self.addr
    }

    /// Graceful stop: clients get a SHUTDOWN frame then EOF; waits for the loop to exit.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Runs `officer run -h 127.0.0.1 -p 0 <args>` and reads the bound address from its first
/// stdout line. The caller owns the child (kill it when done).
///
/// Unless `args` names a `--state-file`, one in a fresh temporary directory is used, so tests
/// never share the default state file.
pub fn spawn_officer(args: &[&str]) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_officer"));
    command.args(["run", "-h", "127.0.0.1", "-p", "0"]).args(args);
    if !args.contains(&"--state-file") {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        command.arg("--state-file").arg(dir.join("officer.state"));
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn officer");
    let addr = read_listening_line(&mut child).expect("officer did not report its address");
    let addr = addr.parse().expect("listening line has a TCP address");
    (child, addr)
}

/// Reads `officer listening on X` from the child's stdout and returns X.
pub fn read_listening_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).ok()?;
    line.trim().strip_prefix("officer listening on ").map(str::to_owned)
}

/// A fresh temporary directory path inside the system temp dir.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn state_file_in(dir: &Path) -> PathBuf {
    dir.join("officer.state")
}

/// A byte stream a test can read and write: TCP or UNIX.
pub trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// A raw binary-protocol connection that speaks frames directly, for server tests.
pub struct Raw {
    pub stream: Box<dyn Duplex>,
    /// The local address as the server labels it (`ip:port`), for TCP connections.
    pub label: String,
    buf: Vec<u8>,
    next_id: u32,
}

impl Raw {
    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect_no_hello(addr);
        let id = raw.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }));
        match raw.recv() {
            (rid, Response::HelloOk(_)) if rid == id => raw,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    pub fn connect_no_hello(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        Raw { stream: Box::new(stream), label, buf: Vec::new(), next_id: 1 }
    }

    /// Connects to a UNIX socket and completes the handshake.
    pub fn connect_unix(path: &Path) -> Raw {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect unix");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut raw = Raw { stream: Box::new(stream), label: String::new(), buf: Vec::new(), next_id: 1 };
        let id = raw.send(&Request::Hello(Hello { version: PROTOCOL_VERSION }));
        match raw.recv() {
            (rid, Response::HelloOk(_)) if rid == id => raw,
            other => panic!("handshake failed: {other:?}"),
        }
    }

    /// Sends a request under a fresh id and returns the id.
    pub fn send(&mut self, request: &Request<'_>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        request.encode(id, &mut out);
        self.stream.write_all(&out).expect("write");
        id
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads the next response; panics on EOF or after `WAIT`.
    pub fn recv(&mut self) -> (u32, Response) {
        self.try_recv().expect("connection closed while waiting for a response")
    }

    /// The next response, or `None` on EOF / reset.
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
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return None,
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

    /// True once the server has closed the connection (reads to EOF, skipping frames).
    pub fn wait_closed(&mut self) -> Vec<Response> {
        let mut seen = Vec::new();
        while let Some((_, r)) = self.try_recv() {
            seen.push(r);
        }
        seen
    }
}
