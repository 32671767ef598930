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
    let (listed, _) = sessions(&mut holder, 0);
    assert_eq!(listed.iter().map(|e| (e.held, e.waiting, e.kept)).collect::<Vec<_>>(), [(0, 4, 0)]);
    // Turns come in another order than the waits were made.
    for i in [3, 0, 2, 1] {
        assert_eq!(holder.call(&Request::Unlock(&format!("mix/{i}"))), Response::Released);
    }
    wait_until("every turn came", WAIT, || stat(&mut holder, "waiters") == 0);
    let (listed, _) = sessions(&mut holder, 0);
    assert_eq!(listed.iter().map(|e| (e.held, e.waiting, e.kept)).collect::<Vec<_>>(), [(2, 0, 4)]);
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
        // Which of the two the server registered first alternates, so either loss may be
        // the one it notices first.
        let (mut holder, (mut s, ok)) = if round % 2 == 0 {
            let holder = Raw::connect(proxy.addr());
            (holder, open(proxy.addr(), true))
        } else {
            let s = open(proxy.addr(), true);
            (Raw::connect(proxy.addr()), s)
        };
        token_of(&holder.call(&lock_req(&name)));
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

/// The async client's resume (src/client/tokio/conn.rs, tokio/resume.rs) under many tasks, a
/// reset mid-flight and futures dropped during a freeze.
#[cfg(feature = "tokio")]
mod async_client {
    use std::collections::HashSet;
    use std::future::Future;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use officer::client::{Client, LockOptions};
    use officer::protocol::ErrorCode;
    use tokio::task::JoinHandle;

    use super::support::proxy::{async_client_behind, Proxy};
    use super::support::server::TestServer;
    use super::support::WAIT;

    const GRACE: Duration = Duration::from_secs(30);

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    fn direct(server: &TestServer) -> Client {
        Client::connect("127.0.0.1", server.addr().port()).expect("connect")
    }

