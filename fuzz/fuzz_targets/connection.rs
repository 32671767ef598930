//! Fuzz target: arbitrary bytes as one connection of an in-process server.
//!
//! The connection is a session of `officer::server::Loopback`: the server's own session, step
//! loop and lock-table calls, with no socket, poll or clock (ticks are counted by hand, so a
//! run is deterministic and needs no timeouts). One loopback per fuzz process, with one
//! "bystander" connection that did the handshake and holds the lock `bystander`. Each input
//! is fed to a fresh connection in up to three reads, the connection hangs up, and the
//! loopback turns until no work is left. Then:
//!
//! * the fuzzed connection's output is well-formed: binary frames that decode as responses,
//!   within the announced frame limit, with request ids the input used (or 0 for ERROR), a
//!   HELLO_OK only first, nothing after a fatal ERROR, fencing tokens that only grow; or, when
//!   the stream starts with `{` (JSON compatibility mode), JSON objects with a `result`, one a
//!   line, whose tokens (sent only when a lock command asks for one) only grow. The loopback
//!   keeps all output (the server may cut the last frame when it closes; this never does).
//! * the fuzzed connection was closed (by the server's own decision, or for its hang-up).
//! * the bystander is undisturbed: PING answers PONG, LOCK `bystander` answers ALREADY_ACQUIRED
//!   with its original token, and the table lists exactly the bystander's lock and connection
//!   (no lock or connection left behind).
//! * the loopback settles: a bounded number of turns leaves no work (no endless release or
//!   backlog). A panic anywhere aborts the process (libfuzzer-sys installs an aborting hook).
//!
//! Input layout: byte 0 = flags (bit 0: send a valid HELLO first, so the rest is parsed after
//! the handshake; bit 1: run one turn of the loop between reads, so leftovers of the budget
//! and releases are served between a connection's reads; bit 2: repeat the body to 40 KiB,
//! past the server's per-turn request budget; bit 3: let `--max-idle` pass before the
//! hang-up, so the connection ends by the idle deadline); byte 1 = split points (high and
//! low nibble, in sixteenths of the body); the rest is the body, in up to three reads.

#![no_main]

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use officer::protocol::{
    split_frame, ConnectionInfo, ErrorCode, Hello, ListRequest, LockInfo, LockRequest, Request, Response,
    DEFAULT_MAX_FRAME, DEFAULT_MAX_NAME, MAX_FRAME_CEILING,
};
use officer::server::{Config, Loopback};

const MAX_IDLE: Duration = Duration::from_secs(5);
const MAX_IDLE_TICKS: u64 = 5000;
const BYSTANDER_LOCK: &str = "bystander";
const BYSTANDER_LABEL: &str = "127.0.0.1:1";
const FUZZED_LABEL: &str = "127.0.0.1:2";
/// Flag bit 2 repeats the body up to this size: 4552 PINGs, past the 4096-request budget.
const REPEAT_TO: usize = 40 * 1024;
/// Turns after the hang-up within which all work must be done: each turn serves a budget of
/// 4096 requests and a release batch, so 40 KiB of input settles in a handful.
const SETTLE_TURNS: usize = 10_000;

struct State {
    lo: Loopback,
    /// The loopback's clock: one tick per input (more with flag bit 3).
    now: u64,
    bystander: Bystander,
    /// The largest fencing token seen so far; every later ACQUIRED must carry a larger one.
    max_token: u64,
    /// `CONNECTION_FUZZ_VERBOSE=1`: print what each input got back (for replaying reproducers).
    verbose: bool,
}

struct Bystander {
    key: usize,
    token: u64,
    next_id: u32,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> &'static Mutex<State> {
    STATE.get_or_init(|| {
        let mut lo = Loopback::new(Config { max_idle: Some(MAX_IDLE), ..Default::default() });
        let key = lo.connect(BYSTANDER_LABEL, 0);
        let mut bystander = Bystander { key, token: 0, next_id: 3 };
        let mut out = Vec::new();
        Request::Hello(Hello { version: 1 }).encode(1, &mut out);
        try_lock(BYSTANDER_LOCK).encode(2, &mut out);
        match bystander.exchange(&mut lo, &out, 0)[..] {
            [(1, Response::HelloOk(_)), (2, Response::Acquired { token })] => bystander.token = token,
            ref other => panic!("bystander: expected HELLO_OK and ACQUIRED, got {other:?}"),
        }
        let max_token = bystander.token;
        let verbose = std::env::var_os("CONNECTION_FUZZ_VERBOSE").is_some_and(|v| v != "0");
        Mutex::new(State { lo, now: 1, bystander, max_token, verbose })
    })
}

fn try_lock(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(0), queue_max: None })
}

/// Turns the loopback until no work is left, failing if that takes unbounded turns.
fn settle(lo: &mut Loopback, now: u64) {
    for _ in 0..SETTLE_TURNS {
        if !lo.turn(now) {
            return;
        }
    }
    panic!("the loopback still has work after {SETTLE_TURNS} turns");
}

impl Bystander {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sends `bytes`, lets the loopback settle, and decodes everything the bystander got.
    fn exchange(&mut self, lo: &mut Loopback, bytes: &[u8], now: u64) -> Vec<(u32, Response)> {
        lo.receive(self.key, bytes, now);
        settle(lo, now);
        assert_eq!(lo.close_reason(self.key), None, "bystander: the server closed it");
        let got = lo.take_output(self.key);
        let mut rest = &got[..];
        let mut responses = Vec::new();
        loop {
            match split_frame(rest, MAX_FRAME_CEILING) {
                Ok(Some((frame, used))) => {
                    let response = Response::decode(&frame)
                        .unwrap_or_else(|e| panic!("bystander: undecodable response: {e}"));
                    responses.push((frame.request_id, response));
                    rest = &rest[used..];
                }
                Ok(None) => break,
                Err(e) => panic!("bystander: bad frame from the server: {e}"),
            }
        }
        assert!(rest.is_empty(), "bystander: {} bytes of a cut frame", rest.len());
        responses
    }

