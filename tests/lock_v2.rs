//! The lock model v2 end to end over real sockets (issue 13): shared locks and FIFO across
//! modes, counting semaphores, token-checked UNLOCK, the refusal of every bad value, and what
//! an old client sees. Each test runs its own server on 127.0.0.1:0.

mod support;

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use officer::client::{Client, ErrorKind, LockOptions};
use officer::protocol::{
    op, ErrorCode, LockExtRequest, LockRequest, LostReason, Request, Response, RevokeRequest, TokenRequest,
};
use support::frames::frame;
use support::process::wait_until;
use support::raw::Raw;
use support::server::TestServer;
use support::WAIT;

fn client(server: &TestServer) -> Client {
    Client::connect("127.0.0.1", server.addr().port()).expect("connect")
}

/// The queue of `name` as LOCKS lists it: every holder, then every waiter.
fn queue_len(observer: &Client, name: &str) -> usize {
    let locks = observer.locks().expect("locks");
    locks.iter().find(|l| l.name == name).map_or(0, |l| l.queue.len())
}

fn try_shared() -> LockOptions {
    LockOptions::try_once().shared()
}

fn error_code(response: &Response) -> ErrorCode {
    match response {
        Response::Error { code, .. } => *code,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

/// Readers and writers on one name, several clients, bounded rounds: a writer is never beside
/// anyone, and readers do run together. The in-process counter is the witness: +1 per
/// reader inside, a large negative while a writer is inside.
#[test]
fn readers_never_overlap_a_writer() {
    const WRITER: i64 = -1_000_000;
    let server = TestServer::start();
    let inside = Arc::new(AtomicI64::new(0));
    let most_readers = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (inside, most_readers) = (Arc::clone(&inside), Arc::clone(&most_readers));
            let client = client(&server);
            thread::spawn(move || {
                let writer = i % 3 == 0;
                for _ in 0..40 {
                    let opts = if writer { LockOptions::new() } else { LockOptions::new().shared() };
                    let lock = client.lock("rw", opts).expect("lock");
                    if writer {
                        assert_eq!(inside.swap(WRITER, Ordering::SeqCst), 0, "a writer beside others");
                        thread::yield_now();
                        assert_eq!(
                            inside.swap(0, Ordering::SeqCst),
                            WRITER,
                            "someone entered beside a writer"
                        );
                    } else {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now > 0, "a reader beside a writer");
                        most_readers.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(1));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    client.unlock_token("rw", lock.token()).expect("unlock");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(inside.load(Ordering::SeqCst), 0);
    assert!(most_readers.load(Ordering::SeqCst) >= 1);
}

/// Every shared holder gets its own token, and two readers hold the name at once.
#[test]
fn shared_grants_hold_together_with_their_own_tokens() {
    let server = TestServer::start();
    let (a, b, observer) = (client(&server), client(&server), client(&server));
    let first = a.lock("doc", try_shared()).expect("first reader");
    let second = b.lock("doc", try_shared()).expect("second reader");
    assert!(second.token() > first.token());
    assert_eq!(queue_len(&observer, "doc"), 2);
    // A writer does not get in beside them.
    let e = observer.lock("doc", LockOptions::try_once()).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // Asking again in the same mode is already acquired; in another mode, a conflict.
    assert!(a.lock("doc", try_shared()).expect("again").already_acquired());
    let e = a.lock("doc", LockOptions::try_once()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::ModeConflict), "{e}");
}

/// A waiting writer blocks the readers that come after it, even while only readers hold the
/// name; when the readers leave the writer is granted, then the later reader.
#[test]
fn a_waiting_writer_blocks_later_readers() {
    let server = TestServer::start();
    let (reader, writer, late, observer) =
        (client(&server), client(&server), client(&server), client(&server));
    let held = reader.lock("fifo", try_shared()).expect("reader");
    let (tx, rx) = mpsc::channel();
    let writing = thread::spawn(move || {
        let lock = writer.lock("fifo", LockOptions::new()).expect("writer");
        tx.send(lock.token()).expect("send");
        writer
    });
    wait_until("the writer waits", WAIT, || queue_len(&observer, "fifo") == 2);
    let e = late.lock("fifo", try_shared()).unwrap_err();
    assert!(e.is_timeout(), "a reader barged past a waiting writer: {e}");
    let (tx_late, rx_late) = mpsc::channel();
    let reading = thread::spawn(move || {
        let lock = late.lock("fifo", LockOptions::new().shared()).expect("late reader");
        tx_late.send(lock.token()).expect("send");
    });
    wait_until("the late reader waits", WAIT, || queue_len(&observer, "fifo") == 3);
    reader.unlock_token("fifo", held.token()).expect("unlock");
    let writer_token = rx.recv_timeout(WAIT).expect("the writer is granted");
    assert!(rx_late.try_recv().is_err(), "the late reader came in beside the writer");
    let writer = writing.join().expect("writer thread");
    writer.unlock_token("fifo", writer_token).expect("writer unlock");
    let late_token = rx_late.recv_timeout(WAIT).expect("the late reader is granted");
    assert!(late_token > writer_token);
    reading.join().expect("reader thread");
}

/// At most N permit holders at any instant, several clients, bounded rounds; the counter is
/// the witness, and the limit is reached.
#[test]
fn at_most_limit_permits_are_held() {
    const LIMIT: u32 = 3;
    let server = TestServer::start();
    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
            let client = client(&server);
            thread::spawn(move || {
                let permits = if i == 0 { 2 } else { 1 };
                for _ in 0..30 {
                    let lock = client.lock("pool", LockOptions::new().permits(permits, LIMIT)).expect("lock");
                    let now = inside.fetch_add(permits, Ordering::SeqCst) + permits;
                    assert!(now <= LIMIT, "{now} permits in use of {LIMIT}");
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                    inside.fetch_sub(permits, Ordering::SeqCst);
                    client.unlock_token("pool", lock.token()).expect("unlock");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(most.load(Ordering::SeqCst) >= 2, "permits were never shared");
}

/// The limit is the name's: another limit, or a lock of another kind, is `limit_mismatch`;
/// a request that does not fit waits and does not barge.
#[test]
fn semaphore_limits_must_agree_and_the_head_is_not_passed() {
    let server = TestServer::start();
    let (a, b, c) = (client(&server), client(&server), client(&server));
    a.lock("sem", LockOptions::try_once().permits(2, 3)).expect("two of three");
    let e = b.lock("sem", LockOptions::try_once().permits(1, 4)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::LimitMismatch), "{e}");
    let e = b.lock("sem", LockOptions::try_once()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::LimitMismatch), "{e}");
    let e = b.lock("sem", try_shared()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::LimitMismatch), "{e}");
    // Two permits do not fit beside two of three: b waits at the head...
    let (tx, rx) = mpsc::channel();
    let waiting = thread::spawn(move || {
        let lock = b.lock("sem", LockOptions::new().permits(2, 3)).expect("b");
        tx.send(lock.token()).expect("send");
    });
    wait_until("b waits", WAIT, || queue_len(&c, "sem") == 2);
    // ...and one permit, which would fit, does not pass it.
    let e = c.lock("sem", LockOptions::try_once().permits(1, 3)).unwrap_err();
    assert!(e.is_timeout(), "barged past the head: {e}");
    a.unlock("sem").expect("unlock");
    rx.recv_timeout(WAIT).expect("b is granted");
    waiting.join().expect("b thread");
}

/// UNLOCK with a token releases only that grant: a stale token fails and changes nothing.
#[test]
fn unlock_with_a_stale_token_fails() {
    let server = TestServer::start();
    let (a, b) = (client(&server), client(&server));
    let first = a.try_lock("fence").expect("lock");
    a.unlock("fence").expect("unlock");
    let second = a.try_lock("fence").expect("lock again");
    assert!(second.token() > first.token());
    let e = a.unlock_token("fence", first.token()).unwrap_err();
    assert!(e.is_not_held(), "{e}");
    assert!(b.try_lock("fence").unwrap_err().is_timeout(), "the stale unlock released the new grant");
    // Another connection's token is not ours to release either.
    assert!(b.unlock_token("fence", second.token()).unwrap_err().is_not_held());
    a.unlock_token("fence", second.token()).expect("the right token");
    b.try_lock("fence").expect("free now");
}

/// A token-checked UNLOCK does not cancel a wait (a plain UNLOCK does).
#[test]
fn unlock_token_leaves_a_wait_alone() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    let mut waiter = Raw::connect(server.addr());
    let lock = |name| Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None });
    assert!(matches!(holder.call(&lock("w")), Response::Acquired { .. }));
    let wait_id = waiter.send(&lock("w"));
    let observer = client(&server);
    wait_until("the waiter waits", WAIT, || queue_len(&observer, "w") == 2);
    let stale = Request::UnlockToken(TokenRequest { name: "w", token: 1 });
    assert_eq!(waiter.call(&stale), Response::ReleaseFailed);
    assert!(matches!(holder.call(&Request::Unlock("w")), Response::Released));
    assert!(matches!(waiter.recv(), (id, Response::Acquired { .. }) if id == wait_id));
}