    fn stat(observer: &Client, key: &str) -> u64 {
        observer.stats().expect("stats").iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// 1,000 tasks on one async client with a session, half of them waiting for names a plain
    /// client holds, the other half granted; the link reset mid-flight (at another point each
    /// round) and the plain client's names released while it is down. Every task gets exactly
    /// one grant, never taken for a nested one, no guard is lost, tokens are unique and above
    /// the plain holder's, the session holds the 1,000 names, and nothing after the unlocks.
    #[test]
    fn a_thousand_async_tasks_across_a_reset_get_one_grant_each() {
        let server = TestServer::start_with(|c| c.max_session_grace = GRACE);
        let proxy = Proxy::start(server.addr());
        for (round, at) in [0u64, 100, 300, 500].into_iter().enumerate() {
            thousand_tasks_round(&server, &proxy, round, at);
        }
    }

    /// One round: the reset comes once the server holds `at` of the session's names (of the 500
    /// it can get before the plain holder lets go).
    fn thousand_tasks_round(server: &TestServer, proxy: &Proxy, round: usize, at: u64) {
        const TASKS: usize = 1000;
        let observer = direct(server);
        let holder = direct(server);
        let mut before = Vec::new();
        for i in (0..TASKS).step_by(2) {
            before.push(holder.lock(&format!("amany{round}/{i}"), LockOptions::new()).expect("lock").token());
        }
        let top = *before.iter().max().expect("tokens");
        let plain = before.len() as u64;
        run(async {
            let client = Arc::new(async_client_behind(proxy, GRACE).await);
            let (go, _) = tokio::sync::broadcast::channel::<()>(1);
            let tasks: Vec<JoinHandle<(usize, u64)>> = (0..TASKS)
                .map(|i| {
                    let c = Arc::clone(&client);
                    let mut done = go.subscribe();
                    tokio::spawn(async move {
                        let name = format!("amany{round}/{i}");
                        let guard = c.lock_guard(&name, LockOptions::with_timeout(WAIT)).await.expect("lock");
                        assert!(!guard.already_acquired(), "{name}: its one grant taken for a nested one");
                        let token = guard.token();
                        let _ = done.recv().await;
                        assert!(!guard.is_lost(), "{name}: a grant lost across the reset");
                        guard.unlock().await.expect("unlock");
                        (i, token)
                    })
                })
                .collect();
            wait_until("the session's first grants", || stat(&observer, "locks_held") >= plain + at).await;
            assert_eq!(proxy.reset_all(), 1);
            holder.reset().expect("the holder releases everything");
            wait_until("the session holds every name", || {
                stat(&observer, "locks_held") == TASKS as u64 && stat(&observer, "waiters") == 0
            })
            .await;
            let held = client.my_locks().await.expect("my_locks").held;
            assert_eq!(held.len(), TASKS, "round {round}: the session holds each name once");
            assert!(client.resumes() >= 1);
            drop(go);
            let mut tokens = HashSet::new();
            for t in tasks {
                let (i, token) = t.await.expect("task");
                assert!(tokens.insert(token), "token {token} granted twice");
                if i % 2 == 0 {
                    assert!(token > top, "amany{round}/{i}: a token not above the earlier holder's");
                }
            }
            assert_eq!(tokens.len(), TASKS);
            assert!(client.my_locks().await.expect("my_locks").held.is_empty(), "nothing left held");
            assert_eq!(stat(&observer, "locks_held"), 0);
        });
    }

    /// A `lock` future dropped while its link is frozen, after the server granted it (the
    /// ACQUIRED stuck in the frozen path), then the link thawed (`reset` false) or reset
    /// (`reset` true): the grant nobody owns must be released, so the next waiter gets it.
    fn dropped_during_freeze(reset: bool) {
        let server = TestServer::start_with(|c| c.max_session_grace = GRACE);
        let observer = direct(&server);
        let holder = direct(&server);
        let name = if reset { "afreeze/reset" } else { "afreeze/thaw" };
        holder.lock(name, LockOptions::new()).expect("lock");
        let proxy = Proxy::start(server.addr());
        run(async {
            let client = Arc::new(async_client_behind(&proxy, GRACE).await);
            let c = Arc::clone(&client);
            let waiting =
                tokio::spawn(async move { c.lock(name, LockOptions::with_timeout(WAIT)).await.map(|_| ()) });
            wait_until("the wait queues", || stat(&observer, "waiters") == 1).await;
            proxy.freeze();
            holder.unlock(name).expect("unlock");
            wait_until("granted to the frozen connection", || stat(&observer, "waiters") == 0).await;
            waiting.abort();
            assert!(waiting.await.expect_err("aborted").is_cancelled());
            if reset {
                proxy.reset_all();
                proxy.thaw();
                wait_until("the resume", || client.resumes() >= 1).await;
            } else {
                proxy.thaw();
            }
            let next = direct(&server);
            let got =
                tokio::task::spawn_blocking(move || next.lock(name, LockOptions::with_timeout(WAIT)).is_ok());
            assert!(got.await.expect("next"), "the dropped future's grant was never released");
            assert!(client.my_locks().await.expect("my_locks").held.is_empty());
        });
    }

    /// An async client dropped while its session is detached and its resume pending (new
    /// connections refused): it can say no GOODBYE, but it must not come back either. Once the
    /// proxy lets connections through again, its lock is released by the grace's end (or a
    /// resume-and-GOODBYE), never kept by a resume nobody owns.
    #[test]
    fn an_async_client_dropped_during_a_pending_resume_leaves_nothing_held() {
        let grace = Duration::from_millis(800);
        let server = TestServer::start_with(|c| c.max_session_grace = grace);
        let observer = direct(&server);
        let proxy = Proxy::start(server.addr());
        run(async {
            let client = async_client_behind(&proxy, grace).await;
            let guard = client.lock_guard("apending/x", LockOptions::new()).await.expect("lock");
            proxy.refuse(true);
            proxy.reset_all();
            wait_until("the session detaches", || stat(&observer, "sessions_detached") == 1).await;
            // Let it try to dial at least once (refused), so a resume is in progress.
            let dialled = proxy.connections();
            wait_until("a refused redial", || proxy.connections() > dialled).await;
            drop(guard);
            drop(client);
            proxy.refuse(false);
            wait_until("the lock is released", || stat(&observer, "locks_held") == 0).await;
            assert_eq!(stat(&observer, "sessions_detached"), 0);
            assert!(observer.try_lock("apending/x").is_ok(), "a resume nobody owns kept the lock");
            assert_eq!(proxy.live(), 0, "the dropped client left a connection open");
        });
    }

    /// An async `lock` whose wait ended while detached (skipped, or timed out) is answered by
    /// the replay, and is not sent again after it: a resend would queue a fresh wait whose
    /// grant no caller owns. The name goes free when the next holder lets go.
    fn ended_while_detached(skip: bool) {
        let server = TestServer::start_with(|c| c.max_session_grace = GRACE);
        let observer = direct(&server);
        let holder = direct(&server);
        let name = if skip { "aended/skip" } else { "aended/timeout" };
        holder.lock(name, LockOptions::new()).expect("lock");
        let proxy = Proxy::start(server.addr());
        run(async {
            let client = Arc::new(async_client_behind(&proxy, GRACE).await);
            let c = Arc::clone(&client);
            let opts = if skip {
                LockOptions::with_timeout(WAIT).skip_while_detached()
            } else {
                LockOptions::with_timeout(Duration::from_millis(300))
            };
            let waiting = tokio::spawn(async move { c.lock(name, opts).await.map(|_| ()) });
            wait_until("the wait queues", || stat(&observer, "waiters") == 1).await;
            proxy.refuse(true);
            proxy.reset_all();
            wait_until("the session detaches", || stat(&observer, "sessions_detached") == 1).await;
            if skip {
                holder.unlock(name).expect("unlock");
                wait_until("skipped", || stat(&observer, "session_waits_skipped") == 1).await;
                holder.lock(name, LockOptions::new()).expect("lock again");
            } else {
                wait_until("timed out while detached", || stat(&observer, "waiters") == 0).await;
            }
            proxy.refuse(false);
            let err = waiting.await.expect("task").expect_err("the wait ended while detached");
            if skip {
                assert_eq!(err.server_code(), Some(ErrorCode::Skipped), "{err}");
            } else {
                assert!(err.is_timeout(), "{err}");
            }
            assert!(client.resumes() >= 1);
            assert_eq!(stat(&observer, "waiters"), 0, "the ended wait was sent again");
            let mine = client.my_locks().await.expect("my_locks");
            assert!(mine.held.is_empty() && mine.waiting.is_empty(), "{mine:?}");
            holder.unlock(name).expect("unlock");
            assert!(observer.try_lock(name).is_ok(), "granted to a wait nobody owns");
        });
    }

    #[test]
    fn an_async_lock_skipped_while_detached_fails_once_and_is_not_resent() {
        ended_while_detached(true);
    }

    #[test]
    fn an_async_lock_timed_out_while_detached_fails_once_and_is_not_resent() {
        ended_while_detached(false);
    }

    /// The client asks a 30 s grace of a server whose maximum is 300 ms: it is told 300 ms,
    /// and with every redial refused it gives up (the guard lost) after the granted grace, not
    /// the asked one; the name goes to the next waiter.
    #[test]
    fn the_async_client_gives_up_at_the_granted_grace_not_the_asked_one() {
        let server = TestServer::start_with(|c| c.max_session_grace = Duration::from_millis(300));
        let observer = direct(&server);
        let proxy = Proxy::start(server.addr());
        run(async {
            let client = officer::client::tokio::AsyncClient::builder()
                .host("127.0.0.1")
                .port(proxy.port())
                .session_grace(GRACE)
                .connect()
                .await
                .expect("connect");
            let (_, granted) = client.session().expect("a session");
            assert_eq!(granted, Duration::from_millis(300));
            let guard = client.lock_guard("agrace/x", LockOptions::new()).await.expect("lock");
            proxy.refuse(true);
            proxy.reset_all();
            assert!(guard.wait_lost(Some(WAIT)).await, "still trying after the granted grace");
            assert!(guard.is_lost());
            assert!(observer.lock("agrace/x", LockOptions::with_timeout(WAIT)).is_ok());
            proxy.refuse(false);
        });
    }

    #[test]
    fn a_lock_future_dropped_during_a_freeze_then_thawed_releases_its_grant() {
        dropped_during_freeze(false);
    }

    #[test]
    fn a_lock_future_dropped_during_a_freeze_then_reset_releases_its_grant() {
        dropped_during_freeze(true);
    }
}

/// A LOCK_EXT payload with any `flags`: exclusive, waiting `timeout_ms`, nothing else set.
fn lock_ext_payload(flags: u16, timeout_ms: u32, name: &str) -> Vec<u8> {
    let mut p = flags.to_be_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&timeout_ms.to_be_bytes());
    p.extend_from_slice(&[0; 24]);
    p.extend_from_slice(name.as_bytes());
    p
}

