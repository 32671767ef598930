//! Tests of resumable sessions in the table (`suspend.rs`), with literal ticks: detach keeps
//! grants, waits and their order; outputs while detached are kept and replayed in order under
//! their request ids; the grace ends as a detach does; secrets, takeover and refusals.

use super::*;
use crate::protocol::{ErrorCode, LostReason, Response, Resumed, SessionOk};

const SECRET: [u8; 16] = [9; 16];

struct T {
    t: LockTable,
    out: Vec<Output>,
}

impl T {
    fn new() -> Self {
        T { t: LockTable::new(100, TableLimits::default()), out: Vec::new() }
    }

    /// Applies `cmd` at `now` and returns `(session, request id, response)` of what it output.
    fn run(&mut self, now: Tick, cmd: Command) -> Vec<(u64, u32, Response)> {
        self.out.clear();
        self.t.apply(now, &cmd, &mut self.out);
        self.out.iter().map(|o| (o.session.0, o.request_id, o.response.clone())).collect()
    }

    fn attach(&mut self, session: u64, label: &str) {
        assert!(self.run(0, Command::Attach { session: SessionId(session), label: label.into() }).is_empty());
    }

    fn open(&mut self, session: u64, grace_ms: u32) -> Vec<(u64, u32, Response)> {
        self.open_with(session, grace_ms, false)
    }

    /// SESSION_OPEN, with flags bit 0 (every wait skips while detached) when `skip`.
    fn open_with(&mut self, session: u64, grace_ms: u32, skip: bool) -> Vec<(u64, u32, Response)> {
        let session = SessionId(session);
        let secret = SECRET;
        self.run(
            0,
            Command::OpenSession { session, request_id: 1, grace_ms, secret, skip_while_detached: skip },
        )
    }
}

fn lock(session: u64, request_id: u32, name: &str, timeout_ms: Option<u32>) -> Command {
    lock_with(session, request_id, name, timeout_ms, LockOpts::default())
}

fn lock_with(session: u64, request_id: u32, name: &str, timeout_ms: Option<u32>, opts: LockOpts) -> Command {
    Command::Lock {
        session: SessionId(session),
        request_id,
        name: Name::from(name),
        timeout_ms,
        queue_max: None,
        opts,
    }
}

fn unlock(session: u64, request_id: u32, name: &str) -> Command {
    Command::Unlock { session: SessionId(session), request_id, name: Name::from(name), token: None }
}

fn suspend(session: u64) -> Command {
    Command::Suspend { session: SessionId(session) }
}

fn resume(session: u64, request_id: u32, from: u64, secret: [u8; 16]) -> Command {
    Command::Resume { session: SessionId(session), request_id, from: SessionId(from), secret }
}

fn resumed(replayed: u32) -> Response {
    Response::Resumed(Resumed { grace_ms: 1000, replayed })
}

#[test]
fn open_answers_the_session_id_secret_and_grace_and_refuses_a_busy_connection() {
    let mut t = T::new();
    t.attach(1, "a:1");
    let ok = SessionOk { session_id: 1, secret: SECRET, grace_ms: 1000 };
    assert_eq!(t.open(1, 1000), vec![(1, 1, Response::SessionOk(ok))]);
    assert!(t.t.is_resumable(SessionId(1)));
    let again = t.open(1, 1000);
    assert!(matches!(&again[0].2, Response::Error { code: ErrorCode::SessionState, .. }), "{again:?}");
    t.attach(2, "a:2");
    t.run(0, lock(2, 5, "x", None));
    let busy = t.open(2, 1000);
    assert!(matches!(&busy[0].2, Response::Error { code: ErrorCode::SessionState, .. }), "{busy:?}");
    t.attach(3, "a:3");
    assert_eq!(t.open(3, 0), vec![(3, 1, Response::SessionOk(SessionOk::NONE))]);
    assert!(!t.t.is_resumable(SessionId(3)), "grace 0 opens nothing");
    assert_eq!(t.t.session_stats().opened, 1);
}