/// Every bad value of LOCK_EXT and the token requests has its error code, the connection goes
/// on, and nothing was taken by the refused requests.
#[test]
fn bad_values_of_every_new_field_get_their_error_code() {
    let server = TestServer::start_with(|c| c.table.max_lock_delay_ms = 500);
    let mut raw = Raw::connect(server.addr());
    // flags `u16`, mode `u8`, timeout, queue_max, permits, limit, lease, max_hold, lock_delay, name.
    let ext = |flags: u16, mode: u8, permits: u32, limit: u32, delay: u32| {
        let mut p = flags.to_be_bytes().to_vec();
        p.push(mode);
        for v in [u32::MAX, 0, permits, limit, 0, 0, delay] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(b"bad");
        frame(op::LOCK_EXT, 7, &p)
    };
    let mut check = |bytes: Vec<u8>, code: ErrorCode| {
        raw.send_bytes(&bytes).expect("write");
        let (id, response) = raw.recv();
        assert_eq!((id, error_code(&response)), (7, code), "{response:?}");
    };
    check(ext(0x0004, 0, 0, 0, 0), ErrorCode::UnsupportedFlags);
    check(ext(0, 3, 0, 0, 0), ErrorCode::BadValue);
    check(ext(0, 1, 0, 10, 0), ErrorCode::BadValue);
    check(ext(0, 0, 1, 0, 0), ErrorCode::BadValue);
    check(ext(0, 2, 0, 10, 0), ErrorCode::BadValue);
    check(ext(0, 2, 11, 10, 0), ErrorCode::BadValue);
    check(ext(0, 2, 1, 0, 0), ErrorCode::BadValue);
    check(ext(0, 0, 0, 0, 501), ErrorCode::BadValue);
    let token_zero = |opcode| frame(opcode, 7, &[0, 0, 0, 0, 0, 0, 0, 0, b'b', b'a', b'd']);
    check(token_zero(op::UNLOCK_TOKEN), ErrorCode::BadValue);
    check(frame(op::UNLOCK_TOKEN, 7, &[0, 0, 0, 1]), ErrorCode::Malformed);
    check(frame(op::UNLOCK_TOKEN, 7, &[0, 0, 0, 0, 0, 0, 0, 1]), ErrorCode::BadName);
    // Every unknown flag bit, alone or together, is refused, as are modes past 2.
    check(ext(0x8000, 0, 0, 0, 0), ErrorCode::UnsupportedFlags);
    check(ext(0xFFFF, 0, 0, 0, 0), ErrorCode::UnsupportedFlags);
    check(ext(0, 0xFF, 0, 0, 0), ErrorCode::BadValue);
    check(ext(0, 1, 1, 0, 0), ErrorCode::BadValue);
    // A payload cut short of its 31 fixed bytes, or with no name after them.
    let mut short = ext(0, 0, 0, 0, 0);
    short.truncate(short.len() - 4);
    let len = (short.len() - 4) as u32;
    short[..4].copy_from_slice(&len.to_be_bytes());
    check(short, ErrorCode::Malformed);
    let mut nameless = ext(0, 0, 0, 0, 0);
    nameless.truncate(nameless.len() - 3);
    let len = (nameless.len() - 4) as u32;
    nameless[..4].copy_from_slice(&len.to_be_bytes());
    check(nameless, ErrorCode::BadName);
    // Token 0 names no grant in any request that takes one; names are checked as everywhere.
    for opcode in [op::DOWNGRADE, op::RENEW, op::CHECK] {
        check(token_zero(opcode), ErrorCode::BadValue);
        check(frame(opcode, 7, &[0, 0, 0, 0, 0, 0, 0, 1, 0x01]), ErrorCode::BadName);
    }
    check(frame(op::LOCKS_DETAIL, 7, &[0, 0, 0, 0, b'a', 0x7F]), ErrorCode::BadName);
    check(frame(op::LOCKS_DETAIL, 7, &[0, 0]), ErrorCode::Malformed);
    // Nothing was taken: the name is free.
    let ok = raw.call(&Request::LockExt(LockExtRequest::exclusive("bad")));
    assert!(matches!(ok, Response::Acquired { .. }), "{ok:?}");
}

