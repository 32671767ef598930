//! Lock table tests with literal ticks: each drives the table through a scenario and checks
//! every response, in order.

use super::*;
use crate::protocol::{ConnectionInfo, ErrorCode, LockInfo, LockRequest, Response};

/// `(connection slot, request id, response)`: outputs with the generation left out.
type Out = Vec<(u32, u32, Response)>;

const FOREVER: Option<u32> = None;

fn id(slot: u32) -> SessionId {
    SessionId(u64::from(slot))
}

/// The old entry points' call forms, each one `apply` of its command, for the tests.
pub(super) trait Drive {
    fn connect_as(&mut self, session: SessionId, label: String);
    fn lock_req(
        &mut self,
        now: Tick,
        session: SessionId,
        rid: u32,
        req: &LockRequest<'_>,
        out: &mut Vec<Output>,
    );
    fn unlock_name(&mut self, now: Tick, session: SessionId, rid: u32, name: &str, out: &mut Vec<Output>);
    fn reset_req(&mut self, now: Tick, session: SessionId, rid: u32, out: &mut Vec<Output>);
    fn disconnect_now(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>);
}

impl Drive for LockTable {
    fn connect_as(&mut self, session: SessionId, label: String) {
        self.apply(0, &Command::Attach { session, label }, &mut Vec::new());
    }

    fn lock_req(
        &mut self,
        now: Tick,
        session: SessionId,
        rid: u32,
        req: &LockRequest<'_>,
        out: &mut Vec<Output>,
    ) {
        let LockRequest { name, timeout_ms, queue_max } = *req;
        let cmd = Command::Lock {
            session,
            request_id: rid,
            name: Name::from(name),
            timeout_ms,
            queue_max,
            opts: LockOpts::default(),
        };
        self.apply(now, &cmd, out);
    }

    fn unlock_name(&mut self, now: Tick, session: SessionId, rid: u32, name: &str, out: &mut Vec<Output>) {
        self.apply(
            now,
            &Command::Unlock { session, request_id: rid, name: Name::from(name), token: None },
            out,
        );
    }

    fn reset_req(&mut self, now: Tick, session: SessionId, rid: u32, out: &mut Vec<Output>) {
        self.apply(now, &Command::Reset { session, request_id: rid }, out);
    }

    fn disconnect_now(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        self.apply(now, &Command::Detach { session }, out);
    }
}

fn label(slot: u32) -> String {
    format!("10.0.0.1:{}", 4000 + slot)
}

fn labels(slots: &[u32]) -> Vec<String> {
    slots.iter().map(|&s| label(s)).collect()
}

fn acquired(token: u64) -> Response {
    Response::Acquired { token }
}

/// A table with connections 0..25 (labels sort in slot order) and first token 100.
struct Harness {
    table: LockTable,
    out: Vec<Output>,
}

impl Harness {
    fn new() -> Self {
        Self::with_limits(TableLimits::default())
    }

    fn with_limits(limits: TableLimits) -> Self {
        let mut table = LockTable::new(100, limits);
        for slot in 0..25 {
            table.connect_as(id(slot), label(slot));
        }
        Harness { table, out: Vec::new() }
    }

    fn take(&mut self) -> Out {
        // After every step of the small scenarios; the bulk ones would make it quadratic.
        if self.table.stats().locks_held <= 1_000 {
            if let Err(broken) = self.table.check_invariants() {
                panic!("{broken}");
            }
        }
        self.out.drain(..).map(|o| (o.session.0 as u32, o.request_id, o.response)).collect()
    }

    fn lock_with(
        &mut self,
        now: Tick,
        slot: u32,
        rid: u32,
        name: &str,
        timeout_ms: Option<u32>,
        queue_max: Option<u32>,
    ) -> Out {
        let req = LockRequest { name, timeout_ms, queue_max };
        self.table.lock_req(now, id(slot), rid, &req, &mut self.out);
        self.take()
    }

    fn lock(&mut self, now: Tick, slot: u32, rid: u32, name: &str, timeout_ms: Option<u32>) -> Out {
        self.lock_with(now, slot, rid, name, timeout_ms, None)
    }

    fn unlock(&mut self, now: Tick, slot: u32, rid: u32, name: &str) -> Out {
        self.table.unlock_name(now, id(slot), rid, name, &mut self.out);
        self.take()
    }

    fn reset(&mut self, now: Tick, slot: u32, rid: u32) -> Out {
        self.table.reset_req(now, id(slot), rid, &mut self.out);
        self.take()
    }

    fn disconnect(&mut self, now: Tick, slot: u32) -> Out {
        self.table.disconnect_now(now, id(slot), &mut self.out);
        self.take()
    }

    fn expire(&mut self, now: Tick) -> Out {
        self.table.expire(now, &mut self.out);
        self.take()
    }