/// The heart of it: a holder detaches, keeps its lock (the next LOCK queues), resumes with its
/// token, and its waiter's grant made while detached is replayed under the LOCK's request id.
#[test]
fn a_detached_session_keeps_its_grant_and_is_granted_its_wait_and_told_on_resume() {
    let mut t = T::new();
    for (s, label) in [(1, "a:1"), (2, "a:2"), (3, "a:3")] {
        t.attach(s, label);
    }
    t.open(1, 1000);
    assert_eq!(t.run(0, lock(1, 2, "held", None)), vec![(1, 2, Response::Acquired { token: 100 })]);
    assert_eq!(t.run(0, lock(2, 7, "wanted", None)), vec![(2, 7, Response::Acquired { token: 101 })]);
    assert!(t.run(0, lock(1, 3, "wanted", None)).is_empty(), "session 1 waits for `wanted`");
    assert!(t.run(10, suspend(1)).is_empty());
    assert_eq!(t.t.session_stats().detached, 1);
    assert_eq!(t.t.soonest_grace_left(10), Some(1001), "1000 ms and the tick of slack");
    assert_eq!(t.t.detached_sessions(20, 5)[0].grace_left_ms, 991);
    // Still held: another LOCK waits behind it (try once: TIMED_OUT, the queue names the holder).
    let probe = t.run(20, lock(3, 1, "held", Some(0)));
    assert_eq!(probe, vec![(3, 1, Response::TimedOut { queue: vec!["a:1 (detached)".into()] })]);
    // The wait's turn comes while detached: granted, and the answer kept, not output.
    assert_eq!(t.run(30, unlock(2, 8, "wanted")), vec![(2, 8, Response::Released)]);
    assert_eq!(t.t.detached_sessions(30, 10)[0].kept, 1);
    // A new connection (session 4) resumes it: RESUMED, then the grant under request id 3.
    t.attach(4, "a:4");
    let replay = t.run(40, resume(1, 9, 4, SECRET));
    assert_eq!(replay, vec![(1, 9, resumed(1)), (1, 3, Response::Acquired { token: 102 })]);
    assert_eq!(t.t.session_stats().detached, 0);
    assert_eq!(t.t.soonest_grace_left(40), None);
    // Same token for the lock it held across the loss; the label is the new connection's.
    assert_eq!(t.run(50, lock(1, 10, "held", None)), vec![(1, 10, Response::AlreadyAcquired { token: 100 })]);
    let probe = t.run(50, lock(3, 2, "held", Some(0)));
    assert_eq!(probe, vec![(3, 2, Response::TimedOut { queue: vec!["a:4".into()] })]);
    // The grace timer was cancelled: long after it would have ended, nothing happens.
    assert!(t.run(5000, Command::Expire).is_empty());
    assert_eq!(t.t.stats().locks_held, 2);
}

#[test]
fn the_grace_ends_one_tick_late_never_early_and_releases_to_the_next_waiter() {
    let mut t = T::new();
    t.attach(1, "a:1");
    t.attach(2, "a:2");
    t.open(1, 1000);
    t.run(0, lock(1, 2, "x", None));
    assert!(t.run(0, lock(2, 5, "x", None)).is_empty());
    t.run(100, suspend(1));
    assert!(t.run(1100, Command::Expire).is_empty(), "1000 ms after the loss (rounded down): not yet");
    assert_eq!(t.run(1101, Command::Expire), vec![(2, 5, Response::Acquired { token: 101 })]);
    assert_eq!(t.t.session_stats().expired, 1);
    assert_eq!(t.t.stats().connections, 1, "the expired session is forgotten");
    t.attach(3, "a:3");
    let late = t.run(1200, resume(1, 9, 3, SECRET));
    assert!(matches!(&late[0], (3, 9, Response::Error { code: ErrorCode::BadSession, .. })), "{late:?}");
}

#[test]
fn a_wrong_secret_or_unknown_id_is_refused_to_the_asker_and_changes_nothing() {
    let mut t = T::new();
    t.attach(1, "a:1");
    t.attach(2, "a:2");
    t.open(1, 1000);
    t.run(0, lock(1, 2, "x", None));
    t.run(10, suspend(1));
    let mut wrong = SECRET;
    wrong[15] ^= 1;
    for (session, secret) in [(1, wrong), (77, SECRET)] {
        let refused = t.run(20, resume(session, 9, 2, secret));
        assert!(
            matches!(&refused[..], [(2, 9, Response::Error { code: ErrorCode::BadSession, .. })]),
            "{refused:?}"
        );
    }
    assert_eq!(t.t.session_stats().resume_failures, 2);
    assert_eq!(t.t.session_stats().detached, 1, "still detached");
    // The asker stays a plain fresh session: it may resume rightly now.
    assert_eq!(t.run(30, resume(1, 10, 2, SECRET)), vec![(1, 10, resumed(0))]);
}

