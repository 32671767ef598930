//! The session with literal ticks: no sockets, no clock, no sleeps.

use super::{constant_time_eq, scans_the_table};
use crate::protocol::op;

#[test]
fn every_listing_ends_the_connections_turn() {
    for opcode in [op::LOCKS, op::CONNECTIONS, op::MY_LOCKS, op::MY_LOCKS_MATCHING, op::TOP, op::STATS] {
        assert!(scans_the_table(opcode), "opcode 0x{opcode:02x}");
    }
    for opcode in [op::HELLO, op::PING, op::LOCK, op::UNLOCK, op::RESET, op::AUTH] {
        assert!(!scans_the_table(opcode), "opcode 0x{opcode:02x}");
    }
}

#[test]
fn constant_time_eq_matches_only_equal_secrets() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secreT", b"secret"));
    assert!(!constant_time_eq(b"secret!", b"secret"));
    assert!(!constant_time_eq(b"secre", b"secret"));
    assert!(!constant_time_eq(b"", b"secret"));
}

use std::time::Duration;

use super::{CloseReason, Expiry, Next, Phase, Scratch, Session, Step};
use crate::protocol::{ErrorCode, Hello, LockRequest, Request, Response, PROTOCOL_VERSION};
use crate::server::Config;
use crate::wheel::Tick;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-secret";

/// What a step was, owned, so a test can collect several.
#[derive(Debug, PartialEq)]
enum Seen {
    Execute(u32, u8),
    Reply(u32, Response),
    Invalid(u32, ErrorCode),
    Close(CloseReason, ErrorCode),
    Activity,
}

fn seen(next: &Next<'_>) -> Seen {
    match &next.step {
        Step::Execute { rid, request } => Seen::Execute(*rid, request.opcode()),
        Step::Reply { rid, response } => Seen::Reply(*rid, response.clone()),
        Step::Invalid { rid, code, .. } => Seen::Invalid(*rid, *code),
        Step::Close { reason, response: Response::Error { code, .. }, .. } => Seen::Close(*reason, *code),
        Step::Close { response, .. } => panic!("a close without an ERROR: {response:?}"),
        Step::Activity => Seen::Activity,
    }
}

/// Runs the session over `input` like the server does; returns the steps and the bytes used.
fn feed(session: &mut Session, input: &[u8], now: Tick, config: &Config) -> (Vec<Seen>, usize) {
    let (mut steps, mut pos) = (Vec::new(), 0);
    let mut scratch = Scratch::default();
    while let Some(next) = session.next(&input[pos..], now, config, &mut scratch) {
        pos += next.used;
        let step = seen(&next);
        let closed = matches!(step, Seen::Close(..));
        steps.push(step);
        if closed {
            break;
        }
    }
    (steps, pos)
}

fn idle_config() -> Config {
    Config { max_idle: Some(Duration::from_millis(1000)), ..Config::default() }
}

fn auth_config() -> Config {
    Config { auth_secret: Some(SECRET.to_vec()), auth_timeout: Duration::from_millis(1000), ..idle_config() }
}

fn frame(request: &Request<'_>, rid: u32) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(rid, &mut out);
    out
}

fn hello(rid: u32) -> Vec<u8> {
    frame(&Request::Hello(Hello { version: PROTOCOL_VERSION }), rid)
}

fn lock(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None })
}

/// A greeted binary session (accepted at tick 0, HELLO at tick 0).
fn greeted(config: &Config) -> Session {
    let mut session = Session::new(7, false, 0, config);
    let (steps, _) = feed(&mut session, &hello(1), 0, config);
    assert!(matches!(steps[..], [Seen::Reply(1, Response::HelloOk(_))]), "{steps:?}");
    session
}

