//! Hostile input and contention: mutual exclusion with many clients on few names, a catalogue
//! of malformed input beyond tests/server.rs (each with a bystander whose lock must come
//! through untouched), slow readers, and connection floods against the real binary.

mod support;

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use officer::client::{Client, LockOptions};
use officer::protocol::{op, ErrorCode, Request, Response};
use support::frames::{frame, hello_frame, lock_req, locks_req, token_of};
use support::process::ServerProcess;
use support::raw::{stat, Bystander, Raw};
use support::rng::Rng;
use support::server::TestServer;
use support::WAIT;

// ---------------------------------------------------------------------------------------------
// Mutual exclusion

/// One hold as its holder saw it: from the moment `lock` returned to just before `unlock`.
struct Hold {
    name: usize,
    token: u64,
    start: Instant,
    end: Instant,
}

#[test]
fn mutual_exclusion_under_contention() {
    const THREADS: u64 = 16;
    const ROUNDS: usize = 150;
    const NAMES: [&str; 3] = ["mx/a", "mx/b", "mx/c"];
    let server = TestServer::start();
    let port = server.addr().port();
    // Incremented with a read, a yield and a write: two holders at once would lose updates.
    let counters: [AtomicU64; 3] = Default::default();
    let started = Instant::now();
    let holds: Vec<Hold> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let counters = &counters;
                s.spawn(move || {
                    let client = Client::connect("127.0.0.1", port).expect("connect");
                    let mut rng = Rng::new(0x5EED_0000 + t);
                    let mut holds = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        let name = rng.below(NAMES.len() as u64) as usize;
                        let acquired =
                            client.lock(NAMES[name], LockOptions::with_timeout(WAIT)).expect("lock");
                        assert!(!acquired.already_acquired());
                        let start = Instant::now();
                        let seen = counters[name].load(Ordering::Relaxed);
                        thread::yield_now();
                        counters[name].store(seen + 1, Ordering::Relaxed);
                        let end = Instant::now();
                        client.unlock(NAMES[name]).expect("unlock");
                        holds.push(Hold { name, token: acquired.token(), start, end });
                    }
                    holds
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker panicked")).collect()
    });
    eprintln!("mutual exclusion: {} holds in {:?}", holds.len(), started.elapsed());
    assert_eq!(holds.len(), THREADS as usize * ROUNDS);
    let mut all_tokens: Vec<u64> = holds.iter().map(|h| h.token).collect();
    all_tokens.sort_unstable();
    all_tokens.dedup();
    assert_eq!(all_tokens.len(), holds.len(), "a fencing token was issued twice");
    for (n, name) in NAMES.iter().enumerate() {
        let mut on_name: Vec<&Hold> = holds.iter().filter(|h| h.name == n).collect();
        on_name.sort_by_key(|h| h.start);
        for pair in on_name.windows(2) {
            assert!(pair[0].end <= pair[1].start, "two holds of {name} overlap");
            assert!(pair[0].token < pair[1].token, "tokens of {name} do not increase in grant order");
        }
        assert_eq!(counters[n].load(Ordering::Relaxed), on_name.len() as u64, "lost increments on {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input catalogue (PROTOCOL.md §2.1, §2.4, §5)

/// The only frame of a fatal error: ERROR with request id 0 and this code.
fn assert_fatal(frames: &[(u32, Response)], code: ErrorCode, what: &str) {
    match frames {
        [(0, Response::Error { code: got, .. })] => assert_eq!(*got, code, "{what}"),
        other => panic!("{what}: expected one fatal ERROR {code:?} with id 0, got {other:?}"),
    }
}

fn error_code(response: &Response) -> ErrorCode {
    match response {
        Response::Error { code, .. } => *code,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn lock_payload(name: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];
    p.extend_from_slice(name);
    p
}

/// A connection that holds `name`, so its close can be seen to release it.
fn holder(addr: std::net::SocketAddr, name: &str) -> Raw {
    let mut w = Raw::connect(addr);
    token_of(&w.call(&lock_req(name)));
    w
}

fn assert_free(addr: std::net::SocketAddr, name: &str) {
    let mut probe = Raw::connect(addr);
    token_of(&probe.call(&Request::Lock(officer::protocol::LockRequest {
        name,
        timeout_ms: Some(0),
        queue_max: None,
    })));
}

#[test]
fn truncated_frame_then_eof_closes_silently_and_releases() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let lock_frame = frame(op::LOCK, 9, &lock_payload(b"truncated/name"));
    for cut in [1, 3, 4, 5, 8, 9, 14, lock_frame.len() - 1] {
        let name = format!("trunc/{cut}");
        let mut w = holder(addr, &name);
        w.send_bytes(&lock_frame[..cut]).expect("write");
        w.shutdown_write();
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "cut at {cut}: not closed after EOF");
        assert!(frames.is_empty(), "cut at {cut}: EOF inside a frame got {frames:?}");
        assert_free(addr, &name);
    }
    // The same before the handshake: part of a HELLO, then EOF.
    for cut in [1, 4, 12] {
        let mut w = Raw::connect_no_hello(addr);
        w.send_bytes(&hello_frame(1)[..cut]).expect("write");
        w.shutdown_write();
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed && frames.is_empty(), "partial HELLO ({cut} bytes) then EOF: {frames:?}");
    }
    bystander.check("truncated frames then EOF");
}