    fn queue(&self, name: &str) -> Vec<String> {
        match self.table.locks(name, 0) {
            Response::Locks { locks, .. } => {
                locks.into_iter().find(|l| l.name == name).map(|l| l.queue).unwrap_or_default()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn waiting(&self, slot: u32) -> Vec<String> {
        match self.table.my_locks(id(slot)) {
            Response::MyLocks { waiting, .. } => waiting,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn grants_twenty_waiters_in_arrival_order() {
    let mut h = Harness::new();
    assert_eq!(h.lock(0, 0, 1, "a", FOREVER), vec![(0, 1, acquired(100))]);
    for slot in 1..=20 {
        assert_eq!(h.lock(slot as Tick, slot, 1, "a", FOREVER), vec![]);
    }
    assert_eq!(h.queue("a"), labels(&(0..=20).collect::<Vec<_>>()));
    let mut holder = 0;
    for slot in 1..=20 {
        let expected = vec![(holder, 2, Response::Released), (slot, 1, acquired(100 + slot as u64))];
        assert_eq!(h.unlock(100 + slot as Tick, holder, 2, "a"), expected);
        holder = slot;
    }
    assert_eq!(h.unlock(200, 20, 2, "a"), vec![(20, 2, Response::Released)]);
    assert_eq!(h.table.stats().locks_held, 0);
}

#[test]
fn waits_time_out_at_their_exact_tick() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    assert_eq!(h.lock(10, 1, 7, "a", Some(50)), vec![]);
    assert_eq!(h.lock(20, 2, 8, "a", Some(30)), vec![]);
    assert_eq!(h.lock(25, 3, 9, "a", FOREVER), vec![]);
    assert!(h.table.next_deadline().is_some_and(|d| d <= 50));
    assert_eq!(h.expire(49), vec![]);
    // The reported queue is the holder and the waiters left, without the one timing out.
    assert_eq!(h.expire(50), vec![(2, 8, Response::TimedOut { queue: labels(&[0, 1, 3]) })]);
    assert_eq!(h.expire(59), vec![]);
    assert_eq!(h.expire(60), vec![(1, 7, Response::TimedOut { queue: labels(&[0, 3]) })]);
    assert_eq!(h.expire(100_000), vec![]);
    assert_eq!(h.waiting(1), Vec::<String>::new());
    assert_eq!(h.queue("a"), labels(&[0, 3]));
    let stats = h.table.stats();
    assert_eq!((stats.timed_out, stats.waiters), (2, 1));
}

#[test]
fn timeout_zero_answers_at_once_without_waiting() {
    let mut h = Harness::new();
    assert_eq!(h.lock(0, 0, 1, "a", Some(0)), vec![(0, 1, acquired(100))], "a free lock is granted");
    h.lock(1, 1, 1, "a", FOREVER);
    assert_eq!(h.lock(2, 2, 5, "a", Some(0)), vec![(2, 5, Response::TimedOut { queue: labels(&[0, 1]) })]);
    assert_eq!(h.waiting(2), Vec::<String>::new());
    assert_eq!(h.table.next_deadline(), None, "waits without a timeout put nothing in the wheel");
}

#[test]
fn queue_max_counts_holder_and_waiters() {
    let mut h = Harness::new();
    assert_eq!(h.lock_with(0, 0, 1, "a", FOREVER, Some(1)), vec![(0, 1, acquired(100))]);
    assert_eq!(
        h.lock_with(1, 1, 1, "a", FOREVER, Some(1)),
        vec![(1, 1, Response::QueueMaxed { queue: labels(&[0]) })]
    );
    assert_eq!(h.lock_with(2, 1, 2, "a", FOREVER, Some(2)), vec![]);
    let maxed = Response::QueueMaxed { queue: labels(&[0, 1]) };
    assert_eq!(h.lock_with(3, 2, 1, "a", FOREVER, Some(2)), vec![(2, 1, maxed.clone())]);
    // queue_max is checked before timeout 0.
    assert_eq!(h.lock_with(4, 2, 2, "a", Some(0), Some(2)), vec![(2, 2, maxed)]);
    let timed_out = Response::TimedOut { queue: labels(&[0, 1]) };
    assert_eq!(h.lock_with(5, 2, 3, "a", Some(0), Some(3)), vec![(2, 3, timed_out)]);
    assert_eq!(h.table.stats().queue_maxed, 3);
}

#[test]
fn already_acquired_reports_the_holders_token() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 0, 2, "b", FOREVER);
    assert_eq!(h.lock(1, 0, 3, "a", Some(10)), vec![(0, 3, Response::AlreadyAcquired { token: 100 })]);
    assert_eq!(h.lock(1, 0, 4, "b", Some(0)), vec![(0, 4, Response::AlreadyAcquired { token: 101 })]);
    assert_eq!(h.table.next_deadline(), None);
}

#[test]
fn already_waiting_keeps_the_first_timer() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    assert_eq!(h.lock(0, 1, 1, "a", Some(100)), vec![]);
    assert_eq!(h.lock(50, 1, 2, "a", Some(100)), vec![(1, 2, Response::AlreadyWaiting)]);
    assert_eq!(h.lock(60, 1, 3, "a", Some(0)), vec![(1, 3, Response::AlreadyWaiting)]);
    assert_eq!(h.expire(99), vec![]);
    assert_eq!(h.expire(100), vec![(1, 1, Response::TimedOut { queue: labels(&[0]) })]);
    assert_eq!(h.expire(150), vec![]);
    assert_eq!(h.table.stats().already_waiting, 2);
}

#[test]
fn unlock_by_a_waiter_cancels_then_releases() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(1, 1, 1, "a", Some(100));
    h.lock(2, 2, 1, "a", FOREVER);
    assert_eq!(h.unlock(5, 1, 2, "a"), vec![(1, 1, Response::Cancelled), (1, 2, Response::Released)]);
    assert_eq!(h.table.next_deadline(), None, "the wait's timer is cancelled");
    assert_eq!(h.expire(1_000), vec![]);
    assert_eq!(h.queue("a"), labels(&[0, 2]));
    assert_eq!(h.unlock(6, 3, 1, "a"), vec![(3, 1, Response::ReleaseFailed)]);
    assert_eq!(h.unlock(6, 3, 2, "nope"), vec![(3, 2, Response::ReleaseFailed)]);
    assert_eq!(h.unlock(6, 1, 3, "a"), vec![(1, 3, Response::ReleaseFailed)], "no longer waiting");
}

#[test]
fn granted_waiter_timer_never_fires() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 1, 1, "a", Some(100));
    assert_eq!(h.unlock(40, 0, 2, "a"), vec![(0, 2, Response::Released), (1, 1, acquired(101))]);
    assert_eq!(h.table.next_deadline(), None, "the grant cancels the wait's timer");
    assert_eq!(h.expire(100), vec![]);
    assert_eq!(h.queue("a"), labels(&[1]));
}

