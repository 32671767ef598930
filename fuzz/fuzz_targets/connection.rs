//! Fuzz target: arbitrary bytes over a real TCP connection to an in-process server.
//!
//! One server per fuzz process (started lazily), plus one "bystander" client that did the
//! handshake and holds the lock `bystander`. Each input is written over a fresh connection,
//! the write side is shut down, and everything the server sends back is read (until EOF, a
//! reset, or a short timeout). Then:
//!
//! * the fuzzed connection's output is well-formed: binary frames that decode as responses,
//!   within the announced frame limit, with request ids the input used (or 0 for ERROR), a
//!   HELLO_OK only first, nothing after a fatal ERROR, fencing tokens that only grow; or, when
//!   the stream starts with `{` (JSON compatibility mode), JSON objects with a `result`, one a
//!   line, whose tokens (sent only when a lock command asks for one) only grow. A cut-off last frame or line is allowed: the server drops unsent output when it
//!   closes a connection (PROTOCOL.md §2.4).
//! * the bystander is undisturbed: PING answers PONG, LOCK `bystander` answers ALREADY_ACQUIRED
//!   with its original token, and once the fuzzed connection is gone the table lists exactly the
//!   bystander's lock and connection (no lock or connection left behind).
//! * the server thread is still running. A panic on it aborts the process anyway (libfuzzer-sys
//!   installs an aborting panic hook); a server that stops answering fails the bystander check.
//!
//! Input layout: byte 0 = flags (bit 0: send a valid HELLO first, so the rest is parsed after
//! the handshake; bit 1: pause 1 ms between writes, so each write tends to arrive as its own
//! read and frames split across reads are exercised; bit 2: repeat the body to 40 KiB, past the
//! server's per-wake-up request budget); byte 1 = split points (high and low nibble, in
//! sixteenths of the body); the rest is the body, written in up to three writes.

#![no_main]

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use officer::protocol::{
    split_frame, ConnectionInfo, ErrorCode, Hello, ListRequest, LockInfo, LockRequest, Request, Response,
    DEFAULT_MAX_FRAME, DEFAULT_MAX_NAME, MAX_FRAME_CEILING,
};
use officer::server::{BoundAddr, Config, Listen, Server, ServerError};

const MAX_IDLE: Duration = Duration::from_secs(5);
/// How long to wait for more output from the fuzzed connection before giving up on it.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// The bystander's answers must come within this; a server that misses it is hung.
const BYSTANDER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed fuzzed connection may take to disappear from the lock table.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
const BYSTANDER_LOCK: &str = "bystander";
/// Flag bit 2 repeats the body up to this size: 4552 PINGs, past the 4096-request budget.
const REPEAT_TO: usize = 40 * 1024;

struct Harness {
    addr: SocketAddr,
    /// `CONNECTION_FUZZ_VERBOSE=1`: print what each input got back (for replaying reproducers).
    verbose: bool,
    server: JoinHandle<Result<(), ServerError>>,
    state: Mutex<State>,
}

struct State {
    bystander: Bystander,
    /// The largest fencing token seen so far; every later ACQUIRED must carry a larger one.
    max_token: u64,
}

struct Bystander {
    stream: TcpStream,
    /// The server's label for it (`ip:port`), as listings show it.
    label: String,
    token: u64,
    next_id: u32,
    inbuf: Vec<u8>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let server = Server::bind(Config {
            listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            max_idle: Some(MAX_IDLE),
            ..Default::default()
        })
        .expect("bind the server");
        let BoundAddr::Tcp(addr) = *server.local_addr() else { panic!("not a TCP address") };
        let server = std::thread::Builder::new()
            .name("officer-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        let bystander = Bystander::connect(addr);
        let max_token = bystander.token;
        let verbose = std::env::var_os("CONNECTION_FUZZ_VERBOSE").is_some_and(|v| v != "0");
        Harness { addr, verbose, server, state: Mutex::new(State { bystander, max_token }) }
    })
}

fn encode(request: Request<'_>, id: u32, out: &mut Vec<u8>) {
    request.encode(id, out);
}

fn try_lock(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(0), queue_max: None })
}