#[test]
fn resuming_a_live_session_tells_the_old_connection_first_and_moves_the_session() {
    let mut t = T::new();
    t.attach(1, "a:1");
    t.attach(2, "a:2");
    t.open(1, 1000);
    t.run(0, lock(1, 2, "x", None));
    let takeover = t.run(10, resume(1, 9, 2, SECRET));
    assert!(
        matches!(&takeover[0], (1, 0, Response::Error { code: ErrorCode::TakenOver, .. })),
        "{takeover:?}"
    );
    assert_eq!(takeover[1], (1, 9, resumed(0)));
    assert_eq!(t.t.session_stats().taken_over, 1);
    assert_eq!(t.t.stats().connections, 1, "the asker's fresh session is forgotten");
    // The asker may not resume from a session that is busy or has a session of its own.
    t.attach(3, "a:3");
    t.run(0, lock(3, 1, "y", None));
    let busy = t.run(20, resume(1, 4, 3, SECRET));
    assert!(matches!(&busy[0], (3, 4, Response::Error { code: ErrorCode::SessionState, .. })), "{busy:?}");
}

/// Outputs kept while detached come back in the order they happened: a wait's TIMED_OUT, then
/// a lease's LOST notice (request id 0), then a grant.
#[test]
fn replayed_outputs_keep_their_order_and_request_ids() {
    let mut t = T::new();
    for s in 1..=3 {
        t.attach(s, &format!("a:{s}"));
    }
    t.open(1, 10_000);
    let leased = LockOpts { lease_ms: Some(50), ..LockOpts::default() };
    assert_eq!(
        t.run(0, lock_with(1, 2, "leased", None, leased)),
        vec![(1, 2, Response::Acquired { token: 100 })]
    );
    t.run(0, lock(2, 1, "busy", None));
    t.run(0, lock(3, 1, "later", None));
    assert!(t.run(0, lock(1, 3, "busy", Some(20))).is_empty());
    assert!(t.run(0, lock(1, 4, "later", None)).is_empty());
    t.run(5, suspend(1));
    assert!(t.run(21, Command::Expire).is_empty(), "the TIMED_OUT is kept");
    assert!(t.run(51, Command::Expire).is_empty(), "the LOST is kept");
    t.run(60, unlock(3, 2, "later"));
    t.attach(4, "a:4");
    let replay = t.run(70, resume(1, 9, 4, SECRET));
    let lost = Response::Lost { token: 100, reason: LostReason::LeaseExpired, name: "leased".into() };
    let timed_out = Response::TimedOut { queue: vec!["a:2".into()] };
    let expect = vec![
        (1, 9, Response::Resumed(Resumed { grace_ms: 10_000, replayed: 3 })),
        (1, 3, timed_out),
        (1, 0, lost),
        (1, 4, Response::Acquired { token: 103 }),
    ];
    assert_eq!(replay, expect);
}

#[test]
fn detach_of_a_detached_session_drops_it_and_a_plain_suspend_is_a_detach() {
    let mut t = T::new();
    t.attach(1, "a:1");
    t.attach(2, "a:2");
    t.open(1, 1000);
    t.run(0, lock(1, 2, "x", None));
    t.run(0, lock(2, 2, "y", None));
    t.run(10, suspend(1));
    t.run(20, Command::Detach { session: SessionId(1) });
    assert_eq!(t.t.session_stats().detached, 0);
    // Session 2 never opened a session: Suspend releases at once, as Detach.
    t.run(30, suspend(2));
    assert_eq!(t.t.stats().locks_held, 0);
    assert_eq!(t.t.stats().connections, 0);
    assert!(t.run(5000, Command::Expire).is_empty(), "the grace timer went with the session");
}

/// A lease and the grace ending in the same `Expire` (the lease's timer first): the LOST was
/// made while detached, so it goes with the session instead of out to nobody.
#[test]
fn what_a_batch_sends_before_the_grace_ends_in_it_goes_with_the_session() {
    let mut t = T::new();
    t.attach(1, "a:1");
    t.open(1, 10);
    let leased = LockOpts { lease_ms: Some(5), ..LockOpts::default() };
    t.run(0, lock_with(1, 2, "x", None, leased));
    t.run(0, suspend(1));
    assert!(t.run(100, Command::Expire).is_empty(), "LOST, then the grace end: nothing out");
    assert_eq!(t.t.session_stats().expired, 1);
    assert_eq!(t.t.check_invariants(), Ok(()));
}

