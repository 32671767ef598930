//! Lock table tests of issue 13's modes with literal ticks: shared locks with strict FIFO and
//! downgrade, counting semaphores, token-checked UNLOCK, and every refusal of a request for
//! what it asks. Every step is followed by the self-check.

use super::*;
use crate::protocol::{ErrorCode, Response};

const X: Mode = Mode::Exclusive;
const S: Mode = Mode::Shared;

fn permits(count: u32, limit: u32) -> Mode {
    Mode::Permits { count, limit }
}

/// `(session, request id, response)` of each output.
pub(super) type Out = Vec<(u64, u32, Response)>;

pub(super) fn acquired(token: u64) -> Response {
    Response::Acquired { token }
}

/// A table with sessions 1..=9 and first token 1.
pub(super) struct T {
    pub table: LockTable,
    out: Vec<Output>,
}

impl T {
    pub fn new() -> Self {
        let mut table = LockTable::new(1, TableLimits::default());
        for s in 1..=9 {
            table.apply(
                0,
                &Command::Attach { session: SessionId(s), label: format!("c{s}") },
                &mut Vec::new(),
            );
        }
        T { table, out: Vec::new() }
    }

    pub fn apply(&mut self, now: Tick, cmd: Command) -> Out {
        self.table.apply(now, &cmd, &mut self.out);
        if let Err(broken) = self.table.check_invariants() {
            panic!("after {cmd:?}: {broken}");
        }
        self.out.drain(..).map(|o| (o.session.0, o.request_id, o.response)).collect()
    }

    pub fn lock_opts(
        &mut self,
        now: Tick,
        s: u64,
        rid: u32,
        name: &str,
        timeout_ms: Option<u32>,
        opts: LockOpts,
    ) -> Out {
        let session = SessionId(s);
        let cmd = Command::Lock {
            session,
            request_id: rid,
            name: Name::from(name),
            timeout_ms,
            queue_max: None,
            opts,
        };
        self.apply(now, cmd)
    }

    pub fn lock(&mut self, now: Tick, s: u64, rid: u32, name: &str, mode: Mode) -> Out {
        self.lock_opts(now, s, rid, name, None, LockOpts { mode, ..LockOpts::default() })
    }

    pub fn lock_for(&mut self, now: Tick, s: u64, rid: u32, name: &str, mode: Mode, timeout_ms: u32) -> Out {
        self.lock_opts(now, s, rid, name, Some(timeout_ms), LockOpts { mode, ..LockOpts::default() })
    }

    fn unlock_token(&mut self, now: Tick, s: u64, rid: u32, name: &str, token: Option<u64>) -> Out {
        self.apply(
            now,
            Command::Unlock { session: SessionId(s), request_id: rid, name: Name::from(name), token },
        )
    }

    fn downgrade(&mut self, now: Tick, s: u64, rid: u32, name: &str, token: u64) -> Out {
        self.apply(
            now,
            Command::Downgrade { session: SessionId(s), request_id: rid, name: Name::from(name), token },
        )
    }

    pub fn unlock(&mut self, now: Tick, s: u64, rid: u32, name: &str) -> Out {
        self.unlock_token(now, s, rid, name, None)
    }
}

pub(super) fn error_code(out: &Out) -> Option<ErrorCode> {
    match &out[..] {
        [(_, _, Response::Error { code, .. })] => Some(*code),
        _ => None,
    }
}

#[test]
fn readers_share_and_a_waiting_writer_blocks_later_readers() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "r", S), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(1, 2, 1, "r", S), [(2, 1, acquired(2))], "a reader joins a reader");
    assert_eq!(t.lock(2, 3, 1, "r", X), [], "a writer waits for the readers");
    assert_eq!(t.lock(3, 4, 1, "r", S), [], "a reader behind a waiting writer waits too");
    assert_eq!(t.lock(4, 1, 2, "r", S), [(1, 2, Response::AlreadyAcquired { token: 1 })]);
    assert_eq!(t.unlock(5, 1, 3, "r"), [(1, 3, Response::Released)]);
    assert_eq!(t.unlock(6, 2, 2, "r"), [(2, 2, Response::Released), (3, 1, acquired(3))]);
    assert_eq!(t.unlock(7, 3, 2, "r"), [(3, 2, Response::Released), (4, 1, acquired(4))]);
    assert_eq!(t.unlock(8, 4, 2, "r"), [(4, 2, Response::Released)]);
    assert_eq!(t.table.stats().locks_held, 0, "the last reader out removes the lock");
}