#[test]
fn reset_cancels_waits_then_releases_holds() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 0, 2, "b", FOREVER);
    h.lock(0, 1, 1, "c", FOREVER);
    h.lock(1, 0, 3, "c", Some(50));
    h.lock(2, 2, 1, "b", FOREVER);
    h.lock(3, 3, 1, "a", FOREVER);
    let expected = vec![
        (0, 3, Response::Cancelled),
        (3, 1, acquired(103)), // "a" was acquired first, so it is released first
        (2, 1, acquired(104)),
        (0, 9, Response::ResetOk),
    ];
    assert_eq!(h.reset(10, 0, 9), expected);
    assert_eq!(h.table.my_locks(id(0)), Response::MyLocks { held: vec![], waiting: vec![] });
    assert_eq!(h.expire(100), vec![]);
    assert_eq!(h.reset(11, 0, 10), vec![(0, 10, Response::ResetOk)], "reset with nothing is fine");
    let stats = h.table.stats();
    assert_eq!((stats.released, stats.cancelled, stats.connections), (2, 1, 25));
}

#[test]
fn disconnect_hands_over_to_the_next_waiter() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 1, 1, "b", FOREVER);
    h.lock(1, 0, 2, "b", Some(30));
    h.lock(2, 2, 1, "a", FOREVER);
    h.lock(3, 0, 3, "x", FOREVER);
    assert_eq!(h.disconnect(10, 0), vec![(2, 1, acquired(103))]);
    assert_eq!(h.expire(100), vec![]);
    assert_eq!(h.queue("b"), labels(&[1]));
    assert_eq!(
        h.table.locks("x", 0),
        Response::Locks { locks: vec![], truncated: false },
        "freed lock removed"
    );
    assert_eq!(h.table.stats().connections, 24);
}

#[test]
fn departed_waiter_is_skipped() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(1, 1, 1, "a", Some(500));
    h.lock(2, 2, 1, "a", FOREVER);
    assert_eq!(h.disconnect(3, 1), vec![]);
    assert_eq!(h.unlock(4, 0, 2, "a"), vec![(0, 2, Response::Released), (2, 1, acquired(101))]);
    assert_eq!(h.expire(600), vec![]);
}

#[test]
fn stale_conn_id_of_a_reused_slot_is_never_granted() {
    let mut h = Harness::new();
    let old = SessionId(30);
    let new = SessionId(31);
    h.table.connect_as(old, "unix:1".to_owned());
    h.lock(0, 0, 1, "a", FOREVER);
    h.table.lock_req(
        1,
        old,
        1,
        &LockRequest { name: "a", timeout_ms: Some(50), queue_max: None },
        &mut h.out,
    );
    h.table.disconnect_now(2, old, &mut h.out);
    h.table.connect_as(new, "unix:2".to_owned());
    assert_eq!(h.unlock(3, 0, 2, "a"), vec![(0, 2, Response::Released)]);
    assert_eq!(h.expire(100), vec![]);
    assert_eq!(h.table.stats().locks_held, 0);
    h.table.unlock_name(4, new, 1, "a", &mut h.out);
    assert_eq!(
        h.out,
        vec![Output {
            session: new,
            lock: Some(Name::from("a")),
            request_id: 1,
            response: Response::ReleaseFailed
        }]
    );
}

#[test]
fn tokens_strictly_increase() {
    let mut h = Harness::new();
    assert_eq!(h.table.last_token(), 99);
    let mut tokens = Vec::new();
    let mut collect = |out: Out| {
        tokens.extend(out.into_iter().filter_map(|(_, _, r)| match r {
            Response::Acquired { token } => Some(token),
            _ => None,
        }))
    };
    for round in 0..5u32 {
        collect(h.lock(0, 0, round, "a", FOREVER));
        collect(h.lock(0, 1, round, "a", FOREVER));
        collect(h.lock(0, 2, round, "b", FOREVER));
        collect(h.unlock(1, 0, 100 + round, "a"));
        collect(h.reset(2, 1, 200 + round));
        collect(h.unlock(2, 2, 300 + round, "b"));
    }
    assert_eq!(tokens.len(), 15);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(h.table.last_token(), 114);
    assert_eq!(h.table.stats().last_token, 114);
}