    fn request(&mut self, lo: &mut Loopback, request: Request<'_>, now: u64) -> Response {
        let id = self.id();
        let mut out = Vec::new();
        request.encode(id, &mut out);
        match self.exchange(lo, &out, now).as_slice() {
            [(got, response)] => {
                assert_eq!(*got, id, "bystander: answer to another request id: {response:?}");
                response.clone()
            }
            other => panic!("bystander: expected one answer, got {other:?}"),
        }
    }

    /// PING, and LOCK of its own lock still answers ALREADY_ACQUIRED with the original token.
    fn check_alive(&mut self, lo: &mut Loopback, now: u64) {
        let response = self.request(lo, Request::Ping(b""), now);
        assert_eq!(response, Response::Pong, "bystander: PING");
        let response = self.request(lo, try_lock(BYSTANDER_LOCK), now);
        assert_eq!(response, Response::AlreadyAcquired { token: self.token }, "bystander lost its lock");
    }

    /// The table holds exactly the bystander's lock and connection: in process, a closed
    /// connection is gone from the table once the loopback has settled.
    fn check_table(&mut self, lo: &mut Loopback, now: u64) {
        let everything = ListRequest { prefix: "", max: 0 };
        let want_locks = Response::Locks {
            locks: vec![LockInfo { name: BYSTANDER_LOCK.into(), queue: vec![BYSTANDER_LABEL.into()] }],
            truncated: false,
        };
        let want_conns = Response::Connections {
            connections: vec![ConnectionInfo {
                label: BYSTANDER_LABEL.into(),
                held: vec![BYSTANDER_LOCK.into()],
                waiting: vec![],
            }],
            truncated: false,
        };
        let locks = self.request(lo, Request::Locks(everything), now);
        let conns = self.request(lo, Request::Connections(everything), now);
        assert!(
            locks == want_locks && conns == want_conns,
            "a closed connection left state behind:\n  LOCKS {locks:?}\n  CONNECTIONS {conns:?}"
        );
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
            Ok(None) => break,
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
    // The loopback keeps all output: nothing is cut by a close.
    assert!(rest.is_empty(), "{} bytes of a cut frame at the end", rest.len());
}

fn check_json(got: &[u8], max_token: &mut u64) {
    let mut lines = got.split(|&b| b == b'\n');
    // After the last '\n': empty, as the loopback keeps all output.
    let last = lines.next_back().unwrap_or_default();
    assert!(last.is_empty(), "a cut JSON line at the end: {:?}", String::from_utf8_lossy(last));
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
    let flags = data.first().copied().unwrap_or(0);
    let splits = data.get(1).copied().unwrap_or(0);
    let body = data.get(2..).unwrap_or_default();
    let hello_first = flags & 1 != 0;
    let turn_between = flags & 2 != 0;
    let repeat = flags & 4 != 0;
    let go_idle = flags & 8 != 0;

    let mut sent = Vec::with_capacity(body.len() + 13);
    if hello_first {
        Request::Hello(Hello { version: 1 }).encode(1, &mut sent);
    }
    let prefix = sent.len();
    sent.extend_from_slice(body);
    // Enough copies to pass the server's per-turn request budget (4096) with small frames.
    while repeat && !body.is_empty() && sent.len() - prefix < REPEAT_TO {
        sent.extend_from_slice(body);
    }
    let body = &sent[prefix..];
    let json = sent.first() == Some(&b'{');
    let (a, b) = ((splits >> 4) as usize, (splits & 15) as usize);
    let (a, b) = (a.min(b) * body.len() / 16, a.max(b) * body.len() / 16);
    let (a, b) = (prefix + a, prefix + b);
    let reads = [&sent[..a], &sent[a..b], &sent[b..]];

    let mut guard = state().lock().unwrap_or_else(|p| p.into_inner());
    let st = &mut *guard;
    st.now += 1;
    let key = st.lo.connect(FUZZED_LABEL, st.now);
    for (i, chunk) in reads.iter().enumerate() {
        if chunk.is_empty() {
            continue;
        }
        if turn_between && i > 0 {
            st.lo.turn(st.now);
        }
        st.lo.receive(key, chunk, st.now);
    }
    if go_idle {
        // The bystander talks just before the fuzzed connection's deadline, so only the
        // fuzzed one goes idle.
        st.now += MAX_IDLE_TICKS - 1;
        st.bystander.check_alive(&mut st.lo, st.now);
        st.now += 1;
        // A turn before the hang-up, so the deadline (not the EOF) decides.
        settle(&mut st.lo, st.now);
    }
    st.lo.hang_up(key);
    settle(&mut st.lo, st.now);
    let got = st.lo.take_output(key);
    let reason = st.lo.close_reason(key);
    assert!(reason.is_some(), "the fuzzed connection is still open after its hang-up");
    st.lo.remove(key, st.now);
    if st.verbose {
        eprintln!(
            "sent {} bytes in reads of {:?}, got {} bytes, closed: {reason:?}",
            sent.len(),
            reads.map(<[u8]>::len),
            got.len()
        );
        if json {
            eprintln!("{}", String::from_utf8_lossy(&got));
        }
    }
    if json {
        check_json(&got, &mut st.max_token);
    } else {
        check_binary(&sent, &got, &mut st.max_token, st.verbose);
    }
    st.bystander.check_alive(&mut st.lo, st.now);
    st.bystander.check_table(&mut st.lo, st.now);
});
