//! Adversarial review of issue 14's newest parts (PROTOCOL.md §3.12 flags bit 1, §3.22 flags
//! bit 0, §3.25 SESSIONS, §4.32, §6.14): skipping waits in grant runs and at the tick of a
//! detach, request ids reused after a skip, SESSIONS before AUTH, with `max` 0 / huge and with
//! 10,000 detached sessions, a grace ending while listed, GOODBYE right behind a resume, and a
//! takeover of a frozen connection whose skipping wait was granted. Over real sockets on
//! loopback, every wait bounded and on an event.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use officer::protocol::{
    DetachedSession, ErrorCode, LockExtRequest, Request, Response, Resumed, SessionOk, SessionOpen,
    SessionResume,
};
use support::frames::{encode, lock_req, token_of, try_lock_req};
use support::process::wait_until;
use support::proxy::Proxy;
use support::raw::{stat, Raw};
use support::server::TestServer;
use support::WAIT;

const GRACE_MS: u32 = 30_000;

fn server_with(configure: impl FnOnce(&mut officer::server::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.max_session_grace = Duration::from_millis(u64::from(GRACE_MS));
        configure(c);
    })
}

fn open_on(mut wire: Raw, grace_ms: u32, skip: bool) -> (Raw, SessionOk) {
    match wire.call(&Request::SessionOpen(SessionOpen { grace_ms, skip_while_detached: skip })) {
        Response::SessionOk(ok) if ok.is_open() => (wire, ok),
        other => panic!("expected an open SESSION_OK, got {other:?}"),
    }
}

fn open(addr: SocketAddr, skip: bool) -> (Raw, SessionOk) {
    open_on(Raw::connect(addr), GRACE_MS, skip)
}

fn resume_req(ok: &SessionOk) -> Request<'static> {
    Request::SessionResume(SessionResume { session_id: ok.session_id, secret: ok.secret })
}

/// Resumes `ok` on a fresh connection to `addr`; returns it and how many frames are replayed.
fn resume(addr: SocketAddr, ok: &SessionOk) -> (Raw, u32) {
    let mut wire = Raw::connect(addr);
    match wire.call(&resume_req(ok)) {
        Response::Resumed(Resumed { replayed, .. }) => (wire, replayed),
        other => panic!("expected RESUMED, got {other:?}"),
    }
}

fn is_err(response: &Response, code: ErrorCode) -> bool {
    matches!(response, Response::Error { code: c, .. } if *c == code)
}

fn skipping(req: LockExtRequest<'_>) -> Request<'_> {
    let mut req = req;
    req.skip_while_detached = true;
    Request::LockExt(req)
}

fn sessions(observer: &mut Raw, max: u32) -> (Vec<DetachedSession>, bool) {
    match observer.call(&Request::Sessions(max)) {
        Response::Sessions { sessions, truncated } => (sessions, truncated),
        other => panic!("expected SESSIONS_LIST, got {other:?}"),
    }
}

/// Drops `wire` (a FIN: a lost connection for the server) and waits until `detached` sessions
/// are detached.
fn lose(wire: Raw, observer: &mut Raw, detached: u64) {
    drop(wire);
    wait_until("the session detaches", WAIT, || stat(observer, "sessions_detached") == detached);
}

/// A semaphore grant run with a detached skipping wait in the middle: the run skips it and
/// goes on, FIFO, to every waiter behind that fits; the skip is replayed, and the permits in
/// use never pass the limit.
#[test]
fn a_skipping_semaphore_wait_inside_a_grant_run_is_skipped_and_the_run_goes_on() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&Request::LockExt(LockExtRequest::semaphore("sem/x", 4, 4))));
    let mut a = Raw::connect(addr);
    let a_rid = a.send(&Request::LockExt(LockExtRequest::semaphore("sem/x", 1, 4)));
    wait_until("a queues", WAIT, || stat(&mut holder, "waiters") == 1);
    let (mut s, ok) = open(addr, false);
    let s_rid = s.send(&skipping(LockExtRequest::semaphore("sem/x", 1, 4)));
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 2);
    let mut b = Raw::connect(addr);
    let b_rid = b.send(&Request::LockExt(LockExtRequest::semaphore("sem/x", 2, 4)));
    let mut c = Raw::connect(addr);
    let c_rid = c.send(&Request::LockExt(LockExtRequest::semaphore("sem/x", 1, 4)));
    // d needs 1 more than is left after a, b and c: it must keep waiting.
    let mut d = Raw::connect(addr);
    d.send(&Request::LockExt(LockExtRequest::semaphore("sem/x", 1, 4)));
    wait_until("all queue", WAIT, || stat(&mut holder, "waiters") == 5);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Unlock("sem/x")), Response::Released);
    for (wire, rid, who) in [(&mut a, a_rid, "a"), (&mut b, b_rid, "b"), (&mut c, c_rid, "c")] {
        let (got, response) = wire.recv();
        assert_eq!(got, rid, "{who}");
        token_of(&response);
    }
    assert_eq!(stat(&mut holder, "session_waits_skipped"), 1);
    assert_eq!(stat(&mut holder, "waiters"), 1, "d waits: 4 permits are in use");
    let (listed, _) = sessions(&mut holder, 0);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].held, listed[0].waiting, listed[0].kept), (0, 0, 1), "{listed:?}");
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1);
    let (got, response) = s.recv();
    assert_eq!(got, s_rid);
    assert!(is_err(&response, ErrorCode::Skipped), "{response:?}");
    assert_eq!(s.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
}