/// 10,000 sessions detach at once (a partition) and their graces end at the same tick: each
/// `Expire` ends at most `EXPIRE_BATCH` of them, so a turn of the loop stays bounded and the
/// bystander waiting behind them is granted only when its holder's grace ends.
#[test]
fn ten_thousand_graces_ending_together_are_ended_a_batch_per_turn() {
    let mut t = T::new();
    let n = 10_000u64;
    for s in 1..=n {
        t.attach(s, "p");
        t.open(s, 1000);
        t.run(0, lock(s, 2, &format!("k{s}"), None));
    }
    t.attach(n + 1, "bystander");
    assert!(t.run(0, lock(n + 1, 2, &format!("k{n}"), None)).is_empty());
    for s in 1..=n {
        assert!(t.run(5, suspend(s)).is_empty(), "a suspend is O(1) and says nothing");
    }
    assert_eq!(t.t.session_stats().detached, n as usize);
    let mut turns = 0;
    let mut granted = false;
    while t.t.session_stats().detached > 0 || t.t.has_pending_releases() {
        let before = t.t.session_stats().detached;
        let outputs = t.run(1006, Command::Expire);
        turns += 1;
        assert!(before - t.t.session_stats().detached <= EXPIRE_BATCH, "one batch per turn");
        granted |= outputs
            .iter()
            .any(|(s, rid, r)| (*s, *rid) == (n + 1, 2) && matches!(r, Response::Acquired { .. }));
        assert!(turns <= 100, "never ends");
    }
    assert!(turns >= (n as usize).div_ceil(EXPIRE_BATCH), "{turns} turns");
    assert!(granted, "the bystander is granted once its holder's grace ends");
    assert_eq!(t.t.stats().locks_held, 1);
}

/// The memory README "Limits and guarantees" states for a session: a plain one pays one
/// pointer; a resumable one a box of at most 96 bytes; a detached one also its grace timer, its
/// two labels, and at most 3 outputs of at most 128 bytes (plus a TIMED_OUT's queue) per hold
/// or wait it had.
#[test]
fn a_session_costs_what_the_readme_says() {
    use std::mem::size_of;
    assert_eq!(size_of::<Option<Box<super::suspend::Resumable>>>(), size_of::<usize>());
    assert!(size_of::<super::suspend::Resumable>() <= 96, "{}", size_of::<super::suspend::Resumable>());
    assert!(size_of::<Output>() <= 128, "{}", size_of::<Output>());
}

fn skipped(session: u64, request_id: u32) -> (u64, u32, Response) {
    (session, request_id, Response::error(ErrorCode::Skipped, "skipped while detached"))
}

const SKIP: LockOpts = LockOpts {
    mode: crate::locks::Mode::Exclusive,
    lease_ms: None,
    max_hold_ms: None,
    lock_delay_ms: 0,
    notify_contention: false,
    skip_while_detached: true,
};

/// A skipping wait whose turn comes while detached leaves the queue ungranted; the next
/// waiter is served in the same step, FIFO otherwise unchanged; the `skipped` comes back on
/// resume under the LOCK's request id; a non-skipping wait of the same session is granted.
#[test]
fn a_skipping_wait_whose_turn_comes_while_detached_is_skipped_and_the_next_waiter_served() {
    let mut t = T::new();
    for s in 1..=4 {
        t.attach(s, &format!("a:{s}"));
    }
    t.open(1, 1000);
    assert_eq!(t.run(0, lock(2, 1, "x", None)), vec![(2, 1, Response::Acquired { token: 100 })]);
    assert_eq!(t.run(0, lock(2, 2, "y", None)), vec![(2, 2, Response::Acquired { token: 101 })]);
    assert!(t.run(0, lock_with(1, 3, "x", Some(500), SKIP)).is_empty());
    assert!(t.run(0, lock(3, 1, "x", None)).is_empty(), "session 3 waits behind it");
    assert!(t.run(0, lock(1, 4, "y", None)).is_empty(), "a wait that did not ask to skip");
    assert!(t.run(10, suspend(1)).is_empty());
    // x's turn comes: session 1 is skipped, session 3 granted in the same step.
    assert_eq!(
        t.run(20, unlock(2, 5, "x")),
        vec![(2, 5, Response::Released), (3, 1, Response::Acquired { token: 102 })]
    );
    // y's turn comes: granted and kept, as before.
    assert_eq!(t.run(30, unlock(2, 6, "y")), vec![(2, 6, Response::Released)]);
    assert_eq!(t.t.session_stats().skipped, 1);
    assert_eq!(t.t.detached_sessions(30, 10)[0].kept, 2);
    // The skipped wait's timer went with it: its timeout passes and nothing more is kept.
    assert!(t.run(600, Command::Expire).is_empty());
    t.attach(5, "a:5");
    let replay = t.run(700, resume(1, 9, 5, SECRET));
    assert_eq!(replay, vec![(1, 9, resumed(2)), skipped(1, 3), (1, 4, Response::Acquired { token: 103 })]);
    assert_eq!(t.run(700, Command::Expire), vec![]);
    assert_eq!(t.t.check_invariants(), Ok(()));
}