#[test]
fn the_idle_deadline_follows_the_last_complete_frame() {
    let config = idle_config();
    let mut session = greeted(&config);
    assert_eq!(session.deadline(&config), Some(1000));
    assert_eq!(
        feed(&mut session, &frame(&Request::Ping(b""), 2), 400, &config).0,
        [Seen::Reply(2, Response::Pong)]
    );
    assert_eq!(session.deadline(&config), Some(1400));
    assert_eq!(session.expired(1399, &config), None);
    assert_eq!(session.expired(1400, &config), Some(Expiry::Idle));
}

#[test]
fn without_max_idle_a_session_has_no_deadline() {
    let config = Config { max_idle: None, ..Config::default() };
    let session = greeted(&config);
    assert_eq!(session.deadline(&config), None);
    assert_eq!(session.expired(Tick::MAX / 2, &config), None);
}

#[test]
fn a_trickle_of_bytes_is_not_activity() {
    let config = idle_config();
    let mut session = greeted(&config);
    let ping = frame(&Request::Ping(&[0u8; 64]), 9);
    // One byte every 100 ticks: every prefix is incomplete, so none of it moves the deadline.
    for len in 1..ping.len() {
        let now = len as Tick * 100;
        assert_eq!(feed(&mut session, &ping[..len], now, &config), (vec![], 0), "prefix {len}");
        assert_eq!(session.deadline(&config), Some(1000));
    }
    assert_eq!(session.expired(1000, &config), Some(Expiry::Idle));
    // The frame completing is activity, at the tick it completes.
    let (steps, used) = feed(&mut session, &ping, 6900, &config);
    assert_eq!((steps, used), (vec![Seen::Reply(9, Response::Pong)], ping.len()));
    assert_eq!(session.deadline(&config), Some(7900));
}

#[test]
fn an_unauthenticated_session_expires_at_the_auth_deadline_whatever_it_sends() {
    let config = auth_config();
    let mut session = Session::new(1, false, 0, &config);
    assert_eq!(session.deadline(&config), Some(1000));
    let (steps, _) = feed(&mut session, &hello(1), 100, &config);
    assert!(matches!(&steps[..], [Seen::Reply(1, Response::HelloOk(h))] if h.auth_required), "{steps:?}");
    assert_eq!(session.phase(), Phase::AwaitAuth);
    // Pings are activity and answered, but they do not extend the authentication deadline.
    for now in [300, 600, 900] {
        let (steps, _) = feed(&mut session, &frame(&Request::Ping(b""), 2), now, &config);
        assert_eq!(steps, [Seen::Reply(2, Response::Pong)]);
    }
    assert_eq!(session.deadline(&config), Some(1000));
    assert_eq!(session.expired(999, &config), None);
    assert_eq!(session.expired(1000, &config), Some(Expiry::Auth));
}

#[test]
fn auth_clears_the_auth_deadline_and_opens_the_binary_phase() {
    let config = auth_config();
    let mut session = Session::new(1, false, 0, &config);
    feed(&mut session, &hello(1), 0, &config);
    let (steps, _) = feed(&mut session, &frame(&lock("x"), 2), 10, &config);
    assert_eq!(
        steps,
        [Seen::Reply(2, Response::error(ErrorCode::AuthRequired, "authenticate with AUTH first"))]
    );
    let (steps, _) = feed(&mut session, &frame(&Request::Auth(SECRET), 3), 20, &config);
    assert_eq!(steps, [Seen::Reply(3, Response::AuthOk)]);
    assert_eq!(session.phase(), Phase::Binary);
    assert_eq!(session.deadline(&config), Some(1020), "only the idle deadline is left");
    assert_eq!(session.expired(1019, &config), None);
    assert_eq!(
        feed(&mut session, &frame(&lock("x"), 4), 30, &config).0,
        [Seen::Execute(4, crate::protocol::op::LOCK)]
    );
}