/// LOCK_EXT flags 0x0003 (contention notice and skip) are both honoured; 0x0004 and 0x8002
/// (a reserved bit beside the skip bit) are `unsupported_flags`, not fatal, and queue nothing.
#[test]
fn the_skip_bit_combines_with_the_contention_bit_and_reserved_bits_are_still_refused() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("bits/x")));
    let (mut s, ok) = open(addr, false);
    for flags in [0x0004u16, 0x8002, 0x0006] {
        s.send_bytes(&support::frames::frame(0x0D, 5, &lock_ext_payload(flags, u32::MAX, "bits/x")))
            .expect("write");
        let (rid, response) = s.recv();
        assert_eq!(rid, 5);
        assert!(is_err(&response, ErrorCode::UnsupportedFlags), "flags {flags:#06x}: {response:?}");
    }
    assert_eq!(stat(&mut holder, "waiters"), 0, "a refused LOCK_EXT queues nothing");
    s.send_bytes(&support::frames::frame(0x0D, 6, &lock_ext_payload(0x0003, u32::MAX, "bits/x")))
        .expect("write");
    wait_until("it queues", WAIT, || stat(&mut holder, "waiters") == 1);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Unlock("bits/x")), Response::Released);
    wait_until("skipped", WAIT, || stat(&mut holder, "session_waits_skipped") == 1);
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1);
    let (rid, response) = s.recv();
    assert_eq!(rid, 6);
    assert!(is_err(&response, ErrorCode::Skipped), "{response:?}");
}

