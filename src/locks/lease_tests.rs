//! Lock table tests of leases, `max_hold`, RENEW and LOST with literal ticks (issue 13,
//! PROTOCOL.md §6.9). Every step is followed by the self-check, which also checks each lease
//! timer against its grant.

use super::mode_tests::{acquired, error_code, T};
use super::*;
use crate::protocol::{ErrorCode, LostReason, Response, NOTICE_REQUEST_ID};

fn leased(lease_ms: Option<u32>, max_hold_ms: Option<u32>) -> LockOpts {
    LockOpts { lease_ms, max_hold_ms, ..LockOpts::default() }
}

fn lost(token: u64, reason: LostReason, name: &str) -> Response {
    Response::Lost { token, reason, name: name.to_owned() }
}

fn renew(t: &mut T, now: Tick, s: u64, rid: u32, name: &str, token: u64) -> Vec<(u64, u32, Response)> {
    t.apply(now, Command::Renew { session: SessionId(s), request_id: rid, name: Name::from(name), token })
}

#[test]
fn an_unrenewed_lease_ends_with_lost_and_the_next_waiter_is_granted() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "l", None, leased(Some(100), None)), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(5, 2, 1, "l", Mode::Exclusive), []);
    assert_eq!(t.table.next_deadline().map(|d| d <= 101), Some(true));
    assert_eq!(t.apply(100, Command::Expire), []);
    let out = t.apply(101, Command::Expire);
    assert_eq!(out, [(1, NOTICE_REQUEST_ID, lost(1, LostReason::LeaseExpired, "l")), (2, 1, acquired(2))]);
    assert_eq!(t.table.stats().lost, 1);
    assert_eq!(
        t.unlock(102, 1, 2, "l"),
        [(1, 2, lost(1, LostReason::LeaseExpired, "l"))],
        "the next request says so"
    );
    assert_eq!(t.unlock(103, 1, 3, "l"), [(1, 3, Response::ReleaseFailed)], "once");
    assert_eq!(t.table.next_deadline(), None, "the plain grant has no timer");
}

#[test]
fn renew_restarts_the_lease_but_never_past_max_hold() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "r", None, leased(Some(100), Some(250))), [(1, 1, acquired(1))]);
    assert_eq!(renew(&mut t, 80, 1, 2, "r", 1), [(1, 2, Response::Renewed { ends_in_ms: Some(100) })]);
    assert_eq!(t.apply(100, Command::Expire), [], "renewed at 80: ends at 181");
    assert_eq!(renew(&mut t, 170, 1, 3, "r", 1), [(1, 3, Response::Renewed { ends_in_ms: Some(80) })]);
    assert_eq!(t.apply(250, Command::Expire), []);
    assert_eq!(t.apply(251, Command::Expire), [(1, NOTICE_REQUEST_ID, lost(1, LostReason::MaxHold, "r"))]);
    assert_eq!(renew(&mut t, 252, 1, 4, "r", 1), [(1, 4, lost(1, LostReason::MaxHold, "r"))]);
    assert_eq!(error_code(&renew(&mut t, 253, 1, 5, "r", 1)), Some(ErrorCode::NotHolder));
    assert_eq!(t.table.stats().locks_held, 0);
}

#[test]
fn renew_answers_the_end_of_a_grant_without_a_lease_and_refuses_strangers() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "plain", Mode::Exclusive), [(1, 1, acquired(1))]);
    assert_eq!(renew(&mut t, 1, 1, 2, "plain", 1), [(1, 2, Response::Renewed { ends_in_ms: None })]);
    assert_eq!(t.lock_opts(10, 2, 1, "budget", None, leased(None, Some(50))), [(2, 1, acquired(2))]);
    assert_eq!(renew(&mut t, 30, 2, 2, "budget", 2), [(2, 2, Response::Renewed { ends_in_ms: Some(30) })]);
    assert_eq!(error_code(&renew(&mut t, 31, 2, 3, "budget", 1)), Some(ErrorCode::NotHolder), "other token");
    assert_eq!(
        error_code(&renew(&mut t, 31, 3, 1, "budget", 2)),
        Some(ErrorCode::NotHolder),
        "other session"
    );
    assert_eq!(error_code(&renew(&mut t, 31, 1, 3, "none", 1)), Some(ErrorCode::NotHolder), "no such lock");
}

