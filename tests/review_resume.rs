//! Adversarial review of resumable sessions (issue 14, PROTOCOL.md §6.14) over real sockets:
//! wrong secrets in bulk, racing resumes of one session, GOODBYE inside a pipeline, a takeover
//! of a connection mid-pipeline, resumes at the very edge of the grace, a large replay, session
//! requests in the wrong state, lock-delay after a grace ends, the JSON mode beside sessions, a
//! fatal error as a loss, an expired grace's waits leaving their queues, a wait pending at resume,
//! and the client across a server restart.
//! Each test runs its own server on 127.0.0.1:0 and waits on events, never on time. A test that
//! shows a bug is kept `#[ignore = "BUG: ..."]` so the suite stays green.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use officer::protocol::{
    ErrorCode, LockExtRequest, LockRequest, Request, Response, Resumed, SessionOk, SessionOpen, SessionResume,
};
use support::frames::{encode, lock_req, token_of, try_lock_req};
use support::process::wait_until;
use support::raw::{stat, Raw};
use support::server::TestServer;
use support::WAIT;

const GRACE_MS: u32 = 30_000;

fn server(max_grace_ms: u64) -> TestServer {
    TestServer::start_with(|c| c.max_session_grace = Duration::from_millis(max_grace_ms))
}

fn open(addr: SocketAddr, grace_ms: u32) -> (Raw, SessionOk) {
    let mut wire = Raw::connect(addr);
    match wire.call(&Request::SessionOpen(SessionOpen { grace_ms, skip_while_detached: false })) {
        Response::SessionOk(ok) => (wire, ok),
        other => panic!("expected SESSION_OK, got {other:?}"),
    }
}

fn resume_req(ok: &SessionOk) -> Request<'static> {
    Request::SessionResume(SessionResume { session_id: ok.session_id, secret: ok.secret })
}

fn is_err(response: &Response, code: ErrorCode) -> bool {
    matches!(response, Response::Error { code: c, .. } if *c == code)
}

/// 500 guesses of the secret (every byte position flipped, and another live session's secret)
/// change nothing, are each counted, and the right secret still resumes with the same token.
#[test]
fn many_wrong_secrets_change_nothing_and_are_counted() {
    let server = server(u64::from(GRACE_MS));
    let mut observer = Raw::connect(server.addr());
    let (mut a, ok) = open(server.addr(), GRACE_MS);
    let token = token_of(&a.call(&lock_req("x")));
    let (_other, other_ok) = open(server.addr(), GRACE_MS);
    drop(a);
    wait_until("detached", WAIT, || stat(&mut observer, "sessions_detached") == 1);
    let mut guesser = Raw::connect(server.addr());
    let mut rng = support::rng::Rng::new(14);
    for i in 0..499u32 {
        let mut wrong = ok;
        wrong.secret[(i % 16) as usize] ^= (rng.below(255) as u8) + 1;
        let answer = guesser.call(&resume_req(&wrong));
        assert!(is_err(&answer, ErrorCode::BadSession), "guess {i}: {answer:?}");
    }
    let crossed = SessionOk { session_id: ok.session_id, ..other_ok };
    assert!(is_err(&guesser.call(&resume_req(&crossed)), ErrorCode::BadSession), "another session's secret");
    assert_eq!(stat(&mut observer, "session_resume_failures"), 500);
    assert_eq!(stat(&mut observer, "sessions_detached"), 1);
    assert!(matches!(observer.call(&try_lock_req("x")), Response::TimedOut { .. }), "still held");
    assert_eq!(
        guesser.call(&resume_req(&ok)),
        Response::Resumed(Resumed { grace_ms: GRACE_MS, replayed: 0 })
    );
    assert_eq!(guesser.call(&lock_req("x")), Response::AlreadyAcquired { token });
}