/// SESSION_OPEN with the skip bit and grace 0 opens no session: the bit changes nothing, and
/// the lock dies with the connection as without sessions.
#[test]
fn the_session_skip_bit_with_grace_zero_opens_nothing() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let mut wire = Raw::connect(addr);
    match wire.call(&Request::SessionOpen(SessionOpen { grace_ms: 0, skip_while_detached: true })) {
        Response::SessionOk(ok) => assert!(!ok.is_open(), "{ok:?}"),
        other => panic!("expected SESSION_OK, got {other:?}"),
    }
    token_of(&wire.call(&lock_req("zero/x")));
    drop(wire);
    wait_until("the lock dies with its connection", WAIT, || stat(&mut observer, "locks_held") == 0);
    assert_eq!(stat(&mut observer, "sessions_detached"), 0);
    assert_eq!(sessions(&mut observer, 0), (vec![], false));
}

/// A fresh connection waits `timeout_ms` for `name` (held by someone else) and is answered
/// TIMED_OUT.
fn wait_and_time_out(addr: SocketAddr, name: &str, timeout_ms: u32) {
    let mut wire = Raw::connect(addr);
    let mut req = LockExtRequest::exclusive(name);
    req.timeout_ms = Some(timeout_ms);
    wire.send(&Request::LockExt(req));
    assert!(matches!(wire.recv().1, Response::TimedOut { .. }));
}

/// A skipped wait's timeout is cancelled with it: once a later wait with the same timeout has
/// timed out, the replay still holds the one `skipped`, no TIMED_OUT after it.
#[test]
fn a_skipped_wait_never_times_out_afterwards() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("timer/x")));
    token_of(&holder.call(&lock_req("timer/y")));
    let (mut s, ok) = open(addr, true);
    let mut req = LockExtRequest::exclusive("timer/x");
    req.timeout_ms = Some(300);
    let rid = s.send(&Request::LockExt(req));
    wait_until("s queues", WAIT, || stat(&mut holder, "waiters") == 1);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Unlock("timer/x")), Response::Released);
    wait_until("skipped", WAIT, || stat(&mut holder, "session_waits_skipped") == 1);
    // A witness with the same timeout, started after: when it times out, so would have the skip.
    wait_and_time_out(addr, "timer/y", 300);
    let (listed, _) = sessions(&mut holder, 0);
    assert_eq!(listed.iter().map(|e| e.kept).collect::<Vec<_>>(), [1], "{listed:?}");
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1, "one answer per wait");
    let (got, response) = s.recv();
    assert_eq!(got, rid);
    assert!(is_err(&response, ErrorCode::Skipped), "{response:?}");
    assert_eq!(s.call(&Request::MyLocks), Response::MyLocks { held: vec![], waiting: vec![] });
}