#[test]
fn a_waiter_gets_its_lease_when_granted_and_release_paths_drop_it() {
    let mut t = T::new();
    assert_eq!(t.lock(0, 1, 1, "w", Mode::Shared), [(1, 1, acquired(1))]);
    assert_eq!(t.lock_opts(0, 2, 1, "w", None, leased(Some(50), None)), [], "a writer waits behind");
    assert_eq!(t.unlock(10, 1, 2, "w"), [(1, 2, Response::Released), (2, 1, acquired(2))]);
    assert_eq!(t.apply(60, Command::Expire), [], "the lease runs from the grant, not the request");
    assert_eq!(
        t.apply(61, Command::Expire),
        [(2, NOTICE_REQUEST_ID, lost(2, LostReason::LeaseExpired, "w"))]
    );

    // UNLOCK, RESET and detach each end a leased grant and its timer.
    for (s, end) in [(3, 0), (4, 1), (5, 2)] {
        assert_eq!(t.lock_opts(100, s, 1, "w", None, leased(Some(50), Some(70))).len(), 1);
        let out = match end {
            0 => t.unlock(101, s, 2, "w"),
            1 => t.apply(101, Command::Reset { session: SessionId(s), request_id: 2 }),
            _ => t.apply(101, Command::Detach { session: SessionId(s) }),
        };
        assert!(out.iter().all(|(_, _, r)| !matches!(r, Response::Lost { .. })), "{out:?}");
        assert_eq!(t.table.next_deadline(), None, "no lease timer outlives its grant");
    }
    assert_eq!(t.apply(200, Command::Expire), []);
}

#[test]
fn a_lock_of_the_name_forgets_the_loss() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "f", None, leased(Some(10), None)), [(1, 1, acquired(1))]);
    assert_eq!(t.apply(11, Command::Expire).len(), 1);
    assert_eq!(t.lock(12, 1, 2, "f", Mode::Exclusive), [(1, 2, acquired(2))]);
    assert_eq!(t.unlock(13, 1, 3, "f"), [(1, 3, Response::Released)], "the new grant, not the loss");
}

#[test]
fn a_session_remembers_a_bounded_number_of_losses() {
    let mut t = T::new();
    let n = LOST_MEMORY as u64 + 1;
    for i in 0..n {
        let name = format!("m{i}");
        assert_eq!(t.lock_opts(0, 1, 1, &name, None, leased(Some(5), None)), [(1, 1, acquired(i + 1))]);
    }
    assert_eq!(t.apply(6, Command::Expire).len(), n as usize, "every loss is told");
    assert_eq!(t.unlock(7, 1, 2, "m0"), [(1, 2, Response::ReleaseFailed)], "the oldest is forgotten");
    assert_eq!(t.unlock(7, 1, 3, "m1"), [(1, 3, lost(2, LostReason::LeaseExpired, "m1"))]);
}

#[test]
fn a_gone_holder_loses_without_a_notice() {
    let mut t = T::new();
    t.table.set_batches(1000, 1);
    for name in ["g1", "g2", "g3"] {
        assert_eq!(t.lock_opts(0, 1, 1, name, None, leased(Some(10), None)).len(), 1);
    }
    // Release batch 1: the detach releases "g1", the step at 11 "g2", and "g3" is still held
    // by the gone session when its lease ends.
    assert_eq!(t.apply(1, Command::Detach { session: SessionId(1) }), []);
    assert_eq!(t.apply(11, Command::Expire), [], "nobody to tell");
    assert_eq!(t.table.stats().lost, 1);
    assert_eq!(t.table.stats().locks_held, 0);
    assert!(!t.table.has_pending_releases() || t.apply(12, Command::Expire).is_empty());
}

