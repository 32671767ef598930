//! The server over real sockets: every command and result of the lock semantics, FIFO,
//! timeouts, idle close, pipelining, restarts on one state file, the UNIX socket, and bad
//! input costing only the offending connection.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use officer::protocol::{ErrorCode, ListRequest, LockRequest, Request, Response};
use officer::server::Listen;
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

fn lock(name: &str) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None })
}

fn lock_timeout(name: &str, ms: u32) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: Some(ms), queue_max: None })
}

fn lock_queue_max(name: &str, queue_max: u32) -> Request<'_> {
    Request::Lock(LockRequest { name, timeout_ms: None, queue_max: Some(queue_max) })
}

fn token_of(response: Response) -> u64 {
    match response {
        Response::Acquired { token } => token,
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// Sends a LOCK that must wait, and proves the server has queued it (a PING sent after it on
/// the same connection is answered first, and requests are served in order).
fn enqueue(raw: &mut Raw, name: &str) -> u32 {
    let id = raw.send(&lock(name));
    assert_eq!(raw.call(&Request::Ping(b"")), Response::Pong);
    id
}

fn queue_of(raw: &mut Raw, name: &str) -> Vec<String> {
    match raw.call(&Request::Locks(ListRequest { prefix: name, max: 0 })) {
        Response::Locks { locks, .. } => {
            locks.into_iter().find(|l| l.name == name).map(|l| l.queue).unwrap_or_default()
        }
        other => panic!("expected locks, got {other:?}"),
    }
}

#[test]
fn handshake_reports_limits() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(7)));
    let mut raw = Raw::connect_no_hello(server.addr());
    let id = raw.send(&Request::Hello(officer::protocol::Hello { version: 1 }));
    match raw.recv() {
        (rid, Response::HelloOk(h)) => {
            assert_eq!(rid, id);
            assert_eq!(h.version, 1);
            assert_eq!(h.max_frame, officer::protocol::DEFAULT_MAX_FRAME);
            assert_eq!(h.max_name, officer::protocol::DEFAULT_MAX_NAME);
            assert_eq!(h.idle_timeout_ms, 7000);
            assert!(!h.auth_required);
            assert!(h.connection_id > 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn newer_client_versions_are_negotiated_down() {
    let server = TestServer::start();
    let mut raw = Raw::connect_no_hello(server.addr());
    raw.send(&Request::Hello(officer::protocol::Hello { version: 9 }));
    match raw.recv() {
        (_, Response::HelloOk(h)) => assert_eq!(h.version, officer::protocol::PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }
}

#[test]
fn acquire_already_acquired_and_try_once() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    let token = token_of(a.call(&lock("x")));
    assert_eq!(a.call(&lock("x")), Response::AlreadyAcquired { token });
    assert_eq!(b.call(&lock_timeout("x", 0)), Response::TimedOut { queue: vec![a.label.clone()] });
    assert_eq!(a.call(&Request::Unlock("x")), Response::Released);
    assert_eq!(a.call(&Request::Unlock("x")), Response::ReleaseFailed);
    let token2 = token_of(b.call(&lock_timeout("x", 0)));
    assert!(token2 > token);
}

#[test]
fn fifo_with_twenty_waiters() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    token_of(holder.call(&lock("fifo")));
    let mut waiters: Vec<(Raw, u32)> = (0..20)
        .map(|_| {
            let mut w = Raw::connect(server.addr());
            let id = enqueue(&mut w, "fifo");
            (w, id)
        })
        .collect();
    let mut expected: Vec<String> =
        std::iter::once(holder.label.clone()).chain(waiters.iter().map(|(w, _)| w.label.clone())).collect();
    assert_eq!(queue_of(&mut holder, "fifo"), expected);
    assert_eq!(holder.call(&Request::Unlock("fifo")), Response::Released);
    let mut last_token = 0;
    for (w, id) in waiters.iter_mut() {
        let (rid, response) = w.recv();
        assert_eq!(rid, *id);
        let token = token_of(response);
        assert!(token > last_token);
        last_token = token;
        expected.remove(0);
        assert_eq!(queue_of(w, "fifo"), expected, "only the head of the queue is granted");
        assert_eq!(w.call(&Request::Unlock("fifo")), Response::Released);
    }
}

#[test]
fn already_waiting_keeps_the_first_wait() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    token_of(a.call(&lock("x")));
    let first = enqueue(&mut b, "x");
    assert_eq!(b.call(&lock("x")), Response::AlreadyWaiting);
    a.call(&Request::Unlock("x"));
    let (rid, response) = b.recv();
    assert_eq!(rid, first);
    token_of(response);
}

#[test]
fn timeout_after_one_second_carries_the_queue() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    token_of(a.call(&lock("slow")));
    let started = Instant::now();
    match b.call(&lock_timeout("slow", 1000)) {
        Response::TimedOut { queue } => assert_eq!(queue.first(), Some(&a.label)),
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(990), "timed out early: {waited:?}");
    assert!(waited < WAIT);
    assert_eq!(queue_of(&mut a, "slow"), vec![a.label.clone()], "the timed-out waiter left the queue");
}