/// Eight connections resume one detached session at the same moment: every one is answered
/// RESUMED (newest wins), all but one are then closed with `taken_over`, and the survivor
/// holds the lock with its original token; nobody else can take it.
#[test]
fn racing_resumes_of_one_session_leave_exactly_one_owner() {
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut a, ok) = open(addr, GRACE_MS);
    let token = token_of(&a.call(&lock_req("x")));
    drop(a);
    wait_until("detached", WAIT, || stat(&mut observer, "sessions_detached") == 1);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut wire = Raw::connect(addr);
                barrier.wait();
                let id = wire.send(&resume_req(&ok));
                let (rid, answer) = wire.recv();
                assert_eq!(rid, id);
                assert!(matches!(answer, Response::Resumed(Resumed { replayed: 0, .. })), "{answer:?}");
                wire
            })
        })
        .collect();
    let wires: Vec<Raw> = threads.into_iter().map(|t| t.join().expect("resumer")).collect();
    wait_until("all but one taken over", WAIT, || stat(&mut observer, "sessions_taken_over") == n as u64 - 1);
    let mut owners = 0;
    for mut wire in wires {
        let id = wire.send(&lock_req("x"));
        match wire.try_recv() {
            Some((rid, Response::AlreadyAcquired { token: t })) if rid == id => {
                assert_eq!(t, token, "the resumed grant keeps its token");
                owners += 1;
                // Keep the owner alive until the end of the checks below.
                std::mem::forget(wire);
            }
            Some((0, Response::Error { code: ErrorCode::TakenOver, .. })) => {
                let (_, closed) = wire.wait_closed(WAIT);
                assert!(closed, "a taken-over connection is closed");
            }
            None => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(owners, 1, "exactly one connection owns the session");
    assert!(matches!(observer.call(&try_lock_req("x")), Response::TimedOut { .. }));
    assert_eq!(stat(&mut observer, "sessions_detached"), 0);
}

/// LOCK, GOODBYE, LOCK and garbage in one write: the first LOCK is served, GOODBYE answers
/// RESET_OK and releases, and nothing after it is read (no second grant, no ERROR for the
/// garbage), and the session is gone rather than detached.
#[test]
fn goodbye_mid_pipeline_serves_what_came_before_and_reads_nothing_after() {
    let server = server(u64::from(GRACE_MS));
    let mut observer = Raw::connect(server.addr());
    let (mut a, ok) = open(server.addr(), GRACE_MS);
    let mut bytes = encode(&lock_req("a"), 10);
    bytes.extend(encode(&Request::Goodbye, 11));
    bytes.extend(encode(&lock_req("b"), 12));
    bytes.extend([0xff, 0xff, 0xff, 0xff, 0x00]);
    a.send_bytes(&bytes).expect("write");
    let (seen, closed) = a.wait_closed(WAIT);
    assert!(closed);
    assert!(
        matches!(&seen[..], [(10, Response::Acquired { .. }), (11, Response::ResetOk)]),
        "exactly the LOCK's grant and GOODBYE's RESET_OK: {seen:?}"
    );
    wait_until("released", WAIT, || stat(&mut observer, "locks_held") == 0);
    assert_eq!(stat(&mut observer, "sessions_detached"), 0);
    token_of(&observer.call(&try_lock_req("a")));
    token_of(&observer.call(&try_lock_req("b")));
    let mut late = Raw::connect(server.addr());
    assert!(is_err(&late.call(&resume_req(&ok)), ErrorCode::BadSession));
}

/// The session's connection is busy with a long LOCK/UNLOCK pipeline of one name when a new
/// connection takes it over: the old connection is closed, the survivor's view of the lock is
/// coherent with the table's, and a later grant's token is larger than every token the old
/// connection saw.
#[test]
fn a_takeover_mid_pipeline_keeps_mutual_exclusion_and_tokens_rising() {
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut a, ok) = open(addr, GRACE_MS);
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        bytes.extend(encode(&lock_req("x"), 100 + 2 * i));
        bytes.extend(encode(&Request::Unlock("x"), 101 + 2 * i));
    }
    a.send_bytes(&bytes).expect("pipeline");
    let mut b = Raw::connect(addr);
    assert!(matches!(b.call(&resume_req(&ok)), Response::Resumed(_)));
    let (seen, closed) = a.wait_closed(WAIT);
    assert!(closed, "the older connection is closed");
    let max_seen = seen
        .iter()
        .filter_map(|(_, r)| match r {
            Response::Acquired { token } => Some(*token),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        matches!(seen.last(), Some((0, Response::Error { code: ErrorCode::TakenOver, .. }))),
        "the last frame says why: {:?}",
        seen.last()
    );
    // Whatever the pipeline left, the survivor and the table agree.
    match b.call(&lock_req("x")) {
        Response::Acquired { token } | Response::AlreadyAcquired { token } => assert!(token >= max_seen),
        other => panic!("expected a grant, got {other:?}"),
    }
    assert!(matches!(observer.call(&try_lock_req("x")), Response::TimedOut { .. }), "two holders");
    assert_eq!(b.call(&Request::Unlock("x")), Response::Released);
    let later = token_of(&observer.call(&try_lock_req("x")));
    assert!(later > max_seen, "tokens never go back: {later} after {max_seen}");
}