/// A holder that asked for the contention notice is told once when someone starts waiting
/// behind it (CONTENDED, request id 0); a holder that did not ask is told nothing.
#[test]
fn the_contention_notice_comes_once_to_a_holder_that_asked() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    let req = LockExtRequest { notify_contention: true, ..LockExtRequest::exclusive("busy") };
    let token = acquired(holder.call(&Request::LockExt(req)));
    let (mut w1, mut w2) = (Raw::connect(server.addr()), Raw::connect(server.addr()));
    let lock = |name| Request::Lock(LockRequest { name, timeout_ms: None, queue_max: None });
    w1.send(&lock("busy"));
    assert_eq!(holder.recv(), (0, Response::Contended { token, name: "busy".into() }));
    w2.send(&lock("busy"));
    // Once per grant: the next frame is the answer to the holder's next request.
    assert_eq!(holder.call(&Request::Ping(b"")), Response::Pong);
    let client = client(&server);
    let guard = client.lock_guard("quiet", LockOptions::new().notify_contention()).expect("lock");
    let other = Client::connect("127.0.0.1", server.addr().port()).expect("connect");
    let (tx, rx) = mpsc::channel();
    let waiting = thread::spawn(move || {
        let got = other.lock("quiet", LockOptions::new());
        tx.send(()).expect("send");
        got.map(|_| ())
    });
    wait_until("the client hears it", WAIT, || guard.is_contended());
    drop(guard);
    rx.recv_timeout(WAIT).expect("the waiter is granted");
    waiting.join().expect("thread").expect("lock");
}