#[test]
fn truncated_frame_then_silence_is_closed_at_max_idle() {
    let server = TestServer::start_with(|c| c.max_idle = Some(Duration::from_secs(1)));
    let addr = server.addr();
    // The bystander must talk to stay past max-idle: the library client pings on its own.
    let bystander = Client::connect("127.0.0.1", addr.port()).expect("connect");
    let by_token = bystander.try_lock("by").expect("bystander lock").token();
    let big = frame(op::LOCK, 9, &lock_payload(b"silence/name"));
    // (what, greet first, bytes): each is left hanging, all at once, and must be closed by
    // the idle timer alone, without a frame, releasing what it held.
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("half a length prefix", true, big[..2].to_vec()),
        ("a header without its body", true, big[..9].to_vec()),
        ("all but the last byte", true, big[..big.len() - 1].to_vec()),
        ("half a HELLO", false, hello_frame(1)[..7].to_vec()),
    ];
    let start = Instant::now();
    let mut hanging: Vec<(&str, Option<String>, Raw)> = cases
        .into_iter()
        .enumerate()
        .map(|(i, (what, greet, bytes))| {
            let (held, mut w) = if greet {
                let name = format!("silence/{i}");
                (Some(name.clone()), holder(addr, &name))
            } else {
                (None, Raw::connect_no_hello(addr))
            };
            w.send_bytes(&bytes).expect("write");
            (what, held, w)
        })
        .collect();
    for (what, held, w) in hanging.iter_mut() {
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "{what}: never closed");
        assert!(frames.is_empty(), "{what}: idle close sent {frames:?}");
        if let Some(name) = held {
            assert_free(addr, name);
        }
    }
    let waited = start.elapsed();
    eprintln!("partial frames closed by max-idle 1 s after {waited:?}");
    assert!(waited >= Duration::from_millis(800), "closed before max-idle: {waited:?}");
    let again = bystander.try_lock("by").expect("bystander still holds its lock");
    assert!(again.already_acquired() && again.token() == by_token);
}