/// A resume racing the end of a short grace is all or nothing: RESUMED means the lock is still
/// the session's (same token, nobody else gets it); `bad_session` means it was released (the
/// next grant has a larger token). Never a RESUMED session that lost its lock silently.
#[test]
fn a_resume_at_the_edge_of_the_grace_is_all_or_nothing() {
    let server = server(5);
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut resumed, mut refused) = (0, 0);
    for i in 0..40 {
        let name = format!("edge/{i}");
        let (mut a, ok) = open(addr, 5);
        let token = token_of(&a.call(&lock_req(&name)));
        let mut b = Raw::connect(addr);
        let expired = stat(&mut observer, "sessions_expired");
        drop(a);
        // Resume only once the server has noticed the loss: the 5 ms grace is then running
        // (or already over).
        wait_until("the loss is noticed", WAIT, || {
            stat(&mut observer, "sessions_detached") == 1 || stat(&mut observer, "sessions_expired") > expired
        });
        // Spread the resumes over the grace's end (the pause varies when, never what is asserted).
        std::thread::sleep(Duration::from_millis(i % 20));
        match b.call(&resume_req(&ok)) {
            Response::Resumed(_) => {
                resumed += 1;
                assert_eq!(b.call(&lock_req(&name)), Response::AlreadyAcquired { token }, "round {i}");
                assert!(
                    matches!(observer.call(&try_lock_req(&name)), Response::TimedOut { .. }),
                    "round {i}"
                );
                assert_eq!(b.call(&Request::Goodbye), Response::ResetOk);
            }
            Response::Error { code: ErrorCode::SessionState, .. } => {
                panic!("round {i}: a fresh connection is in no session state")
            }
            Response::Error { code: ErrorCode::BadSession, .. } => {
                // A still-attached session is taken over (RESUMED), so this one ended: its
                // lock must be free.
                refused += 1;
                wait_until("the lock is released", WAIT, || {
                    matches!(observer.call(&try_lock_req(&name)), Response::Acquired { .. })
                });
                assert_eq!(observer.call(&Request::Unlock(&name)), Response::Released);
            }
            other => panic!("round {i}: {other:?}"),
        }
    }
    eprintln!("edge of the grace: {resumed} resumed, {refused} refused");
}