#[test]
fn a_run_of_readers_at_the_head_is_granted_together_and_stops_at_a_writer() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "r", X), [(1, 1, acquired(1))]);
    for s in 2..=3 {
        assert_eq!(t.lock(1, s, 1, "r", S), []);
    }
    assert_eq!(t.lock(2, 4, 1, "r", X), []);
    assert_eq!(t.lock(3, 5, 1, "r", S), []);
    let out = t.unlock(10, 1, 2, "r");
    assert_eq!(out, [(1, 2, Response::Released), (2, 1, acquired(2)), (3, 1, acquired(3))]);
    assert_eq!(t.table.stats().waiters, 2, "the writer and the reader behind it still wait");
    assert_eq!(t.table.stats().grants_after_wait, 2);
    assert_eq!(t.unlock(11, 2, 2, "r"), [(2, 2, Response::Released)]);
    assert_eq!(t.unlock(12, 3, 2, "r"), [(3, 2, Response::Released), (4, 1, acquired(4))]);
    assert_eq!(t.unlock(13, 4, 2, "r"), [(4, 2, Response::Released), (5, 1, acquired(5))]);
}

#[test]
fn a_downgrade_keeps_the_token_and_lets_the_readers_at_the_head_in() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "d", X), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(1, 2, 1, "d", S), []);
    assert_eq!(t.lock(1, 3, 1, "d", S), []);
    assert_eq!(t.lock(1, 4, 1, "d", X), []);
    assert_eq!(t.lock(1, 5, 1, "d", S), []);
    assert_eq!(error_code(&t.lock(2, 1, 2, "d", S)), Some(ErrorCode::ModeConflict), "a LOCK is no downgrade");
    assert_eq!(error_code(&t.downgrade(2, 1, 3, "d", 2)), Some(ErrorCode::NotHolder), "another token");
    assert_eq!(error_code(&t.downgrade(2, 2, 1, "d", 1)), Some(ErrorCode::NotHolder), "a waiter");
    assert_eq!(error_code(&t.downgrade(2, 1, 3, "nope", 1)), Some(ErrorCode::NotHolder));
    let out = t.downgrade(2, 1, 4, "d", 1);
    assert_eq!(out, [(1, 4, Response::Downgraded), (2, 1, acquired(2)), (3, 1, acquired(3))]);
    assert_eq!(t.lock(3, 1, 5, "d", S), [(1, 5, Response::AlreadyAcquired { token: 1 })]);
    assert_eq!(error_code(&t.lock(3, 1, 6, "d", X)), Some(ErrorCode::ModeConflict), "no upgrade");
    assert_eq!(error_code(&t.downgrade(3, 1, 7, "d", 1)), Some(ErrorCode::ModeConflict), "shared already");
    assert_eq!(t.table.stats().waiters, 2, "the writer keeps its place before the last reader");
}

#[test]
fn check_tells_whether_a_token_holds_a_name_now() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "c", S), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(0, 2, 1, "c", S), [(2, 1, acquired(2))]);
    assert_eq!(t.lock(0, 3, 1, "c", X), []);
    let check = |t: &mut T, s, token| {
        t.apply(1, Command::Check { session: SessionId(s), request_id: 9, name: Name::from("c"), token })
    };
    assert_eq!(check(&mut t, 4, 1), [(4, 9, Response::Checked { held: true })], "anyone may ask");
    assert_eq!(check(&mut t, 4, 2), [(4, 9, Response::Checked { held: true })]);
    assert_eq!(check(&mut t, 4, 3), [(4, 9, Response::Checked { held: false })], "not issued yet");
    t.unlock(2, 1, 2, "c");
    assert_eq!(check(&mut t, 1, 1), [(1, 9, Response::Checked { held: false })], "released");
    t.unlock(3, 2, 2, "c");
    assert_eq!(check(&mut t, 4, 3), [(4, 9, Response::Checked { held: true })], "the writer's now");
    let other =
        t.apply(4, Command::Check { session: SessionId(4), request_id: 9, name: Name::from("x"), token: 3 });
    assert_eq!(other, [(4, 9, Response::Checked { held: false })], "a token holds only its own name");
}

