//! Tests of the wire codec (`src/protocol`, PROTOCOL.md) at the byte level: the golden examples
//! read from PROTOCOL.md, per-message assertions, round trips of every request and response,
//! decoding a stream cut at every byte, and every way a frame can be malformed.

use officer::protocol::{
    op, split_frame, validate_name, AwaitedName, ConnectionDetail, ConnectionInfo, DecodeError,
    DetachedSession, ErrorCode, Frame, HeldName, Hello, HelloOk, HolderInfo, ListRequest, LockDetail,
    LockExtRequest, LockInfo, LockRequest, LostReason, Mode, Request, Response, Resumed, RevokeRequest,
    SessionOk, SessionOpen, SessionResume, TokenRequest, WaiterInfo, DEFAULT_MAX_FRAME, DEFAULT_MAX_NAME,
    MAGIC, MAX_FRAME_CEILING, MAX_NAME_CEILING, MIN_FRAME_LEN, PROTOCOL_VERSION, SHUTDOWN_REQUEST_ID,
    TIMEOUT_FOREVER,
};
use proptest::prelude::*;

const MAX_FRAME: u32 = DEFAULT_MAX_FRAME;
const MAX_NAME: u32 = DEFAULT_MAX_NAME;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Parses hex in the format of PROTOCOL.md Appendix A: byte pairs, `#` comments.
fn hex(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.lines() {
        let bytes = line.split('#').next().unwrap_or("");
        for token in bytes.split_whitespace() {
            assert_eq!(token.len(), 2, "hex token {token:?} is not two digits");
            out.push(u8::from_str_radix(token, 16).unwrap_or_else(|_| panic!("bad hex token {token:?}")));
        }
    }
    out
}

/// Splits exactly one whole frame off `bytes` and checks nothing is left.
fn one_frame(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let (frame, used) = split_frame(bytes, MAX_FRAME)?.expect("frame is complete");
    assert_eq!(used, bytes.len(), "bytes left after the frame");
    Ok(frame)
}

/// Decodes bytes holding one request frame: the request id and the request.
fn decode_request(bytes: &[u8]) -> Result<(u32, Request<'_>), DecodeError> {
    let frame = one_frame(bytes)?;
    Ok((frame.request_id, Request::decode(&frame, MAX_NAME)?))
}

fn decode_response(bytes: &[u8]) -> Result<(u32, Response), DecodeError> {
    let frame = one_frame(bytes)?;
    Ok((frame.request_id, Response::decode(&frame)?))
}

fn encode_request(req: &Request<'_>, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode(id, &mut out);
    out
}

fn encode_response(resp: &Response, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    resp.encode(id, &mut out);
    out
}

/// A frame built by hand: length prefix computed from the parts.
fn raw_frame(opcode: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 5) as u32).to_be_bytes().to_vec();
    out.push(opcode);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request_err(bytes: &[u8]) -> DecodeError {
    decode_request(bytes).expect_err("request must be refused")
}