#[test]
fn trailing_bytes_and_reserved_request_id() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut w = holder(addr, "trail/held");
    // Non-fatal: answered under the request's id (0 for id 0), and the session goes on.
    let cases: Vec<(&str, Vec<u8>, u32, ErrorCode)> = vec![
        ("MY_LOCKS with a byte", frame(op::MY_LOCKS, 7, b"x"), 7, ErrorCode::Malformed),
        ("STATS with bytes", frame(op::STATS, 7, b"extra"), 7, ErrorCode::Malformed),
        ("LOCKS with a cut max", frame(op::LOCKS, 7, &[0, 0, 1]), 7, ErrorCode::Malformed),
        ("LOCK cut inside timeout", frame(op::LOCK, 7, &[0, 0, 0, 0, 1]), 7, ErrorCode::Malformed),
        ("PING with id 0", frame(op::PING, 0, b""), 0, ErrorCode::Malformed),
        ("LOCK with id 0", frame(op::LOCK, 0, &lock_payload(b"trail/zero")), 0, ErrorCode::Malformed),
        ("RESET with id 0", frame(op::RESET, 0, b""), 0, ErrorCode::Malformed),
    ];
    for (what, bytes, id, code) in cases {
        w.send_bytes(&bytes).expect("write");
        let (rid, response) = w.recv();
        assert_eq!((rid, error_code(&response)), (id, code), "{what}");
        // Told from a fatal ERROR by its code, even with id 0 (PROTOCOL.md §2.4).
        assert!(!error_code(&response).is_fatal(), "{what}");
        assert_eq!(w.call(&Request::Ping(b"")), Response::Pong, "{what}: session goes on");
    }
    // PING's payload is padding: any bytes are fine.
    w.send_bytes(&frame(op::PING, 8, &[0xAB; 300])).expect("write");
    assert_eq!(w.recv(), (8, Response::Pong));
    // The id-0 requests did nothing: the LOCK took no lock and the RESET kept ours.
    match w.call(&Request::MyLocks) {
        Response::MyLocks { held, waiting } => {
            assert_eq!(held, vec!["trail/held".to_string()]);
            assert!(waiting.is_empty());
        }
        other => panic!("{other:?}"),
    }
    drop(w);
    // A HELLO with a trailing byte as the first frame: fatal bad_handshake, id 0.
    let mut first = hello_frame(1);
    first[3] += 1;
    first.push(0);
    let mut w = Raw::connect_no_hello(addr);
    w.send_bytes(&first).expect("write");
    let (frames, closed) = w.wait_closed(WAIT);
    assert!(closed);
    assert_fatal(&frames, ErrorCode::BadHandshake, "HELLO with a trailing byte");
    bystander.check("trailing bytes");
}

/// PROTOCOL.md §2.4 and §4.18: a fatal ERROR carries request id 0; "HELLO came twice" is a
/// fatal `bad_handshake` (§5).
#[test]
fn second_hello_is_a_fatal_error_with_id_zero() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut w = holder(addr, "hello2/held");
    w.send_bytes(&hello_frame(5)).expect("write");
    let (frames, closed) = w.wait_closed(WAIT);
    assert!(closed, "a second HELLO must close the connection");
    assert_fatal(&frames, ErrorCode::BadHandshake, "second HELLO");
    assert_free(addr, "hello2/held");
    bystander.check("a second HELLO");
}