#[test]
fn a_downgrade_of_a_lost_grant_is_answered_lost_even_once_the_lock_is_gone() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "d", None, leased(Some(10), None)), [(1, 1, acquired(1))]);
    assert_eq!(t.apply(11, Command::Expire).len(), 1);
    assert_eq!(t.table.stats().locks_held, 0);
    let downgrade =
        Command::Downgrade { session: SessionId(1), request_id: 2, name: Name::from("d"), token: 1 };
    assert_eq!(t.apply(12, downgrade.clone()), [(1, 2, lost(1, LostReason::LeaseExpired, "d"))]);
    assert_eq!(error_code(&t.apply(13, downgrade)), Some(ErrorCode::NotHolder));
}

fn delayed(lock_delay_ms: u32, lease_ms: Option<u32>) -> LockOpts {
    LockOpts { lock_delay_ms, lease_ms, ..LockOpts::default() }
}

#[test]
fn a_vanished_holder_keeps_the_name_for_its_lock_delay_and_waiters_keep_their_places() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "d", None, delayed(50, None)), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(1, 2, 1, "d", Mode::Exclusive), []);
    assert_eq!(t.apply(10, Command::Detach { session: SessionId(1) }), [], "nothing granted yet");
    assert_eq!((t.table.stats().locks_held, t.table.stats().waiters), (0, 1), "held by no one, yet taken");
    let out = t.lock_for(11, 3, 1, "d", Mode::Exclusive, 0);
    assert!(matches!(out[..], [(3, 1, Response::TimedOut { .. })]), "{out:?}");
    assert_eq!(t.apply(60, Command::Expire), []);
    assert_eq!(t.apply(61, Command::Expire), [(2, 1, acquired(2))], "the first waiter, at the delay's end");
}

#[test]
fn unlock_and_reset_are_normal_ends_without_lock_delay() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "u", None, delayed(50, None)), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(0, 2, 1, "u", Mode::Exclusive), []);
    assert_eq!(t.unlock(1, 1, 2, "u"), [(1, 2, Response::Released), (2, 1, acquired(2))]);
    assert_eq!(t.lock_opts(2, 3, 1, "r", None, delayed(50, None)), [(3, 1, acquired(3))]);
    assert_eq!(t.lock(2, 4, 1, "r", Mode::Exclusive), []);
    let out = t.apply(3, Command::Reset { session: SessionId(3), request_id: 2 });
    assert_eq!(out, [(4, 1, acquired(4)), (3, 2, Response::ResetOk)]);
    assert_eq!(t.table.next_deadline(), None);
}

#[test]
fn a_lease_that_runs_out_is_followed_by_its_lock_delay() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(0, 1, 1, "l", None, delayed(30, Some(10))), [(1, 1, acquired(1))]);
    assert_eq!(t.lock(1, 2, 1, "l", Mode::Exclusive), []);
    assert_eq!(
        t.apply(11, Command::Expire),
        [(1, NOTICE_REQUEST_ID, lost(1, LostReason::LeaseExpired, "l"))]
    );
    assert_eq!(t.apply(41, Command::Expire), []);
    assert_eq!(t.apply(42, Command::Expire), [(2, 1, acquired(2))]);
}

#[test]
fn a_lock_delay_stops_every_grant_but_the_other_holders_keep_theirs() {
    let mut t = T::new();
    let delayed_reader = LockOpts { mode: Mode::Shared, lock_delay_ms: 20, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "s", None, delayed_reader).len(), 1);
    assert_eq!(t.lock(0, 2, 1, "s", Mode::Shared), [(2, 1, acquired(2))]);
    assert_eq!(t.apply(1, Command::Detach { session: SessionId(1) }), []);
    assert_eq!(t.lock(2, 3, 1, "s", Mode::Shared), [], "even a reader waits during the delay");
    assert_eq!(t.lock(2, 4, 1, "s", Mode::Exclusive), []);
    assert_eq!(t.unlock(3, 2, 2, "s"), [(2, 2, Response::Released)], "the other reader kept its grant");
    assert_eq!(t.table.stats().locks_held, 0, "held by no one, yet not free");
    assert_eq!(t.apply(21, Command::Expire), []);
    assert_eq!(t.apply(22, Command::Expire), [(3, 1, acquired(3))], "the queue moves on in order");
    assert_eq!(t.unlock(23, 3, 2, "s"), [(3, 2, Response::Released), (4, 1, acquired(4))]);
}

