//! Waits that skip while detached (issue 14, PROTOCOL.md §6.14) over real sockets, the
//! connection lost through the loopback fault proxy (`support::proxy`): a skipping wait whose
//! turn comes while its session is away leaves the queue, the next waiter is granted at once,
//! and the resume replays ERROR `skipped` under the LOCK's request id; SESSION_OPEN's flag makes
//! plain LOCKs skip; the blocking client's `LockOptions::skip_while_detached` reports it.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use officer::client::{Client, LockOptions};
use officer::protocol::{
    ErrorCode, LockExtRequest, Request, Response, Resumed, SessionOk, SessionOpen, SessionResume,
};
use support::frames::{lock_req, token_of};
use support::process::wait_until;
use support::proxy::Proxy;
use support::raw::{stat, Raw};
use support::server::TestServer;
use support::WAIT;

const GRACE_MS: u32 = 30_000;

fn server() -> TestServer {
    TestServer::start_with(|c| c.max_session_grace = Duration::from_millis(u64::from(GRACE_MS)))
}

/// A connection through `proxy` with a session, skipping by default when `skip`.
fn open(proxy: &Proxy, skip: bool) -> (Raw, SessionOk) {
    let mut wire = Raw::connect(proxy.addr());
    let open = SessionOpen { grace_ms: GRACE_MS, skip_while_detached: skip };
    match wire.call(&Request::SessionOpen(open)) {
        Response::SessionOk(ok) if ok.is_open() => (wire, ok),
        other => panic!("expected an open SESSION_OK, got {other:?}"),
    }
}

fn resume(addr: std::net::SocketAddr, ok: &SessionOk, replayed: u32) -> Raw {
    let mut wire = Raw::connect(addr);
    let req = Request::SessionResume(SessionResume { session_id: ok.session_id, secret: ok.secret });
    assert_eq!(wire.call(&req), Response::Resumed(Resumed { grace_ms: GRACE_MS, replayed }));
    wire
}

/// A STATS number through the blocking client.
fn client_stat(observer: &Client, key: &str) -> u64 {
    observer.stats().expect("stats").iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| v)
}

fn is_skipped(response: &Response) -> bool {
    matches!(response, Response::Error { code: ErrorCode::Skipped, .. })
}