#[test]
fn one_auth_failure_closes_the_session() {
    let config = auth_config();
    let mut session = Session::new(1, false, 0, &config);
    let mut input = hello(1);
    input.extend(frame(&Request::Auth(b"0123456789abcdef0123456789abcdef-wrong!"), 2));
    input.extend(frame(&Request::Auth(SECRET), 3));
    let (steps, used) = feed(&mut session, &input, 0, &config);
    assert_eq!(steps[1..], [Seen::Close(CloseReason::Auth, ErrorCode::AuthFailed)]);
    assert!(ErrorCode::AuthFailed.is_fatal());
    assert_eq!(used, input.len(), "nothing after the failure is served");
}

#[test]
fn frame_limits_follow_the_phase() {
    let config = Config { pre_auth_max_frame: 256, ..auth_config() };
    // Before HELLO only HELLO's size is allowed, and anything else is not an officer client.
    let mut session = Session::new(1, false, 0, &config);
    let (steps, _) = feed(&mut session, &frame(&Request::Ping(&[0; 64]), 1), 0, &config);
    assert_eq!(steps, [Seen::Close(CloseReason::Protocol, ErrorCode::BadHandshake)]);
    // Before AUTH: pre_auth_max_frame.
    let mut session = Session::new(1, false, 0, &config);
    feed(&mut session, &hello(1), 0, &config);
    assert_eq!(
        feed(&mut session, &frame(&Request::Ping(&[0; 250]), 2), 0, &config).0,
        [Seen::Reply(2, Response::Pong)]
    );
    let (steps, _) = feed(&mut session, &frame(&Request::Auth(&[b'x'; 4096]), 3), 0, &config);
    assert_eq!(steps, [Seen::Close(CloseReason::Protocol, ErrorCode::BadFrameLength)]);
    // After: max_frame, refused from the length prefix alone (no body is buffered).
    let config = Config { max_frame: 1024, ..idle_config() };
    let mut session = greeted(&config);
    let big = frame(&Request::Ping(&[0; 2000]), 4);
    let (steps, used) = feed(&mut session, &big[..8], 0, &config);
    assert_eq!((steps, used), (vec![Seen::Close(CloseReason::Protocol, ErrorCode::BadFrameLength)], 8));
}

#[test]
fn decode_errors_after_hello_are_answered_and_the_session_goes_on() {
    let config = idle_config();
    let mut session = greeted(&config);
    let mut input = frame(&Request::Unlock("bad\nname"), 2);
    input.extend(frame(&Request::Ping(b""), 3));
    let (steps, used) = feed(&mut session, &input, 0, &config);
    assert_eq!(steps, [Seen::Invalid(2, ErrorCode::BadName), Seen::Reply(3, Response::Pong)]);
    assert_eq!(used, input.len());
    // A second HELLO is fatal, with request id 0 (the server sends it under SHUTDOWN_REQUEST_ID).
    let (steps, _) = feed(&mut session, &hello(4), 0, &config);
    assert_eq!(steps, [Seen::Close(CloseReason::Protocol, ErrorCode::BadHandshake)]);
}

#[test]
fn pipelined_frames_split_at_every_byte_give_the_same_steps() {
    let config = idle_config();
    let mut input = hello(1);
    for (rid, request) in
        [(2, lock("frag/1")), (3, Request::Ping(b"abc")), (4, Request::MyLocks), (5, Request::Reset)]
    {
        input.extend(frame(&request, rid));
    }
    let whole = feed(&mut Session::new(1, false, 0, &config), &input, 0, &config).0;
    assert_eq!(whole.len(), 5, "{whole:?}");
    for cut in 0..=input.len() {
        // The server keeps what a step did not use and appends the next read to it.
        let mut session = Session::new(1, false, 0, &config);
        let (mut steps, used) = feed(&mut session, &input[..cut], 0, &config);
        let (rest, _) = feed(&mut session, &input[used..], 0, &config);
        steps.extend(rest);
        assert_eq!(steps, whole, "split at byte {cut}");
    }
}