#[test]
fn the_latest_of_several_lock_delays_counts_and_an_idle_delayed_name_is_not_listed() {
    let mut t = T::new();
    let opts = |ms| LockOpts { mode: Mode::Shared, lock_delay_ms: ms, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "n", None, opts(30)).len(), 1);
    assert_eq!(t.lock_opts(0, 2, 1, "n", None, opts(10)).len(), 1);
    assert_eq!(t.apply(1, Command::Detach { session: SessionId(1) }), []);
    assert_eq!(t.apply(2, Command::Detach { session: SessionId(2) }), [], "ends at 13, before 32");
    assert_eq!(t.table.locks("", 0), Response::Locks { locks: Vec::new(), truncated: false });
    assert_eq!(t.lock_for(15, 3, 1, "n", Mode::Exclusive, 0).len(), 1, "a try-once request times out");
    assert_eq!(t.apply(31, Command::Expire), []);
    assert_eq!(t.lock(32, 3, 2, "n", Mode::Exclusive), [], "still in its delay at 32 until the timer runs");
    assert_eq!(t.apply(32, Command::Expire), [(3, 2, acquired(3))]);
    assert_eq!(t.unlock(33, 3, 3, "n"), [(3, 3, Response::Released)]);
    assert_eq!(t.table.stats().locks_held, 0, "the name went with its last grant");
}

#[test]
fn a_lease_ending_in_the_same_batch_as_a_delay_keeps_the_name_for_its_own_delay() {
    // Both timers are due at 11 and leave the wheel together: the lease's end (first, as it
    // was set first) moves the delay to 42 after the old delay timer was already taken off.
    // That stale timer must neither end the new delay nor be left to fire on the wheel.
    let mut t = T::new();
    let reader = |lease_ms, lock_delay_ms| LockOpts {
        mode: Mode::Shared,
        lease_ms,
        lock_delay_ms,
        ..LockOpts::default()
    };
    assert_eq!(t.lock_opts(0, 1, 1, "z", None, reader(Some(10), 30)).len(), 1);
    assert_eq!(t.lock_opts(0, 2, 1, "z", None, reader(None, 10)).len(), 1);
    assert_eq!(t.apply(0, Command::Detach { session: SessionId(2) }), []);
    assert_eq!(t.lock(1, 3, 1, "z", Mode::Exclusive), []);
    assert_eq!(
        t.apply(11, Command::Expire),
        [(1, NOTICE_REQUEST_ID, lost(1, LostReason::LeaseExpired, "z"))]
    );
    assert_eq!(t.apply(41, Command::Expire), [], "the lease's lock-delay runs to 42");
    assert_eq!(t.apply(42, Command::Expire), [(3, 1, acquired(3))]);
    assert_eq!(t.table.next_deadline(), None, "no timer is left behind");
}

fn revoke(t: &mut T, now: Tick, s: u64, name: &str, token: Option<u64>) -> Vec<(u64, u32, Response)> {
    t.apply(now, Command::Revoke { session: SessionId(s), request_id: 9, name: Name::from(name), token })
}