#[test]
fn a_v1_client_sees_nothing_new() {
    let server = TestServer::start();
    let reader = client(&server);
    let observer = client(&server);
    let held = reader.lock("mixed", try_shared()).expect("reader");
    let mut old = Raw::connect(server.addr());
    let id = old.send(&Request::Lock(LockRequest { name: "mixed", timeout_ms: None, queue_max: None }));
    wait_until("the old client waits", WAIT, || queue_len(&observer, "mixed") == 2);
    reader.unlock_token("mixed", held.token()).expect("unlock");
    let (rid, granted) = old.recv();
    assert_eq!(rid, id);
    assert!(matches!(granted, Response::Acquired { .. }), "{granted:?}");
    // The next frame it reads is the answer to its next request: nothing unsolicited between.
    assert_eq!(old.call(&Request::Ping(b"")), Response::Pong);
    assert_eq!(old.call(&Request::Unlock("mixed")), Response::Released);
}

/// DOWNGRADE turns the writer into a reader at once, keeping its token, and grants the readers
/// waiting behind it; a waiting writer behind them still waits.
#[test]
fn downgrade_grants_the_readers_behind() {
    let server = TestServer::start();
    let (writer, r1, r2, w2, observer) =
        (client(&server), client(&server), client(&server), client(&server), client(&server));
    let held = writer.lock("dg", LockOptions::new()).expect("writer");
    let spawn_reader = |reader: Client| {
        let (tx, rx) = mpsc::channel();
        // The thread hands its client back, so the reader's grant outlives it.
        let handle = thread::spawn(move || {
            let lock = reader.lock("dg", LockOptions::new().shared()).expect("reader");
            tx.send(lock.token()).expect("send");
            reader
        });
        (rx, handle)
    };
    let (first, h1) = spawn_reader(r1);
    wait_until("the first reader waits", WAIT, || queue_len(&observer, "dg") == 2);
    let (second, h2) = spawn_reader(r2);
    wait_until("the second reader waits", WAIT, || queue_len(&observer, "dg") == 3);
    let (tx, later_writer) = mpsc::channel();
    thread::spawn(move || {
        let got = w2.lock("dg", LockOptions::new());
        tx.send(got.map(|l| l.token())).expect("send");
    });
    wait_until("the second writer waits", WAIT, || queue_len(&observer, "dg") == 4);
    // Only the grant's token downgrades it; a shared grant cannot be downgraded.
    let e = writer.downgrade("dg", held.token() + 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::NotHolder), "{e}");
    writer.downgrade("dg", held.token()).expect("downgrade");
    let t1 = first.recv_timeout(WAIT).expect("first reader granted");
    let t2 = second.recv_timeout(WAIT).expect("second reader granted");
    assert!(held.token() < t1 && t1 < t2, "tokens follow the grants");
    let _readers = (h1.join().expect("reader"), h2.join().expect("reader"));
    assert!(writer.check("dg", held.token()).expect("check"), "the downgraded grant keeps its token");
    let e = writer.downgrade("dg", held.token()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server(ErrorCode::ModeConflict), "{e}");
    assert!(later_writer.try_recv().is_err(), "a writer came in beside readers");
    assert_eq!(queue_len(&observer, "dg"), 4);
}