/// 1,500 detached sessions, each with a skipping reader queued on one name, then an attached
/// reader and a writer: the release skips them in runs of the grant batch (1,000, the rest in
/// the next turn's grant step), then grants the attached reader; the writer still waits, and a
/// newcomer reader queues behind the writer (FIFO across turns).
#[test]
fn fifteen_hundred_skips_run_past_the_grant_batch_and_the_next_reader_is_granted() {
    const N: usize = 1500;
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("batch/x")));
    let mut oks = Vec::new();
    for i in 0..N {
        let (mut s, ok) = open(addr, true);
        s.send(&Request::LockExt(LockExtRequest::shared("batch/x")));
        if i % 100 == 99 {
            wait_until("they queue", WAIT, || stat(&mut holder, "waiters") == i as u64 + 1);
        }
        drop(s);
        oks.push(ok);
    }
    wait_until("all detach", WAIT, || stat(&mut holder, "sessions_detached") == N as u64);
    let mut reader = Raw::connect(addr);
    let reader_rid = reader.send(&Request::LockExt(LockExtRequest::shared("batch/x")));
    let mut writer = Raw::connect(addr);
    writer.send(&lock_req("batch/x"));
    wait_until("both queue", WAIT, || stat(&mut holder, "waiters") == N as u64 + 2);
    assert_eq!(holder.call(&Request::Unlock("batch/x")), Response::Released);
    let mut late = Raw::connect(addr);
    let late_rid = late.send(&Request::LockExt(LockExtRequest::shared("batch/x")));
    let (rid, response) = reader.recv();
    assert_eq!(rid, reader_rid);
    token_of(&response);
    wait_until("every skip", WAIT, || stat(&mut holder, "session_waits_skipped") == N as u64);
    assert_eq!(stat(&mut holder, "waiters"), 2, "the writer, then the late reader, wait");
    assert_eq!(reader.call(&Request::Unlock("batch/x")), Response::Released);
    token_of(&writer.recv().1);
    assert_eq!(writer.call(&Request::Unlock("batch/x")), Response::Released);
    let (rid, response) = late.recv();
    assert_eq!(rid, late_rid);
    token_of(&response);
    // Each session replays its one skip.
    for ok in oks.iter().step_by(499) {
        let (mut s, replayed) = resume(addr, ok);
        assert_eq!(replayed, 1);
        assert!(is_err(&s.recv().1, ErrorCode::Skipped));
    }
}

/// With `max_locks_per_conn` 2, a session whose two waits were both skipped while detached has
/// its quota back after the resume: two new locks are granted, the third is `limit_exceeded`.
/// Likewise `max_waiters_per_lock` 1: the skipped wait's place is free for another waiter.
#[test]
fn skipped_waits_give_their_quota_back() {
    let server = server_with(|c| {
        c.table.max_locks_per_conn = 2;
        c.table.max_waiters_per_lock = 1;
    });
    let addr = server.addr();
    let mut holder = Raw::connect(addr);
    token_of(&holder.call(&lock_req("quota/a")));
    token_of(&holder.call(&lock_req("quota/b")));
    let (mut s, ok) = open(addr, true);
    s.send(&lock_req("quota/a"));
    s.send(&lock_req("quota/b"));
    wait_until("both queue", WAIT, || stat(&mut holder, "waiters") == 2);
    lose(s, &mut holder, 1);
    assert_eq!(holder.call(&Request::Reset), Response::ResetOk);
    wait_until("both skipped", WAIT, || stat(&mut holder, "session_waits_skipped") == 2);
    let (mut s, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 2);
    for _ in 0..2 {
        assert!(is_err(&s.recv().1, ErrorCode::Skipped));
    }
    token_of(&s.call(&lock_req("quota/a")));
    token_of(&s.call(&lock_req("quota/c")));
    let response = s.call(&lock_req("quota/d"));
    assert!(is_err(&response, ErrorCode::LimitExceeded), "{response:?}");
    // quota/a: one waiter allowed behind the session's new grant.
    let mut w = Raw::connect(addr);
    w.send(&lock_req("quota/a"));
    wait_until("w queues", WAIT, || stat(&mut holder, "waiters") == 1);
    let response = Raw::connect(addr).call(&lock_req("quota/a"));
    assert!(is_err(&response, ErrorCode::LimitExceeded), "{response:?}");
}