/// A run of readers with a detached skipping reader in the middle: the readers on both sides
/// of it are granted in one run, the writer behind them waits, the skipped reader holds nothing.
#[test]
fn a_skipping_reader_inside_a_run_of_readers_is_skipped_and_the_writer_still_waits() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("rw/x")));
    let mut r1 = Raw::connect(addr);
    let r1_rid = r1.send(&Request::LockExt(LockExtRequest::shared("rw/x")));
    wait_until("r1 queues", WAIT, || stat(&mut holder, "waiters") == 1);
    // The session skips by default (SESSION_OPEN bit 0), and asks it on the wait as well.
    let (mut s, ok) = open(addr, true);
    s.send(&skipping(LockExtRequest::shared("rw/x")));
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 2);
    let mut r2 = Raw::connect(addr);
    let r2_rid = r2.send(&Request::LockExt(LockExtRequest::shared("rw/x")));
    let mut w = Raw::connect(addr);
    w.send(&lock_req("rw/x"));
    wait_until("all queue", WAIT, || stat(&mut holder, "waiters") == 4);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Unlock("rw/x")), Response::Released);
    for (wire, rid) in [(&mut r1, r1_rid), (&mut r2, r2_rid)] {
        let (got, response) = wire.recv();
        assert_eq!(got, rid);
        token_of(&response);
    }
    assert_eq!(stat(&mut holder, "waiters"), 1, "the writer waits behind two readers");
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1);
    assert!(is_err(&s.recv().1, ErrorCode::Skipped));
    assert_eq!(s.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
}

/// A session whose first wait does not skip and whose later ones do (the first wait of a
/// session is stored inline, the others in its map): each wait's own flag decides, whatever
/// the order their turns come in.
#[test]
fn each_wait_of_a_session_keeps_its_own_skip_flag_inline_or_not() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    for name in ["mix/0", "mix/1", "mix/2", "mix/3"] {
        token_of(&holder.call(&lock_req(name)));
    }
    let (mut s, ok) = open(addr, false);
    let flags = [false, true, false, true];
    let mut rids = Vec::new();
    for (i, skip) in flags.iter().enumerate() {
        let name = format!("mix/{i}");
        let mut req = LockExtRequest::exclusive(&name);
        req.skip_while_detached = *skip;
        rids.push(s.send(&Request::LockExt(req)));
        wait_until("it queues", WAIT, || stat(&mut holder, "waiters") == i as u64 + 1);
    }
    lose(s, &mut holder, 1);
    // Turns come in another order than the waits were made.
    for i in [3, 0, 2, 1] {
        assert_eq!(holder.call(&Request::Unlock(&format!("mix/{i}"))), Response::Released);
    }
    wait_until("every turn came", WAIT, || stat(&mut holder, "waiters") == 0);
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 4);
    for i in [3, 0, 2, 1] {
        let (got, response) = s.recv();
        assert_eq!(got, rids[i], "replayed in the order the turns came");
        if flags[i] {
            assert!(is_err(&response, ErrorCode::Skipped), "mix/{i}: {response:?}");
        } else {
            token_of(&response);
        }
    }
    assert_eq!(
        s.call(&Request::MyLocks),
        Response::MyLocks { held: vec!["mix/0".into(), "mix/2".into()], waiting: vec![] }
    );
}