#[test]
fn limits_refuse_new_holds_and_waits() {
    let limits = TableLimits {
        max_locks_per_conn: 2,
        max_waiters_per_lock: 1,
        list_max_default: 10,
        ..TableLimits::default()
    };
    let mut h = Harness::with_limits(limits);
    let refused =
        |out: &Out| matches!(out[..], [(_, _, Response::Error { code: ErrorCode::LimitExceeded, .. })]);
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 0, 2, "b", FOREVER);
    assert!(refused(&h.lock(0, 0, 3, "c", FOREVER)));
    assert_eq!(h.lock(0, 0, 4, "a", FOREVER), vec![(0, 4, Response::AlreadyAcquired { token: 100 })]);
    assert_eq!(h.lock(0, 1, 1, "a", FOREVER), vec![], "first waiter fits");
    assert!(refused(&h.lock(0, 2, 1, "a", FOREVER)), "second waiter exceeds the per-lock limit");
    let timed_out = Response::TimedOut { queue: labels(&[0, 1]) };
    assert_eq!(h.lock(0, 2, 2, "a", Some(0)), vec![(2, 2, timed_out)], "no wait, no limit");
    h.lock(0, 3, 1, "d", FOREVER);
    assert!(refused(&h.lock(0, 0, 5, "d", FOREVER)), "a wait counts towards the connection's limit");
    h.unlock(1, 0, 6, "b");
    assert_eq!(h.lock(1, 0, 7, "c", FOREVER), vec![(0, 7, acquired(103))]);
    assert_eq!(h.table.stats().limit_refused, 3);
}