/// 1,000 waits granted while detached: RESUMED says 1,000, and exactly those frames follow,
/// each under its LOCK's request id, in release order; a bystander is served meanwhile.
#[test]
fn a_thousand_grants_while_detached_are_replayed_once_each_in_order() {
    let n = 1000u32;
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let names: Vec<String> = (0..n).map(|i| format!("many/{i}")).collect();
    for name in &names {
        token_of(&holder.call(&lock_req(name)));
    }
    let (mut a, ok) = open(addr, GRACE_MS);
    let rids: Vec<u32> = names.iter().map(|name| a.send(&lock_req(name))).collect();
    wait_until("the session waits", WAIT, || stat(&mut holder, "waiters") == u64::from(n));
    drop(a);
    wait_until("detached", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    // Release in reverse, so release order differs from request order.
    for name in names.iter().rev() {
        assert_eq!(holder.call(&Request::Unlock(name)), Response::Released);
    }
    let mut b = Raw::connect(addr);
    assert_eq!(b.call(&resume_req(&ok)), Response::Resumed(Resumed { grace_ms: GRACE_MS, replayed: n }));
    let mut got = Vec::new();
    for _ in 0..n {
        let (rid, response) = b.recv();
        token_of(&response);
        got.push(rid);
    }
    let expected: Vec<u32> = rids.iter().rev().copied().collect();
    assert_eq!(got, expected, "replayed under their ids, in the order they happened");
    assert_eq!(b.call(&Request::Ping(b"")), Response::Pong, "nothing more was replayed");
    assert_eq!(stat(&mut holder, "locks_held"), u64::from(n));
}

/// A resumer that never reads a large replay does not stall a bystander, and a second resume
/// (newest wins) closes it and is served.
#[test]
fn a_resumer_that_never_reads_its_replay_does_not_block_others() {
    let n = 2000u32;
    let server = TestServer::start_with(|c| {
        c.max_session_grace = Duration::from_millis(u64::from(GRACE_MS));
        c.max_output = 4096;
    });
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let names: Vec<String> = (0..n).map(|i| format!("slow/{i:04}/{}", "p".repeat(64))).collect();
    for name in &names {
        token_of(&holder.call(&lock_req(name)));
    }
    let (mut a, ok) = open(addr, GRACE_MS);
    for name in &names {
        a.send(&Request::Lock(LockRequest { name, timeout_ms: Some(60_000), queue_max: None }));
    }
    wait_until("the session waits", WAIT, || stat(&mut holder, "waiters") == u64::from(n));
    drop(a);
    wait_until("detached", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    for name in &names {
        assert_eq!(holder.call(&Request::Unlock(name)), Response::Released);
    }
    let mut sluggish = Raw::connect(addr);
    sluggish.send(&resume_req(&ok));
    // Never read; the bystander is served.
    for _ in 0..50 {
        assert_eq!(holder.call(&Request::Ping(b"")), Response::Pong);
    }
    let mut b = Raw::connect(addr);
    let answer = b.call(&resume_req(&ok));
    assert!(matches!(answer, Response::Resumed(_)), "{answer:?}");
    assert!(sluggish.wait_hangup_unread(WAIT), "the sluggish resumer is closed");
    assert_eq!(stat(&mut holder, "locks_held"), u64::from(n), "the grants stayed the session's");
}

/// Session requests in the wrong state are refused without changing anything.
#[test]
fn session_requests_in_the_wrong_state_are_refused() {
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut a, ok) = open(addr, GRACE_MS);
    let token = token_of(&a.call(&lock_req("x")));
    // Its own session, from its own connection.
    assert!(is_err(&a.call(&resume_req(&ok)), ErrorCode::SessionState));
    // Another session's connection resuming this one.
    let (mut c, _) = open(addr, GRACE_MS);
    assert!(is_err(&c.call(&resume_req(&ok)), ErrorCode::SessionState));
    assert_eq!(stat(&mut observer, "sessions_taken_over"), 0);
    // A waiting connection.
    let mut waiter = Raw::connect(addr);
    waiter.send(&lock_req("x"));
    wait_until("queued", WAIT, || stat(&mut observer, "waiters") == 1);
    let id = waiter.send(&resume_req(&ok));
    let (rid, answer) = waiter.recv();
    assert_eq!(rid, id);
    assert!(is_err(&answer, ErrorCode::SessionState), "a waiting connection: {answer:?}");
    assert_eq!(a.call(&lock_req("x")), Response::AlreadyAcquired { token }, "a not taken over");
    // Id 0.
    let zero = SessionOk { session_id: 0, ..ok };
    assert!(is_err(&observer.call(&resume_req(&zero)), ErrorCode::BadValue));
    // A resumed connection cannot resume or open again.
    drop(a);
    wait_until("detached", WAIT, || stat(&mut observer, "sessions_detached") == 1);
    let mut b = Raw::connect(addr);
    assert!(matches!(b.call(&resume_req(&ok)), Response::Resumed(_)));
    assert!(is_err(&b.call(&resume_req(&ok)), ErrorCode::SessionState));
    let again = Request::SessionOpen(SessionOpen { grace_ms: 1000, skip_while_detached: false });
    assert!(is_err(&b.call(&again), ErrorCode::SessionState));
    assert_eq!(b.call(&lock_req("x")), Response::AlreadyAcquired { token });
    // Grace 0 asked for: no session; a loss releases at once.
    let mut z = Raw::connect(addr);
    let none = z.call(&Request::SessionOpen(SessionOpen { grace_ms: 0, skip_while_detached: false }));
    assert_eq!(none, Response::SessionOk(SessionOk::NONE));
    token_of(&z.call(&lock_req("z")));
    drop(z);
    wait_until("z released", WAIT, || matches!(observer.call(&try_lock_req("z")), Response::Acquired { .. }));
}

/// A grace that ends releases "exactly as a disconnect": the lock-delay the holder asked for
/// applies, so the name is not granted at once to the next comer.
#[test]
fn lock_delay_applies_after_the_grace_ends() {
    let server = TestServer::start_with(|c| {
        c.max_session_grace = Duration::from_millis(50);
        c.table.max_lock_delay_ms = 60_000;
    });
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut a, _ok) = open(addr, 50);
    let mut ext = LockExtRequest::exclusive("delayed");
    ext.lock_delay_ms = 60_000;
    token_of(&a.call(&Request::LockExt(ext)));
    drop(a);
    wait_until("the grace ends", WAIT, || stat(&mut observer, "sessions_expired") == 1);
    let answer = observer.call(&try_lock_req("delayed"));
    assert!(matches!(answer, Response::TimedOut { .. }), "lock-delay after grace expiry: {answer:?}");
}