/// The request id of a skipped wait, used again on the resumed connection for a new LOCK_EXT
/// of the same name: the new wait is a wait like any other (queued behind the one granted
/// meanwhile, answered under that id), not confused with the skipped one.
#[test]
fn the_request_id_of_a_skipped_wait_reused_after_the_resume_is_a_fresh_wait() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    let first = token_of(&holder.call(&lock_req("reuse/x")));
    let (mut s, ok) = open(addr, false);
    let rid = 77;
    s.send_bytes(&encode(&skipping(LockExtRequest::exclusive("reuse/x")), rid)).expect("write");
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 1);
    let mut next = Raw::connect(addr);
    next.send(&lock_req("reuse/x"));
    wait_until("next queues", WAIT, || stat(&mut holder, "waiters") == 2);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Unlock("reuse/x")), Response::Released);
    let second = token_of(&next.recv().1);
    assert!(second > first);
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1);
    let (got, response) = s.recv();
    assert_eq!(got, rid);
    assert!(is_err(&response, ErrorCode::Skipped), "{response:?}");
    // The same id again, the same request: a new wait, behind `next`.
    s.send_bytes(&encode(&skipping(LockExtRequest::exclusive("reuse/x")), rid)).expect("write");
    wait_until("the new wait queues", WAIT, || stat(&mut holder, "waiters") == 1);
    assert_eq!(
        s.call(&Request::MyLocks),
        Response::MyLocks { held: vec![], waiting: vec!["reuse/x".into()] }
    );
    // Attached now: its turn grants it, under the reused id.
    assert_eq!(next.call(&Request::Unlock("reuse/x")), Response::Released);
    let (got, response) = s.recv();
    assert_eq!(got, rid);
    assert!(token_of(&response) > second);
}

/// The holder and a skipping waiter lose their connections in the same instant (one proxy
/// reset): whichever the server sees first, the outcome is one of the two the spec allows: the
/// wait was granted while attached and the session holds the name (nothing replayed, a LOCK
/// again is ALREADY_ACQUIRED), or it was skipped (replayed `skipped`, the name free). Never a
/// grant lost or a skip that still holds.
#[test]
fn a_skipping_wait_whose_turn_comes_at_the_tick_of_its_detach_is_granted_or_skipped_never_both() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let proxy = Proxy::start(addr);
    let mut observer = Raw::connect(addr);
    let (mut granted, mut skipped) = (0, 0);
    for round in 0..20u64 {
        let name = format!("tick/{round}");
        let mut holder = Raw::connect(proxy.addr());
        token_of(&holder.call(&lock_req(&name)));
        let (mut s, ok) = open(proxy.addr(), true);
        let s_rid = s.send(&lock_req(&name));
        wait_until("s queues", WAIT, || stat(&mut observer, "waiters") == 1);
        assert_eq!(proxy.reset_all(), 2);
        wait_until("the session detaches", WAIT, || stat(&mut observer, "sessions_detached") == 1);
        wait_until("the holder's close is seen", WAIT, || stat(&mut observer, "waiters") == 0);
        let (mut back, replayed) = resume(addr, &ok);
        match replayed {
            0 => {
                granted += 1;
                assert!(
                    matches!(back.call(&lock_req(&name)), Response::AlreadyAcquired { .. }),
                    "round {round}: nothing replayed, so the grant must be held"
                );
            }
            1 => {
                skipped += 1;
                let (got, response) = back.recv();
                assert_eq!(got, s_rid, "round {round}");
                assert!(is_err(&response, ErrorCode::Skipped), "round {round}: {response:?}");
                assert_eq!(
                    back.call(&Request::MyLocks),
                    Response::MyLocks { held: vec![], waiting: vec![] },
                    "round {round}"
                );
                token_of(&observer.call(&try_lock_req(&name)));
                assert_eq!(observer.call(&Request::Unlock(&name)), Response::Released);
            }
            n => panic!("round {round}: {n} frames replayed for one wait"),
        }
        assert_eq!(back.call(&Request::Goodbye), Response::ResetOk);
        drop(holder);
        drop(s);
        wait_until("the session is gone", WAIT, || stat(&mut observer, "sessions_detached") == 0);
    }
    eprintln!("turn at the tick of detach: {granted} granted, {skipped} skipped");
}