#[test]
fn queue_max_counts_holder_and_waiters() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    let mut c = Raw::connect(server.addr());
    token_of(a.call(&lock("q")));
    assert_eq!(b.call(&lock_queue_max("q", 1)), Response::QueueMaxed { queue: vec![a.label.clone()] });
    let id = b.send(&lock_queue_max("q", 2));
    b.call(&Request::Ping(b""));
    assert_eq!(
        c.call(&lock_queue_max("q", 2)),
        Response::QueueMaxed { queue: vec![a.label.clone(), b.label.clone()] }
    );
    a.call(&Request::Unlock("q"));
    let (rid, response) = b.recv();
    assert_eq!(rid, id);
    token_of(response);
}

#[test]
fn unlock_while_waiting_cancels_the_wait() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    token_of(a.call(&lock("x")));
    let wait_id = enqueue(&mut b, "x");
    let unlock_id = b.send(&Request::Unlock("x"));
    assert_eq!(b.recv(), (wait_id, Response::Cancelled));
    assert_eq!(b.recv(), (unlock_id, Response::Released));
    assert_eq!(queue_of(&mut a, "x"), vec![a.label.clone()]);
}

#[test]
fn reset_releases_holds_and_cancels_waits() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    token_of(b.call(&lock("z")));
    token_of(a.call(&lock("x")));
    token_of(a.call(&lock("y")));
    let wait_id = enqueue(&mut a, "z");
    let reset_id = a.send(&Request::Reset);
    assert_eq!(a.recv(), (wait_id, Response::Cancelled));
    assert_eq!(a.recv(), (reset_id, Response::ResetOk));
    assert_eq!(a.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
    token_of(b.call(&lock_timeout("x", 0)));
    token_of(b.call(&lock_timeout("y", 0)));
}

#[test]
fn disconnect_hands_over_and_dead_waiters_are_skipped() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut dead = Raw::connect(server.addr());
    let mut c = Raw::connect(server.addr());
    token_of(a.call(&lock("h")));
    enqueue(&mut dead, "h");
    let c_id = enqueue(&mut c, "h");
    drop(dead);
    // Wait until the server has processed the disconnect (event-driven: poll the listing).
    let deadline = Instant::now() + WAIT;
    while queue_of(&mut a, "h").len() != 2 {
        assert!(Instant::now() < deadline, "dead waiter never left the queue");
    }
    drop(a);
    let (rid, response) = c.recv();
    assert_eq!(rid, c_id);
    token_of(response);
}