#[test]
fn revoke_ends_one_grant_or_all_with_lost_revoked_and_starts_the_lock_delay() {
    let mut t = T::new();
    let shared = LockOpts { mode: Mode::Shared, lock_delay_ms: 50, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "v", None, shared), [(1, 1, acquired(1))]);
    assert_eq!(t.lock_opts(0, 2, 1, "v", None, shared), [(2, 1, acquired(2))]);
    assert_eq!(t.lock(0, 3, 1, "v", Mode::Exclusive), []);
    assert_eq!(t.lock(0, 4, 1, "v", Mode::Exclusive), []);
    let out = revoke(&mut t, 1, 9, "v", Some(2));
    assert_eq!(
        out,
        [(2, NOTICE_REQUEST_ID, lost(2, LostReason::Revoked, "v")), (9, 9, Response::Revoked { count: 1 })]
    );
    assert_eq!(revoke(&mut t, 1, 9, "v", Some(2)), [(9, 9, Response::Revoked { count: 0 })], "gone already");
    let out = revoke(&mut t, 2, 9, "v", None);
    assert_eq!(
        out,
        [(1, NOTICE_REQUEST_ID, lost(1, LostReason::Revoked, "v")), (9, 9, Response::Revoked { count: 1 })]
    );
    assert_eq!(t.apply(52, Command::Expire), [], "the later revoke's delay counts");
    assert_eq!(t.apply(53, Command::Expire), [(3, 1, acquired(3))], "not revoked with the old holders");
    assert_eq!(t.unlock(54, 1, 2, "v"), [(1, 2, lost(1, LostReason::Revoked, "v"))]);
    assert_eq!(revoke(&mut t, 55, 9, "nothing", None), [(9, 9, Response::Revoked { count: 0 })]);
}

fn contended(token: u64, name: &str) -> Response {
    Response::Contended { token, name: name.to_owned() }
}

#[test]
fn a_holder_that_asked_is_told_once_when_someone_waits_behind_it() {
    let mut t = T::new();
    let notify = |mode| LockOpts { mode, notify_contention: true, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "c", None, notify(Mode::Shared)), [(1, 1, acquired(1))]);
    assert_eq!(
        t.lock(0, 2, 1, "c", Mode::Shared),
        [(2, 1, acquired(2))],
        "a reader beside it is no contention"
    );
    assert_eq!(t.lock(1, 3, 1, "c", Mode::Exclusive), [(1, NOTICE_REQUEST_ID, contended(1, "c"))]);
    assert_eq!(t.lock(2, 4, 1, "c", Mode::Exclusive), [], "at most one per grant");
    // A grant made while requests wait is contended from the start, just after its ACQUIRED.
    assert_eq!(t.lock_opts(3, 5, 1, "c", None, notify(Mode::Exclusive)), []);
    assert_eq!(t.unlock(4, 1, 2, "c"), [(1, 2, Response::Released)]);
    assert_eq!(t.unlock(4, 2, 2, "c"), [(2, 2, Response::Released), (3, 1, acquired(3))]);
    assert_eq!(t.unlock(5, 3, 2, "c"), [(3, 2, Response::Released), (4, 1, acquired(4))]);
    let out = t.unlock(6, 4, 2, "c");
    assert_eq!(out, [(4, 2, Response::Released), (5, 1, acquired(5))], "nobody waits behind the last");
    assert_eq!(t.lock(7, 6, 1, "c", Mode::Shared), [(5, NOTICE_REQUEST_ID, contended(5, "c"))]);
    assert_eq!(t.lock(8, 7, 1, "c", Mode::Exclusive), []);
    let out = t.unlock(9, 5, 2, "c");
    assert_eq!(out, [(5, 2, Response::Released), (6, 1, acquired(6))]);
    let notified_later = t.lock_opts(10, 8, 1, "c2", None, notify(Mode::Exclusive));
    assert_eq!(notified_later, [(8, 1, acquired(7))]);
    assert_eq!(t.lock(10, 9, 1, "c2", Mode::Exclusive), [(8, NOTICE_REQUEST_ID, contended(7, "c2"))]);
}

#[test]
fn a_grant_made_while_others_wait_is_contended_just_after_its_acquired() {
    let mut t = T::new();
    let notify = LockOpts { notify_contention: true, ..LockOpts::default() };
    assert_eq!(t.lock(0, 1, 1, "g", Mode::Exclusive), [(1, 1, acquired(1))]);
    assert_eq!(t.lock_opts(0, 2, 1, "g", None, notify), []);
    assert_eq!(t.lock(0, 3, 1, "g", Mode::Exclusive), [], "the plain holder is not told");
    let out = t.unlock(1, 1, 2, "g");
    assert_eq!(
        out,
        [(1, 2, Response::Released), (2, 1, acquired(2)), (2, NOTICE_REQUEST_ID, contended(2, "g"))]
    );
}

