//! Model-based test of the lock table: random sequences of LOCK (with and without timeout and
//! queue_max), UNLOCK, RESET, connect, disconnect and the passing of time over 4 connections and
//! 3 names, run against `officer::locks::LockTable` and against a deliberately naive Vec-based
//! reference model written here. After every step both must have answered each connection the
//! same responses in the same order and agree on holders and queues; over a run every request
//! gets exactly one answer, except requests of a connection that went away.

use std::collections::BTreeMap;

use officer::locks::{ConnId, LockTable, Output, TableLimits, Tick};
use officer::protocol::{LockInfo, LockRequest, Response};
use proptest::prelude::*;

const CONNS: usize = 4;
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const FIRST_TOKEN: u64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    Lock { conn: usize, name: usize, timeout_ms: Option<u32>, queue_max: Option<u32> },
    Unlock { conn: usize, name: usize },
    Reset { conn: usize },
    Disconnect { conn: usize },
    Connect { conn: usize },
    Advance { ms: Tick },
}

fn op() -> impl Strategy<Value = Op> {
    let timeout = prop_oneof![2 => Just(None), 1 => Just(Some(0)), 3 => (1..20u32).prop_map(Some)];
    let queue_max = prop_oneof![3 => Just(None), 1 => (1..4u32).prop_map(Some)];
    prop_oneof![
        6 => (0..CONNS, 0..NAMES.len(), timeout, queue_max)
            .prop_map(|(conn, name, timeout_ms, queue_max)| Op::Lock { conn, name, timeout_ms, queue_max }),
        3 => (0..CONNS, 0..NAMES.len()).prop_map(|(conn, name)| Op::Unlock { conn, name }),
        1 => (0..CONNS).prop_map(|conn| Op::Reset { conn }),
        1 => (0..CONNS).prop_map(|conn| Op::Disconnect { conn }),
        1 => (0..CONNS).prop_map(|conn| Op::Connect { conn }),
        3 => (0..15u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn limits() -> impl Strategy<Value = TableLimits> {
    let per_conn = prop_oneof![2 => Just(0u32), 1 => 1..4u32];
    let per_lock = prop_oneof![2 => Just(0u32), 1 => 1..3u32];
    (per_conn, per_lock).prop_map(|(max_locks_per_conn, max_waiters_per_lock)| TableLimits {
        max_locks_per_conn,
        max_waiters_per_lock,
        list_max_default: 100,
    })
}

struct Waiter {
    conn: usize,
    request_id: u32,
    deadline: Option<Tick>,
    /// Global arrival order, which is also the order wait timers were created.
    seq: u64,
}

struct Lock {
    name: &'static str,
    holder: usize,
    token: u64,
    waiters: Vec<Waiter>,
}

struct Conn {
    id: ConnId,
    label: String,
    connected: bool,
}

/// The reference: linear scans everywhere, written straight from the specification.
struct Model {
    limits: TableLimits,
    conns: Vec<Conn>,
    locks: Vec<Lock>,
    next_token: u64,
    seq: u64,
    out: Vec<Output>,
}

impl Model {
    fn new(limits: TableLimits) -> Self {
        let conns =
            (0..CONNS).map(|c| Conn { id: conn_id(c, 1), label: label(c, 1), connected: true }).collect();
        Model { limits, conns, locks: Vec::new(), next_token: FIRST_TOKEN, seq: 0, out: Vec::new() }
    }

    fn reply(&mut self, conn: usize, request_id: u32, response: Response) {
        self.out.push(Output { conn: self.conns[conn].id, request_id, response });
    }

    fn queue(&self, lock: &Lock) -> Vec<String> {
        let conns = std::iter::once(lock.holder).chain(lock.waiters.iter().map(|w| w.conn));
        conns.map(|c| self.conns[c].label.clone()).collect()
    }

    fn count(&self, conn: usize) -> usize {
        let holds = self.locks.iter().filter(|l| l.holder == conn).count();
        holds + self.locks.iter().flat_map(|l| &l.waiters).filter(|w| w.conn == conn).count()
    }

    fn over_conn_limit(&self, conn: usize) -> bool {
        let max = self.limits.max_locks_per_conn as usize;
        max != 0 && self.count(conn) >= max
    }

    fn issue_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token - 1
    }

    fn lock(
        &mut self,
        now: Tick,
        conn: usize,
        rid: u32,
        name: &'static str,
        timeout: Option<u32>,
        qmax: Option<u32>,
    ) {
        let Some(i) = self.locks.iter().position(|l| l.name == name) else {
            if self.over_conn_limit(conn) {
                return self.reply(conn, rid, limit_error());
            }
            let token = self.issue_token();
            self.locks.push(Lock { name, holder: conn, token, waiters: Vec::new() });
            return self.reply(conn, rid, Response::Acquired { token });
        };
        let lock = &self.locks[i];
        let per_lock = self.limits.max_waiters_per_lock as usize;
        let response = if lock.holder == conn {
            Response::AlreadyAcquired { token: lock.token }
        } else if lock.waiters.iter().any(|w| w.conn == conn) {
            Response::AlreadyWaiting
        } else if qmax.is_some_and(|q| 1 + lock.waiters.len() >= q as usize) {
            Response::QueueMaxed { queue: self.queue(lock) }
        } else if timeout == Some(0) {
            Response::TimedOut { queue: self.queue(lock) }
        } else if self.over_conn_limit(conn) || (per_lock != 0 && lock.waiters.len() >= per_lock) {
            limit_error()
        } else {
            self.seq += 1;
            let waiter = Waiter {
                conn,
                request_id: rid,
                deadline: timeout.map(|t| now + Tick::from(t)),
                seq: self.seq,
            };
            return self.locks[i].waiters.push(waiter);
        };
        self.reply(conn, rid, response);
    }

    /// The holder of lock `i` let go: the first waiter gets it, or the lock disappears.
    fn hand_over(&mut self, i: usize) {
        if self.locks[i].waiters.is_empty() {
            self.locks.remove(i);
            return;
        }
        let waiter = self.locks[i].waiters.remove(0);
        let token = self.issue_token();
        (self.locks[i].holder, self.locks[i].token) = (waiter.conn, token);
        self.reply(waiter.conn, waiter.request_id, Response::Acquired { token });
    }

    fn unlock(&mut self, conn: usize, rid: u32, name: &str) {
        let Some(i) = self.locks.iter().position(|l| l.name == name) else {
            return self.reply(conn, rid, Response::ReleaseFailed);
        };
        if self.locks[i].holder == conn {
            self.reply(conn, rid, Response::Released);
            self.hand_over(i);
        } else if let Some(pos) = self.locks[i].waiters.iter().position(|w| w.conn == conn) {
            let waiter = self.locks[i].waiters.remove(pos);
            self.reply(conn, waiter.request_id, Response::Cancelled);
            self.reply(conn, rid, Response::Released);
        } else {
            self.reply(conn, rid, Response::ReleaseFailed);
        }
    }

    /// Waits end first (in arrival order), then holds are released in acquisition order.
    fn drop_all(&mut self, conn: usize, notify: bool) {
        let mut waits: Vec<(u64, u32)> = Vec::new();
        for lock in &mut self.locks {
            waits.extend(lock.waiters.iter().filter(|w| w.conn == conn).map(|w| (w.seq, w.request_id)));
            lock.waiters.retain(|w| w.conn != conn);
        }
        waits.sort();
        for (_, rid) in waits {
            if notify {
                self.reply(conn, rid, Response::Cancelled);
            }
        }
        while let Some(i) = (0..self.locks.len())
            .filter(|&i| self.locks[i].holder == conn)
            .min_by_key(|&i| self.locks[i].token)
        {
            self.hand_over(i);
        }
    }

    fn reset(&mut self, conn: usize, rid: u32) {
        self.drop_all(conn, true);
        self.reply(conn, rid, Response::ResetOk);
    }

    /// Every wait whose deadline has come times out, earliest deadline (then arrival) first.
    fn expire(&mut self, now: Tick) {
        let mut due: Vec<(Tick, u64)> = self
            .locks
            .iter()
            .flat_map(|l| &l.waiters)
            .filter_map(|w| w.deadline.filter(|&d| d <= now).map(|d| (d, w.seq)))
            .collect();
        due.sort();
        for (_, seq) in due {
            let Some(i) = self.locks.iter().position(|l| l.waiters.iter().any(|w| w.seq == seq)) else {
                continue;
            };
            let Some(pos) = self.locks[i].waiters.iter().position(|w| w.seq == seq) else { continue };
            let waiter = self.locks[i].waiters.remove(pos);
            let queue = self.queue(&self.locks[i]);
            self.reply(waiter.conn, waiter.request_id, Response::TimedOut { queue });
        }
    }

    fn listing(&self) -> Vec<LockInfo> {
        let mut locks: Vec<LockInfo> =
            self.locks.iter().map(|l| LockInfo { name: l.name.to_owned(), queue: self.queue(l) }).collect();
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        locks
    }

    fn my_locks(&self, conn: usize) -> Response {
        let mut held: Vec<String> =
            self.locks.iter().filter(|l| l.holder == conn).map(|l| l.name.to_owned()).collect();
        held.sort();
        let mut waits: Vec<(u64, String)> = self
            .locks
            .iter()
            .flat_map(|l| l.waiters.iter().filter(|w| w.conn == conn).map(|w| (w.seq, l.name.to_owned())))
            .collect();
        waits.sort();
        Response::MyLocks { held, waiting: waits.into_iter().map(|(_, name)| name).collect() }
    }
}

fn conn_id(slot: usize, generation: u32) -> ConnId {
    ConnId { slot: slot as u32, generation }
}

fn label(slot: usize, generation: u32) -> String {
    format!("10.0.0.{slot}:{generation}")
}

fn limit_error() -> Response {
    Response::error(officer::protocol::ErrorCode::LimitExceeded, "")
}

/// Per connection, the responses in order. Error messages are prose, so only codes compare.
fn per_conn(outputs: &[Output]) -> BTreeMap<ConnId, Vec<(u32, Response)>> {
    let mut map: BTreeMap<ConnId, Vec<(u32, Response)>> = BTreeMap::new();
    for o in outputs {
        let response = match &o.response {
            Response::Error { code, .. } => Response::error(*code, ""),
            other => other.clone(),
        };
        map.entry(o.conn).or_default().push((o.request_id, response));
    }
    map
}

/// Drives the table and the model side by side and checks them after every step.
struct Run {
    table: LockTable,
    model: Model,
    now: Tick,
    next_rid: u32,
    /// Answers counted per request; requests are registered when sent.
    answers: BTreeMap<(ConnId, u32), u32>,
}

impl Run {
    fn new(limits: TableLimits) -> Self {
        let mut table = LockTable::new(FIRST_TOKEN, limits);
        let model = Model::new(limits);
        for conn in &model.conns {
            table.connect(conn.id, conn.label.clone());
        }
        Run { table, model, now: 0, next_rid: 1, answers: BTreeMap::new() }
    }

    fn request(&mut self, conn: usize) -> u32 {
        self.next_rid += 1;
        self.answers.insert((self.model.conns[conn].id, self.next_rid), 0);
        self.next_rid
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        let now = self.now;
        match *op {
            Op::Lock { conn, .. }
            | Op::Unlock { conn, .. }
            | Op::Reset { conn }
            | Op::Disconnect { conn }
                if !self.model.conns[conn].connected => {}
            Op::Lock { conn, name, timeout_ms, queue_max } => {
                let rid = self.request(conn);
                let req = LockRequest { name: NAMES[name], timeout_ms, queue_max };
                self.table.lock(now, self.model.conns[conn].id, rid, &req, &mut out);
                self.model.lock(now, conn, rid, NAMES[name], timeout_ms, queue_max);
            }
            Op::Unlock { conn, name } => {
                let rid = self.request(conn);
                self.table.unlock(now, self.model.conns[conn].id, rid, NAMES[name], &mut out);
                self.model.unlock(conn, rid, NAMES[name]);
            }
            Op::Reset { conn } => {
                let rid = self.request(conn);
                self.table.reset(now, self.model.conns[conn].id, rid, &mut out);
                self.model.reset(conn, rid);
            }
            Op::Disconnect { conn } => {
                self.table.disconnect(now, self.model.conns[conn].id, &mut out);
                self.model.drop_all(conn, false);
                self.model.conns[conn].connected = false;
            }
            Op::Connect { conn } => {
                let c = &mut self.model.conns[conn];
                if !c.connected {
                    let generation = c.id.generation + 1;
                    (c.id, c.label, c.connected) = (conn_id(conn, generation), label(conn, generation), true);
                    self.table.connect(c.id, c.label.clone());
                }
            }
            Op::Advance { ms } => {
                self.now += ms;
                self.table.expire(self.now, &mut out);
                self.model.expire(self.now);
            }
        }
        self.check(op, out)
    }

    fn check(&mut self, op: &Op, out: Vec<Output>) -> Result<(), TestCaseError> {
        let expected = std::mem::take(&mut self.model.out);
        prop_assert_eq!(per_conn(&out), per_conn(&expected), "after {:?}", op);
        for o in &out {
            let live = self.model.conns.iter().any(|c| c.connected && c.id == o.conn);
            prop_assert!(live, "answer to a departed connection: {:?}", o);
            let count = self.answers.get_mut(&(o.conn, o.request_id));
            prop_assert!(count.is_some(), "answer to an unknown request: {:?}", o);
            if let Some(count) = count {
                *count += 1;
            }
        }
        let listing = Response::Locks { locks: self.model.listing(), truncated: false };
        prop_assert_eq!(self.table.locks("", 0), listing, "after {:?}", op);
        for (slot, conn) in self.model.conns.iter().enumerate().filter(|(_, c)| c.connected) {
            prop_assert_eq!(self.table.my_locks(conn.id), self.model.my_locks(slot));
        }
        let stats = self.table.stats();
        let waiters = self.model.locks.iter().map(|l| l.waiters.len()).sum::<usize>();
        prop_assert_eq!((stats.locks_held, stats.waiters), (self.model.locks.len(), waiters));
        prop_assert_eq!(self.table.last_token(), self.model.next_token - 1);
        Ok(())
    }

    /// Ends every pending wait with a RESET, then checks each request got exactly one answer
    /// (at most one for connections that went away).
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for conn in 0..CONNS {
            self.apply(&Op::Reset { conn })?;
        }
        for (&(id, rid), &count) in &self.answers {
            let live = self.model.conns.iter().any(|c| c.connected && c.id == id);
            if live {
                prop_assert_eq!(count, 1, "request {} of {:?}", rid, id);
            } else {
                prop_assert!(count <= 1, "request {} of {:?} answered {} times", rid, id, count);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn table_matches_reference_model(limits in limits(), ops in prop::collection::vec(op(), 1..80)) {
        let mut run = Run::new(limits);
        for op in &ops {
            run.apply(op)?;
        }
        run.finish()?;
    }
}