#[test]
fn a_writer_leaving_the_head_lets_the_readers_behind_it_in() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "w", S), [(1, 1, acquired(1))]);
    assert_eq!(t.lock_for(0, 2, 1, "w", X, 10), []);
    assert_eq!(t.lock(1, 3, 1, "w", S), []);
    let out = t.apply(10, Command::Expire);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(out[0], (2, 1, Response::TimedOut { .. })), "{out:?}");
    assert_eq!(out[1], (3, 1, acquired(2)));

    assert_eq!(t.lock(11, 4, 1, "w", X), []);
    assert_eq!(t.lock(11, 5, 1, "w", S), []);
    let out = t.unlock(12, 4, 2, "w");
    assert_eq!(out, [(4, 1, Response::Cancelled), (4, 2, Response::Released), (5, 1, acquired(3))]);

    assert_eq!(t.lock(13, 6, 1, "w", X), []);
    assert_eq!(t.lock(13, 7, 1, "w", S), []);
    assert_eq!(t.apply(14, Command::Detach { session: SessionId(6) }), [(7, 1, acquired(4))]);

    assert_eq!(t.lock(15, 8, 1, "w", X), []);
    assert_eq!(t.lock(15, 9, 1, "w", S), []);
    let out = t.apply(16, Command::Reset { session: SessionId(8), request_id: 2 });
    assert_eq!(out, [(8, 1, Response::Cancelled), (9, 1, acquired(5)), (8, 2, Response::ResetOk)]);
}

#[test]
fn a_wait_behind_the_head_leaving_grants_nothing() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "w", S), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(0, 2, 1, "w", X), []);
    assert_eq!(t.lock_for(0, 3, 1, "w", S, 5), []);
    let out = t.apply(5, Command::Expire);
    assert!(matches!(out[..], [(3, 1, Response::TimedOut { .. })]), "{out:?}");
    assert_eq!(t.unlock(6, 1, 2, "w"), [(1, 2, Response::Released), (2, 1, acquired(2))]);
}

#[test]
fn semaphore_permits_are_granted_in_fifo_order_without_barging() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "s", permits(2, 3)), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(1, 2, 1, "s", permits(2, 3)), [], "2 of the 1 free permit: waits");
    assert_eq!(t.lock(2, 3, 1, "s", permits(1, 3)), [], "1 would fit, but the head waits first");
    let out = t.unlock(3, 1, 2, "s");
    assert_eq!(out, [(1, 2, Response::Released), (2, 1, acquired(2)), (3, 1, acquired(3))]);
    assert_eq!(t.lock(4, 4, 1, "s", permits(1, 3)), [], "all 3 permits are in use");
    assert_eq!(t.lock(4, 3, 2, "s", permits(1, 3)), [(3, 2, Response::AlreadyAcquired { token: 3 })]);
    assert_eq!(error_code(&t.lock(4, 3, 3, "s", permits(2, 3))), Some(ErrorCode::ModeConflict));
    assert_eq!(t.unlock(5, 3, 4, "s"), [(3, 4, Response::Released), (4, 1, acquired(4))]);
    assert_eq!(t.unlock(6, 2, 2, "s"), [(2, 2, Response::Released)]);
    assert_eq!(t.lock(7, 5, 1, "s", permits(2, 3)), [(5, 1, acquired(5))], "1 + 2 of 3");
}