#[test]
fn the_detail_of_a_lock_shows_every_grant_and_wait_with_its_mode() {
    use crate::protocol::{HolderInfo, LockDetail, Mode as Wire, WaiterInfo};
    let mut t = T::new();
    let leased_reader = LockOpts { mode: Mode::Shared, lease_ms: Some(100), ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "x", None, leased_reader).len(), 1);
    assert_eq!(t.lock(5, 2, 1, "x", Mode::Shared).len(), 1);
    assert_eq!(t.lock(6, 3, 1, "x", Mode::Exclusive), []);
    let holder = |s: u64, token, held_ms, ends_in_ms| HolderInfo {
        label: format!("c{s}"),
        mode: Wire::Shared,
        permits: 0,
        token,
        held_ms,
        ends_in_ms,
    };
    let expected = LockDetail {
        name: "x".to_owned(),
        limit: 0,
        holders: vec![holder(1, 1, 10, Some(90)), holder(2, 2, 5, None)],
        waiters: vec![WaiterInfo { label: "c3".to_owned(), mode: Wire::Exclusive, permits: 0 }],
    };
    assert_eq!(t.table.lock_detail(10, "x"), Some(expected));
    assert_eq!(t.lock(10, 4, 1, "sem", Mode::Permits { count: 2, limit: 5 }).len(), 1);
    let sem = t.table.lock_detail(10, "sem").expect("held");
    assert_eq!((sem.limit, sem.holders[0].mode, sem.holders[0].permits), (5, Wire::Semaphore, 2));
    assert_eq!(t.table.lock_detail(10, "none"), None);
}

/// Ticks are rounded down: a grant made "at tick 7" may have been made at 7.9 ms, so a 5 ms
/// lease, hold budget or lock-delay must still run at tick 12 (4.1 ms later at worst) and may
/// end at 13. Without the slack tick each of these ended at 12, up to 1 ms early.
#[test]
fn lease_hold_budget_and_lock_delay_never_end_before_their_span_has_passed() {
    let mut t = T::new();
    assert_eq!(t.lock_opts(7, 1, 1, "lease", None, leased(Some(5), None)), [(1, 1, acquired(1))]);
    assert_eq!(t.lock_opts(7, 2, 1, "hold", None, leased(None, Some(5))), [(2, 1, acquired(2))]);
    assert_eq!(t.lock_opts(7, 3, 1, "delay", None, delayed(5, None)), [(3, 1, acquired(3))]);
    assert_eq!(renew(&mut t, 7, 1, 2, "lease", 1), [(1, 2, Response::Renewed { ends_in_ms: Some(5) })]);
    assert_eq!(t.lock(7, 4, 1, "delay", Mode::Exclusive), []);
    assert_eq!(t.apply(7, Command::Detach { session: SessionId(3) }), [], "the delay starts at 7");
    assert_eq!(t.table.next_deadline().map(|d| d >= 12), Some(true));
    assert_eq!(t.apply(12, Command::Expire), [], "5 ms may not have passed at tick 12");
    let out = t.apply(13, Command::Expire);
    assert!(out.contains(&(1, NOTICE_REQUEST_ID, lost(1, LostReason::LeaseExpired, "lease"))), "{out:?}");
    assert!(out.contains(&(2, NOTICE_REQUEST_ID, lost(2, LostReason::MaxHold, "hold"))), "{out:?}");
    assert!(out.contains(&(4, 1, acquired(4))), "the delay ended: {out:?}");
    assert_eq!(out.len(), 3);

    // A renewal gets the same slack: renewed at 22 for 5 ms, it runs through 27, ends at 28.
    assert_eq!(t.lock_opts(20, 5, 1, "again", None, leased(Some(5), None)), [(5, 1, acquired(5))]);
    assert_eq!(renew(&mut t, 22, 5, 2, "again", 5), [(5, 2, Response::Renewed { ends_in_ms: Some(5) })]);
    assert_eq!(t.apply(27, Command::Expire), [], "renewed at 22: runs through 27");
    assert_eq!(
        t.apply(28, Command::Expire),
        [(5, NOTICE_REQUEST_ID, lost(5, LostReason::LeaseExpired, "again"))]
    );
}