/// SESSIONS is refused before AUTH on a server that requires it, and served after.
#[test]
fn sessions_before_auth_is_refused() {
    let secret = b"review14-secret".to_vec();
    let configured = secret.clone();
    let server = server_with(move |c| c.auth_secret = Some(configured));
    let mut wire = Raw::connect(server.addr());
    let response = wire.call(&Request::Sessions(0));
    assert!(is_err(&response, ErrorCode::AuthRequired), "{response:?}");
    let response = wire.call(&Request::Sessions(u32::MAX));
    assert!(is_err(&response, ErrorCode::AuthRequired), "{response:?}");
    assert_eq!(wire.call(&Request::Auth(&secret)), Response::AuthOk);
    assert_eq!(sessions(&mut wire, 0), (vec![], false));
}

/// A malformed SESSIONS (payload not exactly 4 bytes) is a non-fatal `malformed`.
#[test]
fn a_sessions_frame_of_the_wrong_length_is_malformed_and_not_fatal() {
    let server = server_with(|_| {});
    let mut wire = Raw::connect(server.addr());
    for payload in [&[][..], &[0, 0, 0][..], &[0, 0, 0, 0, 0][..]] {
        wire.send_bytes(&support::frames::frame(0x1A, 9, payload)).expect("write");
        let (rid, response) = wire.recv();
        assert_eq!(rid, 9);
        assert!(is_err(&response, ErrorCode::Malformed), "{payload:?}: {response:?}");
    }
    assert_eq!(sessions(&mut wire, 0), (vec![], false), "the connection goes on");
}

/// The bytes of a SESSIONS_LIST frame carrying `sessions` (§4.32): the 9-byte header,
/// `truncated`, `count`, and 26 bytes plus the label per entry.
fn list_size(sessions: &[DetachedSession]) -> usize {
    14 + sessions.iter().map(|s| 26 + s.label.len()).sum::<usize>()
}

/// 10,001 detached sessions (one more than the listing ceiling) under a 1 MiB frame: `max` 0
/// and `max` u32::MAX both stop at the ceiling and say `truncated`; a small `max` is honoured;
/// the entries are sorted by grace end and unique; under a 4 KiB frame the list is cut to fit.
#[test]
fn ten_thousand_detached_sessions_are_listed_bounded_by_the_ceiling_and_the_frame() {
    const N: usize = 10_001;
    let server = server_with(|c| c.max_frame = 1 << 20);
    let addr = server.addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for _ in (t..N).step_by(4) {
                    let (wire, _) = open(addr, false);
                    drop(wire);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("opener");
    }
    let mut observer = Raw::connect(addr);
    wait_until("all detach", WAIT * 3, || stat(&mut observer, "sessions_detached") == N as u64);
    for max in [0, u32::MAX] {
        let (listed, truncated) = sessions(&mut observer, max);
        assert_eq!(listed.len(), 10_000, "max {max}: the ceiling");
        assert!(truncated, "max {max}: one was left out");
        assert!(list_size(&listed) <= 1 << 20);
        assert!(listed.windows(2).all(|w| w[0].grace_left_ms <= w[1].grace_left_ms), "soonest first");
        let mut ids: Vec<u64> = listed.iter().map(|s| s.session_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10_000, "unique ids");
    }
    let (three, truncated) = sessions(&mut observer, 3);
    assert_eq!((three.len(), truncated), (3, true));
    drop(observer);
    drop(server);
    // The same under a 4 KiB frame (a fresh server: the ceiling does not matter there).
    let server = server_with(|c| c.max_frame = 4096);
    let addr = server.addr();
    for _ in 0..200 {
        let (wire, _) = open(addr, false);
        drop(wire);
    }
    let mut observer = Raw::connect(addr);
    wait_until("all detach", WAIT, || stat(&mut observer, "sessions_detached") == 200);
    let id = observer.send(&Request::Sessions(u32::MAX));
    let (rid, response) = observer.recv();
    assert_eq!(rid, id);
    match response {
        Response::Sessions { sessions, truncated } => {
            assert!(truncated && !sessions.is_empty() && sessions.len() < 200, "{}", sessions.len());
            let size = list_size(&sessions);
            assert!(size <= 4096, "{size} bytes");
        }
        other => panic!("expected SESSIONS_LIST, got {other:?}"),
    }
}