#[test]
fn every_user_of_a_name_must_agree_on_its_kind_and_limit() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "s", permits(1, 3)), [(1, 1, acquired(1))]);
    for (s, mode) in [(2, permits(1, 4)), (3, X), (4, S), (1, permits(1, 2))] {
        let out = t.lock(1, s, 1, "s", mode);
        assert_eq!(error_code(&out), Some(ErrorCode::LimitMismatch), "{mode:?}: {out:?}");
    }
    assert_eq!(t.lock(1, 5, 1, "rw", S), [(5, 1, acquired(2))]);
    assert_eq!(error_code(&t.lock(2, 6, 1, "rw", permits(1, 1))), Some(ErrorCode::LimitMismatch));
    assert_eq!(t.table.stats().waiters, 0, "a refused request does not wait");
    assert_eq!(t.unlock(3, 1, 2, "s"), [(1, 2, Response::Released)]);
    assert_eq!(t.lock(4, 2, 2, "s", permits(4, 4)), [(2, 2, acquired(3))], "a free name takes any limit");
}

#[test]
fn bad_permit_counts_are_refused_before_the_table_is_looked_at() {
    let mut t = T::new();
    for mode in [permits(0, 3), permits(4, 3), permits(0, 0), permits(1, 0)] {
        let out = t.lock(0, 1, 1, "p", mode);
        assert_eq!(error_code(&out), Some(ErrorCode::BadValue), "{mode:?}: {out:?}");
    }
    assert_eq!(t.table.stats().locks_held, 0);
    assert_eq!(t.lock(1, 1, 2, "p", permits(3, 3)), [(1, 2, acquired(1))], "k = N is fine");
}

#[test]
fn a_lock_delay_above_the_maximum_is_a_bad_value() {
    let mut t = T::new();
    let too_long = LockOpts { lock_delay_ms: MAX_LOCK_DELAY_MS + 1, ..LockOpts::default() };
    assert_eq!(error_code(&t.lock_opts(0, 1, 1, "o", None, too_long)), Some(ErrorCode::BadValue));
    assert_eq!(t.table.stats().locks_held, 0, "nothing is granted without what was asked");
    let longest = LockOpts { lock_delay_ms: MAX_LOCK_DELAY_MS, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 2, "o", None, longest), [(1, 2, acquired(1))]);
}

#[test]
fn a_token_checked_unlock_releases_only_that_grant() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "k", S), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(0, 2, 1, "k", S), [(2, 1, acquired(2))]);
    assert_eq!(t.lock(0, 3, 1, "k", X), []);
    assert_eq!(t.unlock_token(1, 1, 2, "k", Some(2)), [(1, 2, Response::ReleaseFailed)], "another's token");
    assert_eq!(t.unlock_token(1, 3, 2, "k", Some(3)), [(3, 2, Response::ReleaseFailed)], "a waiter has none");
    assert_eq!(t.table.stats().waiters, 1, "and keeps waiting");
    assert_eq!(t.unlock_token(2, 1, 3, "k", Some(1)), [(1, 3, Response::Released)]);
    assert_eq!(t.unlock_token(3, 2, 2, "k", Some(2)), [(2, 2, Response::Released), (3, 1, acquired(3))]);
    assert_eq!(t.unlock_token(4, 3, 3, "nope", Some(3)), [(3, 3, Response::ReleaseFailed)]);
}

/// Grants of shared locks are linked into each holder's own list of holds: RESET and detach
/// release them in acquisition order whatever the other holders do in between.
#[test]
fn shared_grants_are_released_in_acquisition_order_by_reset_and_detach() {
    let mut t = T::new();
    let names = ["a", "b", "c", "d"];
    for (i, name) in names.iter().enumerate() {
        t.lock(i as Tick, 1, 1, name, S);
        t.lock(i as Tick, 2, 1, name, S);
    }
    assert_eq!(t.unlock(5, 2, 2, "b"), [(2, 2, Response::Released)]);
    assert_eq!(t.unlock(5, 1, 2, "c"), [(1, 2, Response::Released)]);
    for name in names {
        assert_eq!(t.lock(6, 3, 1, name, X), []);
    }
    let out = t.apply(7, Command::Reset { session: SessionId(1), request_id: 3 });
    // "a" and "d" are still held by 2; "b" was 1's alone.
    assert_eq!(out, [(3, 1, acquired(9)), (1, 3, Response::ResetOk)]);
    let out = t.apply(8, Command::Detach { session: SessionId(2) });
    assert_eq!(out, [(3, 1, acquired(10)), (3, 1, acquired(11)), (3, 1, acquired(12))]);
    assert_eq!(t.table.stats().locks_held, 4);
}