#[test]
fn a_revoke_of_many_grants_ends_them_in_batches_and_answers_after_the_last() {
    let mut t = T::new();
    t.table.set_revoke_batch(2);
    for s in 1..=5 {
        assert_eq!(t.lock(0, s, 1, "big", Mode::Shared), [(s, 1, acquired(s))]);
    }
    assert_eq!(t.lock(0, 6, 1, "big", Mode::Exclusive), [], "a writer waits");
    let out = revoke(&mut t, 1, 9, "big", None);
    assert_eq!(
        out,
        [
            (1, NOTICE_REQUEST_ID, lost(1, LostReason::Revoked, "big")),
            (2, 0, lost(2, LostReason::Revoked, "big"))
        ]
    );
    assert!(t.table.is_releasing(SessionId(9)) && t.table.has_pending_releases(), "the admin is held back");
    assert!(!t.table.is_releasing(SessionId(3)));
    assert_eq!(t.lock(1, 7, 1, "big", Mode::Shared), [], "queues behind the writer, not a victim");
    assert_eq!(t.unlock(1, 3, 2, "big"), [(3, 2, Response::Released)], "a victim may still let go itself");
    let out = t.apply(2, Command::Expire);
    let expected = [
        (4, NOTICE_REQUEST_ID, lost(4, LostReason::Revoked, "big")),
        (5, NOTICE_REQUEST_ID, lost(5, LostReason::Revoked, "big")),
        (6, 1, acquired(6)),
        (9, 9, Response::Revoked { count: 4 }),
    ];
    assert_eq!(out, expected, "the last victims, the writer they made room for, then REVOKED");
    assert!(!t.table.is_releasing(SessionId(9)) && !t.table.has_pending_releases());
    assert_eq!(
        t.unlock(4, 6, 2, "big"),
        [(6, 2, Response::Released), (7, 1, acquired(7))],
        "granted, not revoked"
    );
}

#[test]
fn a_batched_revoke_starts_the_lock_delay_and_survives_the_name_going() {
    let mut t = T::new();
    t.table.set_revoke_batch(1);
    let shared = |d| LockOpts { mode: Mode::Shared, lock_delay_ms: d, ..LockOpts::default() };
    assert_eq!(t.lock_opts(0, 1, 1, "d", None, shared(0)).len(), 1);
    assert_eq!(t.lock_opts(0, 2, 1, "d", None, shared(20)).len(), 1);
    assert_eq!(t.lock(0, 3, 1, "d", Mode::Exclusive), []);
    assert_eq!(revoke(&mut t, 1, 9, "d", None).len(), 1);
    let out = t.apply(2, Command::Expire);
    let expected =
        [(2, NOTICE_REQUEST_ID, lost(2, LostReason::Revoked, "d")), (9, 9, Response::Revoked { count: 2 })];
    assert_eq!(out, expected, "the second grant, whose delay runs to 23");
    assert_eq!(t.apply(22, Command::Expire), []);
    assert_eq!(t.apply(23, Command::Expire), [(3, 1, acquired(3))]);

    // The name goes (and a new one takes its place) while its revoke is pending.
    for s in 4..=6 {
        assert_eq!(t.lock(30, s, 1, "g", Mode::Shared).len(), 1);
    }
    assert_eq!(revoke(&mut t, 31, 9, "g", None).len(), 1);
    for s in 5..=6 {
        assert_eq!(t.unlock(32, s, 2, "g"), [(s, 2, Response::Released)]);
    }
    assert_eq!(t.lock(32, 7, 1, "g", Mode::Shared), [(7, 1, acquired(7))]);
    assert_eq!(t.apply(33, Command::Expire), [(9, 9, Response::Revoked { count: 1 })], "not the new grant");
}