/// CHECK answers whether a token holds a name now, to any connection.
#[test]
fn check_is_true_only_for_a_current_grant() {
    let server = TestServer::start();
    let (a, b, other) = (client(&server), client(&server), client(&server));
    let first = a.lock("chk", LockOptions::try_once().shared()).expect("a");
    let second = b.lock("chk", LockOptions::try_once().shared()).expect("b");
    assert!(other.check("chk", first.token()).expect("check"));
    assert!(other.check("chk", second.token()).expect("check"));
    assert!(!other.check("chk", second.token() + 1).expect("a token never issued"));
    assert!(!other.check("nothing", first.token()).expect("another name"));
    a.unlock("chk").expect("unlock");
    assert!(!other.check("chk", first.token()).expect("a released grant"));
    assert!(other.check("chk", second.token()).expect("still held"));
}

fn lease_req(name: &str, lease_ms: Option<u32>, max_hold_ms: Option<u32>) -> Request<'_> {
    Request::LockExt(LockExtRequest { lease_ms, max_hold_ms, ..LockExtRequest::exclusive(name) })
}

fn acquired(response: Response) -> u64 {
    match response {
        Response::Acquired { token } => token,
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}

/// A lease that is not renewed ends by itself: the holder gets LOST (request id 0, reason
/// lease_expired), the next waiter is granted, and the holder's later UNLOCK says LOST.
#[test]
fn an_unrenewed_lease_ends_with_lost_and_the_next_waiter_is_granted() {
    let server = TestServer::start();
    let mut holder = Raw::connect(server.addr());
    let mut waiter = Raw::connect(server.addr());
    let token = acquired(holder.call(&lease_req("lease", Some(100), None)));
    let wait_id =
        waiter.send(&Request::Lock(LockRequest { name: "lease", timeout_ms: None, queue_max: None }));
    let (rid, notice) = holder.recv();
    assert_eq!(rid, 0, "LOST is a notice");
    assert_eq!(notice, Response::Lost { token, reason: LostReason::LeaseExpired, name: "lease".into() });
    let (rid, granted) = waiter.recv();
    assert_eq!(rid, wait_id);
    assert!(acquired(granted) > token);
    assert_eq!(
        holder.call(&Request::UnlockToken(TokenRequest { name: "lease", token })),
        Response::Lost { token, reason: LostReason::LeaseExpired, name: "lease".into() }
    );
    // Said once: now it is simply not held.
    assert_eq!(
        holder.call(&Request::UnlockToken(TokenRequest { name: "lease", token })),
        Response::ReleaseFailed
    );
}

/// RENEW keeps a lease alive well past its length; the grant stays held throughout.
#[test]
fn renew_keeps_the_lease() {
    let server = TestServer::start();
    let (holder, other) = (client(&server), client(&server));
    let lock = holder.lock("kept", LockOptions::new().lease(Duration::from_millis(300))).expect("lock");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        let left = holder.renew("kept", lock.token()).expect("renew").expect("a lease has an end");
        assert!(left <= Duration::from_millis(300) && left > Duration::ZERO, "{left:?}");
        assert!(other.check("kept", lock.token()).expect("check"), "the renewed grant ended");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(holder.wait_lost("kept", lock.token(), Some(Duration::ZERO)).is_none());
    holder.unlock_token("kept", lock.token()).expect("unlock");
}

/// max_hold ends the grant however often it is renewed; the guard learns it.
#[test]
fn max_hold_ends_the_grant_regardless_of_renewals() {
    let server = TestServer::start();
    let holder = client(&server);
    let opts = LockOptions::new().lease(Duration::from_millis(200)).max_hold(Duration::from_millis(400));
    let guard = holder.lock_guard("budget", opts).expect("lock");
    let token = guard.token();
    let renewing = {
        let holder = &holder;
        move || loop {
            match holder.renew("budget", token) {
                Ok(left) => assert!(left.expect("an end") <= Duration::from_millis(400)),
                Err(e) => return e,
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    let e = thread::scope(|s| s.spawn(renewing).join().expect("renewer"));
    assert_eq!(e.lost_reason(), Some((LostReason::MaxHold, token)), "{e}");
    assert!(guard.wait_lost(Some(WAIT)) && guard.is_lost());
    assert!(holder.is_connected(), "a lost grant is not a lost connection");
    assert!(!holder.check("budget", token).expect("check"));
}

/// A version-1 LOCK never gets LOST: its grant has no lease. An old client beside a leased
/// one reads only the answers to its own requests.
#[test]
fn a_v1_client_never_gets_lost_frames() {
    let server = TestServer::start();
    let mut old = Raw::connect(server.addr());
    let mut leased = Raw::connect(server.addr());
    let token = acquired(leased.call(&lease_req("old", Some(50), None)));
    let id = old.send(&Request::Lock(LockRequest { name: "old", timeout_ms: None, queue_max: None }));
    assert_eq!(
        leased.recv(),
        (0, Response::Lost { token, reason: LostReason::LeaseExpired, name: "old".into() })
    );
    let (rid, granted) = old.recv();
    assert_eq!(rid, id);
    let old_token = acquired(granted);
    // The next frame it reads is the answer to its next request.
    assert_eq!(old.call(&Request::Ping(b"")), Response::Pong);
    assert_eq!(
        old.call(&Request::Check(TokenRequest { name: "old", token: old_token })),
        Response::Checked { held: true }
    );
    assert_eq!(old.call(&Request::Unlock("old")), Response::Released);
}

const ADMIN_SECRET: &[u8] = b"an admin secret of 32 bytes or more";

/// KICK needs admin rights; with them it closes the victim (ERROR `kicked`, request id 0), its
/// locks go to the waiters, and the admin gets KICKED. Unknown ids are `not_found`.
#[test]
fn kick_closes_a_connection_for_an_admin_only() {
    let server = TestServer::start_with(|c| c.admin_secret = Some(ADMIN_SECRET.to_vec()));
    let victim = client(&server);
    let victim_id = victim.server_info().connection_id;
    victim.try_lock("kicked").expect("victim lock");
    let mut waiter = Raw::connect(server.addr());
    let wait_id =
        waiter.send(&Request::Lock(LockRequest { name: "kicked", timeout_ms: None, queue_max: None }));
    let mut admin = Raw::connect(server.addr());
    assert_eq!(error_code(&admin.call(&Request::Kick(victim_id))), ErrorCode::Forbidden);
    assert_eq!(admin.call(&Request::AdminAuth(ADMIN_SECRET)), Response::AuthOk);
    assert_eq!(error_code(&admin.call(&Request::Kick(u64::MAX))), ErrorCode::NotFound);
    assert_eq!(admin.call(&Request::Kick(victim_id)), Response::Kicked);
    assert!(victim.wait_disconnected(Some(WAIT)), "the victim was not closed");
    let (rid, granted) = waiter.recv();
    assert_eq!(rid, wait_id);
    assert!(matches!(granted, Response::Acquired { .. }), "{granted:?}");
}

/// The victim hears why: ERROR `kicked` under request id 0, then the close.
#[test]
fn a_kicked_connection_is_told_then_closed() {
    let server = TestServer::start_with(|c| c.admin_secret = Some(ADMIN_SECRET.to_vec()));
    let mut victim = Raw::connect_no_hello(server.addr());
    let hello = Request::Hello(officer::protocol::Hello { version: officer::protocol::PROTOCOL_VERSION });
    let Response::HelloOk(greeting) = victim.call(&hello) else { panic!("no HELLO_OK") };
    let victim_id = greeting.connection_id;
    let mut admin = Raw::connect(server.addr());
    assert_eq!(admin.call(&Request::AdminAuth(ADMIN_SECRET)), Response::AuthOk);
    assert_eq!(admin.call(&Request::Kick(victim_id)), Response::Kicked);
    let (frames, closed) = victim.wait_closed(WAIT);
    assert!(closed, "the victim was not closed");
    assert_eq!(frames, vec![(0, Response::error(ErrorCode::Kicked, "closed by an operator"))]);
}

/// A wrong admin secret closes the connection as a wrong AUTH does; a server without an admin
/// secret refuses ADMIN_AUTH without closing.
#[test]
fn admin_auth_refusals() {
    let server = TestServer::start_with(|c| c.admin_secret = Some(ADMIN_SECRET.to_vec()));
    let mut wrong = Raw::connect(server.addr());
    wrong.send(&Request::AdminAuth(b"not the secret"));
    let (frames, closed) = wrong.wait_closed(WAIT);
    assert!(closed);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].0, error_code(&frames[0].1)), (0, ErrorCode::AuthFailed));
    let plain = TestServer::start();
    let mut raw = Raw::connect(plain.addr());
    assert_eq!(error_code(&raw.call(&Request::AdminAuth(ADMIN_SECRET))), ErrorCode::Forbidden);
    assert_eq!(error_code(&raw.call(&Request::Kick(1))), ErrorCode::Forbidden);
    // Before anything else is looked at: a malformed KICK, a REVOKE of a bad name.
    raw.send_bytes(&frame(op::KICK, 7, &[1, 2])).expect("write");
    let (id, response) = raw.recv();
    assert_eq!((id, error_code(&response)), (7, ErrorCode::Forbidden));
    let mut bad_name = 0u64.to_be_bytes().to_vec();
    bad_name.push(b'\n');
    raw.send_bytes(&frame(op::REVOKE, 8, &bad_name)).expect("write");
    let (id, response) = raw.recv();
    assert_eq!((id, error_code(&response)), (8, ErrorCode::Forbidden));
    assert_eq!(raw.call(&Request::Ping(b"")), Response::Pong);
}

/// On the UNIX socket the server's own user is an admin without a secret.
#[test]
fn the_same_user_on_the_unix_socket_is_an_admin() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let server = TestServer::start_with(|c| c.listen = officer::server::Listen::Unix(path.clone()));
    let victim = Client::connect_unix(&path).expect("victim");
    let victim_id = victim.server_info().connection_id;
    let mut admin = Raw::connect_unix(&path);
    assert_eq!(admin.call(&Request::Kick(victim_id)), Response::Kicked);
    assert!(victim.wait_disconnected(Some(WAIT)));
    drop(server);
}