/// A session listed as detached whose grace then runs out leaves the listing, cannot be
/// resumed, and its lock goes to the next waiter.
#[test]
fn a_listed_session_whose_grace_ends_leaves_the_list_and_cannot_resume() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut s, ok) = open_on(Raw::connect(addr), 300, false);
    let token = token_of(&s.call(&lock_req("grace/x")));
    let mut next = Raw::connect(addr);
    let next_rid = next.send(&lock_req("grace/x"));
    wait_until("next queues", WAIT, || stat(&mut observer, "waiters") == 1);
    lose(s, &mut observer, 1);
    let (listed, truncated) = sessions(&mut observer, 0);
    // It may already be over on a slow machine; if listed, it is listed right.
    if let Some(entry) = listed.first() {
        assert!(!truncated);
        assert_eq!(entry.session_id, ok.session_id);
        assert!(entry.grace_left_ms <= 301, "{entry:?}");
        assert_eq!((entry.held, entry.waiting), (1, 0));
    }
    let (rid, response) = next.recv();
    assert_eq!(rid, next_rid);
    assert!(token_of(&response) > token);
    assert_eq!(stat(&mut observer, "sessions_detached"), 0);
    assert_eq!(sessions(&mut observer, 0), (vec![], false));
    let mut late = Raw::connect(addr);
    let response = late.call(&resume_req(&ok));
    assert!(is_err(&response, ErrorCode::BadSession), "{response:?}");
}

/// SESSION_RESUME and GOODBYE in one write: RESUMED and the replay, then the wait still
/// pending is CANCELLED, RESET_OK, the close; everything is released at once (no grace, no
/// lock-delay) and the session cannot be resumed again.
#[test]
fn goodbye_right_behind_a_resume_ends_the_session_at_once() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("bye/busy")));
    let (mut s, ok) = open(addr, false);
    token_of(&s.call(&lock_req("bye/held")));
    let wait_rid = s.send(&lock_req("bye/busy"));
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 1);
    lose(s, &mut holder, 1);
    let mut back = Raw::connect(addr);
    let mut bytes = encode(&resume_req(&ok), 40);
    bytes.extend(encode(&Request::Goodbye, 41));
    bytes.extend(encode(&lock_req("bye/after"), 42));
    back.send_bytes(&bytes).expect("write");
    let (seen, closed) = back.wait_closed(WAIT);
    assert!(closed, "GOODBYE closes");
    let ids: Vec<u32> = seen.iter().map(|(rid, _)| *rid).collect();
    assert_eq!(ids, [40, wait_rid, 41], "{seen:?}");
    assert!(matches!(seen[0].1, Response::Resumed(Resumed { replayed: 0, .. })), "{seen:?}");
    assert_eq!(seen[1].1, Response::Cancelled);
    assert_eq!(seen[2].1, Response::ResetOk);
    assert_eq!(stat(&mut holder, "sessions_detached"), 0);
    assert_eq!(stat(&mut holder, "waiters"), 0);
    token_of(&holder.call(&try_lock_req("bye/held")));
    assert!(
        matches!(holder.call(&try_lock_req("bye/after")), Response::Acquired { .. }),
        "nothing after GOODBYE was read"
    );
    let response = Raw::connect(addr).call(&resume_req(&ok));
    assert!(is_err(&response, ErrorCode::BadSession), "{response:?}");
}

/// A frozen connection (half-open: the server does not know) whose skipping wait's turn
/// comes: the session is attached, so it is granted; a resume then takes the session over from
/// the frozen connection, and the grant is the session's (ALREADY_ACQUIRED with a token no
/// one else holds), not lost with the unsent ACQUIRED.
#[test]
fn a_skipping_wait_granted_to_a_frozen_connection_survives_the_takeover() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let proxy = Proxy::start(addr);
    let mut holder = Raw::connect(addr);
    let first = token_of(&holder.call(&lock_req("frozen/x")));
    let (mut s, ok) = open(proxy.addr(), true);
    s.send(&lock_req("frozen/x"));
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 1);
    proxy.freeze();
    assert_eq!(holder.call(&Request::Unlock("frozen/x")), Response::Released);
    wait_until("granted", WAIT, || stat(&mut holder, "waiters") == 0);
    assert_eq!(stat(&mut holder, "session_waits_skipped"), 0, "attached: not skipped");
    let (mut back, _) = resume(addr, &ok);
    let token = match back.call(&lock_req("frozen/x")) {
        Response::AlreadyAcquired { token } => token,
        other => panic!("the grant made to the frozen connection was lost: {other:?}"),
    };
    assert!(token > first);
    assert!(matches!(holder.call(&try_lock_req("frozen/x")), Response::TimedOut { .. }), "two holders");
    proxy.thaw();
    drop(s);
}
