//! The history checker of `support::history` over synthetic histories: a clean history
//! passes, and each kind of violation is found (one test per kind), as are the cases that must
//! not be judged (an unconfirmed grant, concurrent LOCKs, a reconnect during a wait). Kept out
//! of `support` itself so these tests run once, not in every suite that declares it.

mod support;

use std::time::{Duration, Instant};

use support::history::{check, Event, Kind, Op, Outcome, Report, Violation};

/// Builds a history at literal millisecond offsets from one base instant.
struct Script {
    base: Instant,
    events: Vec<Event>,
    next_op: u64,
}

impl Script {
    fn new() -> Script {
        Script { base: Instant::now(), events: Vec::new(), next_op: 1 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn op(&mut self, client: u32, op: Op, sent: u64, outcome: Outcome, done: u64) -> &mut Self {
        let id = self.next_op;
        self.next_op += 1;
        self.events.push(Event { client, op: id, at: self.at(sent), kind: Kind::Invoke(op) });
        self.events.push(Event { client, op: id, at: self.at(done), kind: Kind::Complete(outcome) });
        self
    }

    /// LOCK sent at `sent`, ACQUIRED received at `got`, UNLOCK sent at `end`, RELEASED.
    fn hold(&mut self, client: u32, name: &str, token: u64, sent: u64, got: u64, end: u64) -> &mut Self {
        self.op(client, lock(name), sent, Outcome::Acquired(token), got);
        self.op(client, unlock(name, token), end, Outcome::Released, end + 1)
    }

    fn check(&self) -> Report {
        // The checker must not depend on the log's global order, only on each client's.
        let mut events = self.events.clone();
        events.sort_by_key(|e| e.at);
        check(&events)
    }
}

fn lock(name: &str) -> Op {
    Op::Lock { name: name.into() }
}

fn unlock(name: &str, token: u64) -> Op {
    Op::Unlock { name: name.into(), token }
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report
        .violations
        .iter()
        .map(|v| match v {
            Violation::Overlap { .. } => "overlap",
            Violation::TokenOrder { .. } => "token_order",
            Violation::TokenNotIncreasing { .. } => "token_not_increasing",
            Violation::DuplicateToken { .. } => "duplicate_token",
            Violation::LostGrant { .. } => "lost_grant",
            Violation::Fifo { .. } => "fifo",
        })
        .collect()
}

#[test]
fn a_clean_history_passes() {
    let mut s = Script::new();
    // Two clients taking turns on "a", a third on "b"; a wait with its fence answered.
    s.hold(1, "a", 1, 0, 1, 10);
    s.op(2, lock("a"), 2, Outcome::Acquired(3), 12);
    s.op(2, Op::Fence { name: "a".into() }, 3, Outcome::Done, 4);
    s.op(2, Op::Check { name: "a".into(), token: 3 }, 13, Outcome::Held(true), 14);
    s.op(2, unlock("a", 3), 20, Outcome::Released, 21);
    s.hold(3, "b", 2, 0, 5, 30);
    s.hold(1, "a", 4, 22, 23, 40);
    let report = s.check();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.holds.len(), 4);
    assert_eq!(report.judged_holds(), 4);
    assert_eq!(report.queued_holds(), 1);
}

#[test]
fn overlapping_holds_are_found() {
    let mut s = Script::new();
    // Both holds confirmed over [1,10] and [5,20]: both held at once. Tokens in the wrong
    // order as well would hide which check fired, so they agree with grant order.
    s.hold(1, "a", 1, 0, 1, 10);
    s.hold(2, "a", 2, 0, 5, 20);
    let k = kinds(&s.check());
    assert!(k.contains(&"overlap"), "{k:?}");
}

#[test]
fn touching_but_ordered_holds_are_not_overlap() {
    let mut s = Script::new();
    s.hold(1, "a", 1, 0, 1, 10);
    s.hold(2, "a", 2, 0, 11, 20);
    assert!(s.check().violations.is_empty());
}

#[test]
fn an_unconfirmed_grant_proves_no_interval() {
    let mut s = Script::new();
    // Client 1 got the grant and then lost its session: the server may have released it at
    // once, so client 2's grant at 5 is no violation.
    s.op(1, lock("a"), 0, Outcome::Acquired(1), 1);
    s.op(1, Op::Resume, 2, Outcome::Refused("bad_session".into()), 3);
    s.hold(2, "a", 2, 0, 5, 20);
    let report = s.check();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.abandoned_sessions, 1);
}

#[test]
fn a_smaller_token_confirmed_after_a_larger_grant_is_found() {
    let mut s = Script::new();
    // Disjoint intervals, but the hold with token 5 was confirmed at 30, after token 6 was
    // granted (received 10) and released (20): grants would not be in token order.
    s.hold(2, "a", 6, 0, 10, 20);
    s.hold(1, "a", 5, 0, 25, 30);
    let k = kinds(&s.check());
    assert_eq!(k, vec!["token_order"], "{k:?}");
}