fn json_line(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, line: &str) -> String {
    stream.write_all(line.as_bytes()).expect("json write");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("json read");
    reply
}

/// On a server with sessions the JSON mode is today's: a lost JSON connection releases at once.
#[test]
fn the_json_mode_is_unaffected_by_sessions() {
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let reply = json_line(
        &mut stream,
        &mut reader,
        "{\"command\":\"lock\",\"name\":\"j\",\"timeout\":null,\"queue_max\":null}\n",
    );
    assert!(reply.contains("acquired"), "{reply}");
    let reply = json_line(&mut stream, &mut reader, "{\"command\":\"session_open\",\"grace_ms\":10000}\n");
    assert!(reply.contains("error"), "no sessions in the JSON mode: {reply}");
    drop(reader);
    drop(stream);
    wait_until("released at once", WAIT, || stat(&mut observer, "locks_held") == 0);
    assert_eq!(stat(&mut observer, "sessions_detached"), 0);
    assert_eq!(stat(&mut observer, "sessions_opened"), 0);
}

/// The server dies (its goodbye never reaches the client: the proxy is frozen, then reset) and
/// a new one starts on the same port: the client's resume finds no such session, so its guard
/// reports the lock lost rather than believing it still held, and the new server's clients can
/// take the name.
#[test]
fn a_server_restart_reports_the_lock_lost_not_silently_held() {
    use officer::client::{Client, LockOptions};
    use officer::server::Listen;
    let grace = Duration::from_millis(u64::from(GRACE_MS));
    let first = TestServer::start_with(|c| {
        c.max_session_grace = grace;
        c.drain_timeout = Duration::from_millis(100);
    });
    let addr = first.addr();
    let proxy = support::proxy::Proxy::start(addr);
    let client = support::proxy::client_behind(&proxy, grace);
    let guard = client.lock_guard("restart/r", LockOptions::new()).expect("lock");
    proxy.freeze();
    first.stop();
    let _second = TestServer::start_with(|c| {
        c.listen = Listen::Tcp(addr);
        c.max_session_grace = grace;
    });
    proxy.reset_all();
    proxy.thaw();
    assert!(guard.wait_lost(Some(WAIT)), "the guard never reported the loss");
    assert!(guard.is_lost());
    let observer = Client::connect("127.0.0.1", addr.port()).expect("connect to the new server");
    observer.try_lock("restart/r").expect("the name is free on the new server");
}