impl Bystander {
    fn connect(addr: SocketAddr) -> Bystander {
        let stream = connect(addr);
        stream.set_read_timeout(Some(BYSTANDER_TIMEOUT)).unwrap();
        let label = stream.local_addr().unwrap().to_string();
        let mut b = Bystander { stream, label, token: 0, next_id: 1, inbuf: Vec::new() };
        let mut out = Vec::new();
        encode(Request::Hello(Hello { version: 1 }), 1, &mut out);
        encode(try_lock(BYSTANDER_LOCK), 2, &mut out);
        b.next_id = 3;
        b.stream.write_all(&out).expect("bystander: send HELLO and LOCK");
        match b.read_response() {
            (1, Response::HelloOk(_)) => {}
            other => panic!("bystander: expected HELLO_OK, got {other:?}"),
        }
        match b.read_response() {
            (2, Response::Acquired { token }) => b.token = token,
            other => panic!("bystander: expected ACQUIRED, got {other:?}"),
        }
        b
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn read_response(&mut self) -> (u32, Response) {
        let deadline = Instant::now() + BYSTANDER_TIMEOUT;
        loop {
            match split_frame(&self.inbuf, MAX_FRAME_CEILING) {
                Ok(Some((frame, used))) => {
                    let response = Response::decode(&frame)
                        .unwrap_or_else(|e| panic!("bystander: undecodable response: {e}"));
                    let id = frame.request_id;
                    self.inbuf.drain(..used);
                    return (id, response);
                }
                Ok(None) => {}
                Err(e) => panic!("bystander: bad frame from the server: {e}"),
            }
            assert!(Instant::now() < deadline, "bystander: no answer within {BYSTANDER_TIMEOUT:?}");
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("bystander: the server closed the connection"),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("bystander: read failed (server hung or gone?): {e}"),
            }
        }
    }

    fn request(&mut self, request: Request<'_>) -> Response {
        let id = self.id();
        let mut out = Vec::new();
        encode(request, id, &mut out);
        self.stream.write_all(&out).unwrap_or_else(|e| panic!("bystander: write failed: {e}"));
        let (got, response) = self.read_response();
        assert_eq!(got, id, "bystander: answer to another request id: {response:?}");
        response
    }

    /// PING, and LOCK of its own lock still answers ALREADY_ACQUIRED with the original token.
    fn check_alive(&mut self) {
        let response = self.request(Request::Ping(b""));
        assert_eq!(response, Response::Pong, "bystander: PING");
        let response = self.request(try_lock(BYSTANDER_LOCK));
        assert_eq!(response, Response::AlreadyAcquired { token: self.token }, "bystander lost its lock");
    }

    /// The table holds exactly the bystander's lock and connection. A fuzzed connection that
    /// was just closed may need a moment to go (when it ended by our timeout, not the server's
    /// close), so this retries until `SETTLE_TIMEOUT`.
    fn check_table_settles(&mut self) {
        let everything = ListRequest { prefix: "", max: 0 };
        let want_locks = Response::Locks {
            locks: vec![LockInfo { name: BYSTANDER_LOCK.into(), queue: vec![self.label.clone()] }],
            truncated: false,
        };
        let want_conns = Response::Connections {
            connections: vec![ConnectionInfo {
                label: self.label.clone(),
                held: vec![BYSTANDER_LOCK.into()],
                waiting: vec![],
            }],
            truncated: false,
        };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let locks = self.request(Request::Locks(everything));
            let conns = self.request(Request::Connections(everything));
            if locks == want_locks && conns == want_conns {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a closed connection left state behind after {SETTLE_TIMEOUT:?}:\n  LOCKS {locks:?}\n  CONNECTIONS {conns:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Connects, retrying briefly: loopback ports in TIME_WAIT can make a connect fail for a moment.
fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                stream.set_nodelay(true).unwrap();
                return stream;
            }
            Err(e) if Instant::now() < deadline && e.kind() != ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot connect to the server at {addr}: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed the connection (FIN).
    Eof,
    /// The server closed with unread input (RST).
    Reset,
    /// Nothing more within `READ_TIMEOUT`: the connection may still be open at the server.
    Timeout,
}

fn read_all(stream: &mut TcpStream) -> (Vec<u8>, End) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let deadline = Instant::now() + READ_TIMEOUT * 5;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return (got, End::Timeout);
        }
        match stream.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, End::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, End::Reset),
            Err(e) => panic!("reading the fuzzed connection: {e}"),
        }
    }
}

/// Request ids of the frames at the front of what was sent: the server handles a prefix of
/// these (it stops at the first frame its own, smaller limits refuse), so every response id
/// other than 0 must be one of them.
fn sent_request_ids(mut sent: &[u8]) -> HashSet<u32> {
    let mut ids = HashSet::new();
    while let Ok(Some((frame, used))) = split_frame(sent, MAX_FRAME_CEILING) {
        ids.insert(frame.request_id);
        sent = &sent[used..];
    }
    ids
}