#[test]
fn a_brace_first_speaks_json_where_compat_is_on() {
    let config = idle_config();
    let mut session = Session::new(1, false, 0, &config);
    let input = b"{\"command\":\"lock\",\"name\":\"a\"}\n\n{\"command\":\"keep_alive\"}\r\nnot json\n{\"command\":\"my_locks\"}\n";
    let (steps, used) = feed(&mut session, input, 500, &config);
    assert_eq!(session.phase(), Phase::Json);
    assert_eq!(
        steps,
        [
            // Internal ids count the requests (1, 2), shifted past the token bit.
            Seen::Execute(1 << 1, crate::protocol::op::LOCK),
            Seen::Activity,
            Seen::Activity,
            Seen::Invalid(0, ErrorCode::Malformed),
            Seen::Execute(2 << 1, crate::protocol::op::MY_LOCKS),
        ]
    );
    assert_eq!(used, input.len());
    assert_eq!(session.deadline(&config), Some(1500), "a complete line is activity");
    // A line still incomplete is not, and one longer than max_frame ends the session.
    let config = Config { max_frame: 64, ..idle_config() };
    assert_eq!(feed(&mut session, b"{\"command\":", 900, &config), (vec![], 0));
    assert_eq!(session.deadline(&config), Some(1500));
    let (steps, _) = feed(&mut session, &[b' '; 65], 900, &config);
    assert_eq!(steps, [Seen::Close(CloseReason::Protocol, ErrorCode::BadFrameLength)]);
}

#[test]
fn json_is_refused_with_no_compat_and_on_a_secret_port() {
    let line = b"{\"command\":\"lock\",\"name\":\"x\"}\n";
    let no_compat = Config { compat: false, ..idle_config() };
    let (steps, used) = feed(&mut Session::new(1, false, 0, &no_compat), line, 0, &no_compat);
    assert_eq!(
        (steps, used),
        (vec![Seen::Close(CloseReason::Protocol, ErrorCode::BadHandshake)], line.len())
    );
    let secret = auth_config();
    let (steps, _) = feed(&mut Session::new(1, false, 0, &secret), b"{", 0, &secret);
    assert_eq!(steps, [Seen::Close(CloseReason::Auth, ErrorCode::AuthRequired)], "refused at the first byte");
    // The compat listener serves JSON without the secret, and no auth deadline is left.
    let mut compat = Session::new(1, true, 0, &secret);
    let (steps, _) = feed(&mut compat, line, 0, &secret);
    assert_eq!(steps, [Seen::Execute(1 << 1, crate::protocol::op::LOCK)]);
    assert_eq!(compat.deadline(&secret), Some(1000));
    assert_eq!(compat.expired(1000, &secret), Some(Expiry::Idle));
}

#[test]
fn json_replies_are_lines_and_binary_replies_fit_max_frame() {
    let config = idle_config();
    let mut json = Session::new(1, false, 0, &config);
    let (steps, _) = feed(&mut json, b"{\"command\":\"lock\",\"name\":\"a\"}\n", 0, &config);
    let [Seen::Execute(rid, _)] = steps[..] else { panic!("one request: {steps:?}") };
    let mut out = Vec::new();
    json.encode_about(rid, Some("a"), &Response::Acquired { token: 5 }, config.max_frame, &mut out);
    json.encode_about(rid, Some("a"), &Response::Cancelled, config.max_frame, &mut out);
    assert_eq!(out, b"{\"name\":\"a\",\"result\":\"acquired\"}\n", "the original never sent CANCELLED");
    let binary = greeted(&config);
    let mut out = Vec::new();
    binary.encode(3, &Response::TimedOut { queue: vec!["127.0.0.1:40000".into(); 10_000] }, 1024, &mut out);
    assert!(out.len() <= 1024 + 4);
}

#[test]
fn hello_ok_carries_the_serial_and_the_limits() {
    let config = Config { max_frame: 4096, max_name: 200, ..idle_config() };
    let mut session = Session::new(42, false, 0, &config);
    let (steps, _) = feed(&mut session, &hello(1), 0, &config);
    let Seen::Reply(1, Response::HelloOk(h)) = &steps[0] else { panic!("{steps:?}") };
    assert_eq!((h.version, h.connection_id, h.auth_required), (PROTOCOL_VERSION, 42, false));
    assert_eq!((h.max_frame, h.max_name, h.idle_timeout_ms), (4096, 200, 1000));
    assert_eq!(session.phase(), Phase::Binary);
}