#[test]
fn names_at_the_limit_are_accepted_and_one_byte_more_is_refused() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut w = Raw::connect(addr);
    let ascii = "n".repeat(1024);
    let accented = "é".repeat(512); // 1024 bytes, 512 characters
    for name in [&ascii, &accented] {
        let token = token_of(&w.call(&lock_req(name)));
        assert_eq!(w.call(&lock_req(name)), Response::AlreadyAcquired { token });
        match w.call(&locks_req(name)) {
            Response::Locks { locks, truncated } => {
                assert!(!truncated);
                assert_eq!(locks.len(), 1);
                assert_eq!(&locks[0].name, name);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(w.call(&Request::Unlock(name)), Response::Released);
    }
    let over = ["n".repeat(1025), format!("a{accented}"), format!("{}é", "n".repeat(1023))];
    for name in &over {
        assert_eq!(name.len(), 1025);
        assert_eq!(error_code(&w.call(&lock_req(name))), ErrorCode::BadName, "LOCK {} bytes", name.len());
        assert_eq!(error_code(&w.call(&Request::Unlock(name))), ErrorCode::BadName, "UNLOCK");
        assert_eq!(error_code(&w.call(&locks_req(name))), ErrorCode::BadName, "LOCKS prefix");
    }
    assert_eq!(w.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
    bystander.check("names at the limit");

    // A small --max-name: the same edge at 16 bytes.
    let small = TestServer::start_with(|c| c.max_name = 16);
    let mut w = Raw::connect(small.addr());
    token_of(&w.call(&lock_req(&"s".repeat(16))));
    assert_eq!(error_code(&w.call(&lock_req(&"s".repeat(17)))), ErrorCode::BadName);
    assert_eq!(w.call(&Request::Ping(b"")), Response::Pong);
}

#[test]
fn frame_at_max_frame_is_accepted_and_one_byte_more_is_fatal() {
    const MAX_FRAME: u32 = 256;
    let server = TestServer::start_with(|c| c.max_frame = MAX_FRAME);
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let body = MAX_FRAME as usize - 5;
    let name_len = body - 10;
    let mut w = Raw::connect(addr);
    let exact = frame(op::LOCK, 3, &lock_payload("e".repeat(name_len).as_bytes()));
    assert_eq!(exact.len(), 4 + MAX_FRAME as usize);
    w.send_bytes(&exact).expect("write");
    let (rid, response) = w.recv();
    assert_eq!(rid, 3);
    token_of(&response);
    w.send_bytes(&frame(op::PING, 4, &vec![0; body])).expect("write");
    assert_eq!(w.recv(), (4, Response::Pong));
    // One byte more: the length alone is refused, before any body byte arrives.
    let mut over = Raw::connect(addr);
    over.send_bytes(&frame(op::PING, 5, &vec![0; body + 1])[..4]).expect("write");
    let (frames, closed) = over.wait_closed(WAIT);
    assert!(closed);
    assert_fatal(&frames, ErrorCode::BadFrameLength, "max_frame + 1");
    bystander.check("frames at the limit");
}

/// Any first bytes that are not an officer session are refused on their first four bytes
/// (PROTOCOL.md §2.6) with one fatal ERROR (id 0) and a close; bytes that could still be the
/// start of a HELLO-sized frame are answered the same way once whole, or dropped at EOF.
#[test]
fn random_first_bytes_are_refused() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut rng = Rng::new(0xF1257);
    let mut refused_at_once = 0;
    for trial in 0..60 {
        let len = 4 + rng.below(60) as usize;
        let mut bytes = rng.bytes(len);
        if trial % 3 == 0 {
            // A plausible length: zero high bytes, so small lengths (5..13) come up too.
            bytes[..3].fill(0);
            bytes[3] = rng.below(20) as u8;
        }
        if bytes[0] == b'{' {
            bytes[0] = b'}'; // `{` would select the JSON-lines mode (§2.6)
        }
        let claimed = u32::from_be_bytes(bytes[..4].try_into().unwrap());
        let mut w = Raw::connect_no_hello(addr);
        let _ = w.send_bytes(&bytes);
        let plausible = (5..=13).contains(&claimed);
        let whole = plausible && bytes.len() >= 4 + claimed as usize;
        if plausible && !whole {
            w.shutdown_write();
        }
        let (frames, closed) = w.wait_closed(WAIT);
        let what = format!("trial {trial} {bytes:02x?}");
        assert!(closed, "{what}: not closed");
        if plausible && !whole {
            assert!(frames.is_empty(), "{what}: {frames:?}");
        } else if whole {
            // A whole small first frame that is not HELLO: refused, fatally (its code is
            // checked in first_frame_that_is_not_a_valid_hello_is_bad_handshake).
            assert!(matches!(frames.as_slice(), [(0, Response::Error { .. })]), "{what}: {frames:?}");
        } else {
            refused_at_once += 1;
            assert_fatal(&frames, ErrorCode::BadHandshake, &what);
        }
    }
    eprintln!("random first bytes: {refused_at_once} of 60 refused on their length");
    assert!(refused_at_once > 30);
    bystander.check("random first bytes");
}

/// PROTOCOL.md §5: `bad_handshake` is the code for "the first frame is not a valid HELLO";
/// §5.1: every HELLO failure is fatal. A first frame that is some other request is refused
/// that way whether or not it would decode as that request.
#[test]
fn first_frame_that_is_not_a_valid_hello_is_bad_handshake() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PING (decodes)", frame(op::PING, 1, b"")),
        ("unknown opcode", frame(0x7E, 1, b"")),
        ("PING with id 0", frame(op::PING, 0, b"")),
        ("LOCK cut short", frame(op::LOCK, 1, &[0, 0, 0])),
        ("STATS with a byte", frame(op::STATS, 1, b"x")),
        ("LOCK with flags", frame(op::LOCK, 1, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, b'x'])),
    ];
    let mut wrong = Vec::new();
    for (what, bytes) in cases {
        let mut w = Raw::connect_no_hello(addr);
        w.send_bytes(&bytes).expect("write");
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "{what}: not closed");
        match frames.as_slice() {
            [(0, Response::Error { code: ErrorCode::BadHandshake, .. })] => {}
            other => wrong.push(format!("{what}: {other:?}")),
        }
    }
    bystander.check("first frames that are not HELLO");
    assert!(wrong.is_empty(), "not refused with a fatal bad_handshake:\n{}", wrong.join("\n"));
}