fn response_err(bytes: &[u8]) -> DecodeError {
    decode_response(bytes).expect_err("response must be refused")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Golden examples from PROTOCOL.md

const DOC: &str = include_str!("../PROTOCOL.md");

struct Example {
    kind: String,
    name: String,
    bytes: Vec<u8>,
}

/// Every ```hex block of PROTOCOL.md (Appendix A).
fn doc_examples() -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```hex") else { continue };
        let words: Vec<&str> = info.split_whitespace().collect();
        assert_eq!(words.len(), 2, "hex block needs a kind and a name: {line:?}");
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        out.push(Example { kind: words[0].into(), name: words[1].into(), bytes: hex(&body.join("\n")) });
    }
    out
}

fn doc_block(kind: &str, name: &str) -> Vec<u8> {
    let mut found = doc_examples().into_iter().filter(|e| e.kind == kind && e.name == name);
    let example = found.next().unwrap_or_else(|| panic!("PROTOCOL.md has no `hex {kind} {name}` block"));
    assert!(found.next().is_none(), "two `hex {kind} {name}` blocks");
    example.bytes
}

enum Expected {
    Request(u32, Request<'static>),
    Response(u32, Response),
    /// The error and whether it is fatal.
    Reject(DecodeError, bool),
}

const NIGHTLY: &str = "jobs/nightly";
const TOKEN: u64 = 0x0000_0001_0000_002A;

fn lock(name: &'static str, timeout_ms: Option<u32>, queue_max: Option<u32>) -> Request<'static> {
    Request::Lock(LockRequest { name, timeout_ms, queue_max })
}

const USERS: &str = "db/users";

fn users_token() -> TokenRequest<'static> {
    TokenRequest { name: USERS, token: TOKEN }
}

fn lock_ext_bad(field: &'static str, value: u64) -> DecodeError {
    DecodeError::BadValue { opcode: op::LOCK_EXT, field, value }
}

/// §3.12's first example: shared, 5 s timeout, 30 s lease.
fn lock_ext_shared() -> LockExtRequest<'static> {
    let mut l = LockExtRequest::shared(USERS);
    (l.timeout_ms, l.lease_ms) = (Some(5000), Some(30_000));
    l
}

/// §3.12's second example: 2 of 10 permits, 10 min hold budget, 1 s lock-delay, notice.
fn lock_ext_semaphore() -> LockExtRequest<'static> {
    let mut l = LockExtRequest::semaphore("db/pool", 2, 10);
    (l.max_hold_ms, l.lock_delay_ms, l.notify_contention) = (Some(600_000), 1000, true);
    l
}

fn holder(
    label: &str,
    mode: Mode,
    permits: u32,
    token: u64,
    held_ms: u64,
    ends_in_ms: Option<u32>,
) -> HolderInfo {
    HolderInfo { label: label.into(), mode, permits, token, held_ms, ends_in_ms }
}

/// §4.28's example: a semaphore and a shared lock with an exclusive waiter.
fn locks_detail_list() -> Response {
    Response::LocksDetail {
        locks: vec![
            LockDetail {
                name: "db/pool".into(),
                limit: 10,
                holders: vec![holder("unix:7", Mode::Semaphore, 3, TOKEN - 1, 1500, None)],
                waiters: vec![],
            },
            LockDetail {
                name: USERS.into(),
                limit: 0,
                holders: vec![
                    holder("unix:7", Mode::Shared, 0, TOKEN, 1200, Some(28_800)),
                    holder("unix:9", Mode::Shared, 0, TOKEN + 1, 300, None),
                ],
                waiters: vec![WaiterInfo {
                    label: "127.0.0.1:40112".into(),
                    mode: Mode::Exclusive,
                    permits: 0,
                }],
            },
        ],
        truncated: false,
    }
}

/// §4.29's example: the same grants, by connection.
fn connections_detail_list() -> Response {
    let held = |name: &str, mode, permits, token, held_ms, ends_in_ms| HeldName {
        name: name.into(),
        mode,
        permits,
        token,
        held_ms,
        ends_in_ms,
    };
    Response::ConnectionsDetail {
        connections: vec![ConnectionDetail {
            label: "unix:7".into(),
            connection_id: 7,
            held: vec![
                held("db/pool", Mode::Semaphore, 3, TOKEN - 1, 1500, None),
                held(USERS, Mode::Shared, 0, TOKEN, 1200, Some(28_800)),
            ],
            waiting: vec![AwaitedName { name: NIGHTLY.into(), mode: Mode::Exclusive, permits: 0 }],
        }],
        truncated: false,
    }
}

/// What each example of PROTOCOL.md decodes to, by kind and name.
fn expected_examples() -> Vec<(&'static str, &'static str, Expected)> {
    use Expected::{Reject, Request as Req, Response as Resp};
    let mut examples = vec![
        ("request", "hello", Req(1, Request::Hello(Hello { version: 1 }))),
        ("request", "ping", Req(2, Request::Ping(&[]))),
        ("request", "handshake_probe", Req(3, Request::Ping(b"\r\n\r\n"))),
        ("request", "lock_wait", Req(3, lock(NIGHTLY, Some(5000), None))),
        ("request", "lock_try", Req(4, lock(NIGHTLY, Some(0), Some(1)))),
        ("request", "lock_forever", Req(5, lock("cafébabe", None, Some(3)))),
        ("request", "unlock", Req(6, Request::Unlock(NIGHTLY))),
        ("request", "reset", Req(7, Request::Reset)),
        ("request", "locks", Req(8, Request::Locks(ListRequest { prefix: "jobs/", max: 100 }))),
        ("request", "connections", Req(9, Request::Connections(ListRequest { prefix: "", max: 0 }))),
        ("request", "my_locks", Req(10, Request::MyLocks)),
        ("request", "stats", Req(11, Request::Stats)),
        ("request", "auth", Req(12, Request::Auth(b"s3cret"))),
        ("request", "top", Req(18, Request::Top(5))),
        (
            "request",
            "my_locks_matching",
            Req(19, Request::MyLocksMatching(ListRequest { prefix: "jobs/", max: 100 })),
        ),
        (
            "response",
            "hello_ok",
            Resp(
                1,
                Response::HelloOk(HelloOk {
                    version: 1,
                    auth_required: true,
                    connection_id: 42,
                    max_frame: 65536,
                    max_name: 1024,
                    idle_timeout_ms: 300_000,
                }),
            ),
        ),
        ("response", "pong", Resp(2, Response::Pong)),
        ("response", "acquired", Resp(3, Response::Acquired { token: TOKEN })),
        ("response", "already_acquired", Resp(13, Response::AlreadyAcquired { token: TOKEN })),
        ("response", "already_waiting", Resp(14, Response::AlreadyWaiting)),
        ("response", "timed_out", Resp(4, Response::TimedOut { queue: strings(&["127.0.0.1:40112"]) })),
        (
            "response",
            "queue_maxed",
            Resp(5, Response::QueueMaxed { queue: strings(&["127.0.0.1:40112", "unix:7", "unix:9"]) }),
        ),
        ("response", "cancelled", Resp(15, Response::Cancelled)),
        ("response", "released", Resp(6, Response::Released)),
        ("response", "release_failed", Resp(16, Response::ReleaseFailed)),
        ("response", "reset_ok", Resp(7, Response::ResetOk)),
        (
            "response",
            "locks_list",
            Resp(
                8,
                Response::Locks {
                    locks: vec![LockInfo {
                        name: NIGHTLY.into(),
                        queue: strings(&["127.0.0.1:40112", "unix:7"]),
                    }],
                    truncated: false,
                },
            ),
        ),
        (
            "response",
            "connections_list",
            Resp(
                9,
                Response::Connections {
                    connections: vec![ConnectionInfo {
                        label: "unix:7".into(),
                        held: vec![],
                        waiting: strings(&[NIGHTLY]),
                    }],
                    truncated: true,
                },
            ),
        ),
        (
            "response",
            "my_locks_list",
            Resp(10, Response::MyLocks { held: strings(&[NIGHTLY]), waiting: vec![] }),
        ),
        (
            "response",
            "stats_list",
            Resp(11, Response::Stats(vec![("connections".into(), 2), ("locks".into(), 1)])),
        ),
        ("response", "auth_ok", Resp(12, Response::AuthOk)),
        (
            "response",
            "top_list",
            Resp(
                18,
                Response::Top {
                    longest_held: vec![officer::protocol::TopEntry {
                        name: "db".into(),
                        holder: "unix:7".into(),
                        held_ms: 1500,
                        waiters: 2,
                    }],
                    deepest_queues: vec![officer::protocol::TopEntry {
                        name: "db".into(),
                        holder: "unix:7".into(),
                        held_ms: 1500,
                        waiters: 2,
                    }],
                },
            ),
        ),
        ("response", "shutdown", Resp(0, Response::Shutdown { message: "server is shutting down".into() })),
        ("response", "error", Resp(17, Response::error(ErrorCode::BadName, "lock name is empty"))),
        (
            "response",
            "error_auth_failed",
            Resp(0, Response::error(ErrorCode::AuthFailed, "authentication failed")),
        ),
        (
            "response",
            "error_zero_id",
            Resp(
                0,
                Response::error(
                    ErrorCode::Malformed,
                    DecodeError::ZeroRequestId { opcode: op::PING }.to_string(),
                ),
            ),
        ),
        (
            "response",
            "my_locks_matching_list",
            Resp(
                19,
                Response::MyLocksMatching {
                    held: strings(&[NIGHTLY]),
                    waiting: strings(&["jobs/weekly"]),
                    truncated: true,
                },
            ),
        ),
        ("request", "lock_ext_shared", Req(20, Request::LockExt(lock_ext_shared()))),
        ("request", "lock_ext_semaphore", Req(21, Request::LockExt(lock_ext_semaphore()))),
        ("request", "downgrade", Req(22, Request::Downgrade(users_token()))),
        ("request", "renew", Req(23, Request::Renew(users_token()))),
        ("request", "check", Req(24, Request::Check(users_token()))),
        ("request", "unlock_token", Req(25, Request::UnlockToken(users_token()))),
        ("request", "revoke", Req(26, Request::Revoke(RevokeRequest { name: USERS, token: None }))),
        ("request", "kick", Req(27, Request::Kick(42))),
        ("request", "admin_auth", Req(28, Request::AdminAuth(b"r00t"))),
        ("request", "locks_detail", Req(29, Request::LocksDetail(ListRequest { prefix: "db/", max: 100 }))),
        ("response", "downgraded", Resp(22, Response::Downgraded)),
        ("response", "renewed", Resp(23, Response::Renewed { ends_in_ms: Some(30_000) })),
        ("response", "checked", Resp(24, Response::Checked { held: true })),
        (
            "response",
            "lost",
            Resp(0, Response::Lost { token: TOKEN, reason: LostReason::LeaseExpired, name: USERS.into() }),
        ),
        (
            "response",
            "lost_answer",
            Resp(23, Response::Lost { token: TOKEN, reason: LostReason::MaxHold, name: USERS.into() }),
        ),
        ("response", "contended", Resp(0, Response::Contended { token: TOKEN, name: USERS.into() })),
        ("response", "revoked", Resp(26, Response::Revoked { count: 2 })),
        ("response", "kicked", Resp(27, Response::Kicked)),
        ("response", "locks_detail_list", Resp(29, locks_detail_list())),
        (
            "request",
            "connections_detail",
            Req(30, Request::ConnectionsDetail(ListRequest { prefix: "unix:", max: 0 })),
        ),
        ("response", "connections_detail_list", Resp(30, connections_detail_list())),
        (
            "response",
            "error_limit_mismatch",
            Resp(
                21,
                Response::error(ErrorCode::LimitMismatch, "db/pool is a semaphore of 10 permits, not 8"),
            ),
        ),
        ("response", "error_kicked", Resp(0, Response::error(ErrorCode::Kicked, "closed by an operator"))),
        (
            "reject",
            "lock_ext_flags",
            Reject(DecodeError::NonZeroFlags { opcode: op::LOCK_EXT, flags: 4 }, false),
        ),
        ("reject", "lock_ext_mode", Reject(lock_ext_bad("mode", 3), false)),
        ("reject", "lock_ext_permits_not_semaphore", Reject(lock_ext_bad("permits", 1), false)),
        ("reject", "lock_ext_limit_not_semaphore", Reject(lock_ext_bad("limit", 10), false)),
        ("reject", "lock_ext_permits_zero", Reject(lock_ext_bad("permits", 0), false)),
        ("reject", "lock_ext_permits_above_limit", Reject(lock_ext_bad("permits", 11), false)),
        ("reject", "lock_ext_limit_zero", Reject(lock_ext_bad("limit", 0), false)),
        (
            "reject",
            "renew_token_zero",
            Reject(DecodeError::BadValue { opcode: op::RENEW, field: "token", value: 0 }, false),
        ),
        ("reject", "http_get", Reject(DecodeError::FrameTooLarge { len: 0x4745_5420, max: MAX_FRAME }, true)),
        (
            "reject",
            "tls_client_hello",
            Reject(DecodeError::FrameTooLarge { len: 0x1603_0102, max: MAX_FRAME }, true),
        ),
        ("reject", "length_zero", Reject(DecodeError::FrameTooShort(0), true)),
        ("reject", "length_four", Reject(DecodeError::FrameTooShort(4), true)),
        ("reject", "bad_magic", Reject(DecodeError::BadMagic, true)),
        ("reject", "hello_flags", Reject(DecodeError::NonZeroFlags { opcode: op::HELLO, flags: 1 }, true)),
        ("reject", "hello_version_zero", Reject(DecodeError::UnsupportedVersion(0), true)),
        (
            "reject",
            "lock_flags",
            Reject(DecodeError::NonZeroFlags { opcode: op::LOCK, flags: 0x8000 }, false),
        ),
        ("reject", "zero_request_id", Reject(DecodeError::ZeroRequestId { opcode: op::PING }, false)),
        ("reject", "unknown_opcode", Reject(DecodeError::UnknownOpcode(0x42), false)),
        ("reject", "reset_trailing", Reject(DecodeError::TrailingBytes { opcode: op::RESET }, false)),
    ];
    examples.extend(session_examples());
    examples
}

/// The secret of §3.23's and §4.30's examples.
const SESSION_SECRET: [u8; 16] =
    [0x3f, 0x9a, 0x0c, 0x51, 0xe2, 0x77, 0xb4, 0x08, 0x91, 0xd6, 0x2c, 0x4e, 0xa3, 0x5b, 0xf0, 0x6d];

/// The examples of resumable sessions (§3.22-§3.24, §4.30-§4.31).
fn session_examples() -> Vec<(&'static str, &'static str, Expected)> {
    use Expected::{Reject, Request as Req, Response as Resp};
    let open = SessionOpen { grace_ms: 10_000, skip_while_detached: false };
    let open_skip = SessionOpen { grace_ms: 10_000, skip_while_detached: true };
    let mut lock_skip = LockExtRequest::exclusive(NIGHTLY);
    (lock_skip.timeout_ms, lock_skip.skip_while_detached) = (Some(60_000), true);
    let resume = SessionResume { session_id: 7, secret: SESSION_SECRET };
    let ok = SessionOk { session_id: 7, secret: SESSION_SECRET, grace_ms: 10_000 };
    vec![
        ("request", "session_open", Req(31, Request::SessionOpen(open))),
        ("request", "session_open_skip", Req(31, Request::SessionOpen(open_skip))),
        ("request", "lock_ext_skip", Req(4, Request::LockExt(lock_skip))),
        ("response", "error_skipped", Resp(4, Response::error(ErrorCode::Skipped, "skipped while detached"))),
        ("response", "error_not_leader", Resp(0, Response::error(ErrorCode::NotLeader, "127.0.0.1:7001"))),
        ("request", "session_resume", Req(2, Request::SessionResume(resume))),
        ("request", "sessions", Req(34, Request::Sessions(0))),
        ("response", "sessions_list", Resp(34, sessions_list())),
        ("request", "goodbye", Req(33, Request::Goodbye)),
        ("response", "session_ok", Resp(31, Response::SessionOk(ok))),
        ("response", "session_ok_none", Resp(31, Response::SessionOk(SessionOk::NONE))),
        ("response", "resumed", Resp(2, Response::Resumed(Resumed { grace_ms: 10_000, replayed: 1 }))),
        ("response", "acquired_replayed", Resp(3, Response::Acquired { token: TOKEN + 1 })),
        (
            "response",
            "error_bad_session",
            Resp(2, Response::error(ErrorCode::BadSession, "session cannot be resumed")),
        ),
        (
            "response",
            "error_taken_over",
            Resp(0, Response::error(ErrorCode::TakenOver, "taken over by another connection")),
        ),
        (
            "reject",
            "session_open_flags",
            Reject(DecodeError::NonZeroFlags { opcode: op::SESSION_OPEN, flags: 2 }, false),
        ),
        (
            "reject",
            "session_resume_zero_id",
            Reject(
                DecodeError::BadValue { opcode: op::SESSION_RESUME, field: "session_id", value: 0 },
                false,
            ),
        ),
    ]
}

/// §4.32's example: two detached sessions, soonest grace end first.
fn sessions_list() -> Response {
    let entry = |label: &str, session_id, grace_left_ms, held, waiting, kept| DetachedSession {
        label: label.into(),
        session_id,
        grace_left_ms,
        held,
        waiting,
        kept,
    };
    Response::Sessions {
        sessions: vec![entry("10.0.0.7:40112", 7, 8500, 2, 1, 1), entry("unix:9", 12, 29_000, 0, 3, 0)],
        truncated: false,
    }
}

/// A session request decoded from a frame built around `payload`, as an owned value.
#[derive(Debug, PartialEq)]
enum SessionRequest {
    Open(SessionOpen),
    Resume(SessionResume),
    Goodbye,
}

fn session_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ((payload.len() + 5) as u32).to_be_bytes().to_vec();
    bytes.push(opcode);
    bytes.extend_from_slice(&9u32.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn session_request(opcode: u8, payload: &[u8]) -> Result<SessionRequest, DecodeError> {
    let bytes = session_frame(opcode, payload);
    match decode_request(&bytes)?.1 {
        Request::SessionOpen(open) => Ok(SessionRequest::Open(open)),
        Request::SessionResume(resume) => Ok(SessionRequest::Resume(resume)),
        Request::Goodbye => Ok(SessionRequest::Goodbye),
        other => panic!("not a session request: {other:?}"),
    }
}

#[test]
fn sessions_payload_is_exactly_a_u32() {
    assert_eq!(session_frame_decode(&[0, 0, 0, 7]), Ok(Request::Sessions(7)));
    assert_eq!(session_frame_decode(&[0, 0, 7]), Err(DecodeError::Truncated { opcode: op::SESSIONS }));
    assert_eq!(
        session_frame_decode(&[0, 0, 0, 7, 0]),
        Err(DecodeError::TrailingBytes { opcode: op::SESSIONS })
    );
    assert_eq!(ErrorCode::from_u16(22), ErrorCode::Skipped);
    assert!(!ErrorCode::Skipped.is_fatal());
}

fn session_frame_decode(payload: &[u8]) -> Result<Request<'static>, DecodeError> {
    let bytes = session_frame(op::SESSIONS, payload);
    decode_request(&bytes).map(|(_, req)| match req {
        Request::Sessions(max) => Request::Sessions(max),
        other => panic!("not SESSIONS: {other:?}"),
    })
}

#[test]
fn session_payloads_are_exact_and_their_flags_reserved() {
    let open = |payload: &[u8]| session_request(op::SESSION_OPEN, payload);
    let skip = SessionOpen { grace_ms: 5, skip_while_detached: true };
    assert_eq!(open(&[0, 1, 0, 0, 0, 5]), Ok(SessionRequest::Open(skip)));
    assert_eq!(open(&[0, 0, 0, 0, 0]), Err(DecodeError::Truncated { opcode: op::SESSION_OPEN }));
    assert_eq!(open(&[0, 0, 0, 0, 0, 5, 0]), Err(DecodeError::TrailingBytes { opcode: op::SESSION_OPEN }));
    let mut resume = vec![0, 0, 0, 0, 0, 0, 0, 9];
    resume.extend_from_slice(&SESSION_SECRET[..15]);
    let resume_req = |p: &[u8]| session_request(op::SESSION_RESUME, p);
    assert_eq!(resume_req(&resume), Err(DecodeError::Truncated { opcode: op::SESSION_RESUME }));
    resume.extend_from_slice(&SESSION_SECRET[15..]);
    let want = SessionResume { session_id: 9, secret: SESSION_SECRET };
    assert_eq!(resume_req(&resume), Ok(SessionRequest::Resume(want)));
    resume.push(0);
    assert_eq!(resume_req(&resume), Err(DecodeError::TrailingBytes { opcode: op::SESSION_RESUME }));
    assert_eq!(session_request(op::GOODBYE, &[]), Ok(SessionRequest::Goodbye));
    let goodbye = session_request(op::GOODBYE, &[1]);
    assert_eq!(goodbye, Err(DecodeError::TrailingBytes { opcode: op::GOODBYE }));
    let short_ok = Response::decode(&one_frame(&session_frame(op::SESSION_OK, &[0; 27])).expect("frame"));
    assert_eq!(short_ok, Err(DecodeError::Truncated { opcode: op::SESSION_OK }));
    let long_resumed = Response::decode(&one_frame(&session_frame(op::RESUMED, &[0; 9])).expect("frame"));
    assert_eq!(long_resumed, Err(DecodeError::TrailingBytes { opcode: op::RESUMED }));
}

#[test]
fn every_doc_example_decodes_to_its_value_and_reencodes_to_its_bytes() {
    let examples = doc_examples();
    let expected = expected_examples();
    for example in &examples {
        let (kind, name) = (example.kind.as_str(), example.name.as_str());
        let (_, _, want) = expected
            .iter()
            .find(|(k, n, _)| *k == kind && *n == name)
            .unwrap_or_else(|| panic!("PROTOCOL.md block `hex {kind} {name}` has no expected value"));
        let bytes = &example.bytes;
        match want {
            Expected::Request(id, req) => {
                assert_eq!(decode_request(bytes), Ok((*id, *req)), "{name}");
                assert_eq!(&encode_request(req, *id), bytes, "{name} re-encodes");
            }
            Expected::Response(id, resp) => {
                assert_eq!(decode_response(bytes), Ok((*id, resp.clone())), "{name}");
                assert_eq!(&encode_response(resp, *id), bytes, "{name} re-encodes");
            }
            Expected::Reject(err, fatal) => {
                let got = match split_frame(bytes, MAX_FRAME) {
                    Err(e) => e,
                    Ok(Some((frame, _))) => Request::decode(&frame, MAX_NAME).expect_err(name),
                    Ok(None) => panic!("{name}: reject example is incomplete"),
                };
                assert_eq!(&got, err, "{name}");
                assert_eq!(got.is_fatal(), *fatal, "{name} fatality");
            }
        }
    }
    for (kind, name, _) in &expected {
        let count = examples.iter().filter(|e| e.kind == *kind && e.name == *name).count();
        assert_eq!(count, 1, "PROTOCOL.md must have exactly one `hex {kind} {name}` block");
    }
}

#[test]
fn doc_covers_every_opcode() {
    let examples = doc_examples();
    let opcodes: Vec<u8> = examples.iter().filter(|e| e.kind != "reject").map(|e| e.bytes[4]).collect();
    let all = [
        op::HELLO,
        op::PING,
        op::LOCK,
        op::UNLOCK,
        op::RESET,
        op::LOCKS,
        op::CONNECTIONS,
        op::MY_LOCKS,
        op::STATS,
        op::AUTH,
        op::TOP,
        op::MY_LOCKS_MATCHING,
        op::HELLO_OK,
        op::PONG,
        op::ACQUIRED,
        op::ALREADY_ACQUIRED,
        op::ALREADY_WAITING,
        op::TIMED_OUT,
        op::QUEUE_MAXED,
        op::CANCELLED,
        op::RELEASED,
        op::RELEASE_FAILED,
        op::RESET_OK,
        op::LOCKS_LIST,
        op::CONNECTIONS_LIST,
        op::MY_LOCKS_LIST,
        op::STATS_LIST,
        op::AUTH_OK,
        op::SHUTDOWN,
        op::TOP_LIST,
        op::MY_LOCKS_MATCHING_LIST,
        op::LOCK_EXT,
        op::DOWNGRADE,
        op::RENEW,
        op::CHECK,
        op::UNLOCK_TOKEN,
        op::REVOKE,
        op::KICK,
        op::ADMIN_AUTH,
        op::LOCKS_DETAIL,
        op::CONNECTIONS_DETAIL,
        op::DOWNGRADED,
        op::RENEWED,
        op::CHECKED,
        op::LOST,
        op::CONTENDED,
        op::REVOKED,
        op::KICKED,
        op::LOCKS_DETAIL_LIST,
        op::CONNECTIONS_DETAIL_LIST,
        op::SESSION_OPEN,
        op::SESSION_RESUME,
        op::GOODBYE,
        op::SESSION_OK,
        op::RESUMED,
        op::ERROR,
    ];
    for code in all {
        assert!(opcodes.contains(&code), "PROTOCOL.md has no example of opcode 0x{code:02x}");
        assert_eq!(code & 0x80 != 0, code >= op::HELLO_OK, "high bit marks responses");
    }
}

#[test]
fn doc_sections_cited_by_the_code_exist() {
    for section in [
        "### 2.1 Framing",
        "### 2.3 Names",
        "### 2.4 Request ids",
        "### 3.1 HELLO",
        "### 3.3 LOCK",
        "### 3.6 LOCKS",
        "### 3.7 MY_LOCKS",
        "### 3.11 MY_LOCKS_MATCHING",
        "### 4.14 MY_LOCKS_LIST",
        "### 4.20 MY_LOCKS_MATCHING_LIST",
        "### 3.12 LOCK_EXT",
        "### 3.13 DOWNGRADE",
        "### 3.17 REVOKE",
        "### 3.20 LOCKS_DETAIL",
        "### 4.21 DOWNGRADED",
        "### 4.22 RENEWED",
        "### 4.23 CHECKED",
        "### 4.24 LOST",
        "### 4.25 CONTENDED",
        "### 4.26 REVOKED",
        "### 4.27 KICKED",
        "### 4.28 LOCKS_DETAIL_LIST",
        "### 3.21 CONNECTIONS_DETAIL",
        "### 4.29 CONNECTIONS_DETAIL_LIST",
        "### 6.7 Modes",
        "### 6.8 Counting semaphores",
        "### 6.9 Leases",
        "### 6.10 Lock-delay",
        "### 6.11 Server-checked fences",
        "### 6.12 Forced release",
        "### 6.13 Listings",
    ] {
        assert!(DOC.contains(section), "PROTOCOL.md lacks {section}");
    }
    for heading in
        ["## 5. Error codes", "## 7. JSON compatibility mode", "### 4.1 HELLO_OK", "### 4.18 ERROR"]
    {
        assert!(DOC.contains(heading), "PROTOCOL.md lacks {heading}");
    }
}

// Per-message assertions: the literal bytes of each doc example, field by field.

#[test]
fn golden_hello() {
    let b = doc_block("request", "hello");
    assert_eq!(b, hex("00 00 00 0d 01 00 00 00 01 4f 46 43 52 00 01 00 00"));
    assert_eq!(&b[9..13], &MAGIC);
    let Ok((1, Request::Hello(h))) = decode_request(&b) else { panic!("not a HELLO") };
    assert_eq!(h.version, PROTOCOL_VERSION);
    assert_eq!(h.negotiated_version(), 1);
}

#[test]
fn golden_ping_and_pong() {
    assert_eq!(doc_block("request", "ping"), hex("00 00 00 05 02 00 00 00 02"));
    assert_eq!(doc_block("response", "pong"), hex("00 00 00 05 82 00 00 00 02"));
}

#[test]
fn golden_locks() {
    let wait = doc_block("request", "lock_wait");
    assert_eq!(&wait[..19], &hex("00 00 00 1b 03 00 00 00 03 00 00 00 00 13 88 00 00 00 00"));
    assert_eq!(&wait[19..], NIGHTLY.as_bytes());
    let Ok((3, Request::Lock(l))) = decode_request(&wait) else { panic!("not a LOCK") };
    assert_eq!((l.name, l.timeout_ms, l.queue_max), (NIGHTLY, Some(5000), None));

    let try_once = doc_block("request", "lock_try");
    assert_eq!(&try_once[13..19], &hex("00 00 00 00 00 01")[..6]);
    let Ok((4, Request::Lock(l))) = decode_request(&try_once) else { panic!("not a LOCK") };
    assert_eq!((l.timeout_ms, l.queue_max), (Some(0), Some(1)));

    let forever = doc_block("request", "lock_forever");
    assert_eq!(&forever[11..15], &TIMEOUT_FOREVER.to_be_bytes());
    assert_eq!(&forever[19..], "cafébabe".as_bytes());
    let Ok((5, Request::Lock(l))) = decode_request(&forever) else { panic!("not a LOCK") };
    assert_eq!((l.name, l.timeout_ms, l.queue_max), ("cafébabe", None, Some(3)));
}

#[test]
fn golden_unlock_reset_listings_auth() {
    let unlock = doc_block("request", "unlock");
    assert_eq!(&unlock[..9], &hex("00 00 00 11 04 00 00 00 06"));
    assert_eq!(decode_request(&unlock), Ok((6, Request::Unlock(NIGHTLY))));
    assert_eq!(doc_block("request", "reset"), hex("00 00 00 05 05 00 00 00 07"));
    assert_eq!(doc_block("request", "my_locks"), hex("00 00 00 05 08 00 00 00 0a"));
    assert_eq!(doc_block("request", "stats"), hex("00 00 00 05 09 00 00 00 0b"));
    assert_eq!(doc_block("request", "locks"), hex("00 00 00 0e 06 00 00 00 08 00 00 00 64 6a 6f 62 73 2f"));
    assert_eq!(doc_block("request", "connections"), hex("00 00 00 09 07 00 00 00 09 00 00 00 00"));
    assert_eq!(doc_block("request", "auth"), hex("00 00 00 0b 0a 00 00 00 0c 73 33 63 72 65 74"));
}

#[test]
fn golden_hello_ok() {
    let b = doc_block("response", "hello_ok");
    assert_eq!(b.len(), 4 + 5 + 24);
    assert_eq!(
        b,
        hex("00 00 00 1d 81 00 00 00 01  00 01 00 01  00 00 00 00 00 00 00 2a
             00 01 00 00  00 00 04 00  00 04 93 e0")
    );
    let Ok((1, Response::HelloOk(h))) = decode_response(&b) else { panic!("not HELLO_OK") };
    assert!(h.auth_required);
    assert_eq!((h.connection_id, h.max_frame, h.max_name, h.idle_timeout_ms), (42, 65536, 1024, 300_000));
}

#[test]
fn golden_lock_outcomes() {
    let acquired = hex("00 00 00 0d 83 00 00 00 03 00 00 00 01 00 00 00 2a");
    assert_eq!(doc_block("response", "acquired"), acquired);
    assert_eq!(decode_response(&acquired), Ok((3, Response::Acquired { token: 4_294_967_338 })));
    assert_eq!(doc_block("response", "already_acquired")[4], op::ALREADY_ACQUIRED);
    for (name, opcode, id) in [
        ("already_waiting", op::ALREADY_WAITING, 14u8),
        ("cancelled", op::CANCELLED, 15),
        ("released", op::RELEASED, 6),
        ("release_failed", op::RELEASE_FAILED, 16),
        ("reset_ok", op::RESET_OK, 7),
        ("auth_ok", op::AUTH_OK, 12),
    ] {
        assert_eq!(doc_block("response", name), [0, 0, 0, 5, opcode, 0, 0, 0, id], "{name}");
    }
    let timed_out = doc_block("response", "timed_out");
    assert_eq!(&timed_out[..15], &hex("00 00 00 1a 86 00 00 00 04 00 00 00 01 00 0f"));
    assert_eq!(&timed_out[15..], b"127.0.0.1:40112");
    let Ok((5, Response::QueueMaxed { queue })) = decode_response(&doc_block("response", "queue_maxed"))
    else {
        panic!("not QUEUE_MAXED")
    };
    assert_eq!(queue, ["127.0.0.1:40112", "unix:7", "unix:9"]);
}

#[test]
fn golden_listings() {
    let locks = doc_block("response", "locks_list");
    assert_eq!(&locks[9..16], &hex("00 00 00 00 01 00 0c"), "truncated 0, count 1, name length 12");
    let connections = doc_block("response", "connections_list");
    assert_eq!(&connections[9..16], &hex("01 00 00 00 01 00 06"), "truncated 1, count 1, label length 6");
    let mine = doc_block("response", "my_locks_list");
    assert_eq!(&mine[9..15], &hex("00 00 00 01 00 0c"));
    assert_eq!(&mine[mine.len() - 4..], &[0, 0, 0, 0], "empty waiting list");
    let matching = doc_block("request", "my_locks_matching");
    assert_eq!(matching, hex("00 00 00 0e 0c 00 00 00 13 00 00 00 64 6a 6f 62 73 2f"));
    let matching = doc_block("response", "my_locks_matching_list");
    assert_eq!(&matching[4..16], &hex("93 00 00 00 13 01 00 00 00 01 00 0c"), "truncated 1, held count 1");
    let stats = doc_block("response", "stats_list");
    let Ok((11, Response::Stats(entries))) = decode_response(&stats) else { panic!("not STATS_LIST") };
    assert_eq!(entries, [("connections".to_string(), 2), ("locks".to_string(), 1)]);
}

/// The spec's byte counts agree with the bytes: HELLO is 17 bytes on the wire, its length field
/// 13 (PROTOCOL.md §2.5 and §8 once said "13 bytes on the wire").
#[test]
fn hello_is_17_bytes_with_a_length_of_13() {
    let hello = doc_block("request", "hello");
    assert_eq!(hello.len(), 17);
    assert_eq!(&hello[..5], &hex("00 00 00 0d 01"));
    assert!(DOC.contains("HELLO is exactly 17 bytes on the wire"));
    assert!(!DOC.contains("exactly 13 bytes"), "PROTOCOL.md must not call HELLO 13 bytes on the wire");
    assert!(!DOC.contains("HELLO's 13 bytes"), "PROTOCOL.md must not call HELLO 13 bytes on the wire");
}

/// Fatal is told by the code: `auth_failed` goes with id 0 and is fatal; the answer to a request
/// sent with id 0 also has id 0 but a code that is not (§2.4, §5).
#[test]
fn fatal_errors_are_told_by_their_code() {
    let Ok((0, Response::Error { code, .. })) = decode_response(&doc_block("response", "error_auth_failed"))
    else {
        panic!("not an ERROR with id 0")
    };
    assert!(code.is_fatal());
    let Ok((0, Response::Error { code, .. })) = decode_response(&doc_block("response", "error_zero_id"))
    else {
        panic!("not an ERROR with id 0")
    };
    assert_eq!(code, ErrorCode::Malformed);
    assert!(!code.is_fatal());
}

#[test]
fn golden_shutdown_and_error() {
    let shutdown = doc_block("response", "shutdown");
    assert_eq!(&shutdown[..9], &hex("00 00 00 1c 91 00 00 00 00"));
    assert_eq!(u32::from_be_bytes([shutdown[5], shutdown[6], shutdown[7], shutdown[8]]), SHUTDOWN_REQUEST_ID);
    let error = doc_block("response", "error");
    assert_eq!(&error[..11], &hex("00 00 00 19 ff 00 00 00 11 00 03"));
    assert_eq!(&error[11..], DecodeError::EmptyName.to_string().as_bytes(), "the server's own message");
    let Ok((17, Response::Error { code, .. })) = decode_response(&error) else { panic!("not ERROR") };
    assert_eq!(code, DecodeError::EmptyName.code());
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// A request that owns its data, so proptest can generate it.
#[derive(Debug, Clone)]
enum OwnedRequest {
    Hello(u16),
    Ping(Vec<u8>),
    Lock(String, Option<u32>, Option<u32>),
    Unlock(String),
    Reset,
    Locks(String, u32),
    Connections(String, u32),
    MyLocks,
    Stats,
    Auth(Vec<u8>),
    MyLocksMatching(String, u32),
    LockExt(OwnedLockExt),
    /// DOWNGRADE, RENEW, CHECK or UNLOCK_TOKEN, by opcode.
    Token(u8, String, u64),
    Revoke(String, Option<u64>),
    Kick(u64),
    AdminAuth(Vec<u8>),
    LocksDetail(String, u32),
    ConnectionsDetail(String, u32),
    Sessions(u32),
}

/// The fields of a LOCK_EXT, owned; `as_request` borrows the name.
#[derive(Debug, Clone)]
struct OwnedLockExt {
    name: String,
    mode: Mode,
    timeout_ms: Option<u32>,
    queue_max: Option<u32>,
    permits: u32,
    limit: u32,
    lease_ms: Option<u32>,
    max_hold_ms: Option<u32>,
    lock_delay_ms: u32,
    notify_contention: bool,
    skip_while_detached: bool,
}

impl OwnedRequest {
    fn as_request(&self) -> Request<'_> {
        match self {
            OwnedRequest::Hello(version) => Request::Hello(Hello { version: *version }),
            OwnedRequest::Ping(pad) => Request::Ping(pad),
            OwnedRequest::Lock(name, timeout_ms, queue_max) => {
                Request::Lock(LockRequest { name, timeout_ms: *timeout_ms, queue_max: *queue_max })
            }
            OwnedRequest::Unlock(name) => Request::Unlock(name),
            OwnedRequest::Reset => Request::Reset,
            OwnedRequest::Locks(prefix, max) => Request::Locks(ListRequest { prefix, max: *max }),
            OwnedRequest::Connections(prefix, max) => Request::Connections(ListRequest { prefix, max: *max }),
            OwnedRequest::MyLocks => Request::MyLocks,
            OwnedRequest::Stats => Request::Stats,
            OwnedRequest::Auth(secret) => Request::Auth(secret),
            OwnedRequest::MyLocksMatching(prefix, max) => {
                Request::MyLocksMatching(ListRequest { prefix, max: *max })
            }
            OwnedRequest::LockExt(l) => Request::LockExt(LockExtRequest {
                name: &l.name,
                mode: l.mode,
                timeout_ms: l.timeout_ms,
                queue_max: l.queue_max,
                permits: l.permits,
                limit: l.limit,
                lease_ms: l.lease_ms,
                max_hold_ms: l.max_hold_ms,
                lock_delay_ms: l.lock_delay_ms,
                notify_contention: l.notify_contention,
                skip_while_detached: l.skip_while_detached,
            }),
            OwnedRequest::Token(opcode, name, token) => token_request(*opcode, name, *token),
            OwnedRequest::Revoke(name, token) => Request::Revoke(RevokeRequest { name, token: *token }),
            OwnedRequest::Kick(id) => Request::Kick(*id),
            OwnedRequest::AdminAuth(secret) => Request::AdminAuth(secret),
            OwnedRequest::LocksDetail(prefix, max) => Request::LocksDetail(ListRequest { prefix, max: *max }),
            OwnedRequest::Sessions(max) => Request::Sessions(*max),
            OwnedRequest::ConnectionsDetail(prefix, max) => {
                Request::ConnectionsDetail(ListRequest { prefix, max: *max })
            }
        }
    }
}

/// Valid names: any characters but ASCII controls, 1 to 60 of them (at most 240 bytes).
fn name() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f\\x7f]{1,60}"
}

fn prefix() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f\\x7f]{0,60}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

/// The sentinels decode to `None`, so `Some(sentinel)` is left out of the round trip.
fn timeout() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (0..TIMEOUT_FOREVER).prop_map(Some)]
}

fn queue_max() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (1..=u32::MAX).prop_map(Some)]
}

/// DOWNGRADE, RENEW, CHECK or UNLOCK_TOKEN: the four requests of one layout (§3.13-§3.16).
fn token_request(opcode: u8, name: &str, token: u64) -> Request<'_> {
    let t = TokenRequest { name, token };
    match opcode {
        op::DOWNGRADE => Request::Downgrade(t),
        op::RENEW => Request::Renew(t),
        op::CHECK => Request::Check(t),
        _ => Request::UnlockToken(t),
    }
}

/// Lease and hold budget: 0 is the "none" sentinel, so `Some(0)` is left out.
fn duration() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (1..=u32::MAX).prop_map(Some)]
}

/// A valid mode with its permits and limit (§3.12): 0 and 0 unless a semaphore.
fn mode_permits_limit() -> impl Strategy<Value = (Mode, u32, u32)> {
    prop_oneof![
        Just((Mode::Exclusive, 0, 0)),
        Just((Mode::Shared, 0, 0)),
        (1..=u32::MAX).prop_flat_map(|limit| (Just(Mode::Semaphore), 1..=limit, Just(limit))),
    ]
}

fn lock_ext() -> impl Strategy<Value = OwnedLockExt> {
    (
        name(),
        mode_permits_limit(),
        timeout(),
        queue_max(),
        duration(),
        duration(),
        any::<u32>(),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(
                name,
                (mode, permits, limit),
                timeout_ms,
                queue_max,
                lease_ms,
                max_hold_ms,
                lock_delay_ms,
                (notify_contention, skip_while_detached),
            )| {
                OwnedLockExt {
                    name,
                    mode,
                    timeout_ms,
                    queue_max,
                    permits,
                    limit,
                    lease_ms,
                    max_hold_ms,
                    lock_delay_ms,
                    notify_contention,
                    skip_while_detached,
                }
            },
        )
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        lock_ext().prop_map(OwnedRequest::LockExt),
        (
            prop::sample::select(vec![op::DOWNGRADE, op::RENEW, op::CHECK, op::UNLOCK_TOKEN]),
            name(),
            1..=u64::MAX
        )
            .prop_map(|(opcode, n, t)| OwnedRequest::Token(opcode, n, t)),
        (name(), prop_oneof![Just(None), (1..=u64::MAX).prop_map(Some)])
            .prop_map(|(n, t)| OwnedRequest::Revoke(n, t)),
        any::<u64>().prop_map(OwnedRequest::Kick),
        bytes().prop_map(OwnedRequest::AdminAuth),
        (prefix(), any::<u32>()).prop_map(|(p, m)| OwnedRequest::LocksDetail(p, m)),
        (prefix(), any::<u32>()).prop_map(|(p, m)| OwnedRequest::ConnectionsDetail(p, m)),
        any::<u32>().prop_map(OwnedRequest::Sessions),
        (1..=u16::MAX).prop_map(OwnedRequest::Hello),
        bytes().prop_map(OwnedRequest::Ping),
        (name(), timeout(), queue_max()).prop_map(|(n, t, q)| OwnedRequest::Lock(n, t, q)),
        name().prop_map(OwnedRequest::Unlock),
        Just(OwnedRequest::Reset),
        (prefix(), any::<u32>()).prop_map(|(p, m)| OwnedRequest::Locks(p, m)),
        (prefix(), any::<u32>()).prop_map(|(p, m)| OwnedRequest::Connections(p, m)),
        Just(OwnedRequest::MyLocks),
        Just(OwnedRequest::Stats),
        bytes().prop_map(OwnedRequest::Auth),
        (prefix(), any::<u32>()).prop_map(|(p, m)| OwnedRequest::MyLocksMatching(p, m)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(text(), 0..5)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (0u16..=22).prop_map(|c| ErrorCode::from_u16(if c == 0 { 0xFFFF } else { c }))
}

fn response() -> impl Strategy<Value = Response> {
    let hello_ok = (any::<u16>(), any::<bool>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(version, auth_required, connection_id, max_frame, max_name, idle_timeout_ms)| {
            Response::HelloOk(HelloOk {
                version,
                auth_required,
                connection_id,
                max_frame,
                max_name,
                idle_timeout_ms,
            })
        });
    let lock_info = (text(), texts()).prop_map(|(name, queue)| LockInfo { name, queue });
    let conn_info =
        (text(), texts(), texts()).prop_map(|(label, held, waiting)| ConnectionInfo { label, held, waiting });
    let mode = prop::sample::select(vec![Mode::Exclusive, Mode::Shared, Mode::Semaphore]);
    let ends = || prop_oneof![Just(None), (0..u32::MAX).prop_map(Some)];
    let grant = || (text(), mode.clone(), any::<u32>(), any::<u64>(), any::<u64>(), ends());
    let holder = grant().prop_map(|(label, mode, permits, token, held_ms, ends_in_ms)| HolderInfo {
        label,
        mode,
        permits,
        token,
        held_ms,
        ends_in_ms,
    });
    let held = grant().prop_map(|(name, mode, permits, token, held_ms, ends_in_ms)| HeldName {
        name,
        mode,
        permits,
        token,
        held_ms,
        ends_in_ms,
    });
    let wait = || (text(), mode.clone(), any::<u32>());
    let waiter = wait().prop_map(|(label, mode, permits)| WaiterInfo { label, mode, permits });
    let awaited = wait().prop_map(|(name, mode, permits)| AwaitedName { name, mode, permits });
    let connection_detail = (
        text(),
        any::<u64>(),
        proptest::collection::vec(held, 0..4),
        proptest::collection::vec(awaited, 0..4),
    )
        .prop_map(|(label, connection_id, held, waiting)| ConnectionDetail {
            label,
            connection_id,
            held,
            waiting,
        });
    let lock_detail = (
        text(),
        any::<u32>(),
        proptest::collection::vec(holder, 0..4),
        proptest::collection::vec(waiter, 0..4),
    )
        .prop_map(|(name, limit, holders, waiters)| LockDetail { name, limit, holders, waiters });
    let detached = (text(), any::<u64>(), any::<[u32; 4]>()).prop_map(|(label, session_id, n)| {
        let [grace_left_ms, held, waiting, kept] = n;
        DetachedSession { label, session_id, grace_left_ms, held, waiting, kept }
    });
    // `Other` covers every byte the known reasons do not.
    let reason = any::<u8>().prop_map(LostReason::from_u8);
    let v2 = prop_oneof![
        Just(Response::Downgraded),
        ends().prop_map(|ends_in_ms| Response::Renewed { ends_in_ms }),
        any::<bool>().prop_map(|held| Response::Checked { held }),
        (any::<u64>(), reason, text()).prop_map(|(token, reason, name)| Response::Lost {
            token,
            reason,
            name
        }),
        (any::<u64>(), text()).prop_map(|(token, name)| Response::Contended { token, name }),
        any::<u32>().prop_map(|count| Response::Revoked { count }),
        Just(Response::Kicked),
        (any::<u64>(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(session_id, secret, grace_ms)| {
            Response::SessionOk(SessionOk { session_id, secret, grace_ms })
        }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(grace_ms, replayed)| Response::Resumed(Resumed { grace_ms, replayed })),
        (proptest::collection::vec(lock_detail, 0..4), any::<bool>())
            .prop_map(|(locks, truncated)| Response::LocksDetail { locks, truncated }),
        (proptest::collection::vec(connection_detail, 0..4), any::<bool>())
            .prop_map(|(connections, truncated)| Response::ConnectionsDetail { connections, truncated }),
        (proptest::collection::vec(detached, 0..4), any::<bool>())
            .prop_map(|(sessions, truncated)| Response::Sessions { sessions, truncated }),
    ];
    let v1 = prop_oneof![
        hello_ok,
        Just(Response::Pong),
        any::<u64>().prop_map(|token| Response::Acquired { token }),
        any::<u64>().prop_map(|token| Response::AlreadyAcquired { token }),
        Just(Response::AlreadyWaiting),
        texts().prop_map(|queue| Response::TimedOut { queue }),
        texts().prop_map(|queue| Response::QueueMaxed { queue }),
        Just(Response::Cancelled),
        Just(Response::Released),
        Just(Response::ReleaseFailed),
        Just(Response::ResetOk),
        (proptest::collection::vec(lock_info, 0..4), any::<bool>())
            .prop_map(|(locks, truncated)| Response::Locks { locks, truncated }),
        (proptest::collection::vec(conn_info, 0..4), any::<bool>())
            .prop_map(|(connections, truncated)| Response::Connections { connections, truncated }),
        (texts(), texts()).prop_map(|(held, waiting)| Response::MyLocks { held, waiting }),
        (texts(), texts(), any::<bool>()).prop_map(|(held, waiting, truncated)| {
            Response::MyLocksMatching { held, waiting, truncated }
        }),
        proptest::collection::vec((text(), any::<u64>()), 0..5).prop_map(Response::Stats),
        Just(Response::AuthOk),
        text().prop_map(|message| Response::Shutdown { message }),
        (error_code(), text()).prop_map(|(code, message)| Response::Error { code, message }),
    ];
    // Half v2, so each of its few variants is drawn about as often as a v1 one.
    prop_oneof![v1, v2]
}

proptest! {
    #[test]
    fn every_request_round_trips(req in request(), id in 1..=u32::MAX) {
        let req = req.as_request();
        let bytes = encode_request(&req, id);
        prop_assert_eq!(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize, bytes.len() - 4);
        prop_assert_eq!(bytes[4], req.opcode());
        prop_assert_eq!(decode_request(&bytes), Ok((id, req)));
    }

    #[test]
    fn every_response_round_trips(resp in response(), id in any::<u32>()) {
        let bytes = encode_response(&resp, id);
        prop_assert_eq!(bytes[4], resp.opcode());
        prop_assert_eq!(decode_response(&bytes), Ok((id, resp)));
    }

    /// `encode_within` never passes the limit, cuts only whole entries (the result still decodes)
    /// and is `encode` byte for byte whenever the frame fits.
    #[test]
    fn encoding_within_a_limit_fits_and_changes_nothing_that_fits(resp in response(), max_frame in 33u32..400) {
        if let Response::Lost { name, .. } | Response::Contended { name, .. } = &resp {
            // Their name is never cut: it came in a LOCK_EXT (31 bytes and the name) that fit.
            prop_assume!(5 + 31 + name.len() <= max_frame as usize);
        }
        let mut bounded = Vec::new();
        resp.encode_within(7, max_frame, &mut bounded);
        let plain = encode_response(&resp, 7);
        let (frame, used) = split_frame(&bounded, MAX_FRAME_CEILING).expect("a frame").expect("whole");
        prop_assert_eq!(used, bounded.len());
        let decoded = Response::decode(&frame).expect("the cut frame decodes");
        prop_assert_eq!(decoded.opcode(), resp.opcode());
        if plain.len() - 4 <= max_frame as usize {
            prop_assert_eq!(&bounded, &plain);
        } else {
            prop_assert!(bounded.len() - 4 <= max_frame as usize, "{} > {}", bounded.len() - 4, max_frame);
            if let Response::Locks { truncated, .. }
            | Response::Connections { truncated, .. }
            | Response::MyLocksMatching { truncated, .. }
            | Response::LocksDetail { truncated, .. }
            | Response::ConnectionsDetail { truncated, .. } = decoded
            {
                prop_assert!(truncated, "a cut listing says so");
            }
        }
    }

    #[test]
    fn frames_cut_anywhere_decode_the_same(
        reqs in proptest::collection::vec(request(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            req.as_request().encode(i as u32 + 1, &mut stream);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        // Feed the stream in chunks, decoding whatever is complete after each one.
        let (mut buf, mut fed, mut decoded) = (Vec::new(), 0, Vec::new());
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            while let Some((frame, used)) = split_frame(&buf, MAX_FRAME).expect("valid stream") {
                let id = frame.request_id;
                let req = Request::decode(&frame, MAX_NAME).expect("valid request");
                decoded.push(encode_request(&req, id));
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        let originals: Vec<Vec<u8>> =
            reqs.iter().enumerate().map(|(i, r)| encode_request(&r.as_request(), i as u32 + 1)).collect();
        prop_assert_eq!(decoded, originals);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128), max in any::<u32>()) {
        if let Ok(Some((frame, used))) = split_frame(&data, max) {
            prop_assert!(used <= data.len() && used >= 9);
            let _ = Request::decode(&frame, max);
            let _ = Response::decode(&frame);
        }
    }

    #[test]
    fn validate_name_matches_the_rules(raw in proptest::collection::vec(any::<u8>(), 0..40), max in 0u32..48) {
        let ok = !raw.is_empty()
            && raw.len() <= max as usize
            && std::str::from_utf8(&raw).is_ok()
            && !raw.iter().any(|&b| b < 0x20 || b == 0x7F);
        prop_assert_eq!(validate_name(&raw, max, false).is_ok(), ok);
        if let Ok(name) = validate_name(&raw, max, false) {
            prop_assert_eq!(name.as_bytes(), &raw[..]);
        }
    }
}

#[test]
fn lock_sentinels_decode_to_none() {
    let forever = lock("a", Some(TIMEOUT_FOREVER), Some(0));
    let bytes = encode_request(&forever, 9);
    assert_eq!(decode_request(&bytes), Ok((9, lock("a", None, None))));
}

#[test]
fn hello_negotiates_down_to_our_version() {
    let bytes = raw_frame(op::HELLO, 1, &hex("4f 46 43 52 00 07 00 00"));
    assert_eq!(decode_request(&bytes), Ok((1, Request::Hello(Hello { version: 7 }))));
    assert_eq!(Hello { version: 7 }.negotiated_version(), PROTOCOL_VERSION);
    assert_eq!(Hello { version: 1 }.negotiated_version(), 1);
}

#[test]
fn long_texts_are_cut_at_a_char_boundary() {
    // A label longer than a str16 can hold is cut, not corrupted (names never get here: §2.3).
    let label = "é".repeat(40_000); // 80000 bytes
    let resp = Response::TimedOut { queue: vec![label] };
    let bytes = encode_response(&resp, 1);
    let frame = split_frame(&bytes, MAX_FRAME_CEILING).expect("valid").expect("complete").0;
    let Ok(Response::TimedOut { queue }) = Response::decode(&frame) else { panic!("not TIMED_OUT") };
    assert_eq!(queue[0].len(), 65534);
    assert!(queue[0].chars().all(|c| c == 'é'));
}

// ---------------------------------------------------------------------------------------------
// A stream split at every byte

/// Several requests and responses of PROTOCOL.md back to back.
fn doc_stream() -> (Vec<u8>, usize) {
    let examples: Vec<Example> = doc_examples().into_iter().filter(|e| e.kind != "reject").collect();
    (examples.iter().flat_map(|e| e.bytes.clone()).collect(), examples.len())
}

fn collect_frames(buf: &[u8]) -> (Vec<(u8, u32, Vec<u8>)>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((frame, used)) = split_frame(&buf[at..], MAX_FRAME).expect("valid stream") {
        out.push((frame.opcode, frame.request_id, frame.payload.to_vec()));
        at += used;
    }
    (out, at)
}

#[test]
fn stream_split_at_every_byte_decodes_the_same_frames() {
    let (stream, count) = doc_stream();
    let (whole, used) = collect_frames(&stream);
    assert_eq!((whole.len(), used), (count, stream.len()));
    for cut in 0..=stream.len() {
        let (mut frames, used) = collect_frames(&stream[..cut]);
        let mut rest = stream[used..cut].to_vec();
        rest.extend_from_slice(&stream[cut..]);
        let (tail, tail_used) = collect_frames(&rest);
        assert_eq!(tail_used, rest.len(), "cut at {cut}");
        frames.extend(tail);
        assert_eq!(frames, whole, "cut at {cut}");
    }
}

#[test]
fn each_frame_is_incomplete_until_its_last_byte() {
    let (stream, _) = doc_stream();
    let mut at = 0;
    while at < stream.len() {
        let mut end = at;
        loop {
            end += 1;
            match split_frame(&stream[at..end], MAX_FRAME).expect("valid stream") {
                None => continue,
                Some((_, used)) => {
                    assert_eq!(used, end - at, "complete exactly at its last byte");
                    break;
                }
            }
        }
        at = end;
    }
}

#[test]
fn responses_decode_when_fed_byte_by_byte() {
    let (stream, _) = doc_stream();
    let mut buf = Vec::new();
    let mut decoded = 0;
    for &byte in &stream {
        buf.push(byte);
        if let Some((frame, used)) = split_frame(&buf, MAX_FRAME).expect("valid") {
            if frame.opcode & 0x80 != 0 {
                Response::decode(&frame).expect("valid response");
            } else {
                Request::decode(&frame, MAX_NAME).expect("valid request");
            }
            decoded += 1;
            buf.drain(..used);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decoded, doc_stream().1);
}

// ---------------------------------------------------------------------------------------------
// Malformed frames

#[test]
fn short_input_is_incomplete_not_an_error() {
    for len in 0..4 {
        assert_eq!(split_frame(&[0, 0, 0, 9][..len], MAX_FRAME), Ok(None));
    }
    let ping = raw_frame(op::PING, 1, b"pad");
    for len in 4..ping.len() {
        assert_eq!(split_frame(&ping[..len], MAX_FRAME), Ok(None), "{len} bytes");
    }
}

#[test]
fn length_below_the_header_is_fatal() {
    for len in 0..MIN_FRAME_LEN {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0, 1]);
        let err = split_frame(&bytes, MAX_FRAME).expect_err("too short");
        assert_eq!(err, DecodeError::FrameTooShort(len));
        assert!(err.is_fatal());
        assert_eq!(err.code(), ErrorCode::BadFrameLength);
    }
    // Length 5: opcode and request id, nothing else. Valid.
    assert!(split_frame(&hex("00 00 00 05 02 00 00 00 01"), MAX_FRAME).expect("valid").is_some());
}

#[test]
fn length_above_the_limit_is_fatal_before_the_body_arrives() {
    for len in [MAX_FRAME + 1, 0x0100_0000, u32::MAX] {
        let err = split_frame(&len.to_be_bytes(), MAX_FRAME).expect_err("too large");
        assert_eq!(err, DecodeError::FrameTooLarge { len, max: MAX_FRAME });
        assert!(err.is_fatal());
        assert_eq!(err.code(), ErrorCode::BadFrameLength);
    }
    // Exactly the limit is fine.
    let ping = raw_frame(op::PING, 1, &vec![0xAB; MAX_FRAME as usize - 5]);
    let (frame, used) = split_frame(&ping, MAX_FRAME).expect("valid").expect("complete");
    assert_eq!((used, frame.payload.len()), (ping.len(), MAX_FRAME as usize - 5));
    // A limit above the ceiling is capped, so the first byte of a frame is always 0x00.
    let err = split_frame(&[1, 0, 0, 0], u32::MAX).expect_err("above the ceiling");
    assert_eq!(err, DecodeError::FrameTooLarge { len: 0x0100_0000, max: MAX_FRAME_CEILING });
}

#[test]
fn http_tls_and_json_first_bytes_fail_on_the_length() {
    let cases: [(&[u8], u32); 5] = [
        (b"GET / HTTP/1.1\r\n", 0x4745_5420),
        (b"POST /lock HTTP/1.1\r\n", 0x504F_5354),
        (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03], 0x1603_0102),
        (&[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02], 0x1603_0300),
        // JSON is told apart by the server before framing (§2.6); the codec alone refuses it.
        (b"{\"command\":\"lock\"}\n", 0x7B22_636F),
    ];
    for (bytes, len) in cases {
        for take in 4..=bytes.len() {
            let err = split_frame(&bytes[..take], MAX_FRAME).expect_err("not officer");
            assert_eq!(err, DecodeError::FrameTooLarge { len, max: MAX_FRAME });
            assert!(err.is_fatal());
        }
    }
}

#[test]
fn unknown_opcodes_are_refused_without_closing() {
    for code in [0x00, 0x5A, 0x42, 0x7F, 0x80, op::HELLO_OK, op::ERROR] {
        let err = request_err(&raw_frame(code, 1, b""));
        assert_eq!(err, DecodeError::UnknownOpcode(code));
        assert!(!err.is_fatal());
        assert_eq!(err.code(), ErrorCode::UnknownOpcode);
    }
    for code in [0x00, op::HELLO, op::AUTH, 0x7F, 0xC0, 0xFE] {
        assert_eq!(response_err(&raw_frame(code, 1, b"")), DecodeError::UnknownOpcode(code));
    }
}

#[test]
fn request_id_zero_is_reserved() {
    let err = request_err(&raw_frame(op::STATS, 0, b""));
    assert_eq!(err, DecodeError::ZeroRequestId { opcode: op::STATS });
    assert_eq!((err.code(), err.is_fatal()), (ErrorCode::Malformed, false));
    let hello = raw_frame(op::HELLO, 0, &hex("4f 46 43 52 00 01 00 00"));
    let err = request_err(&hello);
    assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadHandshake, true));
    // Responses may use 0: SHUTDOWN does.
    assert!(decode_response(&raw_frame(op::SHUTDOWN, 0, b"bye")).is_ok());
}

#[test]
fn nonzero_flags_are_refused() {
    let lock_payload = |flags: u16| {
        let mut p = flags.to_be_bytes().to_vec();
        p.extend_from_slice(&hex("00 00 00 00 00 00 00 00 61"));
        p
    };
    for flags in [1, 0x0100, 0x8000, u16::MAX] {
        let err = request_err(&raw_frame(op::LOCK, 3, &lock_payload(flags)));
        assert_eq!(err, DecodeError::NonZeroFlags { opcode: op::LOCK, flags });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::UnsupportedFlags, false));

        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&[0, 1]);
        hello.extend_from_slice(&flags.to_be_bytes());
        let err = request_err(&raw_frame(op::HELLO, 1, &hello));
        assert_eq!(err, DecodeError::NonZeroFlags { opcode: op::HELLO, flags });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadHandshake, true));
    }
    assert!(decode_request(&raw_frame(op::LOCK, 3, &lock_payload(0))).is_ok());
}

#[test]
fn bad_magic_and_versions_end_the_handshake() {
    for payload in [
        "",
        "4f",
        "4f 46 43",
        "00 00 00 00 00 01 00 00",
        "6f 66 63 72 00 01 00 00",
        "4f 46 43 53 00 01 00 00",
    ] {
        let err = request_err(&raw_frame(op::HELLO, 1, &hex(payload)));
        assert_eq!(err, DecodeError::BadMagic, "payload {payload:?}");
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadHandshake, true));
    }
    let err = request_err(&raw_frame(op::HELLO, 1, &hex("4f 46 43 52 00 00 00 00")));
    assert_eq!(err, DecodeError::UnsupportedVersion(0));
    assert_eq!((err.code(), err.is_fatal()), (ErrorCode::UnsupportedVersion, true));
}

#[test]
fn truncated_fixed_fields_are_refused() {
    // HELLO: the magic is there, the rest is not. Fatal, since HELLO opens the session.
    for len in 4..8 {
        let payload = &hex("4f 46 43 52 00 01 00 00")[..len];
        let err = request_err(&raw_frame(op::HELLO, 1, payload));
        assert_eq!(err, DecodeError::Truncated { opcode: op::HELLO });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadHandshake, true));
    }
    // LOCK needs 10 bytes of fixed fields before the name.
    for len in 0..10 {
        let err = request_err(&raw_frame(op::LOCK, 1, &vec![0; len]));
        assert_eq!(err, DecodeError::Truncated { opcode: op::LOCK }, "{len} bytes");
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::Malformed, false));
    }
    for opcode in [op::LOCKS, op::CONNECTIONS, op::MY_LOCKS_MATCHING] {
        for len in 0..4 {
            assert_eq!(request_err(&raw_frame(opcode, 1, &vec![0; len])), DecodeError::Truncated { opcode });
        }
    }
    // Responses with fixed fields, and lists whose count promises more than the frame holds.
    let cases: [(u8, &str); 9] = [
        (op::HELLO_OK, "00 01 00 00 00 00 00 00 00 00 00 2a 00 01 00 00 00 00 04 00 00 04 93"),
        (op::ACQUIRED, "00 00 00 00 00 00 00"),
        (op::ALREADY_ACQUIRED, ""),
        (op::TIMED_OUT, "00 00 00"),
        (op::QUEUE_MAXED, "ff ff ff ff 00 01 61"),
        (op::LOCKS_LIST, "00 00 00 00 01 00 05 61"),
        (op::CONNECTIONS_LIST, "00 ff ff ff ff"),
        (op::STATS_LIST, "00 00 00 01 00 01 61 00 00 00 00 00 00 00"),
        (op::ERROR, "00"),
    ];
    for (opcode, payload) in cases {
        assert_eq!(response_err(&raw_frame(opcode, 1, &hex(payload))), DecodeError::Truncated { opcode });
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for opcode in [op::RESET, op::MY_LOCKS, op::STATS] {
        let err = request_err(&raw_frame(opcode, 1, &[0]));
        assert_eq!(err, DecodeError::TrailingBytes { opcode });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::Malformed, false));
    }
    let err = request_err(&raw_frame(op::HELLO, 1, &hex("4f 46 43 52 00 01 00 00 00")));
    assert_eq!(err, DecodeError::TrailingBytes { opcode: op::HELLO });
    assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadHandshake, true));
    for (opcode, payload) in [
        (op::PONG, "00"),
        (op::ACQUIRED, "00 00 00 00 00 00 00 01 00"),
        (op::TIMED_OUT, "00 00 00 00 00"),
        (op::MY_LOCKS_LIST, "00 00 00 00 00 00 00 00 00"),
        (op::AUTH_OK, "00"),
    ] {
        assert_eq!(response_err(&raw_frame(opcode, 1, &hex(payload))), DecodeError::TrailingBytes { opcode });
    }
}

/// A LOCK frame for `name`, waiting forever.
fn lock_frame(name: &[u8]) -> Vec<u8> {
    let mut payload = hex("00 00 ff ff ff ff 00 00 00 00");
    payload.extend_from_slice(name);
    raw_frame(op::LOCK, 1, &payload)
}

#[test]
fn names_are_checked() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![], DecodeError::EmptyName),
        (
            vec![b'a'; MAX_NAME as usize + 1],
            DecodeError::NameTooLong { len: MAX_NAME as usize + 1, max: MAX_NAME },
        ),
        (hex("ff fe"), DecodeError::NameNotUtf8),
        (hex("c0 80"), DecodeError::NameNotUtf8),
        (hex("61 c3"), DecodeError::NameNotUtf8),
        (hex("ed a0 80"), DecodeError::NameNotUtf8),
        (b"a\0b".to_vec(), DecodeError::NameHasControl),
        (b"line\n".to_vec(), DecodeError::NameHasControl),
        (b"\x1f".to_vec(), DecodeError::NameHasControl),
        (b"del\x7f".to_vec(), DecodeError::NameHasControl),
    ];
    for (name, want) in cases {
        for frame in [lock_frame(&name), raw_frame(op::UNLOCK, 1, &name)] {
            let err = request_err(&frame);
            assert_eq!(err, want, "name {name:?}");
            assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadName, false));
        }
    }
    // At the limit, spaces, punctuation and non-ASCII are fine.
    let at_limit = vec![b'z'; MAX_NAME as usize];
    let frame = lock_frame(&at_limit);
    let Ok((1, Request::Lock(l))) = decode_request(&frame) else { panic!("refused") };
    assert_eq!(l.name.len(), MAX_NAME as usize);
    for ok in ["a", " ", "jobs/nightly #3", "ключ", "🔒", "~"] {
        assert_eq!(decode_request(&raw_frame(op::UNLOCK, 1, ok.as_bytes())), Ok((1, Request::Unlock(ok))));
    }
    // A prefix may be empty but follows the other rules.
    assert!(decode_request(&raw_frame(op::LOCKS, 1, &[0, 0, 0, 0])).is_ok());
    let err = request_err(&raw_frame(op::CONNECTIONS, 1, &hex("00 00 00 00 09")));
    assert_eq!(err, DecodeError::NameHasControl);
}

#[test]
fn the_name_limit_is_capped_at_the_ceiling() {
    let long = vec![b'a'; MAX_NAME_CEILING as usize + 1];
    assert_eq!(
        validate_name(&long, u32::MAX, false),
        Err(DecodeError::NameTooLong { len: long.len(), max: MAX_NAME_CEILING })
    );
    assert!(validate_name(&long[1..], u32::MAX, false).is_ok());
}

#[test]
fn response_text_must_be_utf8() {
    let cases: [(u8, &str); 5] = [
        (op::ERROR, "00 01 ff"),
        (op::SHUTDOWN, "c3 28"),
        (op::TIMED_OUT, "00 00 00 01 00 01 ff"),
        (op::LOCKS_LIST, "00 00 00 00 01 00 01 80 00 00 00 00"),
        (op::STATS_LIST, "00 00 00 01 00 01 fe 00 00 00 00 00 00 00 01"),
    ];
    for (opcode, payload) in cases {
        let err = response_err(&raw_frame(opcode, 1, &hex(payload)));
        assert_eq!(err, DecodeError::TextNotUtf8);
        assert_eq!(err.code(), ErrorCode::Malformed);
    }
}

#[test]
fn unknown_error_codes_decode_as_unknown() {
    for code in [0u16, 24, 0x1234, 0xFFFE, 0xFFFF] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"later");
        let (_, resp) = decode_response(&raw_frame(op::ERROR, 4, &payload)).expect("valid");
        assert_eq!(resp, Response::error(ErrorCode::Unknown, "later"));
    }
    assert!(!ErrorCode::Unknown.is_fatal());
}

#[test]
fn error_codes_match_the_table() {
    let table = [
        (1, ErrorCode::Malformed, "malformed", false),
        (2, ErrorCode::UnknownOpcode, "unknown_opcode", false),
        (3, ErrorCode::BadName, "bad_name", false),
        (4, ErrorCode::UnsupportedFlags, "unsupported_flags", false),
        (5, ErrorCode::BadHandshake, "bad_handshake", true),
        (6, ErrorCode::UnsupportedVersion, "unsupported_version", true),
        (7, ErrorCode::BadFrameLength, "bad_frame_length", true),
        (8, ErrorCode::AuthRequired, "auth_required", false),
        (9, ErrorCode::AuthFailed, "auth_failed", true),
        (10, ErrorCode::LimitExceeded, "limit_exceeded", false),
        (11, ErrorCode::ShuttingDown, "shutting_down", false),
        (12, ErrorCode::BadValue, "bad_value", false),
        (13, ErrorCode::LimitMismatch, "limit_mismatch", false),
        (14, ErrorCode::NotHolder, "not_holder", false),
        (15, ErrorCode::ModeConflict, "mode_conflict", false),
        (16, ErrorCode::Forbidden, "forbidden", false),
        (17, ErrorCode::NotFound, "not_found", false),
        (18, ErrorCode::Kicked, "kicked", true),
        (19, ErrorCode::BadSession, "bad_session", false),
        (20, ErrorCode::SessionState, "session_state", false),
        (21, ErrorCode::TakenOver, "taken_over", true),
        (22, ErrorCode::Skipped, "skipped", false),
        (23, ErrorCode::NotLeader, "not_leader", true),
    ];
    for (number, code, name, fatal) in table {
        assert_eq!(ErrorCode::from_u16(number), code);
        assert_eq!(code as u16, number);
        assert_eq!(code.to_string(), name);
        assert_eq!(code.is_fatal(), fatal, "{name}");
        let row = format!("| {number:<4} | `{name}`");
        assert!(DOC.contains(&row), "PROTOCOL.md §5 lacks the row {row:?}");
    }
}

#[test]
fn every_decode_error_has_a_message_and_a_consistent_fatality() {
    let all = [
        DecodeError::FrameTooShort(3),
        DecodeError::FrameTooLarge { len: 70000, max: MAX_FRAME },
        DecodeError::UnknownOpcode(0x42),
        DecodeError::Truncated { opcode: op::LOCK },
        DecodeError::TrailingBytes { opcode: op::RESET },
        DecodeError::EmptyName,
        DecodeError::NameTooLong { len: 2000, max: MAX_NAME },
        DecodeError::NameNotUtf8,
        DecodeError::NameHasControl,
        DecodeError::TextNotUtf8,
        DecodeError::NonZeroFlags { opcode: op::LOCK, flags: 2 },
        DecodeError::ZeroRequestId { opcode: op::PING },
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion(0),
        DecodeError::BadValue { opcode: op::LOCK_EXT, field: "mode", value: 3 },
    ];
    for err in all {
        assert!(!err.to_string().is_empty());
        assert_eq!(err.is_fatal(), err.code().is_fatal(), "{err}");
    }
}

/// A LOCK_EXT payload: flags, mode, timeout forever, queue_max 0, permits, limit, no lease, no
/// max hold, no lock-delay, name "a".
fn lock_ext_payload(flags: u16, mode: u8, permits: u32, limit: u32) -> Vec<u8> {
    let mut p = flags.to_be_bytes().to_vec();
    p.push(mode);
    p.extend_from_slice(&[0xFF; 4]);
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&permits.to_be_bytes());
    p.extend_from_slice(&limit.to_be_bytes());
    p.extend_from_slice(&[0; 12]);
    p.push(b'a');
    p
}

#[test]
fn lock_ext_values_out_of_range_are_bad_values() {
    let bad = |field, value| DecodeError::BadValue { opcode: op::LOCK_EXT, field, value };
    let cases = [
        (lock_ext_payload(0, 3, 0, 0), bad("mode", 3)),
        (lock_ext_payload(0, 0xFF, 0, 0), bad("mode", 255)),
        (lock_ext_payload(0, 0, 1, 0), bad("permits", 1)),
        (lock_ext_payload(0, 1, 0, 5), bad("limit", 5)),
        (lock_ext_payload(0, 2, 0, 5), bad("permits", 0)),
        (lock_ext_payload(0, 2, 6, 5), bad("permits", 6)),
        (lock_ext_payload(0, 2, 1, 0), bad("limit", 0)),
    ];
    for (payload, want) in cases {
        let err = request_err(&raw_frame(op::LOCK_EXT, 3, &payload));
        assert_eq!(err, want);
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadValue, false));
    }
    let bytes = raw_frame(op::LOCK_EXT, 3, &lock_ext_payload(0, 2, 5, 5));
    assert_eq!(decode_request(&bytes), Ok((3, Request::LockExt(LockExtRequest::semaphore("a", 5, 5)))));
}

#[test]
fn lock_ext_reserved_flags_are_refused_and_bit_0_asks_for_contention_notices() {
    for flags in [4, 6, 0x0100, 0x8000, u16::MAX] {
        let err = request_err(&raw_frame(op::LOCK_EXT, 3, &lock_ext_payload(flags, 0, 0, 0)));
        assert_eq!(err, DecodeError::NonZeroFlags { opcode: op::LOCK_EXT, flags });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::UnsupportedFlags, false));
    }
    let bytes = raw_frame(op::LOCK_EXT, 3, &lock_ext_payload(1, 0, 0, 0));
    let Ok((_, Request::LockExt(l))) = decode_request(&bytes) else { panic!("flag 1 is defined") };
    assert!(l.notify_contention && !l.skip_while_detached);
    // Bit 1: skip the wait if its turn comes while the session is detached (§6.14).
    let bytes = raw_frame(op::LOCK_EXT, 3, &lock_ext_payload(3, 0, 0, 0));
    let Ok((_, Request::LockExt(l))) = decode_request(&bytes) else { panic!("flag 2 is defined") };
    assert!(l.notify_contention && l.skip_while_detached);
    // Checked in the order of the fields' purpose: flags, then values, then the name.
    let mut payload = lock_ext_payload(4, 9, 0, 0);
    payload.pop();
    let err = request_err(&raw_frame(op::LOCK_EXT, 3, &payload));
    assert_eq!(err.code(), ErrorCode::UnsupportedFlags);
    let err = request_err(&raw_frame(op::LOCK_EXT, 3, &lock_ext_payload(0, 9, 0, 0)[..30]));
    assert_eq!(err, DecodeError::Truncated { opcode: op::LOCK_EXT });
}

#[test]
fn lock_ext_sentinels_decode_to_none() {
    let mut l = LockExtRequest::exclusive("a");
    (l.timeout_ms, l.queue_max, l.lease_ms, l.max_hold_ms) =
        (Some(TIMEOUT_FOREVER), Some(0), Some(0), Some(0));
    let bytes = encode_request(&Request::LockExt(l), 9);
    assert_eq!(decode_request(&bytes), Ok((9, Request::LockExt(LockExtRequest::exclusive("a")))));
}

#[test]
fn token_zero_is_a_bad_value_except_in_revoke() {
    for opcode in [op::DOWNGRADE, op::RENEW, op::CHECK, op::UNLOCK_TOKEN] {
        let err = request_err(&raw_frame(opcode, 3, &hex("00 00 00 00 00 00 00 00 61")));
        assert_eq!(err, DecodeError::BadValue { opcode, field: "token", value: 0 });
        assert_eq!((err.code(), err.is_fatal()), (ErrorCode::BadValue, false));
        let err = request_err(&raw_frame(opcode, 3, &hex("00 00 00 00 00 00 00 01")));
        assert_eq!(err, DecodeError::EmptyName);
        let err = request_err(&raw_frame(opcode, 3, &hex("00 00 00 01")));
        assert_eq!(err, DecodeError::Truncated { opcode });
    }
    let bytes = raw_frame(op::REVOKE, 3, &hex("00 00 00 00 00 00 00 00 61"));
    assert_eq!(decode_request(&bytes), Ok((3, Request::Revoke(RevokeRequest { name: "a", token: None }))));
    let err = request_err(&raw_frame(op::KICK, 3, &hex("00 00 00 00 00 00 00 01 00")));
    assert_eq!(err, DecodeError::TrailingBytes { opcode: op::KICK });
}

#[test]
fn lost_reasons_keep_unknown_bytes() {
    for (byte, reason, name) in [
        (1, LostReason::LeaseExpired, "lease_expired"),
        (2, LostReason::MaxHold, "max_hold"),
        (3, LostReason::Revoked, "revoked"),
        (0, LostReason::Other(0), "unknown"),
        (9, LostReason::Other(9), "unknown"),
    ] {
        assert_eq!(LostReason::from_u8(byte), reason);
        assert_eq!((reason.to_u8(), reason.as_str()), (byte, name));
    }
}

/// The offsets of §3.12's table, read off the document's own example.
#[test]
fn golden_lock_ext_offsets() {
    let bytes = doc_block("request", "lock_ext_semaphore");
    let payload = &bytes[9..];
    let u32_at =
        |at: usize| u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
    assert_eq!(&payload[..2], &[0, 1], "flags: notify contention");
    assert_eq!(payload[2], Mode::Semaphore as u8);
    assert_eq!(u32_at(3), TIMEOUT_FOREVER);
    assert_eq!((u32_at(7), u32_at(11), u32_at(15)), (0, 2, 10), "queue_max, permits, limit");
    assert_eq!((u32_at(19), u32_at(23), u32_at(27)), (0, 600_000, 1000), "lease, max hold, lock-delay");
    assert_eq!(&payload[31..], b"db/pool");
    // LOST is 20 bytes shorter than the LOCK_EXT of the same name, so it always fits (§4.24).
    let lost =
        encode_response(&Response::Lost { token: 1, reason: LostReason::Revoked, name: "db/pool".into() }, 0);
    assert_eq!(bytes.len() - lost.len(), 20);
}

/// §3.13's layout, shared by DOWNGRADE, RENEW, CHECK and UNLOCK_TOKEN: only the opcode differs.
#[test]
fn golden_token_requests_share_one_layout() {
    let names = ["downgrade", "renew", "check", "unlock_token"];
    let blocks: Vec<Vec<u8>> = names.iter().map(|n| doc_block("request", n)).collect();
    for b in &blocks {
        assert_eq!(&b[9..17], &TOKEN.to_be_bytes());
        assert_eq!(&b[17..], USERS.as_bytes());
        assert_eq!(&b[..4], &blocks[0][..4]);
    }
    let opcodes: Vec<u8> = blocks.iter().map(|b| b[4]).collect();
    assert_eq!(opcodes, [op::DOWNGRADE, op::RENEW, op::CHECK, op::UNLOCK_TOKEN]);
}

#[test]
fn lock_is_an_exclusive_lock_ext() {
    let ext = LockExtRequest::from_lock(&LockRequest { name: "a", timeout_ms: Some(5), queue_max: Some(3) });
    let mut want = LockExtRequest::exclusive("a");
    (want.timeout_ms, want.queue_max) = (Some(5), Some(3));
    assert_eq!(ext, want);
    assert_eq!(
        (ext.mode, ext.lease_ms, ext.max_hold_ms, ext.lock_delay_ms),
        (Mode::Exclusive, None, None, 0)
    );
}

#[test]
fn notices_are_told_by_opcode_and_request_id_0() {
    let lost = Response::Lost { token: 1, reason: LostReason::Revoked, name: "a".into() };
    let contended = Response::Contended { token: 1, name: "a".into() };
    assert!(lost.is_notice(0) && contended.is_notice(0));
    assert!(!lost.is_notice(23), "LOST with a request id answers that request");
    assert!(!Response::Shutdown { message: String::new() }.is_notice(0));
    assert!(!Response::error(ErrorCode::Kicked, "").is_notice(0));
}