/// REVOKE needs admin rights; a LOCK_EXT holder gets LOST `revoked`, the admin REVOKED with the
/// count, and the next waiter is granted.
#[test]
fn revoke_ends_a_grant_with_lost_revoked() {
    let server = TestServer::start_with(|c| c.admin_secret = Some(ADMIN_SECRET.to_vec()));
    let mut holder = Raw::connect(server.addr());
    let token = acquired(holder.call(&Request::LockExt(LockExtRequest::exclusive("rv"))));
    let mut waiter = Raw::connect(server.addr());
    let wait_id = waiter.send(&Request::Lock(LockRequest { name: "rv", timeout_ms: None, queue_max: None }));
    let mut admin = Raw::connect(server.addr());
    let revoke = Request::Revoke(RevokeRequest { name: "rv", token: None });
    assert_eq!(error_code(&admin.call(&revoke)), ErrorCode::Forbidden);
    assert_eq!(
        holder.call(&Request::Check(TokenRequest { name: "rv", token })),
        Response::Checked { held: true }
    );
    assert_eq!(admin.call(&Request::AdminAuth(ADMIN_SECRET)), Response::AuthOk);
    assert_eq!(admin.call(&revoke), Response::Revoked { count: 1 });
    assert_eq!(holder.recv(), (0, Response::Lost { token, reason: LostReason::Revoked, name: "rv".into() }));
    let (rid, granted) = waiter.recv();
    assert_eq!(rid, wait_id);
    let next = acquired(granted);
    // A token that holds nothing revokes nothing.
    assert_eq!(
        admin.call(&Request::Revoke(RevokeRequest { name: "rv", token: Some(token) })),
        Response::Revoked { count: 0 }
    );
    assert_eq!(
        admin.call(&Request::Check(TokenRequest { name: "rv", token: next })),
        Response::Checked { held: true }
    );
}