/// After a valid handshake, random frames (valid lengths, random opcodes, ids and payloads)
/// get only decodable answers, under the ids sent or 0, and never touch another connection.
#[test]
fn random_frames_after_hello_never_hurt_others() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut rng = Rng::new(0xBAD_F00D);
    for trial in 0..40 {
        let mut w = Raw::connect(addr);
        let mut batch = Vec::new();
        let mut ids = vec![0];
        for _ in 0..20 {
            let opcode = if rng.below(4) == 0 { rng.next_u64() as u8 } else { 1 + rng.below(10) as u8 };
            let id = if rng.below(10) == 0 { 0 } else { rng.next_u64() as u32 };
            let len = rng.below(24) as usize;
            let mut payload = rng.bytes(len);
            if opcode == op::LOCK && payload.len() > 10 && rng.below(2) == 0 {
                payload[..10].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // try-once LOCK
            }
            ids.push(id);
            batch.extend_from_slice(&frame(opcode, id, &payload));
        }
        if trial % 4 == 0 {
            batch.extend_from_slice(&rng.bytes(8)); // and then garbage
        }
        let _ = w.send_bytes(&batch);
        w.shutdown_write();
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "trial {trial}: not closed after EOF");
        for (rid, response) in &frames {
            assert!(ids.contains(rid), "trial {trial}: answer under an id never sent: {rid} {response:?}");
        }
    }
    let mut observer = Raw::connect(addr);
    support::process::wait_until("random sessions to be gone", WAIT, || {
        stat(&mut observer, "connections") == 2
    });
    match observer.call(&locks_req("")) {
        Response::Locks { locks, .. } => {
            assert_eq!(locks.len(), 1, "only the bystander's lock is left: {locks:?}");
        }
        other => panic!("{other:?}"),
    }
    bystander.check("random frames");
}

#[test]
fn one_byte_writes_across_several_frames() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut w = Raw::connect_no_hello(addr);
    let mut bytes = hello_frame(1);
    let requests: Vec<(u32, Vec<u8>)> = vec![
        (2, support::frames::encode(&lock_req("frag/1"), 2)),
        (3, frame(op::PING, 3, b"abc")),
        (4, support::frames::encode(&lock_req("frag/2"), 4)),
        (5, support::frames::encode(&Request::MyLocks, 5)),
        (6, support::frames::encode(&Request::Unlock("frag/1"), 6)),
        (7, frame(0x7E, 7, b"??")),
        (8, support::frames::encode(&Request::Reset, 8)),
    ];
    for (_, f) in &requests {
        bytes.extend_from_slice(f);
    }
    for b in &bytes {
        w.send_bytes(std::slice::from_ref(b)).expect("write");
        // Paces the bytes so most reach the server one by one.
        thread::sleep(Duration::from_micros(300));
    }
    assert!(matches!(w.recv(), (1, Response::HelloOk(_))));
    let (rid, r) = w.recv();
    assert_eq!(rid, 2);
    token_of(&r);
    assert_eq!(w.recv(), (3, Response::Pong));
    let (rid, r) = w.recv();
    assert_eq!(rid, 4);
    token_of(&r);
    assert_eq!(
        w.recv(),
        (5, Response::MyLocks { held: vec!["frag/1".into(), "frag/2".into()], waiting: vec![] })
    );
    assert_eq!(w.recv(), (6, Response::Released));
    let (rid, r) = w.recv();
    assert_eq!((rid, error_code(&r)), (7, ErrorCode::UnknownOpcode));
    assert_eq!(w.recv(), (8, Response::ResetOk));
    bystander.check("one-byte writes");
}

