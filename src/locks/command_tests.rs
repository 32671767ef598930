//! Tests of the command interface: session ids (allocated, carried, never reused), outputs that
//! name their lock, the order of work inside `Expire`, and replay giving the same table.

use super::*;
use crate::protocol::{ErrorCode, Response};

fn attach(t: &mut LockTable, session: SessionId, label: &str) {
    let mut out = Vec::new();
    t.apply(0, &Command::Attach { session, label: label.to_owned() }, &mut out);
    assert!(out.is_empty(), "attach answers nothing: {out:?}");
}

fn lock(session: SessionId, request_id: u32, name: &str, timeout_ms: Option<u32>) -> Command {
    Command::Lock {
        session,
        request_id,
        name: Name::from(name),
        timeout_ms,
        queue_max: None,
        opts: LockOpts::default(),
    }
}

fn unlock(session: SessionId, request_id: u32, name: &str) -> Command {
    Command::Unlock { session, request_id, name: Name::from(name), token: None }
}

/// `(session, request id, lock named, response)` of each output.
fn named(out: &[Output]) -> Vec<(u64, u32, Option<&str>, Response)> {
    out.iter().map(|o| (o.session.0, o.request_id, o.lock.as_deref(), o.response.clone())).collect()
}

#[test]
fn session_ids_count_up_and_are_never_handed_out_twice() {
    let mut t = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    assert_eq!(t.next_session(), SessionId(1));
    assert_eq!(t.next_session(), SessionId(1), "asking does not allocate");
    let first = t.next_session();
    attach(&mut t, first, "10.0.0.1:1");
    assert_eq!(t.next_session(), SessionId(2));
    t.apply(0, &lock(first, 1, "a", None), &mut out);
    t.apply(1, &Command::Detach { session: first }, &mut out);
    assert_eq!(t.stats().connections, 0, "a detached session is forgotten");
    assert_eq!(t.next_session(), SessionId(2), "but its id is not handed out again");
    let mut seen = vec![first];
    for _ in 0..100 {
        let session = t.next_session();
        assert!(!seen.contains(&session), "{session:?} again");
        seen.push(session);
        attach(&mut t, session, "x");
        t.apply(2, &Command::Detach { session }, &mut out);
    }
    assert_eq!(t.next_session(), SessionId(102));
}

/// A replica applies the leader's Attach: the id is used as given, and the counter moves past
/// it, so that replica would never hand it out either; a LOCK of a session never attached does
/// the same.
#[test]
fn session_ids_survive_as_given() {
    let mut t = LockTable::new(7, TableLimits::default());
    let mut out = Vec::new();
    let given = SessionId(1_000_000_007);
    attach(&mut t, given, "10.0.0.9:9");
    assert_eq!(t.next_session(), SessionId(1_000_000_008));
    t.apply(0, &lock(given, 3, "a", None), &mut out);
    assert_eq!(named(&out), vec![(given.0, 3, Some("a"), Response::Acquired { token: 7 })]);
    assert_eq!(t.my_locks(given), Response::MyLocks { held: vec!["a".into()], waiting: vec![] });
    let stranger = SessionId(5_000_000_000);
    out.clear();
    t.apply(0, &lock(stranger, 1, "b", None), &mut out);
    assert_eq!(named(&out), vec![(stranger.0, 1, Some("b"), Response::Acquired { token: 8 })]);
    assert_eq!(t.next_session(), SessionId(5_000_000_001));
    // A smaller id than the counter's (another replica's older session) leaves the counter be.
    attach(&mut t, SessionId(3), "old");
    assert_eq!(t.next_session(), SessionId(5_000_000_001));
}