/// A holder that cannot be told (a version-1 LOCK client) loses its connection instead, which
/// every old client already takes as the loss of its locks; it never sees a LOST frame.
#[test]
fn revoking_an_old_clients_grant_closes_its_connection() {
    let dir = support::temp_dir();
    let path = dir.path().join("officer.sock");
    let server = TestServer::start_with(|c| c.listen = officer::server::Listen::Unix(path.clone()));
    let mut old = Raw::connect_unix(&path);
    assert!(matches!(
        old.call(&Request::Lock(LockRequest { name: "old", timeout_ms: None, queue_max: None })),
        Response::Acquired { .. }
    ));
    let admin = Client::connect_unix(&path).expect("admin");
    assert_eq!(admin.revoke("old", None).expect("revoke"), 1);
    let (frames, closed) = old.wait_closed(WAIT);
    assert!(closed, "the old client was not closed");
    assert!(frames.is_empty(), "an old client got {frames:?}");
    admin.try_lock("old").expect("free again");
    drop(server);
}

/// After a holder with a lock-delay vanishes, the name grants nothing for that long; the
/// waiter keeps its place and is granted after it. A normal UNLOCK starts no delay.
#[test]
fn lock_delay_holds_the_name_after_an_abnormal_end() {
    let server = TestServer::start();
    let delayed = LockOptions::new().lock_delay(Duration::from_millis(300));
    let (holder, waiter) = (client(&server), client(&server));
    holder.lock("ld", delayed).expect("holder");
    let observer = client(&server);
    let (tx, rx) = mpsc::channel();
    let waiting = thread::spawn(move || {
        let got = waiter.lock("ld", LockOptions::new());
        tx.send(std::time::Instant::now()).expect("send");
        got.map(|_| waiter)
    });
    wait_until("the waiter waits", WAIT, || queue_len(&observer, "ld") == 2);
    let gone = std::time::Instant::now();
    holder.disconnect();
    let granted = rx.recv_timeout(WAIT).expect("granted after the delay");
    // The server counts whole milliseconds; no more than that tick early.
    let waited = granted.duration_since(gone);
    assert!(waited >= Duration::from_millis(299), "granted early: {waited:?}");
    let waiter = waiting.join().expect("waiter thread").expect("lock");
    // A normal end: the next one is granted at once.
    let other = client(&server);
    let lock = other.lock("ld2", delayed).expect("lock");
    other.unlock_token("ld2", lock.token()).expect("unlock");
    waiter.try_lock("ld2").expect("no delay after UNLOCK");
}