/// HELLO and 1000 mixed frames in one write, answered in order exactly as a model of one
/// connection predicts.
#[test]
fn a_thousand_mixed_frames_in_one_write() {
    let server = TestServer::start();
    let addr = server.addr();
    let mut bystander = Bystander::new(addr, "by");
    let mut w = Raw::connect_no_hello(addr);
    let mut batch = hello_frame(1);
    let mut expected: Vec<(u32, &str)> = Vec::new();
    let mut held: HashMap<String, bool> = HashMap::new();
    let mut rng = Rng::new(1000);
    for i in 0..1000u32 {
        let id = i + 2;
        let name = format!("batch/{}", rng.below(7));
        match i % 6 {
            0 | 1 => {
                batch.extend_from_slice(&support::frames::encode(&support::frames::try_lock_req(&name), id));
                let was = held.insert(name, true).unwrap_or(false);
                expected.push((id, if was { "already" } else { "acquired" }));
            }
            2 => {
                batch.extend_from_slice(&support::frames::encode(&Request::Unlock(&name), id));
                let was = held.insert(name, false).unwrap_or(false);
                expected.push((id, if was { "released" } else { "release_failed" }));
            }
            3 => {
                batch.extend_from_slice(&frame(op::PING, id, b""));
                expected.push((id, "pong"));
            }
            4 => {
                batch.extend_from_slice(&frame(0x7E, id, b""));
                expected.push((id, "unknown"));
            }
            _ => {
                batch.extend_from_slice(&frame(op::STATS, id, b"x"));
                expected.push((id, "malformed"));
            }
        }
    }
    w.send_bytes(&batch).expect("write");
    assert!(matches!(w.recv(), (1, Response::HelloOk(_))));
    let mut tokens: HashMap<u64, ()> = HashMap::new();
    for (id, what) in expected {
        let (rid, response) = w.recv();
        assert_eq!(rid, id, "answers in request order");
        let ok = match (what, &response) {
            ("acquired", Response::Acquired { token }) => tokens.insert(*token, ()).is_none(),
            ("already", Response::AlreadyAcquired { .. }) => true,
            ("released", Response::Released) => true,
            ("release_failed", Response::ReleaseFailed) => true,
            ("pong", Response::Pong) => true,
            ("unknown", Response::Error { code: ErrorCode::UnknownOpcode, .. }) => true,
            ("malformed", Response::Error { code: ErrorCode::Malformed, .. }) => true,
            _ => false,
        };
        assert!(ok, "request {id}: expected {what}, got {response:?}");
    }
    bystander.check("a thousand frames in one write");
}