/// Every response about a lock names it, whichever path produced it; RESET_OK names none.
#[test]
fn every_answer_names_its_lock() {
    let limits = TableLimits { max_waiters_per_lock: 1, ..TableLimits::default() };
    let mut t = LockTable::new(1, limits);
    let (a, b, c) = (SessionId(1), SessionId(2), SessionId(3));
    for s in [a, b, c] {
        attach(&mut t, s, "peer");
    }
    let mut out = Vec::new();
    let queue = |labels: &[&str]| labels.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    t.apply(0, &lock(a, 1, "x", None), &mut out);
    t.apply(0, &lock(a, 2, "x", None), &mut out);
    t.apply(0, &lock(b, 3, "x", Some(0)), &mut out);
    t.apply(0, &lock(b, 4, "x", Some(10)), &mut out);
    t.apply(0, &lock(b, 5, "x", Some(10)), &mut out);
    t.apply(0, &lock(c, 6, "x", None), &mut out);
    t.apply(
        0,
        &Command::Lock {
            session: c,
            request_id: 7,
            name: "x".into(),
            timeout_ms: None,
            queue_max: Some(1),
            opts: LockOpts::default(),
        },
        &mut out,
    );
    t.apply(0, &unlock(c, 8, "nothing"), &mut out);
    let limit = Response::error(ErrorCode::LimitExceeded, "lock has 1 waiters, the limit is 1");
    assert_eq!(
        named(&out),
        vec![
            (1, 1, Some("x"), Response::Acquired { token: 1 }),
            (1, 2, Some("x"), Response::AlreadyAcquired { token: 1 }),
            (2, 3, Some("x"), Response::TimedOut { queue: queue(&["peer"]) }),
            (2, 5, Some("x"), Response::AlreadyWaiting),
            (3, 6, Some("x"), limit),
            (3, 7, Some("x"), Response::QueueMaxed { queue: queue(&["peer", "peer"]) }),
            (3, 8, Some("nothing"), Response::ReleaseFailed),
        ]
    );
    out.clear();
    t.apply(1, &lock(c, 9, "y", None), &mut out);
    t.apply(1, &lock(b, 10, "y", None), &mut out);
    t.apply(2, &unlock(a, 11, "x"), &mut out);
    t.apply(3, &unlock(b, 12, "x"), &mut out);
    t.apply(3, &Command::Reset { session: b, request_id: 13 }, &mut out);
    t.apply(4, &lock(a, 14, "z", None), &mut out);
    t.apply(4, &lock(c, 15, "z", Some(5)), &mut out);
    t.apply(9, &Command::Expire, &mut out);
    assert_eq!(
        named(&out),
        vec![
            (3, 9, Some("y"), Response::Acquired { token: 2 }),
            (1, 11, Some("x"), Response::Released),
            (2, 4, Some("x"), Response::Acquired { token: 3 }),
            (2, 12, Some("x"), Response::Released),
            (2, 10, Some("y"), Response::Cancelled),
            (2, 13, None, Response::ResetOk),
            (1, 14, Some("z"), Response::Acquired { token: 4 }),
            (3, 15, Some("z"), Response::TimedOut { queue: queue(&["peer"]) }),
        ]
    );
    assert_eq!(t.check_invariants(), Ok(()));
}

/// `Expire` continues pending releases before it times out waits: a wait on a lock the step
/// releases is granted, not timed out, even when its deadline has come.
#[test]
fn expire_releases_before_it_times_out() {
    let mut t = LockTable::new(1, TableLimits::default());
    t.set_batches(EXPIRE_BATCH, 1);
    let (a, b) = (SessionId(1), SessionId(2));
    attach(&mut t, a, "A");
    attach(&mut t, b, "B");
    let mut out = Vec::new();
    t.apply(0, &lock(a, 1, "first", None), &mut out);
    t.apply(0, &lock(a, 2, "second", None), &mut out);
    t.apply(0, &lock(b, 3, "second", Some(10)), &mut out);
    out.clear();
    // The inline budget of one hold releases "first"; "second" waits for a step.
    t.apply(5, &Command::Detach { session: a }, &mut out);
    assert!(out.is_empty() && t.has_pending_releases());
    t.apply(10, &Command::Expire, &mut out);
    assert_eq!(named(&out), vec![(2, 3, Some("second"), Response::Acquired { token: 3 })]);
    assert_eq!(t.next_deadline(), None, "the grant cancelled the wait's timer");
}

/// Two tables applying the same commands at the same ticks answer the same and end the same:
/// what a replica of a command log relies on.
#[test]
fn replaying_the_same_commands_gives_the_same_table() {
    let mut log = Vec::new();
    let mut leader = LockTable::new(1, TableLimits::default());
    let mut leader_out = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..6u32 {
        let session = leader.next_session();
        sessions.push(session);
        log.push((0, Command::Attach { session, label: format!("10.0.0.{i}:1") }));
    }
    for step in 0..300u32 {
        let session = sessions[(step * 7 % 6) as usize];
        let name = format!("n{}", step % 5);
        let now = Tick::from(step);
        let cmd = match step % 9 {
            0..=4 => lock(session, step, &name, (step % 3 == 0).then_some(3)),
            5 | 6 => unlock(session, step, &name),
            7 => Command::Reset { session, request_id: step },
            _ => Command::Expire,
        };
        log.push((now, cmd));
    }
    for (now, cmd) in &log {
        leader.apply(*now, cmd, &mut leader_out);
    }
    let mut replica = LockTable::new(1, TableLimits::default());
    let mut replica_out = Vec::new();
    for (now, cmd) in &log {
        replica.apply(*now, cmd, &mut replica_out);
    }
    assert!(leader_out.len() > 200, "the log did something: {} outputs", leader_out.len());
    assert_eq!(leader_out, replica_out);
    assert_eq!(leader.stats(), replica.stats());
    assert_eq!(leader.locks("", 0), replica.locks("", 0));
    assert_eq!(leader.next_session(), replica.next_session());
    assert_eq!(leader.check_invariants(), Ok(()));
}