/// LOCKS_DETAIL shows what LOCKS cannot: each holder's mode, permits and token, each waiter's
/// mode, and a semaphore's limit with the permits in use.
#[test]
fn the_detailed_listing_shows_modes_holders_and_permits() {
    use officer::protocol::Mode;
    let server = TestServer::start();
    let (a, b, c, observer) = (client(&server), client(&server), client(&server), client(&server));
    let r1 = a.lock("d/rw", try_shared()).expect("reader");
    let r2 = b.lock("d/rw", try_shared()).expect("reader");
    let waiting = thread::spawn(move || c.lock("d/rw", LockOptions::new()).map(|_| c));
    wait_until("the writer waits", WAIT, || queue_len(&observer, "d/rw") == 3);
    let p = a.lock("d/sem", LockOptions::try_once().permits(2, 5)).expect("permits");
    let listing = observer.locks_detail("d/", 0).expect("detail");
    assert!(!listing.truncated);
    let names: Vec<&str> = listing.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["d/rw", "d/sem"]);
    let rw = &listing.items[0];
    let holders: Vec<(Mode, u64)> = rw.holders.iter().map(|h| (h.mode, h.token)).collect();
    assert_eq!(holders, [(Mode::Shared, r1.token()), (Mode::Shared, r2.token())]);
    assert_eq!(rw.waiters.iter().map(|w| w.mode).collect::<Vec<_>>(), [Mode::Exclusive]);
    assert_eq!(rw.limit, 0);
    let sem = &listing.items[1];
    assert_eq!((sem.limit, sem.permits_in_use(), sem.holders[0].token), (5, 2, p.token()));
    assert_eq!(sem.holders[0].mode, Mode::Semaphore);
    drop((a, b));
    waiting.join().expect("writer thread").expect("writer granted");
}

/// CONNECTIONS_DETAIL (PROTOCOL.md §3.21, §4.29) is served: each connection with its id (the
/// one HELLO_OK gave it, which KICK takes), its grants sorted by name with mode, permits and
/// token, and its waits with their mode.
#[test]
fn connections_detail_lists_ids_grants_and_waits_with_their_modes() {
    use officer::protocol::Mode;
    let server = TestServer::start();
    let (a, b, c) = (client(&server), client(&server), client(&server));
    let users = a.lock("db/users", LockOptions::new().shared()).expect("shared").token();
    let pool = a.lock("db/pool", LockOptions::new().permits(3, 10)).expect("permits").token();
    b.lock("jobs/nightly", LockOptions::new()).expect("lock");
    let c_id = c.server_info().connection_id;
    let waiter = thread::spawn(move || c.lock("jobs/nightly", LockOptions::new().timeout(WAIT)).map(|_| c));
    wait_until("the waiter to queue", WAIT, || queue_len(&b, "jobs/nightly") == 2);
    let listing = b.connections_detail("", 0).expect("connections detail");
    assert!(!listing.truncated);
    let of = |id: u64| listing.iter().find(|e| e.connection_id == id).unwrap_or_else(|| panic!("no {id}"));
    let entry = of(a.server_info().connection_id);
    let held: Vec<(&str, Mode, u32, u64)> =
        entry.held.iter().map(|h| (h.name.as_str(), h.mode, h.permits, h.token)).collect();
    assert_eq!(held, [("db/pool", Mode::Semaphore, 3, pool), ("db/users", Mode::Shared, 0, users)]);
    assert!(entry.waiting.is_empty());
    let entry = of(c_id);
    assert!(entry.held.is_empty());
    let waits: Vec<(&str, Mode)> = entry.waiting.iter().map(|w| (w.name.as_str(), w.mode)).collect();
    assert_eq!(waits, [("jobs/nightly", Mode::Exclusive)]);
    assert_eq!(listing.iter().count(), 3, "one entry per connection");
    // The prefix matches labels; the page bound holds.
    let one = b.connections_detail("", 1).expect("one");
    assert_eq!((one.iter().count(), one.truncated), (1, true));
    assert_eq!(b.connections_detail("nobody:", 0).expect("none").iter().count(), 0);
    b.unlock("jobs/nightly").expect("unlock");
    waiter.join().expect("waiter thread").expect("granted");
}