/// A semaphore of a million permits with 20,000 holders: no step ends more than a batch.
#[test]
fn a_revoke_of_a_huge_semaphore_is_bounded_per_step() {
    let mut table = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    let n = 20_000u64;
    let mode = Mode::Permits { count: 1, limit: 1_000_000 };
    for s in 1..=n {
        let opts = LockOpts { mode, ..LockOpts::default() };
        let cmd = Command::Lock {
            session: SessionId(s),
            request_id: 1,
            name: Name::from("sem"),
            timeout_ms: None,
            queue_max: None,
            opts,
        };
        table.apply(0, &cmd, &mut out);
    }
    assert_eq!(out.len() as u64, n);
    out.clear();
    let admin = SessionId(n + 1);
    table.apply(0, &Command::Attach { session: admin, label: "admin".into() }, &mut out);
    table.apply(
        1,
        &Command::Revoke { session: admin, request_id: 7, name: Name::from("sem"), token: None },
        &mut out,
    );
    let (mut lost, mut steps) = (0, 0);
    loop {
        assert!(out.len() <= REVOKE_BATCH + 1, "{} outputs in one step", out.len());
        lost += out.iter().filter(|o| matches!(o.response, Response::Lost { .. })).count();
        if let Some(done) = out.iter().find(|o| o.session == admin) {
            assert_eq!(done.response, Response::Revoked { count: n as u32 });
            break;
        }
        out.clear();
        steps += 1;
        assert!(steps <= n as usize / REVOKE_BATCH, "it ends");
        table.apply(2, &Command::Expire, &mut out);
    }
    assert_eq!(lost as u64, n);
    assert_eq!(steps, n as usize / REVOKE_BATCH - 1);
    assert_eq!(table.stats().locks_held, 0);
    table.check_invariants().expect("consistent after the revoke");
}

/// LOCKS_DETAIL builds only what fits its frame: a name with 5,000 readers and 100 waiters
/// costs about `max_frame / 27` grant entries, not 5,100, and the answer needs no further cut.
#[test]
fn the_detail_of_a_crowded_lock_is_built_only_as_far_as_the_frame_goes() {
    let mut table = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    for s in 1..=5_100u64 {
        table.apply(0, &Command::Attach { session: SessionId(s), label: format!("c{s}") }, &mut out);
        let mode = if s == 5_001 { Mode::Exclusive } else { Mode::Shared };
        let opts = LockOpts { mode, ..LockOpts::default() };
        let name = Name::from("crowd");
        table.apply(
            0,
            &Command::Lock {
                session: SessionId(s),
                request_id: 1,
                name,
                timeout_ms: None,
                queue_max: None,
                opts,
            },
            &mut out,
        );
    }
    assert_eq!(table.stats().waiters, 100);
    let max_frame = 4096;
    let (details, cut) = table.locks_detail_within(1, ["crowd", "crowd2"], max_frame);
    assert!(cut, "what was left out is said");
    assert_eq!(details.len(), 1);
    let built = details[0].holders.len() + details[0].waiters.len();
    assert!(built <= max_frame as usize / 27 && built > 100, "{built} entries built");
    assert!(details[0].waiters.is_empty(), "holders first, in grant order");
    assert_eq!(details[0].holders[0].token, 1);
    let mut frame = Vec::new();
    Response::LocksDetail { locks: details, truncated: cut }.encode(1, &mut frame);
    assert!(frame.len() <= max_frame as usize, "fits without a further cut: {}", frame.len());

    // Small locks beside it: whole entries until the frame is full, then `truncated`.
    let (details, cut) = table.locks_detail_within(1, ["crowd"], 1 << 20);
    assert!(!cut);
    assert_eq!((details[0].holders.len(), details[0].waiters.len()), (5_000, 100));
    for s in 1..=3u64 {
        let name = Name::from(format!("small{s}").as_str());
        let cmd = Command::Lock {
            session: SessionId(s),
            request_id: 2,
            name,
            timeout_ms: None,
            queue_max: None,
            opts: LockOpts::default(),
        };
        table.apply(1, &cmd, &mut out);
    }
    let (details, cut) = table.locks_detail_within(1, ["small1", "small2", "crowd", "small3"], 4096);
    assert!(cut);
    let names: Vec<&str> = details.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["small1", "small2"], "a later entry that does not fit whole is left out");
}