/// A fatal protocol error is a loss like any other (§6.14): the session is detached, not
/// ended, and a resume finds its lock and token.
#[test]
fn a_fatal_error_detaches_the_session_rather_than_ending_it() {
    let server = server(u64::from(GRACE_MS));
    let mut observer = Raw::connect(server.addr());
    let (mut a, ok) = open(server.addr(), GRACE_MS);
    let token = token_of(&a.call(&lock_req("x")));
    // A length prefix of 1: shorter than any frame.
    a.send_bytes(&[0, 0, 0, 1, 0]).expect("write");
    let (_, closed) = a.wait_closed(WAIT);
    assert!(closed, "a fatal error closes the connection");
    wait_until("detached", WAIT, || stat(&mut observer, "sessions_detached") == 1);
    let mut b = Raw::connect(server.addr());
    assert!(matches!(b.call(&resume_req(&ok)), Response::Resumed(_)));
    assert_eq!(b.call(&lock_req("x")), Response::AlreadyAcquired { token });
}

/// A detached session queued between a holder and another waiter: when its grace ends, its
/// wait leaves the queue with it, so the holder's release goes to the waiter behind, not to a
/// ghost; and a grant the detached session got first goes on to that waiter when the grace ends.
#[test]
fn an_expired_grace_takes_the_sessions_waits_out_of_the_queues() {
    let server = server(50);
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let first = token_of(&holder.call(&lock_req("q")));
    token_of(&holder.call(&lock_req("r")));
    let (mut a, _ok) = open(addr, 50);
    a.send(&lock_req("q"));
    a.send(&lock_req("r"));
    wait_until("the session queues", WAIT, || stat(&mut holder, "waiters") == 2);
    let mut behind = Raw::connect(addr);
    let q_rid = behind.send(&lock_req("q"));
    wait_until("the other waiter queues", WAIT, || stat(&mut holder, "waiters") == 3);
    drop(a);
    wait_until("detached", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    // "r" is granted to the detached session now; "q" stays held until after the grace.
    assert_eq!(holder.call(&Request::Unlock("r")), Response::Released);
    wait_until("the grace ends", WAIT, || stat(&mut holder, "sessions_expired") == 1);
    assert_eq!(holder.call(&Request::Unlock("q")), Response::Released);
    let (rid, response) = behind.recv();
    assert_eq!(rid, q_rid);
    assert!(token_of(&response) > first);
    let r = token_of(&holder.call(&try_lock_req("r")));
    assert!(r > first, "the grant held for the session was released when its grace ended");
    assert_eq!(stat(&mut holder, "waiters"), 0);
}

/// After a resume, a wait still pending is answered on the new connection under the id it had
/// on the old one; the client resending that LOCK (its answer might have been lost) is told
/// ALREADY_WAITING and keeps its place.
#[test]
fn a_wait_pending_at_resume_is_answered_later_under_its_first_id() {
    let server = server(u64::from(GRACE_MS));
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let held = token_of(&holder.call(&lock_req("p")));
    let (mut a, ok) = open(addr, GRACE_MS);
    let first_rid = a.send(&lock_req("p"));
    wait_until("the session queues", WAIT, || stat(&mut holder, "waiters") == 1);
    let mut behind = Raw::connect(addr);
    behind.send(&lock_req("p"));
    wait_until("the other waiter queues", WAIT, || stat(&mut holder, "waiters") == 2);
    drop(a);
    wait_until("detached", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    let mut b = Raw::connect(addr);
    assert_eq!(b.call(&resume_req(&ok)), Response::Resumed(Resumed { grace_ms: GRACE_MS, replayed: 0 }));
    assert_eq!(b.call(&lock_req("p")), Response::AlreadyWaiting, "the resent LOCK");
    assert_eq!(holder.call(&Request::Unlock("p")), Response::Released);
    let (rid, response) = b.recv();
    assert_eq!(rid, first_rid, "answered under the first LOCK's id");
    assert!(token_of(&response) > held);
    assert_eq!(stat(&mut holder, "waiters"), 1, "the other waiter is still behind");
}