#[test]
fn listings_filter_sort_and_truncate() {
    let limits = TableLimits { list_max_default: 3, ..TableLimits::default() };
    let mut h = Harness::with_limits(limits);
    for (rid, name) in ["job/3", "job/1", "other", "job/2", "job/4"].into_iter().enumerate() {
        h.lock(0, 0, rid as u32, name, FOREVER);
    }
    h.lock(0, 1, 9, "job/2", FOREVER);
    let info = |name: &str, slots: &[u32]| LockInfo { name: name.to_owned(), queue: labels(slots) };
    let first_three = vec![info("job/1", &[0]), info("job/2", &[0, 1]), info("job/3", &[0])];
    assert_eq!(h.table.locks("job/", 0), Response::Locks { locks: first_three.clone(), truncated: true });
    assert_eq!(h.table.locks("job/", 10), Response::Locks { locks: first_three, truncated: true });
    let first_two = vec![info("job/1", &[0]), info("job/2", &[0, 1])];
    assert_eq!(h.table.locks("job/", 2), Response::Locks { locks: first_two, truncated: true });
    assert_eq!(
        h.table.locks("oth", 0),
        Response::Locks { locks: vec![info("other", &[0])], truncated: false }
    );
    assert_eq!(h.table.locks("zzz", 0), Response::Locks { locks: vec![], truncated: false });

    let waiter = ConnectionInfo { label: label(1), held: vec![], waiting: vec!["job/2".to_owned()] };
    assert_eq!(
        h.table.connections(&label(1), 0),
        Response::Connections { connections: vec![waiter], truncated: false }
    );
    match h.table.connections("", 2) {
        Response::Connections { connections, truncated } => {
            assert!(truncated);
            assert_eq!(connections.iter().map(|c| c.label.clone()).collect::<Vec<_>>(), labels(&[0, 1]));
            assert_eq!(connections[0].held, ["job/1", "job/2", "job/3", "job/4", "other"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let mine = Response::MyLocks { held: vec![], waiting: vec!["job/2".to_owned()] };
    assert_eq!(h.table.my_locks(id(1)), mine);
    let unknown = SessionId(99);
    assert_eq!(h.table.my_locks(unknown), Response::MyLocks { held: vec![], waiting: vec![] });
}

#[test]
fn a_lock_is_removed_as_soon_as_it_is_free() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(0, 1, 1, "a", Some(5));
    h.expire(5);
    assert_eq!(h.table.stats().locks_held, 1);
    h.unlock(6, 0, 2, "a");
    assert_eq!(h.table.stats().locks_held, 0);
    assert_eq!(h.table.locks("", 0), Response::Locks { locks: vec![], truncated: false });
    h.lock(7, 2, 1, "b", FOREVER);
    h.disconnect(8, 2);
    let stats = h.table.stats();
    assert_eq!((stats.locks_held, stats.waiters, stats.connections), (0, 0, 24));
    // A freed name can be taken again, with a fresh token.
    assert_eq!(h.lock(9, 3, 1, "a", FOREVER), vec![(3, 1, acquired(102))]);
}

#[test]
fn monitoring_reports_holds_queues_and_wait_times() {
    let mut h = Harness::new();
    h.lock(10, 0, 1, "a", FOREVER);
    h.lock(5, 1, 1, "b", FOREVER);
    h.lock(20, 2, 1, "c", FOREVER);
    h.lock(30, 3, 1, "a", FOREVER);
    h.lock(30, 4, 1, "a", FOREVER);
    h.lock(40, 5, 1, "b", Some(1_000));
    assert_eq!(h.table.longest_holds(2), vec![("b".to_owned(), 5), ("a".to_owned(), 10)]);
    assert_eq!(h.table.deepest_queues(5), vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);
    h.unlock(100, 0, 2, "a");
    h.unlock(140, 1, 2, "b");
    let stats = h.table.stats();
    assert_eq!((stats.grants_after_wait, stats.wait_time_total_ms), (2, 170));
    let holds = vec![("c".to_owned(), 20), ("a".to_owned(), 100), ("b".to_owned(), 140)];
    assert_eq!(h.table.longest_holds(10), holds);
    assert_eq!(h.table.deepest_queues(5), vec![("a".to_owned(), 1)]);
}

#[test]
fn unregistered_connection_is_tracked_on_first_lock() {
    let mut h = Harness::new();
    let stranger = SessionId(77);
    h.table.lock_req(
        0,
        stranger,
        1,
        &LockRequest { name: "a", timeout_ms: None, queue_max: None },
        &mut h.out,
    );
    assert_eq!(h.take(), vec![(77, 1, acquired(100))]);
    h.table.disconnect_now(1, stranger, &mut h.out);
    assert_eq!(h.table.stats().locks_held, 0);
}

#[test]
fn bulk_release_returns_slab_memory() {
    let mut h = Harness::new();
    h.lock(0, 1, 0, "survivor", FOREVER);
    for i in 0..10_000u32 {
        h.lock(0, 0, i, &format!("n{i}"), FOREVER);
    }
    assert!(h.table.store.capacity() >= 10_001);
    h.reset(1, 0, 1);
    while h.table.has_pending_releases() {
        h.table.release_step(1, &mut h.out);
    }
    assert_eq!(h.take(), vec![(0, 1, Response::ResetOk)]);
    // Releases never shrink the store themselves (a shrink is O(capacity)); housekeeping does.
    assert!(h.table.store.capacity() >= 10_001);
    assert!(h.table.shrink());
    // The survivor has the lowest key, so the vacant tail can be dropped.
    assert!(h.table.store.capacity() < 4096, "capacity {}", h.table.store.capacity());
    assert_eq!(h.unlock(2, 1, 1, "survivor"), vec![(1, 1, Response::Released)]);
    assert_eq!(h.lock(3, 2, 1, "n5", FOREVER), vec![(2, 1, acquired(10_101))]);
}

#[test]
fn reported_queues_are_cut_at_the_report_maximum() {
    let mut t = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    let waiters = super::table::QUEUE_REPORT_MAX as u32 + 200;
    for slot in 0..=waiters + 1 {
        t.connect_as(id(slot), label(slot));
    }
    let forever = |name| LockRequest { name, timeout_ms: None, queue_max: None };
    for slot in 0..=waiters {
        t.lock_req(0, id(slot), 1, &forever("long"), &mut out);
    }
    out.clear();
    let try_once = LockRequest { name: "long", timeout_ms: Some(0), queue_max: None };
    t.lock_req(0, id(waiters + 1), 2, &try_once, &mut out);
    match &out[..] {
        [Output { response: Response::TimedOut { queue }, .. }] => {
            assert_eq!(queue.len(), REFUSAL_QUEUE_MAX);
            assert_eq!(queue[0], label(0), "holder first");
            assert_eq!(queue[1..], labels(&(1..REFUSAL_QUEUE_MAX as u32).collect::<Vec<_>>())[..]);
        }
        other => panic!("{other:?}"),
    }
    match t.locks("long", 0) {
        Response::Locks { locks, .. } => assert_eq!(locks[0].queue.len(), super::table::QUEUE_REPORT_MAX),
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_waits_on_one_connection_end_in_the_order_they_started() {
    let mut t = LockTable::new(1, TableLimits::default());
    let mut out = Vec::new();
    t.connect_as(id(0), label(0));
    t.connect_as(id(1), label(1));
    let forever = |name| LockRequest { name, timeout_ms: None, queue_max: None };
    let names: Vec<String> = (0..5000).map(|i| format!("w{i:05}")).collect();
    for name in &names {
        t.lock_req(0, id(0), 1, &forever(name), &mut out);
    }
    for (i, name) in names.iter().enumerate() {
        t.lock_req(0, id(1), 10 + i as u32, &forever(name), &mut out);
    }
    // Leave one wait in the middle, then reset: the rest are cancelled in start order.
    out.clear();
    t.unlock_name(0, id(1), 9, &names[2500], &mut out);
    out.clear();
    t.reset_req(0, id(1), 8, &mut out);
    let cancelled: Vec<u32> =
        out.iter().filter(|o| o.response == Response::Cancelled).map(|o| o.request_id).collect();
    assert_eq!(cancelled.len(), 4999);
    assert!(cancelled.windows(2).all(|w| w[0] < w[1]), "cancelled in the order the waits started");
    assert_eq!(out.last().map(|o| &o.response), Some(&Response::ResetOk));
}

/// A table whose connections 0..n all exist, with literal labels.
fn table_with(conns: u32) -> LockTable {
    let mut t = LockTable::new(1, TableLimits::default());
    for slot in 0..conns {
        t.connect_as(id(slot), label(slot));
    }
    t
}

fn request(name: &str, timeout_ms: Option<u32>, queue_max: Option<u32>) -> LockRequest<'_> {
    LockRequest { name, timeout_ms, queue_max }
}

#[test]
fn simultaneous_timeouts_are_answered_a_bounded_batch_per_call() {
    // 3,000 waiters on one name, all with the same deadline: the burst of issue 10.
    let waiters = 3 * EXPIRE_BATCH as u32;
    let mut t = table_with(waiters + 1);
    let mut out = Vec::new();
    t.lock_req(0, id(0), 1, &request("hot", FOREVER, None), &mut out);
    for slot in 1..=waiters {
        t.lock_req(0, id(slot), 7, &request("hot", Some(50), None), &mut out);
    }
    out.clear();
    let mut calls = Vec::new();
    let mut timed_out = Vec::new();
    for _ in 0..10 {
        t.expire(50, &mut out);
        calls.push(out.len());
        for o in out.drain(..) {
            let Response::TimedOut { queue } = o.response else { panic!("{:?}", o.response) };
            assert!(queue.len() <= REFUSAL_QUEUE_MAX, "{} labels", queue.len());
            assert_eq!(queue[0], label(0), "holder first");
            timed_out.push(o.session.0 as u32);
        }
        if t.next_deadline().is_none() {
            break;
        }
        // Left over: due now, so the server polls again without sleeping.
        assert!(t.next_deadline().is_some_and(|d| d <= 50));
    }
    assert_eq!(calls, vec![EXPIRE_BATCH; 3], "outputs per expire call");
    assert_eq!(timed_out, (1..=waiters).collect::<Vec<_>>(), "in deadline then arrival order");
    assert_eq!(t.stats().waiters, 0);
}

#[test]
fn a_wait_left_over_by_the_expire_batch_can_still_be_granted_once() {
    let mut h = Harness::new();
    h.table.set_batches(2, RELEASE_BATCH);
    h.lock(0, 0, 1, "a", FOREVER);
    for slot in 1..=4 {
        h.lock(0, slot, 10 + slot, "a", Some(5));
    }
    let first = h.expire(5);
    assert_eq!(first.len(), 2);
    // Slot 3 is due but not yet answered; a release now grants it, and the timer is gone.
    assert_eq!(h.unlock(6, 0, 2, "a"), vec![(0, 2, Response::Released), (3, 13, acquired(101))]);
    let rest = h.expire(6);
    assert_eq!(rest, vec![(4, 14, Response::TimedOut { queue: labels(&[3]) })]);
    assert!(h.expire(7).is_empty());
    assert_eq!(h.table.next_deadline(), None);
}

#[test]
fn queue_maxed_storm_reports_a_bounded_queue_head() {
    let mut t = table_with(2_001);
    let mut out = Vec::new();
    for slot in 0..1_000 {
        t.lock_req(0, id(slot), 1, &request("deep", FOREVER, None), &mut out);
    }
    out.clear();
    for slot in 1_000..2_001 {
        t.lock_req(0, id(slot), 2, &request("deep", FOREVER, Some(10)), &mut out);
    }
    assert_eq!(out.len(), 1_001);
    for o in &out {
        let Response::QueueMaxed { queue } = &o.response else { panic!("{:?}", o.response) };
        assert_eq!(queue.len(), REFUSAL_QUEUE_MAX);
    }
}

#[test]
fn a_disconnect_releases_a_bounded_batch_per_step_in_token_order() {
    let holds = 5 * RELEASE_BATCH as u32 + 17;
    let mut t = table_with(3);
    let mut out = Vec::new();
    for i in 0..holds {
        t.lock_req(0, id(0), i, &request(&format!("k{i}"), FOREVER, None), &mut out);
    }
    // A waiter on the first and on the last hold, and a bystander.
    t.lock_req(0, id(1), 100, &request("k0", FOREVER, None), &mut out);
    t.lock_req(0, id(2), 200, &request(&format!("k{}", holds - 1), FOREVER, None), &mut out);
    let last_token = t.last_token();
    out.clear();
    t.disconnect_now(1, id(0), &mut out);
    assert_eq!(out, vec![grant(1, 100, "k0", last_token + 1)], "the oldest hold goes first");
    assert_eq!(t.stats().locks_held, holds as usize - RELEASE_BATCH + 1);
    out.clear();
    let mut steps = Vec::new();
    while t.has_pending_releases() {
        steps.push(t.release_step(2, &mut out));
        // Between steps the table serves others: a new LOCK on a name still held by the gone
        // connection queues behind it.
        if steps.len() == 1 {
            t.lock_req(2, id(1), 101, &request(&format!("k{}", holds - 2), Some(1_000), None), &mut out);
            assert!(out.is_empty(), "{out:?}");
        }
    }
    assert_eq!(steps, vec![1_000, 1_000, 1_000, 1_000, 17]);
    assert_eq!(
        out,
        vec![
            grant(1, 101, &format!("k{}", holds - 2), last_token + 2),
            grant(2, 200, &format!("k{}", holds - 1), last_token + 3),
        ]
    );
    assert_eq!(t.stats().locks_held, 3);
    assert_eq!(t.stats().connections, 2, "the gone connection is forgotten after its last release");
}

fn grant(slot: u32, request_id: u32, name: &str, token: u64) -> Output {
    Output {
        session: id(slot),
        lock: Some(Name::from(name)),
        request_id,
        response: Response::Acquired { token },
    }
}

#[test]
fn reset_answers_after_its_last_release_and_a_gone_connection_is_never_granted() {
    let mut t = table_with(4);
    t.set_batches(EXPIRE_BATCH, 2);
    let mut out = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        t.lock_req(0, id(0), 1, &request(name, FOREVER, None), &mut out);
    }
    // Slot 1 waits on "c", then disconnects while slot 0's release is under way.
    t.lock_req(0, id(1), 2, &request("c", FOREVER, None), &mut out);
    t.lock_req(0, id(2), 3, &request("d", FOREVER, None), &mut out);
    out.clear();
    t.reset_req(1, id(0), 9, &mut out);
    assert!(out.is_empty(), "no RESET_OK before the releases: {out:?}");
    assert!(t.is_releasing(id(0)));
    t.disconnect_now(1, id(1), &mut out);
    assert_eq!(t.release_step(1, &mut out), 2);
    // "c" went to nobody (slot 1 is gone), "d" to slot 2; "e" and RESET_OK in the last step.
    assert_eq!(out, vec![grant(2, 3, "d", 6)]);
    out.clear();
    assert_eq!(t.release_step(1, &mut out), 1);
    assert_eq!(out, vec![Output { session: id(0), lock: None, request_id: 9, response: Response::ResetOk }]);
    assert!(!t.is_releasing(id(0)) && !t.has_pending_releases());
    assert_eq!(t.stats().locks_held, 1);
}

#[test]
fn a_request_of_a_releasing_connection_sees_the_release_finished() {
    let mut t = table_with(2);
    t.set_batches(EXPIRE_BATCH, 1);
    let mut out = Vec::new();
    t.lock_req(0, id(0), 1, &request("a", FOREVER, None), &mut out);
    t.lock_req(0, id(0), 2, &request("b", FOREVER, None), &mut out);
    out.clear();
    t.reset_req(0, id(0), 3, &mut out);
    assert!(out.is_empty());
    // A caller that does not hold the connection back: RESET_OK first, then a fresh grant.
    t.lock_req(0, id(0), 4, &request("b", FOREVER, None), &mut out);
    let responses: Vec<_> = out.iter().map(|o| (o.request_id, o.response.clone())).collect();
    assert_eq!(responses, vec![(3, Response::ResetOk), (4, acquired(3))]);
    assert!(!t.has_pending_releases());
}

#[test]
fn a_reset_of_a_gone_connection_answers_nobody() {
    let mut t = table_with(2);
    t.set_batches(EXPIRE_BATCH, 1);
    let mut out = Vec::new();
    t.lock_req(0, id(0), 1, &request("a", FOREVER, None), &mut out);
    t.lock_req(0, id(0), 2, &request("b", FOREVER, None), &mut out);
    t.lock_req(0, id(1), 3, &request("b", FOREVER, None), &mut out);
    out.clear();
    t.reset_req(0, id(0), 4, &mut out);
    t.disconnect_now(0, id(0), &mut out);
    while t.has_pending_releases() {
        t.release_step(0, &mut out);
    }
    assert_eq!(out, vec![grant(1, 3, "b", 3)]);
    assert_eq!(t.stats().connections, 1);
}

#[test]
fn memory_is_given_back_after_fifteen_thousand_waiters_leave() {
    let waiters = 15_000u32;
    let mut t = table_with(waiters + 1);
    let mut out = Vec::new();
    t.lock_req(0, id(0), 1, &request("hot", FOREVER, None), &mut out);
    for slot in 1..=waiters {
        t.lock_req(0, id(slot), 2, &request("hot", Some(3_000), None), &mut out);
    }
    let peak = t.capacities();
    assert!(peak.timers >= waiters as usize && peak.conns > waiters as usize);
    assert!(t.queue_capacity("hot").is_some_and(|c| c >= waiters as usize));
    for slot in 1..=waiters {
        t.disconnect_now(1, id(slot), &mut out);
    }
    assert!(t.shrink());
    let after = t.capacities();
    assert!(after.timers < 1_024, "{after:?}");
    assert!(after.conns < 64, "{after:?}");
    assert!(after.fired <= EXPIRE_BATCH, "{after:?}");
    assert!(t.queue_capacity("hot").is_some_and(|c| c <= 16), "{:?}", t.queue_capacity("hot"));
    // Hysteresis: at the new level nothing shrinks again.
    assert!(!t.shrink());
}

#[test]
fn disconnects_in_one_turn_share_one_inline_budget() {
    // Five connections with 400 holds each close in the same turn.
    let mut t = table_with(5);
    let mut out = Vec::new();
    for slot in 0..5 {
        for i in 0..400 {
            t.lock_req(0, id(slot), 1, &request(&format!("c{slot}-{i}"), FOREVER, None), &mut out);
        }
    }
    for slot in 0..5 {
        t.disconnect_now(1, id(slot), &mut out);
    }
    assert_eq!(t.stats().locks_held, 2_000 - RELEASE_BATCH, "one inline budget per turn");
    assert_eq!(t.release_step(1, &mut out), RELEASE_BATCH);
    assert!(!t.has_pending_releases());
    assert_eq!(t.stats().connections, 0);
}

#[test]
fn a_small_release_does_not_wait_for_a_big_one_to_finish() {
    let mut t = table_with(2);
    let mut out = Vec::new();
    t.lock_req(0, id(1), 1, &request("small-a", FOREVER, None), &mut out);
    t.lock_req(0, id(1), 2, &request("small-b", FOREVER, None), &mut out);
    for i in 0..3 * RELEASE_BATCH {
        t.lock_req(0, id(0), 1, &request(&format!("big{i}"), FOREVER, None), &mut out);
    }
    out.clear();
    t.disconnect_now(1, id(0), &mut out);
    t.reset_req(1, id(1), 9, &mut out);
    assert!(out.is_empty(), "the turn's inline budget went to the big release: {out:?}");
    assert_eq!(t.release_step(1, &mut out), RELEASE_BATCH);
    assert!(out.is_empty());
    // The big release went to the back after its batch: the RESET is answered next step.
    assert_eq!(t.release_step(2, &mut out), RELEASE_BATCH);
    assert_eq!(out, vec![Output { session: id(1), lock: None, request_id: 9, response: Response::ResetOk }]);
    assert_eq!(t.stats().locks_held, 2);
    assert_eq!(t.release_step(3, &mut out), 2);
    assert!(!t.has_pending_releases());
}

/// A waiter keeps `now + timeout` as its deadline, beside a live timer for exactly that tick;
/// a wait without a timeout has neither.
#[test]
fn waiters_store_their_deadline_beside_their_timer() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(10, 1, 2, "a", Some(50));
    h.lock(12, 2, 3, "a", FOREVER);
    h.lock(15, 3, 4, "a", Some(0));
    h.lock(20, 4, 5, "a", Some(7));
    let key = h.table.store.find("a").expect("held");
    let lock = h.table.store.get(key).expect("held");
    let deadlines: Vec<Option<Tick>> = lock.waiters.iter().map(|w| w.deadline).collect();
    assert_eq!(deadlines, vec![Some(60), None, Some(27)]);
    for waiter in &lock.waiters {
        let timer = waiter.timer.and_then(|t| h.table.timers.get(t)).map(|(at, _)| at);
        assert_eq!(timer, waiter.deadline);
    }
    assert_eq!(h.table.timers.len(), 2);
    assert_eq!(h.expire(27), vec![(4, 5, Response::TimedOut { queue: labels(&[0, 1, 2]) })]);
    assert_eq!(h.table.timers.len(), 1);
}

/// The self-check sees a waiter whose timer went missing, and a deadline that disagrees with it.
#[test]
fn the_self_check_catches_a_waiter_without_its_timer() {
    let mut h = Harness::new();
    h.lock(0, 0, 1, "a", FOREVER);
    h.lock(10, 1, 2, "a", Some(50));
    assert_eq!(h.table.check_invariants(), Ok(()));
    let key = h.table.store.find("a").expect("held");
    let waiter = &mut h.table.store.get_mut(key).expect("held").waiters[0];
    waiter.deadline = Some(61);
    assert!(h.table.check_invariants().is_err(), "deadline differs from its timer");
    let waiter = &mut h.table.store.get_mut(key).expect("held").waiters[0];
    waiter.deadline = Some(60);
    let timer = waiter.timer.take().expect("a timer");
    assert!(h.table.check_invariants().is_err(), "a deadline without a timer");
    h.table.timers.cancel(timer);
    let waiter = &mut h.table.store.get_mut(key).expect("held").waiters[0];
    waiter.deadline = None;
    assert_eq!(h.table.check_invariants(), Ok(()), "a wait forever, consistently");
}

/// What a lock and a wait cost in the table's structs (BENCHMARKS.md counts per held lock).
#[test]
fn lock_and_waiter_sizes() {
    assert_eq!(
        std::mem::size_of::<store::Lock>(),
        120,
        "name 24 (inline up to 22 bytes), its hash 8, holders 72 (first grant 40 with its \
         hold-list links, further grants 24, limit and gauge 8), queue 8 (boxed on the first \
         wait), lock-delay end 8; 88 before issue 13, 136 before the queue went out of line; \
         above 128 a move of a lock is a memcpy call"
    );
    assert_eq!(
        std::mem::size_of::<store::Waiter>(),
        72,
        "48 before waiters kept their deadline, 64 before the boxed lease options"
    );
    assert_eq!(std::mem::size_of::<holders::Holder>(), 40, "the lease flag sits in padding");
}