#[test]
fn tokens_that_go_back_are_found() {
    let mut s = Script::new();
    // "b" was granted token 3 after "a"'s grant of token 7 was received: not increasing.
    s.hold(1, "a", 7, 0, 1, 5);
    s.hold(2, "b", 3, 6, 7, 10);
    let k = kinds(&s.check());
    assert_eq!(k, vec!["token_not_increasing"], "{k:?}");
}

#[test]
fn concurrent_grants_may_take_tokens_in_any_order() {
    let mut s = Script::new();
    // Both LOCKs were in flight together: either could have been granted first.
    s.hold(1, "a", 7, 0, 3, 5);
    s.hold(2, "b", 3, 1, 4, 10);
    assert!(s.check().violations.is_empty());
}

#[test]
fn a_token_granted_twice_is_found() {
    let mut s = Script::new();
    s.hold(1, "a", 4, 0, 1, 5);
    s.hold(2, "b", 4, 0, 2, 6);
    let k = kinds(&s.check());
    assert_eq!(k, vec!["duplicate_token"], "{k:?}");
}

#[test]
fn a_grant_gone_after_a_resume_is_found() {
    let mut s = Script::new();
    s.op(1, lock("a"), 0, Outcome::Acquired(1), 1);
    s.op(1, Op::Resume, 5, Outcome::Done, 6);
    s.op(1, Op::Check { name: "a".into(), token: 1 }, 7, Outcome::Held(false), 8);
    let report = s.check();
    assert_eq!(kinds(&report), vec!["lost_grant"]);
    assert_eq!(report.resumes, 1);
}

#[test]
fn release_failed_for_a_held_grant_is_a_loss() {
    let mut s = Script::new();
    s.op(1, lock("a"), 0, Outcome::Acquired(1), 1);
    s.op(1, Op::Resume, 5, Outcome::Done, 6);
    s.op(1, unlock("a", 1), 7, Outcome::ReleaseFailed, 8);
    assert_eq!(kinds(&s.check()), vec!["lost_grant"]);
}

#[test]
fn an_unlock_cut_by_a_reconnect_may_have_been_served() {
    let mut s = Script::new();
    // UNLOCK sent, the connection dropped, resumed: CHECK says not held. The first UNLOCK
    // may have been served, so nothing is lost.
    s.op(1, lock("a"), 0, Outcome::Acquired(1), 1);
    s.events.push(Event { client: 1, op: 100, at: s.at(2), kind: Kind::Invoke(unlock("a", 1)) });
    s.op(1, Op::Resume, 3, Outcome::Done, 4);
    s.op(1, Op::Check { name: "a".into(), token: 1 }, 5, Outcome::Held(false), 6);
    s.events.push(Event { client: 1, op: 100, at: s.at(6), kind: Kind::Complete(Outcome::ReleaseFailed) });
    let report = s.check();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn a_waiter_overtaken_by_a_later_lock_is_found() {
    let mut s = Script::new();
    // Client 1 queued behind client 3 (fence answered at 2), client 2 sent its LOCK at 5,
    // yet client 2 got the smaller token.
    s.hold(3, "a", 1, 0, 1, 20);
    s.op(1, lock("a"), 1, Outcome::Acquired(3), 30);
    s.op(1, Op::Fence { name: "a".into() }, 1, Outcome::Done, 2);
    s.op(1, unlock("a", 3), 31, Outcome::Released, 32);
    s.op(2, lock("a"), 5, Outcome::Acquired(2), 22);
    s.op(2, unlock("a", 2), 25, Outcome::Released, 26);
    let k = kinds(&s.check());
    assert_eq!(k, vec!["fifo"], "{k:?}");
}

#[test]
fn fifo_is_not_asserted_across_a_reconnect() {
    let mut s = Script::new();
    // The same history, but client 1 reconnected while it waited: its LOCK may have been
    // queued again (the first never committed), so the order is unknown.
    s.hold(3, "a", 1, 0, 1, 20);
    s.op(1, lock("a"), 1, Outcome::Acquired(3), 30);
    s.op(1, Op::Fence { name: "a".into() }, 1, Outcome::Done, 2);
    s.op(1, Op::Resume, 3, Outcome::Done, 4);
    s.op(1, unlock("a", 3), 31, Outcome::Released, 32);
    s.op(2, lock("a"), 5, Outcome::Acquired(2), 22);
    s.op(2, unlock("a", 2), 25, Outcome::Released, 26);
    assert!(s.check().violations.is_empty());
}