#[test]
fn before_hello_any_other_frame_is_a_bad_handshake() {
    let config = idle_config();
    // A frame of HELLO's size with an unknown opcode, and a valid PING: neither is HELLO.
    for first in [vec![0, 0, 0, 5, 0, 0, 4, 0, 0x78], frame(&Request::Ping(b"12345678"), 1)] {
        let mut session = Session::new(1, false, 0, &config);
        let (steps, used) = feed(&mut session, &first, 0, &config);
        assert_eq!(steps, [Seen::Close(CloseReason::Protocol, ErrorCode::BadHandshake)], "{first:?}");
        assert_eq!(used, first.len());
    }
}

#[test]
fn a_json_lock_that_asks_for_its_token_gets_it_and_no_other_reply_does() {
    let config = idle_config();
    let mut json = Session::new(1, false, 0, &config);
    let lines =
        b"{\"command\":\"lock\",\"name\":\"a\",\"token\":true}\n{\"command\":\"lock\",\"name\":\"b\"}\n";
    let (steps, _) = feed(&mut json, lines, 0, &config);
    let [Seen::Execute(asked, _), Seen::Execute(plain, _)] = steps[..] else {
        panic!("two requests: {steps:?}")
    };
    assert_ne!(asked, plain);
    assert!(asked != 0 && plain != 0, "id 0 is the server's");
    let mut out = Vec::new();
    json.encode_about(plain, Some("b"), &Response::Acquired { token: 8 }, config.max_frame, &mut out);
    json.encode_about(asked, Some("a"), &Response::Acquired { token: 7 }, config.max_frame, &mut out);
    let expected =
        "{\"name\":\"b\",\"result\":\"acquired\"}\n{\"name\":\"a\",\"result\":\"acquired\",\"token\":7}\n";
    assert_eq!(String::from_utf8_lossy(&out), expected);
}

/// Resumable sessions (PROTOCOL.md §3.22-§3.24): the session requests go to the server like
/// any other, after AUTH; GOODBYE stops the reading, so nothing behind it is served, and marks
/// the session so its close ends it instead of detaching it.
#[test]
fn session_requests_need_auth_and_nothing_after_goodbye_is_read() {
    use crate::protocol::{op, SessionOpen, SessionResume};
    let config = auth_config();
    let mut session = Session::new(1, false, 0, &config);
    feed(&mut session, &hello(1), 0, &config);
    let open = frame(&Request::SessionOpen(SessionOpen { grace_ms: 500, skip_while_detached: false }), 2);
    let (steps, _) = feed(&mut session, &open, 10, &config);
    assert!(matches!(&steps[..], [Seen::Reply(2, Response::Error { code: ErrorCode::AuthRequired, .. })]));
    feed(&mut session, &frame(&Request::Auth(SECRET), 3), 20, &config);
    let resume = frame(&Request::SessionResume(SessionResume { session_id: 4, secret: [1; 16] }), 4);
    assert_eq!(feed(&mut session, &resume, 30, &config).0, [Seen::Execute(4, op::SESSION_RESUME)]);
    assert!(session.understands_lost(), "a client of sessions is told of lost grants");
    let mut input = frame(&Request::Goodbye, 5);
    input.extend(frame(&Request::Ping(b""), 6));
    let (steps, used) = feed(&mut session, &input, 40, &config);
    assert_eq!(steps, [Seen::Execute(5, op::GOODBYE)]);
    assert_eq!(used, input.len() - frame(&Request::Ping(b""), 6).len(), "the PING is not read");
    assert!(session.said_goodbye());
    assert_eq!(feed(&mut session, &input[used..], 50, &config), (vec![], 0));
}