/// Sessions over a UNIX socket: SESSIONS lists the `unix:N` label CONNECTIONS showed, and a
/// resume over UNIX takes the session (and its grant and token) over.
#[test]
fn a_unix_socket_session_is_listed_under_its_label_and_resumes() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let server = server_with(|c| c.listen = officer::server::Listen::Unix(path.clone()));
    let mut observer = Raw::connect_unix(&path);
    let (mut s, ok) = open_on(Raw::connect_unix(&path), GRACE_MS, false);
    let token = token_of(&s.call(&lock_req("unix/x")));
    let label =
        match observer.call(&Request::Connections(officer::protocol::ListRequest { prefix: "", max: 0 })) {
            Response::Connections { connections, .. } => {
                connections.into_iter().find(|c| c.held == ["unix/x"]).expect("listed").label
            }
            other => panic!("expected CONNECTIONS_LIST, got {other:?}"),
        };
    assert!(label.starts_with("unix:"), "{label}");
    lose(s, &mut observer, 1);
    let (listed, _) = sessions(&mut observer, 0);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].label.as_str(), listed[0].session_id, listed[0].held),
        (label.as_str(), ok.session_id, 1)
    );
    let mut back = Raw::connect_unix(&path);
    assert!(matches!(back.call(&resume_req(&ok)), Response::Resumed(Resumed { replayed: 0, .. })));
    assert_eq!(back.call(&lock_req("unix/x")), Response::AlreadyAcquired { token });
    assert_eq!(sessions(&mut observer, 0), (vec![], false));
    drop(server);
}

/// A GOODBYE the old connection sent into a frozen path, delivered only after a resume took
/// the session over: the old connection is closed (`taken_over`), so the GOODBYE ends nothing;
/// the new connection keeps the session, its grant and token.
#[test]
fn a_stale_goodbye_from_the_taken_over_connection_ends_nothing() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let proxy = Proxy::start(addr);
    let mut observer = Raw::connect(addr);
    let (mut old, ok) = open(proxy.addr(), false);
    let token = token_of(&old.call(&lock_req("stale/x")));
    proxy.freeze();
    old.send(&Request::Goodbye);
    let (mut new, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 0);
    proxy.thaw();
    let (seen, closed) = old.wait_closed(WAIT);
    assert!(closed, "the old connection is closed");
    assert!(
        seen.iter().all(|(_, r)| !matches!(r, Response::ResetOk)),
        "the stale GOODBYE was served: {seen:?}"
    );
    assert!(seen.iter().any(|(rid, r)| *rid == 0 && is_err(r, ErrorCode::TakenOver)), "{seen:?}");
    assert_eq!(new.call(&lock_req("stale/x")), Response::AlreadyAcquired { token });
    assert!(matches!(observer.call(&try_lock_req("stale/x")), Response::TimedOut { .. }));
    // And a real GOODBYE on the new connection ends it at once.
    assert_eq!(new.call(&Request::Goodbye), Response::ResetOk);
    token_of(&observer.call(&try_lock_req("stale/x")));
}

/// A detached session's replay is bounded by its grants and waits (§6.14 "Bounds"): a grant
/// that asked for CONTENDED, contended again and again by waiters that come and time out while
/// its session is away, keeps at most one CONTENDED for the replay, not one per waiter.
#[test]
fn repeated_contention_while_detached_keeps_one_notice_per_grant() {
    let server = server_with(|_| {});
    let addr = server.addr();
    let mut observer = Raw::connect(addr);
    let (mut s, ok) = open(addr, false);
    s.send_bytes(&support::frames::frame(0x0D, 3, &lock_ext_payload(0x0001, 0, "bound/x"))).expect("write");
    token_of(&s.recv().1);
    lose(s, &mut observer, 1);
    for _ in 0..50 {
        wait_and_time_out(addr, "bound/x", 1);
    }
    let (listed, _) = sessions(&mut observer, 0);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kept, 1, "one CONTENDED, not one per waiter: {listed:?}");
    let (_, replayed) = resume(addr, &ok);
    assert_eq!(replayed, 1, "frames replayed for one grant");
}