/// SESSION_OPEN flags bit 0 makes every wait of the session skip, plain LOCK's too; a skipping
/// wait whose turn comes while attached is granted; at the head but not fitting, it stays.
#[test]
fn the_session_default_skips_plain_locks_and_attached_skipping_waits_are_granted() {
    let mut t = T::new();
    for s in 1..=3 {
        t.attach(s, &format!("a:{s}"));
    }
    assert_eq!(
        t.open_with(1, 1000, true)[0].2,
        Response::SessionOk(SessionOk { session_id: 1, secret: SECRET, grace_ms: 1000 })
    );
    t.run(0, lock(2, 1, "x", None));
    t.run(0, lock(2, 2, "y", None));
    assert!(t.run(0, lock(1, 3, "x", None)).is_empty());
    assert!(t.run(0, lock(1, 4, "y", None)).is_empty());
    // Attached: the turn of a skipping wait is a grant.
    assert_eq!(
        t.run(5, unlock(2, 5, "x")),
        vec![(2, 5, Response::Released), (1, 3, Response::Acquired { token: 102 })]
    );
    // Detached with a wait at the head that does not fit yet: it keeps its place.
    t.run(10, suspend(1));
    assert!(t.run(20, lock(3, 1, "y", None)).is_empty());
    assert!(t.run(30, Command::Expire).is_empty());
    // Its turn comes: skipped, and the lock goes to session 3 behind it.
    assert_eq!(
        t.run(40, unlock(2, 6, "y")),
        vec![(2, 6, Response::Released), (3, 1, Response::Acquired { token: 103 })]
    );
    // The grace runs out: the kept `skipped` goes with the session, its grant of x is released.
    assert!(t.run(1011, Command::Expire).is_empty());
    assert_eq!(t.t.session_stats().expired, 1);
    assert_eq!(t.run(1020, lock(3, 2, "x", Some(0))), vec![(3, 2, Response::Acquired { token: 104 })]);
}

/// Skipping the last waiter removes a lock no one holds; a skip never grants past a waiter
/// that does not fit (the writer behind skipped readers waits for the remaining reader).
#[test]
fn a_skipped_last_waiter_removes_the_lock_and_fifo_holds_across_a_skip() {
    let mut t = T::new();
    for s in 1..=4 {
        t.attach(s, &format!("a:{s}"));
    }
    t.open(1, 1000);
    t.run(0, lock(2, 1, "solo", None));
    assert!(t.run(0, lock_with(1, 2, "solo", None, SKIP)).is_empty());
    let shared = LockOpts { mode: crate::locks::Mode::Shared, ..LockOpts::default() };
    let shared_skip = LockOpts { mode: crate::locks::Mode::Shared, ..SKIP };
    t.run(0, lock(2, 3, "rw", None));
    assert!(t.run(0, lock_with(1, 4, "rw", None, shared_skip)).is_empty());
    assert!(t.run(0, lock_with(3, 1, "rw", None, shared)).is_empty());
    assert!(t.run(0, lock(4, 1, "rw", None)).is_empty(), "a writer behind the readers");
    t.run(10, suspend(1));
    assert_eq!(t.run(20, unlock(2, 5, "solo")), vec![(2, 5, Response::Released)]);
    assert_eq!(t.t.locks("", 0), t.t.locks("rw", 0), "`solo` is gone");
    // rw: session 1's shared wait is skipped, session 3 granted, the writer still waits.
    assert_eq!(
        t.run(30, unlock(2, 6, "rw")),
        vec![(2, 6, Response::Released), (3, 1, Response::Acquired { token: 102 })]
    );
    assert_eq!(
        t.run(40, unlock(3, 2, "rw")),
        vec![(3, 2, Response::Released), (4, 1, Response::Acquired { token: 103 })]
    );
    t.attach(5, "a:5");
    assert_eq!(t.run(50, resume(1, 9, 5, SECRET)), vec![(1, 9, resumed(2)), skipped(1, 2), skipped(1, 4)]);
    assert_eq!(t.t.session_stats().skipped, 2);
    assert_eq!(t.t.check_invariants(), Ok(()));
}