#[test]
fn a_skipping_wait_is_skipped_while_detached_and_the_next_waiter_granted_at_once() {
    let server = server();
    let proxy = Proxy::start(server.addr());
    let mut holder = Raw::connect(server.addr());
    let first = token_of(&holder.call(&lock_req("skip/x")));
    let (mut a, ok) = open(&proxy, false);
    let mut ext = LockExtRequest::exclusive("skip/x");
    ext.skip_while_detached = true;
    let skip_rid = a.send(&Request::LockExt(ext));
    // A wait of the same session that did not ask to skip, on another name.
    token_of(&holder.call(&lock_req("skip/y")));
    let kept_rid = a.send(&lock_req("skip/y"));
    wait_until("the session's waits queue", WAIT, || stat(&mut holder, "waiters") == 2);
    let mut next = Raw::connect(server.addr());
    let next_rid = next.send(&lock_req("skip/x"));
    wait_until("the next waiter queues", WAIT, || stat(&mut holder, "waiters") == 3);
    assert_eq!(proxy.reset_all(), 1);
    wait_until("the session detaches", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    // skip/x's turn comes: the detached session's wait is skipped, the next one granted.
    assert_eq!(holder.call(&Request::Unlock("skip/x")), Response::Released);
    let (rid, granted) = next.recv();
    assert_eq!(rid, next_rid);
    assert!(token_of(&granted) > first);
    assert_eq!(stat(&mut holder, "session_waits_skipped"), 1);
    // skip/y's turn comes: granted and held for the session, as without the flag.
    assert_eq!(holder.call(&Request::Unlock("skip/y")), Response::Released);
    wait_until("skip/y granted to the session", WAIT, || stat(&mut holder, "waiters") == 0);
    let mut b = resume(proxy.addr(), &ok, 2);
    let (rid, response) = b.recv();
    assert_eq!(rid, skip_rid, "replayed under the LOCK_EXT's request id");
    assert!(is_skipped(&response), "{response:?}");
    let (rid, response) = b.recv();
    assert_eq!(rid, kept_rid);
    let token = token_of(&response);
    assert_eq!(b.call(&lock_req("skip/y")), Response::AlreadyAcquired { token });
    // The skipped wait is gone for good: asked again, the session queues anew behind `next`.
    assert_eq!(b.call(&Request::MyLocks), Response::MyLocks { held: vec!["skip/y".into()], waiting: vec![] });
}

/// SESSION_OPEN flags bit 0: plain LOCKs skip too; a skipping wait whose turn comes while the
/// session is attached (after the resume) is granted as any other.
#[test]
fn the_session_default_skips_plain_locks_only_while_detached() {
    let server = server();
    let proxy = Proxy::start(server.addr());
    let mut holder = Raw::connect(server.addr());
    token_of(&holder.call(&lock_req("skip/a")));
    token_of(&holder.call(&lock_req("skip/b")));
    let (mut a, ok) = open(&proxy, true);
    let a_rid = a.send(&lock_req("skip/a"));
    wait_until("the session queues", WAIT, || stat(&mut holder, "waiters") == 1);
    assert_eq!(proxy.reset_all(), 1);
    wait_until("the session detaches", WAIT, || stat(&mut holder, "sessions_detached") == 1);
    assert_eq!(holder.call(&Request::Unlock("skip/a")), Response::Released);
    wait_until("the wait is skipped", WAIT, || stat(&mut holder, "session_waits_skipped") == 1);
    assert_eq!(stat(&mut holder, "locks_held"), 1, "skip/a went free: no one else waited");
    let mut b = resume(proxy.addr(), &ok, 1);
    let (rid, response) = b.recv();
    assert_eq!(rid, a_rid);
    assert!(is_skipped(&response), "{response:?}");
    // Attached again: a plain LOCK that waits is granted when its turn comes.
    let b_rid = b.send(&lock_req("skip/b"));
    wait_until("the resumed session queues", WAIT, || stat(&mut holder, "waiters") == 1);
    assert_eq!(holder.call(&Request::Unlock("skip/b")), Response::Released);
    let (rid, response) = b.recv();
    assert_eq!(rid, b_rid);
    token_of(&response);
}

/// The blocking client: a `lock` with `skip_while_detached` whose turn comes while its
/// connection is cut fails, once the client has resumed, with the server code `skipped`, and
/// the waiter behind it got the lock meanwhile.
#[test]
fn the_clients_skipping_lock_fails_with_skipped_after_the_resume() {
    let server = server();
    let observer = Client::connect("127.0.0.1", server.addr().port()).expect("connect");
    let holder = Client::connect("127.0.0.1", server.addr().port()).expect("connect");
    let first = holder.lock("skip/client", LockOptions::new()).expect("lock").token();
    let proxy = Proxy::start(server.addr());
    let grace = Duration::from_millis(u64::from(GRACE_MS));
    let client = Arc::new(
        Client::builder()
            .host("127.0.0.1")
            .port(proxy.port())
            .session_grace(grace)
            .connect()
            .expect("connect"),
    );
    assert!(client.session().is_some(), "the server opened the session");
    let c = Arc::clone(&client);
    let waiting = thread::spawn(move || {
        c.lock("skip/client", LockOptions::with_timeout(WAIT).skip_while_detached()).map(|l| l.token())
    });
    let queued = || client_stat(&observer, "waiters") == 1;
    wait_until("the client's wait queues", WAIT, queued);
    let later = Client::connect("127.0.0.1", server.addr().port()).expect("connect");
    let behind = thread::spawn(move || {
        let token = later.lock("skip/client", LockOptions::with_timeout(WAIT)).expect("later lock").token();
        (later, token)
    });
    let two = || client_stat(&observer, "waiters") == 2;
    wait_until("the later waiter queues", WAIT, two);
    proxy.refuse(true);
    proxy.reset_all();
    let detached = || client_stat(&observer, "sessions_detached") == 1;
    wait_until("the session detaches", WAIT, detached);
    holder.unlock("skip/client").expect("unlock");
    let (_later, token) = behind.join().expect("later waiter");
    assert!(token > first, "the waiter behind the skipped one got the lock");
    proxy.refuse(false);
    let err = waiting.join().expect("waiting thread").expect_err("the wait was skipped");
    assert_eq!(err.server_code(), Some(ErrorCode::Skipped), "{err}");
    assert!(client.resumes() >= 1);
    assert!(client.my_locks().expect("my_locks").held.is_empty());
}

/// The flag on a connection without a session is accepted and changes nothing: such a
/// connection is never detached, and its wait is granted when its turn comes.
#[test]
fn the_skip_flag_without_a_session_changes_nothing() {
    let server = server();
    let mut holder = Raw::connect(server.addr());
    token_of(&holder.call(&lock_req("skip/plain")));
    let mut plain = Raw::connect(server.addr());
    let mut ext = LockExtRequest::exclusive("skip/plain");
    ext.skip_while_detached = true;
    let rid = plain.send(&Request::LockExt(ext));
    wait_until("it queues", WAIT, || stat(&mut holder, "waiters") == 1);
    assert_eq!(holder.call(&Request::Unlock("skip/plain")), Response::Released);
    let (got, response) = plain.recv();
    assert_eq!(got, rid);
    token_of(&response);
    assert_eq!(stat(&mut holder, "session_waits_skipped"), 0);
}