#[test]
fn the_mode_census_counts_names_grants_and_permits_of_each_mode() {
    let mut t = T::new();
    assert_eq!(t.table.mode_census(), ModeCensus::default(), "an empty table");
    t.lock(0, 1, 1, "x1", X);
    t.lock(0, 2, 1, "x2", X);
    t.lock(0, 3, 1, "x2", X);
    for s in 1..=3 {
        t.lock(1, s, 2, "r", S);
    }
    t.lock(2, 4, 1, "p", permits(2, 5));
    t.lock(2, 5, 1, "p", permits(1, 5));
    t.lock(2, 6, 1, "p", permits(3, 5));
    t.lock(2, 7, 1, "q", permits(1, 2));
    let census = t.table.mode_census();
    assert_eq!(census.locks, [2, 1, 2], "x1 x2; r; p q");
    assert_eq!(census.grants, [2, 3, 3], "a waiter of x2 and of p is no grant");
    assert_eq!((census.permits_in_use, census.permits_limit), (4, 7), "2 + 1 of 5, 1 of 2");
    t.unlock(3, 4, 2, "p");
    t.unlock(3, 1, 3, "x1");
    let census = t.table.mode_census();
    assert_eq!((census.locks, census.grants), ([1, 1, 2], [1, 3, 3]), "the waiter of p got 3");
    assert_eq!(census.permits_in_use, 5);
}

#[test]
fn a_long_run_of_readers_is_granted_in_batches_and_no_later_reader_passes_it() {
    let mut t = T::new();
    t.table.set_grant_batch(2);
    assert_eq!(t.lock(0, 1, 1, "r", X), [(1, 1, acquired(1))]);
    for s in 2..=6 {
        assert_eq!(t.lock(1, s, 1, "r", S), []);
    }
    assert_eq!(t.lock(2, 7, 1, "r", X), []);
    assert_eq!(t.lock(2, 8, 1, "r", S), []);
    let out = t.unlock(3, 1, 2, "r");
    assert_eq!(out, [(1, 2, Response::Released), (2, 1, acquired(2)), (3, 1, acquired(3))]);
    assert!(t.table.has_pending_releases(), "the rest of the run is left for the grant step");
    assert_eq!(t.lock(4, 9, 1, "r", S), [], "a reader arriving meanwhile queues behind the run");
    assert_eq!(t.apply(5, Command::Expire), [(4, 1, acquired(4)), (5, 1, acquired(5))]);
    assert_eq!(t.apply(6, Command::Expire), [(6, 1, acquired(6))], "the run ends at the writer");
    assert!(!t.table.has_pending_releases());
    assert_eq!(t.apply(7, Command::Expire), []);
    assert_eq!(t.table.stats().waiters, 3, "the writer and the two readers behind it");
}

#[test]
fn one_release_before_thousands_of_readers_grants_at_most_a_batch_per_step() {
    let mut t = T::new();
    let n = 2 * GRANT_BATCH as u64 + 500;
    // Set up without the self-check after every step (it walks the whole table).
    let mut out = Vec::new();
    for s in 10..10 + n {
        t.table.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut out);
    }
    assert_eq!(t.lock(0, 1, 1, "r", X), [(1, 1, acquired(1))]);
    for s in 10..10 + n {
        let cmd = Command::Lock {
            session: SessionId(s),
            request_id: 1,
            name: Name::from("r"),
            timeout_ms: None,
            queue_max: None,
            opts: LockOpts { mode: S, ..LockOpts::default() },
        };
        t.table.apply(1, &cmd, &mut out);
    }
    assert!(out.is_empty(), "every reader waits behind the writer");
    let mut granted = t.unlock(2, 1, 2, "r").len() - 1;
    assert_eq!(granted, GRANT_BATCH);
    let mut steps = 0;
    while t.table.has_pending_releases() {
        let out = t.apply(3, Command::Expire);
        assert!(out.len() <= GRANT_BATCH, "{} grants in one step", out.len());
        granted += out.len();
        steps += 1;
        assert!(steps <= 3, "it ends");
    }
    assert_eq!(granted as u64, n, "every reader is granted");
    assert_eq!(t.table.stats().waiters, 0);
}