fn check_binary(sent: &[u8], got: &[u8], max_token: &mut u64, verbose: bool) {
    let ids = sent_request_ids(sent);
    let mut rest = got;
    let mut index = 0usize;
    let mut fatal_seen = false;
    loop {
        let (frame, used) = match split_frame(rest, DEFAULT_MAX_FRAME) {
            Ok(Some(split)) => split,
            Ok(None) => break, // nothing left, or a last frame cut off by the close
            Err(e) => panic!("response #{index}: bad frame header ({e}) at byte {}", got.len() - rest.len()),
        };
        let response = Response::decode(&frame).unwrap_or_else(|e| {
            panic!("response #{index} (opcode 0x{:02x}) does not decode: {e}", frame.opcode)
        });
        if verbose {
            eprintln!("  #{index} id {}: {response:?}", frame.request_id);
        }
        assert!(!fatal_seen, "response #{index} {response:?} after a fatal ERROR");
        let rid = frame.request_id;
        match &response {
            Response::Error { code, .. } => {
                assert_ne!(*code, ErrorCode::Unknown, "ERROR with an unassigned code");
                if code.is_fatal() {
                    fatal_seen = true;
                    assert_eq!(
                        rid, 0,
                        "fatal ERROR {response:?} not sent with request id 0 (PROTOCOL.md §2.4, §5)"
                    );
                }
            }
            Response::Shutdown { .. } => panic!("SHUTDOWN from a server that is not stopping"),
            _ => assert_ne!(rid, 0, "request id 0 on a non-ERROR response {response:?}"),
        }
        if rid != 0 {
            assert!(
                ids.contains(&rid),
                "response #{index} {response:?} answers request id {rid}, never sent"
            );
        }
        match &response {
            Response::HelloOk(h) => {
                assert_eq!(index, 0, "HELLO_OK not as the first response");
                assert_eq!(h.version, 1);
                assert!(!h.auth_required);
                assert_eq!((h.max_frame, h.max_name), (DEFAULT_MAX_FRAME, DEFAULT_MAX_NAME));
                assert_eq!(h.idle_timeout_ms, MAX_IDLE.as_millis() as u32);
            }
            // Before the handshake the only other answer is a fatal handshake ERROR.
            Response::Error { code: ErrorCode::BadHandshake | ErrorCode::UnsupportedVersion, .. } => {}
            other => assert!(index > 0, "first response {other:?} is neither HELLO_OK nor a handshake ERROR"),
        }
        if let Response::Acquired { token } = response {
            assert!(token > *max_token, "fencing token {token} not above {max_token}, issued before");
            *max_token = token;
        }
        rest = &rest[used..];
        index += 1;
    }
}

fn check_json(got: &[u8], max_token: &mut u64) {
    let mut lines = got.split(|&b| b == b'\n');
    lines.next_back(); // after the last '\n': empty, or a line cut off by the close
    for (index, line) in lines.enumerate() {
        let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!("JSON reply #{index} does not parse ({e}): {:?}", String::from_utf8_lossy(line))
        });
        let result = value.get("result").and_then(serde_json::Value::as_str);
        let Some(result) = result else { panic!("JSON reply #{index} has no string \"result\": {value}") };
        // A JSON grant carries a token only when its lock command asked ("token": true,
        // PROTOCOL.md §7), as the original sent none; one that does must still be fresh.
        if let ("acquired", Some(token)) = (result, value.get("token")) {
            let Some(token) = token.as_u64() else { panic!("JSON reply #{index}: token not a u64: {value}") };
            assert!(token > *max_token, "fencing token {token} not above {max_token}, issued before");
            *max_token = token;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let flags = data.first().copied().unwrap_or(0);
    let splits = data.get(1).copied().unwrap_or(0);
    let body = data.get(2..).unwrap_or_default();
    let hello_first = flags & 1 != 0;
    let pause = flags & 2 != 0;
    let repeat = flags & 4 != 0;

    let mut sent = Vec::with_capacity(body.len() + 13);
    if hello_first {
        Request::Hello(Hello { version: 1 }).encode(1, &mut sent);
    }
    let prefix = sent.len();
    sent.extend_from_slice(body);
    // Enough copies to pass the server's per-wake-up request budget (4096) with small frames.
    while repeat && !body.is_empty() && sent.len() - prefix < REPEAT_TO {
        sent.extend_from_slice(body);
    }
    let body = &sent[prefix..];
    let json = sent.first() == Some(&b'{');
    let (a, b) = ((splits >> 4) as usize, (splits & 15) as usize);
    let (a, b) = (a.min(b) * body.len() / 16, a.max(b) * body.len() / 16);
    let (a, b) = (prefix + a, prefix + b);
    let writes = [&sent[..a], &sent[a..b], &sent[b..]];

    let mut stream = connect(h.addr);
    for (i, chunk) in writes.iter().enumerate() {
        if chunk.is_empty() {
            continue;
        }
        if pause && i > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The server may already have closed the connection (a fatal ERROR): stop writing.
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let (got, end) = read_all(&mut stream);
    drop(stream);
    if h.verbose {
        eprintln!(
            "sent {} bytes in writes of {:?}, got {} bytes, then {end:?}",
            sent.len(),
            writes.map(<[u8]>::len),
            got.len()
        );
        if json {
            eprintln!("{}", String::from_utf8_lossy(&got));
        }
    }

    assert!(!h.server.is_finished(), "the server thread has stopped");
    let mut state = h.state.lock().unwrap_or_else(|p| p.into_inner());
    if json {
        check_json(&got, &mut state.max_token);
    } else {
        check_binary(&sent, &got, &mut state.max_token, h.verbose);
    }
    state.bystander.check_alive();
    state.bystander.check_table_settles();
    assert!(!h.server.is_finished(), "the server thread has stopped");
});