/// SESSIONS: nothing while none is detached; soonest grace end first with literal ticks,
/// holds and waits counted, `max` bounding it with `truncated`.
#[test]
fn sessions_within_lists_the_detached_soonest_grace_end_first() {
    let mut t = T::new();
    for s in 1..=3 {
        t.attach(s, &format!("a:{s}"));
    }
    assert_eq!(t.t.sessions_within(0, 0, 65536), Response::Sessions { sessions: vec![], truncated: false });
    t.open(1, 1000);
    t.open(2, 500);
    t.run(0, lock(1, 2, "x", None));
    t.run(0, lock(3, 1, "y", None));
    assert!(t.run(0, lock(1, 3, "y", None)).is_empty());
    t.run(0, lock(2, 2, "z", None));
    t.run(100, suspend(1));
    t.run(200, suspend(2));
    let entry = |label: &str, session_id, grace_left_ms, held, waiting| crate::protocol::DetachedSession {
        label: label.into(),
        session_id,
        grace_left_ms,
        held,
        waiting,
        kept: 0,
    };
    // Session 2's grace ends at 701, session 1's at 1101.
    let both = vec![entry("a:2", 2, 401, 1, 0), entry("a:1", 1, 801, 1, 1)];
    assert_eq!(t.t.sessions_within(300, 0, 65536), Response::Sessions { sessions: both, truncated: false });
    let first = vec![entry("a:2", 2, 401, 1, 0)];
    assert_eq!(t.t.sessions_within(300, 1, 65536), Response::Sessions { sessions: first, truncated: true });
    // A frame with room for one entry (5 + 1 + 4 + 2 + 3 + 24 bytes): cut, and it says so.
    let first = vec![entry("a:2", 2, 401, 1, 0)];
    assert_eq!(t.t.sessions_within(300, 0, 39), Response::Sessions { sessions: first, truncated: true });
    // Session 2's grace ends: only session 1 is left.
    t.run(701, Command::Expire);
    let one = vec![entry("a:1", 1, 399, 1, 1)];
    assert_eq!(t.t.sessions_within(702, 0, 65536), Response::Sessions { sessions: one, truncated: false });
}

/// A skip counts against the grant batch (PROTOCOL.md §6.7): with a batch of 1, the release
/// skips the detached head and leaves the next reader at the head for the next grant step,
/// which serves the run on, one a turn, in FIFO order.
#[test]
fn a_skip_counts_against_the_grant_batch_and_the_grant_step_goes_on() {
    let mut t = T::new();
    t.t.set_grant_batch(1);
    for s in 1..=4 {
        t.attach(s, &format!("a:{s}"));
    }
    t.open(1, 1000);
    let shared = LockOpts { mode: crate::locks::Mode::Shared, ..LockOpts::default() };
    let shared_skip = LockOpts { mode: crate::locks::Mode::Shared, ..SKIP };
    t.run(0, lock(4, 1, "rw", None));
    assert!(t.run(0, lock_with(1, 2, "rw", None, shared_skip)).is_empty());
    assert!(t.run(0, lock_with(2, 1, "rw", None, shared)).is_empty());
    assert!(t.run(0, lock_with(3, 1, "rw", None, shared)).is_empty());
    t.run(10, suspend(1));
    assert_eq!(t.run(20, unlock(4, 2, "rw")), vec![(4, 2, Response::Released)]);
    assert_eq!(t.t.session_stats().skipped, 1);
    assert_eq!(t.run(21, Command::Expire), vec![(2, 1, Response::Acquired { token: 101 })]);
    assert_eq!(t.run(22, Command::Expire), vec![(3, 1, Response::Acquired { token: 102 })]);
    assert_eq!(t.t.check_invariants(), Ok(()));
}