/// Requests already received are served even when they exceed what one wake-up serves
/// (`requests_per_wakeup`, 4096 by default): the rest must not wait for more input.
#[test]
fn pipelined_requests_beyond_the_wakeup_budget_are_all_served() {
    for (budget, count) in [(None, 5000u32), (Some(7), 100)] {
        let server = TestServer::start_with(|c| {
            if let Some(b) = budget {
                c.requests_per_wakeup = b;
            }
        });
        let mut w = Raw::connect(server.addr());
        let batch: Vec<u8> = (0..count).flat_map(|i| frame(op::PING, i + 10, b"")).collect();
        w.send_bytes(&batch).expect("write");
        // Nothing more is sent: every answer must come from what the server already has.
        w.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answered = 0;
        while answered < count {
            match w.try_recv() {
                Some((rid, Response::Pong)) => {
                    assert_eq!(rid, answered + 10);
                    answered += 1;
                }
                Some(other) => panic!("{other:?}"),
                None => break,
            }
        }
        assert_eq!(
            answered, count,
            "budget {budget:?}: pipelined PINGs answered before the server went quiet"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Slow readers

/// A state file in a fresh temp dir, so real servers never touch the user's default one.
fn state_args(dir: &tempfile::TempDir) -> String {
    support::state_file_in(dir.path()).to_str().expect("utf-8 path").to_owned()
}

/// Holds `count` locks with long names on one connection, so each LOCKS listing is big.
fn fill_locks(addr: std::net::SocketAddr, count: usize) -> Raw {
    let mut w = Raw::connect(addr);
    let mut batch = Vec::new();
    for i in 0..count {
        let name = format!("fill/{i:05}/{}", "x".repeat(48));
        batch.extend_from_slice(&support::frames::encode(&lock_req(&name), i as u32 + 1));
    }
    w.send_bytes(&batch).expect("write");
    for _ in 0..count {
        token_of(&w.recv().1);
    }
    w
}

/// Pings from another client, as fast as they come back, until `done`; returns the slowest
/// round trip and the count.
fn ping_until(addr: std::net::SocketAddr, done: Arc<AtomicBool>) -> thread::JoinHandle<(Duration, u32)> {
    let client = Client::connect("127.0.0.1", addr.port()).expect("connect");
    thread::spawn(move || {
        let mut worst = Duration::ZERO;
        let mut count = 0;
        while !done.load(Ordering::Relaxed) {
            worst = worst.max(client.ping().expect("ping"));
            count += 1;
            thread::sleep(Duration::from_millis(1));
        }
        (worst, count)
    })
}

#[test]
fn slow_reader_is_closed_its_locks_released_and_others_stay_fast() {
    let dir = support::temp_dir();
    let state = state_args(&dir);
    let server = ServerProcess::spawn(&["-m", "0", "--max-output", "65536", "--state-file", &state]);
    let addr = server.addr;
    let mut bystander = Bystander::new(addr, "by");
    let rss_before = support::process::status_kib(server.pid(), "VmRSS");
    let done = Arc::new(AtomicBool::new(false));
    let pinger = ping_until(addr, done.clone());

    let mut slow = holder(addr, "slow/held");
    let waiter = Client::connect("127.0.0.1", addr.port()).expect("connect");
    let waiting = thread::spawn(move || {
        let token = waiter.lock("slow/held", LockOptions::with_timeout(WAIT)).expect("waiter lock").token();
        (waiter, token)
    });
    let start = Instant::now();
    // PINGs are cheap to serve and their answers small: the server must buffer megabytes of
    // them (the socket buffers fill first) before its pending output passes --max-output.
    // Never read.
    let one = support::frames::encode(&Request::Ping(b""), 9);
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let mut sent = 0;
    while !waiting.is_finished() && sent < 3_000_000 {
        if slow.send_bytes(&chunk).is_err() {
            break;
        }
        sent += 1000;
    }
    let (waiter, token) = waiting.join().expect("waiter");
    let handed_over = start.elapsed();
    assert!(token > 0);
    let (closed, cut) = slow.wait_closed_cut(WAIT);
    assert!(closed, "the slow reader's socket was not closed");
    // A little more traffic after the close, then stop the pinger.
    for _ in 0..20 {
        waiter.ping().expect("ping");
    }
    done.store(true, Ordering::Relaxed);
    let (worst, pings) = pinger.join().expect("pinger");
    let stats = waiter.stats().expect("stats");
    let hwm = support::process::status_kib(server.pid(), "VmHWM");
    eprintln!(
        "slow reader: {sent} PINGs pipelined; closed and its lock handed over after \
         {handed_over:?}; another client's {pings} pings: worst {worst:?}; server RSS before \
         {rss_before} kB, peak {hwm} kB; the stream ended inside a frame ({cut} bytes)"
    );
    assert_eq!(stats.get("connections_closed_output_overflow"), Some(1));
    assert!(worst < Duration::from_secs(2), "a ping took {worst:?} while a slow reader was served");
    bystander.check("a slow reader");
}

/// `--max-output` bounds what a client that does not read can make the server hold, and one
/// such client should not stall the others for long. Here each answer is a listing cut to the
/// 64 KiB frame limit, and the bounds are generous: 64 MiB of peak growth with a 64 KiB
/// `--max-output`, and pings of another client under 2 s.
#[test]
fn slow_reader_of_big_listings_costs_bounded_memory_and_latency() {
    let dir = support::temp_dir();
    let state = state_args(&dir);
    let server = ServerProcess::spawn(&["-m", "0", "--max-output", "65536", "--state-file", &state]);
    let addr = server.addr;
    // About 1000 names of 60 bytes: every listing is cut to the 64 KiB frame limit.
    let _filler = fill_locks(addr, 1000);
    let hwm_before = support::process::status_kib(server.pid(), "VmHWM");
    let done = Arc::new(AtomicBool::new(false));
    let pinger = ping_until(addr, done.clone());
    let mut slow = Raw::connect(addr);
    let one = support::frames::encode(&locks_req("fill/"), 9);
    // 4096 requests of 9 bytes: 36 KiB of input, one read.
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
    let _ = slow.send_bytes(&batch);
    let mut observer = Raw::connect(addr);
    support::process::wait_until("the slow reader to be closed", WAIT, || {
        stat(&mut observer, "connections_closed_output_overflow") == 1
    });
    done.store(true, Ordering::Relaxed);
    let (worst, _) = pinger.join().expect("pinger");
    let hwm_after = support::process::status_kib(server.pid(), "VmHWM");
    let growth_mib = hwm_after.saturating_sub(hwm_before) / 1024;
    eprintln!(
        "big listings: peak RSS {hwm_before} kB -> {hwm_after} kB (+{growth_mib} MiB) for 36 KiB of \
         requests; worst ping of another client {worst:?}"
    );
    assert!(growth_mib < 64, "36 KiB of pipelined requests grew the server's peak RSS by {growth_mib} MiB");
    assert!(worst < Duration::from_secs(2), "a ping took {worst:?} while a slow reader was served");
}

// ---------------------------------------------------------------------------------------------
// Connection floods

#[test]
fn connection_flood_past_max_connections() {
    let dir = support::temp_dir();
    let state = state_args(&dir);
    let server = ServerProcess::spawn(&["-m", "0", "--max-connections", "20", "--state-file", &state]);
    let addr = server.addr;
    let mut observer = Raw::connect(addr);
    let mut bystander = Bystander::new(addr, "by");
    let mut idle: Vec<Raw> = (0..18).map(|_| Raw::connect(addr)).collect();
    assert_eq!(stat(&mut observer, "connections"), 20);

    let mut flood: Vec<Raw> = (0..30).map(|_| Raw::connect_no_hello(addr)).collect();
    for (i, w) in flood.iter_mut().enumerate() {
        let (frames, closed) = w.wait_closed(WAIT);
        assert!(closed, "excess connection {i} was not closed");
        assert_fatal(&frames, ErrorCode::LimitExceeded, &format!("excess connection {i}"));
    }
    assert_eq!(stat(&mut observer, "connections_refused"), 30);
    assert_eq!(stat(&mut observer, "connections"), 20);
    bystander.check("a connection flood");
    for w in idle.iter_mut() {
        assert_eq!(w.call(&Request::Ping(b"")), Response::Pong);
    }
    // Room again after five close.
    idle.truncate(13);
    support::process::wait_until("closed connections to be reaped", WAIT, || {
        stat(&mut observer, "connections") == 15
    });
    let mut fresh: Vec<Raw> = (0..5).map(|_| Raw::connect(addr)).collect();
    for w in fresh.iter_mut() {
        token_of(&w.call(&lock_req(&format!("fresh/{}", w.label))));
    }
    let mut one_more = Raw::connect_no_hello(addr);
    let (frames, _) = one_more.wait_closed(WAIT);
    assert_fatal(&frames, ErrorCode::LimitExceeded, "the 21st connection");
    bystander.check("a connection flood");
}

#[test]
fn low_open_file_limit_does_not_spin_and_recovers() {
    let dir = support::temp_dir();
    let state = state_args(&dir);
    let server = ServerProcess::spawn_with_nofile(64, &["-m", "0", "--state-file", &state]);
    let addr = server.addr;
    let mut observer = Raw::connect(addr);
    let mut bystander = Bystander::new(addr, "by");
    let max = stat(&mut observer, "max_connections");
    eprintln!("with ulimit -n 64 the server allows {max} connections");
    assert!(max < 64, "max_connections {max} not clamped to the open-file limit");

    let flood: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    // Saturated: keep knocking for 2 s while measuring the server's CPU time.
    let cpu_before = support::process::cpu_time(server.pid());
    let window = Instant::now();
    let mut knocks = 0;
    while window.elapsed() < Duration::from_secs(2) {
        if let Ok(s) = TcpStream::connect(addr) {
            drop(s);
        }
        knocks += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let cpu = support::process::cpu_time(server.pid()) - cpu_before;
    eprintln!("saturated for 2 s ({knocks} extra connects): server used {cpu:?} of CPU");
    assert!(cpu < Duration::from_secs(1), "server burned {cpu:?} of CPU in 2 s at its descriptor limit");
    assert_eq!(observer.call(&Request::Ping(b"")), Response::Pong);
    bystander.check("a saturated server");

    drop(flood);
    support::process::wait_until("the flood to be reaped", WAIT, || stat(&mut observer, "connections") == 2);
    let mut fresh: Vec<Raw> = (0..20).map(|_| Raw::connect(addr)).collect();
    for w in fresh.iter_mut() {
        assert_eq!(w.call(&Request::Ping(b"")), Response::Pong);
    }
    bystander.check("recovery from saturation");
}