#[test]
fn idle_connections_are_closed_and_pings_keep_them() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(1)));
    let mut idle = Raw::connect(server.addr());
    let mut busy = Raw::connect(server.addr());
    let mut waiter = Raw::connect(server.addr());
    token_of(idle.call(&lock("idle")));
    let started = Instant::now();
    let wait_id = waiter.send(&lock("idle"));
    // `busy` and `waiter` keep talking while we wait (up to 200 ms at a time) for `idle`'s
    // close; only `idle` goes silent, so its lock must pass on. The ticks of the rule itself
    // are the session's tests (src/server/session/tests.rs).
    let closed_after = loop {
        assert!(started.elapsed() < WAIT, "idle holder was never closed");
        let (frames, closed) = idle.wait_closed(Duration::from_millis(200));
        assert!(frames.is_empty(), "idle close sends no frame: {frames:?}");
        if closed {
            break started.elapsed();
        }
        assert_eq!(busy.call(&Request::Ping(b"")), Response::Pong);
        let ping_id = waiter.send(&Request::Ping(b""));
        match waiter.recv() {
            (rid, Response::Pong) if rid == ping_id => continue,
            (rid, response) if rid == wait_id => {
                token_of(response);
                assert_eq!(waiter.recv(), (ping_id, Response::Pong));
                panic!("granted while the idle holder was still connected");
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(closed_after >= Duration::from_millis(900), "closed before max-idle: {closed_after:?}");
    let (rid, response) = waiter.recv();
    assert_eq!(rid, wait_id);
    token_of(response);
    assert_eq!(busy.call(&Request::Ping(b"")), Response::Pong, "a pinging client survives");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let names: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
    let mut batch = Vec::new();
    for (i, name) in names.iter().enumerate() {
        lock(name).encode(2 * i as u32 + 100, &mut batch);
        Request::Unlock(name).encode(2 * i as u32 + 101, &mut batch);
    }
    a.send_bytes(&batch).expect("write");
    let mut last = 0;
    for i in 0..names.len() as u32 {
        let (rid, response) = a.recv();
        assert_eq!(rid, 2 * i + 100);
        let token = token_of(response);
        assert!(token > last);
        last = token;
        assert_eq!(a.recv(), (2 * i + 101, Response::Released));
    }
}

#[test]
fn tokens_increase_across_restarts_on_one_state_file() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    let mut last = 0;
    for _ in 0..3 {
        let server = TestServer::start_with(|c| c.state_file = Some(state.clone()));
        let mut a = Raw::connect(server.addr());
        for _ in 0..3 {
            let token = token_of(a.call(&lock("t")));
            assert!(token > last, "token {token} not above {last}");
            last = token;
            a.call(&Request::Unlock("t"));
        }
        server.stop();
    }
}

#[test]
fn corrupt_state_file_refuses_to_start() {
    let dir = support::temp_dir();
    let state = support::state_file_in(dir.path());
    std::fs::write(&state, "not a state file").unwrap();
    let config = officer::server::Config {
        listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        state_file: Some(state),
        ..Default::default()
    };
    let err = officer::server::Server::bind(config).err().expect("must refuse");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn unix_socket_serves_and_labels_clients() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let server = TestServer::start_with(|c| c.listen = Listen::Unix(path.clone()));
    let mut a = Raw::connect_unix(&path);
    let mut b = Raw::connect_unix(&path);
    token_of(a.call(&lock("u")));
    match b.call(&lock_timeout("u", 0)) {
        Response::TimedOut { queue } => assert!(queue[0].starts_with("unix:"), "{queue:?}"),
        other => panic!("{other:?}"),
    }
    server.stop();
    assert!(!path.exists(), "socket file removed on clean exit");
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let dir = support::temp_dir();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let _server = TestServer::start_with(|c| c.listen = Listen::Unix(path.clone()));
    let mut a = Raw::connect_unix(&path);
    assert_eq!(a.call(&Request::Ping(b"")), Response::Pong);
}

#[test]
fn listings_filter_and_truncate() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    for name in ["app:1", "app:2", "app:3", "other"] {
        token_of(a.call(&lock(name)));
    }
    enqueue(&mut b, "app:2");
    match a.call(&Request::Locks(ListRequest { prefix: "app:", max: 2 })) {
        Response::Locks { locks, truncated } => {
            assert!(truncated);
            assert_eq!(locks.len(), 2);
            assert!(locks.iter().all(|l| l.name.starts_with("app:")));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(queue_of(&mut a, "app:2"), vec![a.label.clone(), b.label.clone()]);
    match a.call(&Request::Connections(ListRequest { prefix: &b.label, max: 0 })) {
        Response::Connections { connections, truncated } => {
            assert!(!truncated);
            assert_eq!(connections.len(), 1);
            assert_eq!(connections[0].held, Vec::<String>::new());
            assert_eq!(connections[0].waiting, vec!["app:2".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    match b.call(&Request::MyLocks) {
        Response::MyLocks { held, waiting } => {
            assert!(held.is_empty());
            assert_eq!(waiting, vec!["app:2".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats_count_what_happened() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut b = Raw::connect(server.addr());
    token_of(a.call(&lock("s")));
    b.call(&lock_timeout("s", 0));
    a.call(&Request::Unlock("s"));
    a.call(&Request::Unlock("s"));
    let Response::Stats(entries) = a.call(&Request::Stats) else { panic!("expected stats") };
    let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| *v).unwrap();
    assert_eq!(get("connections"), 2);
    assert_eq!(get("acquired"), 1);
    assert_eq!(get("timed_out"), 1);
    assert_eq!(get("released"), 1);
    assert_eq!(get("release_failed"), 1);
    assert_eq!(get("locks_held"), 0);
}

#[test]
fn shutdown_notifies_clients() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    token_of(a.call(&lock("x")));
    server.stop();
    let frames = a.responses_until_closed();
    assert!(
        matches!(frames.as_slice(), [Response::Shutdown { .. }]),
        "expected one SHUTDOWN frame, got {frames:?}"
    );
}

/// A connection that sends `bytes` first: what it gets back, and whether it was closed.
fn send_garbage(server: &TestServer, bytes: &[u8], greet: bool) -> Vec<Response> {
    let mut raw = if greet { Raw::connect(server.addr()) } else { Raw::connect_no_hello(server.addr()) };
    raw.send_bytes(bytes).expect("write");
    raw.responses_until_closed()
}

fn first_error(frames: &[Response]) -> ErrorCode {
    match frames.first() {
        Some(Response::Error { code, .. }) => *code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[test]
fn bad_frames_close_only_the_offender() {
    let server = TestServer::start_with(|c| c.max_frame = 2048);
    let mut keeper = Raw::connect(server.addr());
    let token = token_of(keeper.call(&lock("keep")));

    let cases: Vec<(&str, Vec<u8>, bool, ErrorCode)> = vec![
        ("length below header", vec![0, 0, 0, 2, 1, 0], true, ErrorCode::BadFrameLength),
        ("length zero", vec![0, 0, 0, 0], true, ErrorCode::BadFrameLength),
        ("oversized", vec![0, 0, 8, 1, 2, 0, 0, 0, 1], true, ErrorCode::BadFrameLength),
        ("0xFFFFFFFF", vec![0xFF, 0xFF, 0xFF, 0xFF], true, ErrorCode::BadFrameLength),
        ("ping before hello", vec![0, 0, 0, 5, 2, 0, 0, 0, 1], false, ErrorCode::BadHandshake),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, ErrorCode::BadHandshake),
        ("tls", vec![0x16, 3, 1, 0, 0xA5, 1, 0, 0, 0xA1, 3, 3], false, ErrorCode::BadHandshake),
        (
            "bad magic",
            vec![0, 0, 0, 13, 1, 0, 0, 0, 1, b'N', b'O', b'P', b'E', 0, 1, 0, 0],
            false,
            ErrorCode::BadHandshake,
        ),
        (
            "version 0",
            vec![0, 0, 0, 13, 1, 0, 0, 0, 1, b'O', b'F', b'C', b'R', 0, 0, 0, 0],
            false,
            ErrorCode::UnsupportedVersion,
        ),
    ];
    for (what, bytes, greet, code) in cases {
        let frames = send_garbage(&server, &bytes, greet);
        assert_eq!(first_error(&frames), code, "{what}");
    }
    // Answerable errors: the connection goes on.
    let mut raw = Raw::connect(server.addr());
    let mut check = |bytes: Vec<u8>, code: ErrorCode| {
        raw.send_bytes(&bytes).expect("write");
        match raw.recv() {
            (7, Response::Error { code: got, .. }) => assert_eq!(got, code),
            other => panic!("{other:?}"),
        }
        assert_eq!(raw.call(&Request::Ping(b"")), Response::Pong);
    };
    let frame = |op: u8, payload: &[u8]| {
        let mut f = ((5 + payload.len()) as u32).to_be_bytes().to_vec();
        f.push(op);
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let lock_payload = |name: &[u8]| {
        let mut p = vec![0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p
    };
    check(frame(0x7E, b""), ErrorCode::UnknownOpcode);
    check(frame(0x03, &lock_payload(b"")), ErrorCode::BadName);
    check(frame(0x03, &lock_payload(&[b'n'; 1025])[..]), ErrorCode::BadName);
    check(frame(0x03, &lock_payload(&[0xC3, 0x28])), ErrorCode::BadName);
    check(frame(0x03, &lock_payload(b"a\nb")), ErrorCode::BadName);
    check(frame(0x03, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'x']), ErrorCode::UnsupportedFlags);
    check(frame(0x03, &[0, 0, 0]), ErrorCode::Malformed);
    check(frame(0x05, b"junk"), ErrorCode::Malformed);

    assert_eq!(keeper.call(&lock("keep")), Response::AlreadyAcquired { token });
    assert_eq!(queue_of(&mut keeper, "keep"), vec![keeper.label.clone()]);
}

#[test]
fn fragmented_and_batched_input() {
    let server = TestServer::start();
    let mut a = Raw::connect(server.addr());
    let mut bytes = Vec::new();
    lock("frag").encode(5, &mut bytes);
    for b in &bytes {
        a.stream.write_all(std::slice::from_ref(b)).unwrap();
        a.stream.flush().unwrap();
    }
    let (rid, response) = a.recv();
    assert_eq!(rid, 5);
    token_of(response);
    let mut batch = Vec::new();
    for i in 0..1000u32 {
        Request::Ping(b"").encode(i + 1, &mut batch);
    }
    a.send_bytes(&batch).expect("write");
    for i in 0..1000u32 {
        assert_eq!(a.recv(), (i + 1, Response::Pong));
    }
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-secret";

fn auth_server() -> TestServer {
    TestServer::start_with(|c| {
        c.auth_secret = Some(SECRET.to_vec());
        c.auth_timeout = Duration::from_secs(1);
    })
}

#[test]
fn auth_required_before_anything_but_ping() {
    let server = auth_server();
    let mut raw = Raw::connect_no_hello(server.addr());
    let id = raw.send(&Request::Hello(officer::protocol::Hello { version: 1 }));
    match raw.recv() {
        (rid, Response::HelloOk(h)) => {
            assert_eq!(rid, id);
            assert!(h.auth_required);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.call(&Request::Ping(b"")), Response::Pong);
    match raw.call(&lock("x")) {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::AuthRequired),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.call(&Request::Auth(SECRET)), Response::AuthOk);
    token_of(raw.call(&lock("x")));
}

#[test]
fn one_auth_failure_closes_the_connection() {
    let server = auth_server();
    let mut bystander = Raw::connect(server.addr());
    assert_eq!(bystander.call(&Request::Auth(SECRET)), Response::AuthOk);
    let token = token_of(bystander.call(&lock("held")));
    let mut raw = Raw::connect(server.addr());
    raw.send(&Request::Auth(b"0123456789abcdef0123456789abcdef-wrong!"));
    // Fatal, so it carries request id 0 like every ERROR that ends a connection (§2.4, §5).
    match raw.recv() {
        (0, Response::Error { code, .. }) => assert!(code == ErrorCode::AuthFailed && code.is_fatal()),
        other => panic!("expected auth_failed with request id 0, got {other:?}"),
    }
    assert!(raw.responses_until_closed().is_empty(), "closed after the failure");
    assert_eq!(bystander.call(&lock("held")), Response::AlreadyAcquired { token });
}

#[test]
fn unauthenticated_connections_are_closed_after_the_deadline() {
    let server = auth_server();
    let mut raw = Raw::connect(server.addr());
    let started = Instant::now();
    // Pings are answered before AUTH; that they do not extend the deadline is the session's
    // test with literal ticks (src/server/session/tests.rs). Here: the server's timer closes.
    assert_eq!(raw.call(&Request::Ping(b"")), Response::Pong);
    let (frames, closed) = raw.wait_closed(WAIT);
    assert!(closed && frames.is_empty(), "never closed, or closed with {frames:?}");
    let closed = started.elapsed();
    assert!(closed >= Duration::from_millis(900), "closed too early: {closed:?}");
}

#[test]
fn pre_auth_frames_are_small_and_json_mode_is_off() {
    let server = auth_server();
    let mut raw = Raw::connect(server.addr());
    let big = vec![b'x'; 4096];
    raw.send(&Request::Auth(&big));
    match raw.responses_until_closed().first() {
        Some(Response::Error { code, .. }) => assert_eq!(*code, ErrorCode::BadFrameLength),
        other => panic!("{other:?}"),
    }
    // A JSON client is refused in its own language: one error line, then the close (issue 11).
    let mut json = Raw::connect_no_hello(server.addr());
    json.send_bytes(b"{\"command\":\"lock\",\"name\":\"x\"}\n").expect("write");
    let mut reply = String::new();
    json.stream.read_to_string(&mut reply).expect("read to EOF");
    let lines: Vec<serde_json::Value> =
        reply.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1, "{reply:?}");
    assert_eq!(
        (lines[0]["result"].as_str(), lines[0]["code"].as_str()),
        (Some("error"), Some("auth_required"))
    );
}
