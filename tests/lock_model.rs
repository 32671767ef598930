//! Model-based test of the lock table: random sequences of LOCK (with and without timeout and
//! queue_max; exclusive, shared or a number of semaphore permits), UNLOCK (with and without a
//! token), RESET, connect, disconnect and the passing of time over 4 connections and 3 names
//! (two mostly read/write locks, one mostly a semaphore of 3 permits), with leases, hold
//! budgets, lock-delays and contention notices now and then, RENEW, DOWNGRADE, CHECK and
//! REVOKE, and resumable sessions (issue 14: SESSION_OPEN, a lost connection detaching its
//! session for a grace, a resume by a new connection or a takeover, the grace running out,
//! waits that skip while detached, by their LOCK's flag or their session's default),
//! run against `officer::locks::LockTable` and against a deliberately naive Vec-based
//! reference model written here. After every step both must have answered each connection the
//! same responses in the same order and agree on holders and queues; over a run every request
//! gets exactly one answer, except requests of a connection that went away (a detached
//! session's answers count when its resume replays them).
//!
//! The table runs with tiny batches (1 to 3 timeouts per `expire`, 1 to 3 holds per release
//! step), so RESETs and disconnects are released across several `Step`s with other requests
//! in between, as the server does across turns of its loop. The model keeps each pending
//! release too; a RESETting connection sends nothing until its RESET is answered, as the server
//! holds its requests back.
//!
//! The invariants of issue 13 are checked after every step, on the model and by the table's
//! self-check: never an exclusive holder beside any other holder, permits never above the
//! limit, no waiter left waiting that fits (so FIFO grants are never skipped) and tokens
//! strictly increasing in grant order.
//!
//! The table is driven only through `apply`; every output must also name the lock its
//! response is about (the request's name, or the waited-for lock's), session ids come from
//! `next_session` and are never handed out twice, and the table's self-check holds after
//! every step.

use std::collections::BTreeMap;

use officer::locks::{Command, LockOpts, LockTable, Mode, Name, Output, SessionId, TableLimits, Tick};
use officer::protocol::{ErrorCode, LockInfo, LostReason, Response, Resumed, SessionOk, NOTICE_REQUEST_ID};
use proptest::prelude::*;

const CONNS: usize = 4;
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const FIRST_TOKEN: u64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    Lock {
        conn: usize,
        name: usize,
        timeout_ms: Option<u32>,
        queue_max: Option<u32>,
        mode: Mode,
        lease: LeaseOpts,
        /// LOCK_EXT flags bit 1: skip the wait if its turn comes while detached.
        skip: bool,
    },
    Renew {
        conn: usize,
        name: usize,
        token: TokenPick,
    },
    /// An operator's REVOKE, sent by `conn`, of every grant (`Without`) or one.
    Revoke {
        conn: usize,
        name: usize,
        token: TokenPick,
    },
    Unlock {
        conn: usize,
        name: usize,
        token: TokenPick,
    },
    Downgrade {
        conn: usize,
        name: usize,
        token: TokenPick,
    },
    Check {
        conn: usize,
        name: usize,
        token: TokenPick,
    },
    Reset {
        conn: usize,
    },
    Disconnect {
        conn: usize,
    },
    Connect {
        conn: usize,
    },
    /// Time passes, then one turn of the loop (`Expire`) at the new tick.
    Advance {
        ms: Tick,
    },
    /// One turn of the server's loop (`Expire`: a release step, then an expire) at the same tick.
    Step,
    /// SESSION_OPEN (issue 14) with this grace (0: no session), and with flags bit 0 (every
    /// wait skips while detached) when `skip`.
    OpenSession {
        conn: usize,
        grace_ms: u32,
        skip: bool,
    },
    /// The connection is lost: a resumable session is detached for its grace, any other goes.
    Suspend {
        conn: usize,
    },
    /// A new connection resumes (or, still attached, takes over) the slot's session.
    Resume {
        conn: usize,
    },
}

/// Which token an UNLOCK carries, picked from the model's state when it is sent.
#[derive(Debug, Clone, Copy)]
enum TokenPick {
    /// None: the v1 UNLOCK (DOWNGRADE and CHECK, which need one, take `Own` instead).
    Without,
    /// The token of the sender's own grant of the name (one never issued if it has none).
    Own,
    /// The last token issued, whoever holds it.
    Last,
}

/// The semaphore limit the users of `gamma` agree on.
const LIMIT: u32 = 3;

/// The mode of a LOCK of `name`: mostly what the name is used as (read/write locks for the
/// first two, a semaphore of `LIMIT` for the third), sometimes a mismatch; permit counts
/// sometimes out of range.
fn mode_for(name: usize, roll: u32, count: u32) -> Mode {
    match (name, roll) {
        (2, 0) => Mode::Exclusive,
        (2, 1) => Mode::Permits { count, limit: LIMIT - 1 },
        (2, _) => Mode::Permits { count, limit: LIMIT },
        (_, 0) => Mode::Permits { count: 1, limit: LIMIT },
        (_, r) if r < 6 => Mode::Shared,
        _ => Mode::Exclusive,
    }
}

fn op() -> impl Strategy<Value = Op> {
    op_on(vec![0, 1, 2])
}

/// Ops on the names of `names` (indices into `NAMES`) only: fewer names make more contention.
fn op_on(names: Vec<usize>) -> impl Strategy<Value = Op> {
    let name = prop::sample::select(names);
    let timeout = prop_oneof![2 => Just(None), 1 => Just(Some(0)), 3 => (1..20u32).prop_map(Some)];
    let queue_max = prop_oneof![3 => Just(None), 1 => (1..4u32).prop_map(Some)];
    let count = prop_oneof![1 => Just(0u32), 10 => 1..=LIMIT, 1 => Just(LIMIT + 1)];
    let token =
        prop_oneof![4 => Just(TokenPick::Without), 1 => Just(TokenPick::Own), 1 => Just(TokenPick::Last)];
    prop_oneof![
        6 => (0..CONNS, name.clone(), timeout, queue_max, 0..12u32, count, lease(), 0..3u8).prop_map(
            |(conn, name, timeout_ms, queue_max, roll, count, lease, skip)| {
                let (mode, skip) = (mode_for(name, roll, count), skip == 0);
                Op::Lock { conn, name, timeout_ms, queue_max, mode, lease, skip }
            }
        ),
        1 => (0..CONNS, name.clone(), token.clone()).prop_map(|(conn, name, token)| Op::Renew { conn, name, token }),
        1 => (0..CONNS, name.clone(), token.clone()).prop_map(|(conn, name, token)| Op::Revoke { conn, name, token }),
        3 => (0..CONNS, name.clone(), token.clone()).prop_map(|(conn, name, token)| Op::Unlock { conn, name, token }),
        1 => (0..CONNS, name.clone(), token.clone()).prop_map(|(conn, name, token)| Op::Downgrade { conn, name, token }),
        1 => (0..CONNS, name, token).prop_map(|(conn, name, token)| Op::Check { conn, name, token }),
        1 => (0..CONNS).prop_map(|conn| Op::Reset { conn }),
        1 => (0..CONNS).prop_map(|conn| Op::Disconnect { conn }),
        1 => (0..CONNS).prop_map(|conn| Op::Connect { conn }),
        3 => (0..15u64).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Step),
        2 => (0..CONNS, prop_oneof![1 => Just(0u32), 4 => 1..60u32], 0..3u8)
            .prop_map(|(conn, grace_ms, skip)| Op::OpenSession { conn, grace_ms, skip: skip == 0 }),
        2 => (0..CONNS).prop_map(|conn| Op::Suspend { conn }),
        2 => (0..CONNS).prop_map(|conn| Op::Resume { conn }),
    ]
}

/// The secret every session of the model test gets (the server draws one per session).
const SECRET: [u8; 16] = [7; 16];

/// Mostly neither; leases short enough to end within a run, hold budgets a little longer.
fn lease() -> impl Strategy<Value = LeaseOpts> {
    let lease = prop_oneof![3 => Just(None), 1 => (1..30u32).prop_map(Some)];
    let hold = prop_oneof![4 => Just(None), 1 => (1..60u32).prop_map(Some)];
    // Above the model test's maximum of 100 now and then: refused.
    let delay = prop_oneof![3 => Just(0u32), 1 => 1..40u32, 1 => Just(101u32)];
    let notify = prop_oneof![2 => Just(false), 1 => Just(true)];
    (lease, hold, delay, notify)
}

/// `(expire batch, release batch)`: mostly tiny, sometimes the server's defaults.
fn batches() -> impl Strategy<Value = (usize, usize)> {
    let batch = prop_oneof![3 => 1..4usize, 1 => Just(1000usize)];
    (batch.clone(), batch)
}

fn limits() -> impl Strategy<Value = TableLimits> {
    let per_conn = prop_oneof![2 => Just(0u32), 1 => 1..4u32];
    let per_lock = prop_oneof![2 => Just(0u32), 1 => 1..3u32];
    (per_conn, per_lock).prop_map(|(max_locks_per_conn, max_waiters_per_lock)| TableLimits {
        max_locks_per_conn,
        max_waiters_per_lock,
        list_max_default: 100,
        max_lock_delay_ms: 100,
    })
}

struct Waiter {
    conn: usize,
    request_id: u32,
    mode: Mode,
    lease: LeaseOpts,
    deadline: Option<Tick>,
    /// Global arrival order, which is also the order wait timers were created.
    seq: u64,
    /// Its turn, when its session is detached, skips it (PROTOCOL.md §6.14).
    skip: bool,
}

/// One grant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grant {
    conn: usize,
    token: u64,
    mode: Mode,
    /// Its lease and hold budget, if it asked for either.
    ends: Option<Ends>,
    /// Its lock-delay after an abnormal end.
    delay: u32,
    /// It asked for CONTENDED and has not been told yet.
    notify: bool,
}

/// The tick a lease, hold budget or lock-delay of `ms` begun at tick `now` ends at: one tick
/// late, since "at `now`" may mean up to a tick later (PROTOCOL.md §6.9: never early). RENEWED
/// reports the `ms` left without that tick.
fn span_end(now: Tick, ms: u32) -> Tick {
    now + Tick::from(ms) + 1
}

/// `(lease_ms, max_hold_ms, lock_delay_ms, notify_contention)` of a LOCK.
type LeaseOpts = (Option<u32>, Option<u32>, u32, bool);

/// When a grant with a lease or hold budget ends, and the order of its timer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ends {
    lease_ms: Option<u32>,
    lease_end: Option<Tick>,
    hold_end: Option<Tick>,
    /// When its timer was (last) set, in the order shared with wait timers.
    seq: u64,
}

impl Ends {
    fn at(&self) -> Tick {
        self.lease_end.unwrap_or(Tick::MAX).min(self.hold_end.unwrap_or(Tick::MAX))
    }
}

struct Lock {
    name: &'static str,
    /// The semaphore limit, or 0 for a read/write lock: fixed while the lock exists.
    limit: u32,
    /// In grant order; never empty at rest, except during a lock-delay.
    holders: Vec<Grant>,
    waiters: Vec<Waiter>,
    /// A lock-delay's end and the order of its timer: the lock grants nothing until then.
    delay: Option<(Tick, u64)>,
}

fn limit_of(mode: Mode) -> u32 {
    match mode {
        Mode::Permits { limit, .. } => limit,
        _ => 0,
    }
}

impl Lock {
    fn holder(&self, conn: usize) -> Option<Grant> {
        self.holders.iter().copied().find(|g| g.conn == conn)
    }

    /// Whether a grant in `mode` could be made beside the holders, said as the spec says it.
    fn fits(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => self.holders.is_empty(),
            Mode::Shared => self.holders.iter().all(|g| g.mode == Mode::Shared),
            Mode::Permits { count, limit } => {
                let used: u32 = self.holders.iter().map(|g| permits(g.mode)).sum();
                used + count <= limit
            }
        }
    }
}

fn permits(mode: Mode) -> u32 {
    match mode {
        Mode::Permits { count, .. } => count,
        _ => 0,
    }
}

struct Conn {
    id: SessionId,
    label: String,
    connected: bool,
    /// Its grace, when SESSION_OPEN made it resumable.
    grace: Option<u32>,
    /// SESSION_OPEN flags bit 0: every wait of the session skips while detached.
    skip_default: bool,
    /// While detached: the label to give back, the grace end and its timer order, and what it
    /// was sent meanwhile, in order.
    detached: Option<Detached>,
}

struct Detached {
    label: String,
    until: Tick,
    seq: u64,
    outbox: Vec<Output>,
}

/// A RESET (with its request id) or a disconnect (`None`) whose holds are not all released.
struct Pending {
    conn: usize,
    reset: Option<u32>,
}

/// The reference: linear scans everywhere, written straight from the specification.
struct Model {
    limits: TableLimits,
    conns: Vec<Conn>,
    locks: Vec<Lock>,
    next_token: u64,
    seq: u64,
    out: Vec<Output>,
    expire_batch: usize,
    release_batch: usize,
    /// Oldest first; released `release_batch` holds per step.
    pending: Vec<Pending>,
    /// Holds RESETs and disconnects may release at once until the next step refills it.
    inline_budget: usize,
    /// The tick of the op being applied.
    now: Tick,
    /// Per connection, the grants it lost without asking: `(name, token, reason)`.
    lost: Vec<Vec<(&'static str, u64, LostReason)>>,
}

impl Model {
    fn new(limits: TableLimits, (expire_batch, release_batch): (usize, usize)) -> Self {
        // The table's first sessions: ids count from 1.
        let conns = (0..CONNS)
            .map(|c| {
                let id = SessionId(c as u64 + 1);
                Conn {
                    id,
                    label: label(c, id),
                    connected: true,
                    grace: None,
                    skip_default: false,
                    detached: None,
                }
            })
            .collect();
        Model {
            limits,
            conns,
            locks: Vec::new(),
            next_token: FIRST_TOKEN,
            seq: 0,
            out: Vec::new(),
            expire_batch,
            release_batch,
            pending: Vec::new(),
            inline_budget: release_batch,
            now: 0,
            lost: vec![Vec::new(); CONNS],
        }
    }

    fn releasing(&self, conn: usize) -> bool {
        self.pending.iter().any(|p| p.conn == conn)
    }

    /// Answers `conn`'s request about lock `name` (`None` only for RESET_OK).
    fn reply(&mut self, conn: usize, request_id: u32, name: Option<&str>, response: Response) {
        let lock = name.map(Name::from);
        let output = Output { session: self.conns[conn].id, request_id, lock, response };
        // A detached session's outputs wait for its resume (issue 14).
        match &mut self.conns[conn].detached {
            Some(detached) => detached.outbox.push(output),
            None => self.out.push(output),
        }
    }

    fn queue(&self, lock: &Lock) -> Vec<String> {
        let conns = lock.holders.iter().map(|g| g.conn).chain(lock.waiters.iter().map(|w| w.conn));
        conns.map(|c| self.conns[c].label.clone()).collect()
    }

    fn count(&self, conn: usize) -> usize {
        let holds = self.locks.iter().filter(|l| l.holder(conn).is_some()).count();
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

    /// A grant made now, with a new token and, if it asked, its lease timer.
    fn new_grant(
        &mut self,
        conn: usize,
        mode: Mode,
        (lease_ms, max_hold_ms, delay, notify): LeaseOpts,
    ) -> Grant {
        let token = self.issue_token();
        let ends = (lease_ms.is_some() || max_hold_ms.is_some()).then(|| {
            self.seq += 1;
            let after = |ms: Option<u32>| ms.map(|ms| span_end(self.now, ms));
            Ends { lease_ms, lease_end: after(lease_ms), hold_end: after(max_hold_ms), seq: self.seq }
        });
        Grant { conn, token, mode, ends, delay, notify }
    }

    /// The answer to a request about grant `token` (any, if `None`) of `name` that `conn` lost.
    fn take_lost(&mut self, conn: usize, name: &str, token: Option<u64>) -> Option<Response> {
        let lost = &mut self.lost[conn];
        let pos = lost.iter().position(|&(n, t, _)| n == name && token.is_none_or(|token| token == t))?;
        let (name, token, reason) = lost.remove(pos);
        Some(Response::Lost { token, reason, name: name.to_owned() })
    }

    #[allow(clippy::too_many_arguments)]
    fn lock(
        &mut self,
        now: Tick,
        conn: usize,
        rid: u32,
        name: &'static str,
        timeout: Option<u32>,
        qmax: Option<u32>,
        mode: Mode,
        lease: LeaseOpts,
        skip: bool,
    ) {
        self.lost[conn].retain(|&(n, _, _)| n != name);
        if let Mode::Permits { count, limit } = mode {
            if count == 0 || count > limit {
                return self.reply(conn, rid, Some(name), bad_permits());
            }
        }
        if lease.2 > self.limits.max_lock_delay_ms {
            return self.reply(conn, rid, Some(name), bad_permits());
        }
        let Some(i) = self.locks.iter().position(|l| l.name == name) else {
            if self.over_conn_limit(conn) {
                return self.reply(conn, rid, Some(name), limit_error());
            }
            let grant = self.new_grant(conn, mode, lease);
            let token = grant.token;
            let holders = vec![grant];
            self.locks.push(Lock { name, limit: limit_of(mode), holders, waiters: Vec::new(), delay: None });
            return self.reply(conn, rid, Some(name), Response::Acquired { token });
        };
        let lock = &self.locks[i];
        let per_lock = self.limits.max_waiters_per_lock as usize;
        let response = if lock.limit != limit_of(mode) {
            kind_mismatch()
        } else if let Some(grant) = lock.holder(conn) {
            if grant.mode == mode {
                Response::AlreadyAcquired { token: grant.token }
            } else {
                mode_conflict()
            }
        } else if lock.waiters.iter().any(|w| w.conn == conn) {
            Response::AlreadyWaiting
        } else if lock.waiters.is_empty() && lock.delay.is_none() && lock.fits(mode) {
            if self.over_conn_limit(conn) {
                limit_error()
            } else {
                let grant = self.new_grant(conn, mode, lease);
                self.locks[i].holders.push(grant);
                Response::Acquired { token: grant.token }
            }
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
                mode,
                lease,
                deadline: timeout.map(|t| now + Tick::from(t)),
                seq: self.seq,
                skip: self.conns[conn].grace.is_some() && (skip || self.conns[conn].skip_default),
            };
            self.locks[i].waiters.push(waiter);
            return self.notify(i);
        };
        self.reply(conn, rid, Some(name), response);
    }

    /// CONTENDED to each holder of lock `i` that asked and was not told, if anyone waits.
    fn notify(&mut self, i: usize) {
        if self.locks[i].waiters.is_empty() {
            return;
        }
        let name = self.locks[i].name;
        for pos in 0..self.locks[i].holders.len() {
            let g = &mut self.locks[i].holders[pos];
            // A departed holder whose holds are still being released is told nothing.
            if !self.conns[g.conn].connected {
                continue;
            }
            if std::mem::take(&mut g.notify) {
                let (conn, token) = (g.conn, g.token);
                self.reply(
                    conn,
                    NOTICE_REQUEST_ID,
                    Some(name),
                    Response::Contended { token, name: name.to_owned() },
                );
            }
        }
    }

    /// Lock `i` may have room: the head of its queue is granted while it fits beside every
    /// holder; a lock nobody holds or awaits disappears. `i` is stale afterwards.
    fn grant(&mut self, i: usize, _now: Tick) {
        let mut granted = false;
        while self.locks[i].delay.is_none()
            && self.locks[i].waiters.first().is_some_and(|w| self.locks[i].fits(w.mode))
        {
            let waiter = self.locks[i].waiters.remove(0);
            let name = self.locks[i].name;
            if waiter.skip && self.conns[waiter.conn].detached.is_some() {
                // Its turn came while its session is away: it leaves ungranted (§6.14).
                let skipped = Response::error(ErrorCode::Skipped, "");
                self.reply(waiter.conn, waiter.request_id, Some(name), skipped);
                continue;
            }
            let grant = self.new_grant(waiter.conn, waiter.mode, waiter.lease);
            self.locks[i].holders.push(grant);
            self.reply(waiter.conn, waiter.request_id, Some(name), Response::Acquired { token: grant.token });
            granted = true;
        }
        if granted {
            self.notify(i);
        }
        let lock = &self.locks[i];
        if lock.holders.is_empty() && lock.waiters.is_empty() && lock.delay.is_none() {
            self.locks.remove(i);
        }
    }

    /// The grant of `conn` on lock `i` ends. `i` is stale afterwards.
    fn release(&mut self, i: usize, conn: usize) {
        self.locks[i].holders.retain(|g| g.conn != conn);
        self.grant(i, 0);
    }

    /// The grant of `conn` on lock `i` ends abnormally: with a lock-delay, the lock grants
    /// nothing until the latest delay's end. `i` is stale afterwards.
    fn vanish(&mut self, i: usize, conn: usize) {
        let delay = self.locks[i].holder(conn).map_or(0, |g| g.delay);
        let until = span_end(self.now, delay);
        if delay != 0 && self.locks[i].delay.is_none_or(|(at, _)| at < until) {
            self.seq += 1;
            self.locks[i].delay = Some((until, self.seq));
        }
        self.release(i, conn);
    }

    fn unlock(&mut self, conn: usize, rid: u32, name: &str, token: Option<u64>) {
        let Some(i) = self.locks.iter().position(|l| l.name == name) else {
            let answer = self.take_lost(conn, name, token).unwrap_or(Response::ReleaseFailed);
            return self.reply(conn, rid, Some(name), answer);
        };
        let holds = self.locks[i].holder(conn).is_some_and(|g| token.is_none_or(|t| t == g.token));
        let wait = self.locks[i].waiters.iter().position(|w| w.conn == conn).filter(|_| token.is_none());
        if holds {
            self.reply(conn, rid, Some(name), Response::Released);
            self.release(i, conn);
        } else if let Some(pos) = wait {
            let waiter = self.locks[i].waiters.remove(pos);
            self.reply(conn, waiter.request_id, Some(name), Response::Cancelled);
            self.reply(conn, rid, Some(name), Response::Released);
            self.grant(i, 0);
        } else if let Some(lost) = self.take_lost(conn, name, token) {
            self.reply(conn, rid, Some(name), lost);
        } else {
            self.reply(conn, rid, Some(name), Response::ReleaseFailed);
        }
    }

    /// RENEW: the lease starts again from now, never past the hold budget.
    fn renew(&mut self, conn: usize, rid: u32, name: &'static str, token: u64) {
        let now = self.now;
        let i = self.locks.iter().position(|l| l.name == name);
        let pos =
            i.and_then(|i| self.locks[i].holders.iter().position(|g| g.conn == conn && g.token == token));
        let (Some(i), Some(pos)) = (i, pos) else {
            let answer = self.take_lost(conn, name, Some(token)).unwrap_or_else(not_holder);
            return self.reply(conn, rid, Some(name), answer);
        };
        let ends_in_ms = match self.locks[i].holders[pos].ends {
            None => None,
            Some(mut ends) => {
                if let Some(ms) = ends.lease_ms {
                    self.seq += 1;
                    ends.lease_end = Some(span_end(now, ms));
                    ends.seq = self.seq;
                }
                self.locks[i].holders[pos].ends = Some(ends);
                Some(ends.at().saturating_sub(now).saturating_sub(1) as u32)
            }
        };
        self.reply(conn, rid, Some(name), Response::Renewed { ends_in_ms });
    }

    /// DOWNGRADE: the same grant, same token, now shared; readers behind it may join.
    fn downgrade(&mut self, conn: usize, rid: u32, name: &'static str, token: u64) {
        let i = self.locks.iter().position(|l| l.name == name);
        let grant = i.and_then(|i| self.locks[i].holder(conn)).filter(|g| g.token == token);
        match (i, grant) {
            (Some(i), Some(g)) if g.mode == Mode::Exclusive => {
                self.locks[i].holders[0].mode = Mode::Shared;
                self.reply(conn, rid, Some(name), Response::Downgraded);
                self.grant(i, 0);
            }
            (Some(_), Some(_)) => self.reply(conn, rid, Some(name), mode_conflict()),
            _ => {
                let answer = self.take_lost(conn, name, Some(token)).unwrap_or_else(not_holder);
                self.reply(conn, rid, Some(name), answer);
            }
        }
    }

    fn check_token(&mut self, conn: usize, rid: u32, name: &'static str, token: u64) {
        let lock = self.locks.iter().find(|l| l.name == name);
        let held = lock.is_some_and(|l| l.holders.iter().any(|g| g.token == token));
        self.reply(conn, rid, Some(name), Response::Checked { held });
    }

    /// The token `pick` names for an UNLOCK by `conn` of `name`.
    fn pick(&self, pick: TokenPick, conn: usize, name: &str) -> Option<u64> {
        let own = self.locks.iter().find(|l| l.name == name).and_then(|l| l.holder(conn));
        match pick {
            TokenPick::Without => None,
            TokenPick::Own => Some(own.map_or(FIRST_TOKEN - 1, |g| g.token)),
            TokenPick::Last => Some(self.next_token - 1),
        }
    }

    /// Waits end at once, in arrival order (answered `Cancelled` when `notify`).
    /// Each wait that leaves may let the waiters behind it in.
    fn cancel_waits(&mut self, conn: usize, notify: bool) {
        let mut waits: Vec<(u64, u32, &'static str)> = Vec::new();
        for lock in &self.locks {
            let name = lock.name;
            waits.extend(lock.waiters.iter().filter(|w| w.conn == conn).map(|w| (w.seq, w.request_id, name)));
        }
        waits.sort();
        for (_, rid, name) in waits {
            let Some(i) = self.locks.iter().position(|l| l.name == name) else { continue };
            self.locks[i].waiters.retain(|w| w.conn != conn);
            if notify {
                self.reply(conn, rid, Some(name), Response::Cancelled);
            }
            self.grant(i, 0);
        }
    }

    /// Releases holds of `conn` in acquisition (token) order while `budget` lasts; true when
    /// none is left.
    fn release_holds(&mut self, conn: usize, budget: &mut usize) -> bool {
        loop {
            let oldest =
                (0..self.locks.len()).filter_map(|i| self.locks[i].holder(conn).map(|g| (g.token, i))).min();
            let Some((_, i)) = oldest else { return true };
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            if self.conns[conn].connected {
                self.release(i, conn);
            } else {
                self.vanish(i, conn);
            }
        }
    }

    /// A disconnect: waits end unanswered, up to a batch of holds goes now, the rest later.
    fn disconnect(&mut self, conn: usize) {
        self.end_detached(conn);
        self.conns[conn].connected = false;
        (self.conns[conn].grace, self.conns[conn].skip_default) = (None, false);
        self.lost[conn].clear();
        self.cancel_waits(conn, false);
        if let Some(p) = self.pending.iter_mut().find(|p| p.conn == conn) {
            p.reset = None;
            return;
        }
        let mut budget = std::mem::take(&mut self.inline_budget);
        let done = self.release_holds(conn, &mut budget);
        self.inline_budget = budget;
        if !done {
            self.pending.push(Pending { conn, reset: None });
        }
    }

    fn reset(&mut self, conn: usize, rid: u32) {
        self.cancel_waits(conn, true);
        let mut budget = std::mem::take(&mut self.inline_budget);
        let done = self.release_holds(conn, &mut budget);
        self.inline_budget = budget;
        if done {
            self.reply(conn, rid, None, Response::ResetOk);
        } else {
            self.pending.push(Pending { conn, reset: Some(rid) });
        }
    }

    /// One release step: a batch of holds of the pending releases, in turn (the one the batch
    /// ran out on goes to the back); a RESET is answered when its last hold is gone.
    fn release_step(&mut self) {
        self.inline_budget = self.release_batch;
        let mut budget = self.release_batch;
        while let Some(p) = self.pending.first() {
            let conn = p.conn;
            if !self.release_holds(conn, &mut budget) {
                let p = self.pending.remove(0);
                self.pending.push(p);
                break;
            }
            let p = self.pending.remove(0);
            if let Some(rid) = p.reset {
                self.reply(conn, rid, None, Response::ResetOk);
            }
        }
    }

    /// Every wait whose deadline has come times out and every grant whose lease or hold
    /// budget has run out ends with LOST, earliest deadline (then the order their timers were
    /// set) first. At most `expire_batch` of them per call; the others stay due for the next.
    fn expire(&mut self, now: Tick) {
        let mut due: Vec<(Tick, u64)> = self
            .locks
            .iter()
            .flat_map(|l| &l.waiters)
            .filter_map(|w| w.deadline.filter(|&d| d <= now).map(|d| (d, w.seq)))
            .collect();
        let ends = self.locks.iter().flat_map(|l| &l.holders).filter_map(|g| g.ends);
        due.extend(ends.filter(|e| e.at() <= now).map(|e| (e.at(), e.seq)));
        due.extend(self.locks.iter().filter_map(|l| l.delay).filter(|&(at, _)| at <= now));
        let graces = self.conns.iter().filter_map(|c| c.detached.as_ref());
        due.extend(graces.filter(|d| d.until <= now).map(|d| (d.until, d.seq)));
        due.sort();
        due.truncate(self.expire_batch);
        for (_, seq) in due {
            if self.end_lease(seq, now) || self.end_delay(seq, now) || self.end_grace(seq) {
                continue;
            }
            let Some(i) = self.locks.iter().position(|l| l.waiters.iter().any(|w| w.seq == seq)) else {
                continue;
            };
            let Some(pos) = self.locks[i].waiters.iter().position(|w| w.seq == seq) else { continue };
            let waiter = self.locks[i].waiters.remove(pos);
            let queue = self.queue(&self.locks[i]);
            let name = self.locks[i].name;
            self.reply(waiter.conn, waiter.request_id, Some(name), Response::TimedOut { queue });
            self.grant(i, now);
        }
    }

    /// Ends the lock-delay whose timer is `seq`, if there is one: the waiters may have room.
    fn end_delay(&mut self, seq: u64, now: Tick) -> bool {
        let Some(i) = self.locks.iter().position(|l| l.delay.is_some_and(|(_, s)| s == seq)) else {
            return false;
        };
        self.locks[i].delay = None;
        self.grant(i, now);
        true
    }

    /// Ends the grant whose lease timer is `seq`, if there is one: LOST to its holder.
    fn end_lease(&mut self, seq: u64, now: Tick) -> bool {
        let find = |l: &Lock| l.holders.iter().position(|g| g.ends.is_some_and(|e| e.seq == seq));
        let Some((i, pos)) = self.locks.iter().enumerate().find_map(|(i, l)| find(l).map(|p| (i, p))) else {
            return false;
        };
        let grant = self.locks[i].holders[pos];
        let ends = grant.ends.expect("found by its ends");
        let reason = if ends.hold_end.is_some_and(|at| at <= now) {
            LostReason::MaxHold
        } else {
            LostReason::LeaseExpired
        };
        let name = self.locks[i].name;
        if self.conns[grant.conn].connected {
            self.lost[grant.conn].push((name, grant.token, reason));
            let response = Response::Lost { token: grant.token, reason, name: name.to_owned() };
            self.reply(grant.conn, NOTICE_REQUEST_ID, Some(name), response);
        }
        self.vanish(i, grant.conn);
        true
    }

    /// REVOKE: the grants held now (one, or all), each with LOST `revoked` and its lock-delay,
    /// all ended before the waiters they made room for are served (one batch: the run never
    /// holds more than `revoke_batch` grants of a name), so a waiter is never granted between
    /// two victims, nor while a victim's lock-delay runs.
    fn revoke(&mut self, conn: usize, rid: u32, name: &'static str, token: Option<u64>) {
        let i = self.locks.iter().position(|l| l.name == name);
        let victims: Vec<Grant> = i
            .map(|i| {
                self.locks[i].holders.iter().filter(|g| token.is_none_or(|t| t == g.token)).copied().collect()
            })
            .unwrap_or_default();
        for g in &victims {
            if self.conns[g.conn].connected {
                self.lost[g.conn].push((name, g.token, LostReason::Revoked));
                let response =
                    Response::Lost { token: g.token, reason: LostReason::Revoked, name: name.to_owned() };
                self.reply(g.conn, NOTICE_REQUEST_ID, Some(name), response);
            }
        }
        if let (Some(i), false) = (i, victims.is_empty()) {
            for g in &victims {
                let until = span_end(self.now, g.delay);
                if g.delay != 0 && self.locks[i].delay.is_none_or(|(at, _)| at < until) {
                    self.seq += 1;
                    self.locks[i].delay = Some((until, self.seq));
                }
                self.locks[i].holders.retain(|h| h.token != g.token);
            }
            self.grant(i, 0);
        }
        self.reply(conn, rid, Some(name), Response::Revoked { count: victims.len() as u32 });
    }

    /// SESSION_OPEN: a fresh connection becomes resumable with `grace_ms` (0: it does not).
    fn open_session(&mut self, conn: usize, rid: u32, grace_ms: u32, skip: bool) {
        let response = if self.conns[conn].grace.is_some() || self.count(conn) != 0 {
            Response::error(ErrorCode::SessionState, "")
        } else if grace_ms == 0 {
            Response::SessionOk(SessionOk::NONE)
        } else {
            (self.conns[conn].grace, self.conns[conn].skip_default) = (Some(grace_ms), skip);
            let session_id = self.conns[conn].id.0;
            Response::SessionOk(SessionOk { session_id, secret: SECRET, grace_ms })
        };
        self.reply(conn, rid, None, response);
    }

    /// The connection is lost: detached for its grace (ending one tick late, never early), or,
    /// without a session, a disconnect.
    fn suspend(&mut self, conn: usize) {
        let Some(grace) = self.conns[conn].grace else { return self.disconnect(conn) };
        if self.conns[conn].detached.is_some() {
            return;
        }
        self.seq += 1;
        let c = &mut self.conns[conn];
        let marked = format!("{} (detached)", c.label);
        let label = std::mem::replace(&mut c.label, marked);
        c.detached =
            Some(Detached { label, until: self.now + Tick::from(grace) + 1, seq: self.seq, outbox: vec![] });
    }

    /// A new connection (session `from`, labelled `label`) resumes `conn`'s session: RESUMED with
    /// what was kept, in order; an attached session's older connection is told `taken_over`.
    fn resume(&mut self, conn: usize, rid: u32, label: String) {
        let grace_ms = self.conns[conn].grace.expect("only resumable sessions are resumed");
        let session = self.conns[conn].id;
        let outbox = match self.conns[conn].detached.take() {
            Some(detached) => detached.outbox,
            None => {
                let taken = Response::error(ErrorCode::TakenOver, "");
                self.out.push(Output { session, request_id: 0, lock: None, response: taken });
                Vec::new()
            }
        };
        self.conns[conn].label = label;
        let resumed = Resumed { grace_ms, replayed: outbox.len() as u32 };
        self.reply(conn, rid, None, Response::Resumed(resumed));
        self.out.extend(outbox);
    }

    /// Ends the grace whose timer is `seq`, if there is one: the session goes as a disconnect.
    fn end_grace(&mut self, seq: u64) -> bool {
        let Some(conn) = self.conns.iter().position(|c| c.detached.as_ref().is_some_and(|d| d.seq == seq))
        else {
            return false;
        };
        self.end_detached(conn);
        self.disconnect(conn);
        true
    }

    /// Drops a detached session's kept outputs and gives back its label.
    fn end_detached(&mut self, conn: usize) {
        if let Some(detached) = self.conns[conn].detached.take() {
            self.conns[conn].label = detached.label;
        }
    }

    /// Issue 13's invariants on the model itself, so a wrong model cannot agree with a wrong
    /// table: an exclusive holder is alone, permits stay within the limit, the head of each
    /// queue does not fit (no grant was skipped), tokens increase in grant order.
    fn invariants(&self) -> Result<(), String> {
        for lock in &self.locks {
            let exclusive = lock.holders.iter().any(|g| g.mode == Mode::Exclusive);
            if (lock.holders.is_empty() && lock.delay.is_none()) || (exclusive && lock.holders.len() > 1) {
                return Err(format!("{}: holders {:?}", lock.name, lock.holders));
            }
            let used: u32 = lock.holders.iter().map(|g| permits(g.mode)).sum();
            if lock.limit != 0 && used > lock.limit {
                return Err(format!("{}: {used} permits of {}", lock.name, lock.limit));
            }
            if lock.delay.is_none() && lock.waiters.first().is_some_and(|w| lock.fits(w.mode)) {
                return Err(format!("{}: the head of the queue fits but waits", lock.name));
            }
            if lock.holders.windows(2).any(|w| w[0].token >= w[1].token) {
                return Err(format!("{}: tokens out of grant order {:?}", lock.name, lock.holders));
            }
        }
        Ok(())
    }

    fn listing(&self) -> Vec<LockInfo> {
        let listed = self.locks.iter().filter(|l| !l.holders.is_empty() || !l.waiters.is_empty());
        let mut locks: Vec<LockInfo> =
            listed.map(|l| LockInfo { name: l.name.to_owned(), queue: self.queue(l) }).collect();
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        locks
    }

    fn my_locks(&self, conn: usize) -> Response {
        let mut held: Vec<String> =
            self.locks.iter().filter(|l| l.holder(conn).is_some()).map(|l| l.name.to_owned()).collect();
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

fn label(slot: usize, session: SessionId) -> String {
    format!("10.0.0.{slot}:{}", session.0)
}

fn limit_error() -> Response {
    Response::error(ErrorCode::LimitExceeded, "")
}

/// The refusals of what a LOCK asks for; codes only are compared.
fn bad_permits() -> Response {
    Response::error(ErrorCode::BadValue, "")
}

fn kind_mismatch() -> Response {
    Response::error(ErrorCode::LimitMismatch, "")
}

fn mode_conflict() -> Response {
    Response::error(ErrorCode::ModeConflict, "")
}

fn not_holder() -> Response {
    Response::error(ErrorCode::NotHolder, "")
}

/// Per session, the responses in order, each with the lock it names. Error messages are
/// prose, so only codes compare.
type Answers = BTreeMap<SessionId, Vec<(u32, Option<Name>, Response)>>;

fn per_conn(outputs: &[Output]) -> Answers {
    let mut map = Answers::new();
    for o in outputs {
        let response = match &o.response {
            Response::Error { code, .. } => Response::error(*code, ""),
            other => other.clone(),
        };
        map.entry(o.session).or_default().push((o.request_id, o.lock.clone(), response));
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
    answers: BTreeMap<(SessionId, u32), u32>,
    /// Every session id `next_session` handed out so far.
    sessions: Vec<SessionId>,
}

impl Run {
    fn new(limits: TableLimits, batches: (usize, usize)) -> Self {
        let mut table = LockTable::new(FIRST_TOKEN, limits);
        table.set_batches(batches.0, batches.1);
        let model = Model::new(limits, batches);
        for conn in &model.conns {
            assert_eq!(table.next_session(), conn.id, "session ids count from 1");
            table.apply(0, &Command::Attach { session: conn.id, label: conn.label.clone() }, &mut Vec::new());
        }
        let sessions = model.conns.iter().map(|c| c.id).collect();
        Run { table, model, now: 0, next_rid: 1, answers: BTreeMap::new(), sessions }
    }

    fn request(&mut self, conn: usize) -> u32 {
        self.next_rid += 1;
        self.answers.insert((self.model.conns[conn].id, self.next_rid), 0);
        self.next_rid
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        let now = self.now;
        self.model.now = now;
        match *op {
            Op::Lock { conn, .. }
            | Op::Unlock { conn, .. }
            | Op::Downgrade { conn, .. }
            | Op::Renew { conn, .. }
            | Op::Revoke { conn, .. }
            | Op::Check { conn, .. }
            | Op::Reset { conn }
            | Op::Disconnect { conn }
            | Op::OpenSession { conn, .. }
            | Op::Suspend { conn }
            | Op::Resume { conn }
                if !self.model.conns[conn].connected => {}
            // A detached session has no connection to send on (issue 14); only a resume, or
            // its end, reaches it.
            Op::Lock { conn, .. }
            | Op::Unlock { conn, .. }
            | Op::Downgrade { conn, .. }
            | Op::Renew { conn, .. }
            | Op::Revoke { conn, .. }
            | Op::Check { conn, .. }
            | Op::Reset { conn }
            | Op::OpenSession { conn, .. }
            | Op::Suspend { conn }
                if self.model.conns[conn].detached.is_some() => {}
            // Only a resumable session is resumed; a resume waits for a RESET's release.
            Op::Resume { conn } if self.model.conns[conn].grace.is_none() || self.model.releasing(conn) => {}
            // The server serves nothing of a connection whose RESET is still releasing.
            Op::Lock { conn, .. }
            | Op::Unlock { conn, .. }
            | Op::Downgrade { conn, .. }
            | Op::Renew { conn, .. }
            | Op::Revoke { conn, .. }
            | Op::Check { conn, .. }
            | Op::Reset { conn }
            | Op::OpenSession { conn, .. }
                if self.model.releasing(conn) =>
            {
                prop_assert!(self.table.is_releasing(self.model.conns[conn].id));
            }
            Op::Lock { conn, name, timeout_ms, queue_max, mode, lease, skip } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let name_arc = Name::from(NAMES[name]);
                let (lease_ms, max_hold_ms, lock_delay_ms, notify_contention) = lease;
                let opts = LockOpts {
                    mode,
                    lease_ms,
                    max_hold_ms,
                    lock_delay_ms,
                    notify_contention,
                    skip_while_detached: skip,
                };
                let cmd =
                    Command::Lock { session, request_id: rid, name: name_arc, timeout_ms, queue_max, opts };
                self.table.apply(now, &cmd, &mut out);
                self.model.lock(now, conn, rid, NAMES[name], timeout_ms, queue_max, mode, lease, skip);
            }
            Op::Unlock { conn, name, token } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let token = self.model.pick(token, conn, NAMES[name]);
                let cmd = Command::Unlock { session, request_id: rid, name: Name::from(NAMES[name]), token };
                self.table.apply(now, &cmd, &mut out);
                self.model.unlock(conn, rid, NAMES[name], token);
            }
            Op::Downgrade { conn, name, token } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let token = self.model.pick(token, conn, NAMES[name]).unwrap_or(FIRST_TOKEN - 1);
                let cmd =
                    Command::Downgrade { session, request_id: rid, name: Name::from(NAMES[name]), token };
                self.table.apply(now, &cmd, &mut out);
                self.model.downgrade(conn, rid, NAMES[name], token);
            }
            Op::Renew { conn, name, token } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let token = self.model.pick(token, conn, NAMES[name]).unwrap_or(FIRST_TOKEN - 1);
                let cmd = Command::Renew { session, request_id: rid, name: Name::from(NAMES[name]), token };
                self.table.apply(now, &cmd, &mut out);
                self.model.renew(conn, rid, NAMES[name], token);
            }
            Op::Revoke { conn, name, token } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let token = self.model.pick(token, conn, NAMES[name]);
                let cmd = Command::Revoke { session, request_id: rid, name: Name::from(NAMES[name]), token };
                self.table.apply(now, &cmd, &mut out);
                self.model.revoke(conn, rid, NAMES[name], token);
            }
            Op::Check { conn, name, token } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let token = self.model.pick(token, conn, NAMES[name]).unwrap_or(FIRST_TOKEN - 1);
                let cmd = Command::Check { session, request_id: rid, name: Name::from(NAMES[name]), token };
                self.table.apply(now, &cmd, &mut out);
                self.model.check_token(conn, rid, NAMES[name], token);
            }
            Op::Reset { conn } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                self.table.apply(now, &Command::Reset { session, request_id: rid }, &mut out);
                self.model.reset(conn, rid);
            }
            Op::Disconnect { conn } => {
                self.table.apply(now, &Command::Detach { session: self.model.conns[conn].id }, &mut out);
                self.model.disconnect(conn);
            }
            Op::Connect { conn } => {
                let releasing = self.model.releasing(conn);
                let c = &mut self.model.conns[conn];
                // The model names connections by slot: a slot comes back, under a new session,
                // once its old connection's holds are all released.
                if !c.connected && !releasing {
                    let session = self.table.next_session();
                    prop_assert!(!self.sessions.contains(&session), "{:?} handed out twice", session);
                    self.sessions.push(session);
                    (c.id, c.label, c.connected) = (session, label(conn, session), true);
                    self.table.apply(now, &Command::Attach { session, label: c.label.clone() }, &mut out);
                }
            }
            Op::Advance { ms } => {
                self.now += ms;
                self.model.now = self.now;
                self.table.apply(self.now, &Command::Expire, &mut out);
                self.model.release_step();
                self.model.expire(self.now);
            }
            Op::Step => {
                self.table.apply(now, &Command::Expire, &mut out);
                self.model.release_step();
                self.model.expire(now);
            }
            Op::OpenSession { conn, grace_ms, skip } => {
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let secret = SECRET;
                let cmd = Command::OpenSession {
                    session,
                    request_id: rid,
                    grace_ms,
                    secret,
                    skip_while_detached: skip,
                };
                self.table.apply(now, &cmd, &mut out);
                self.model.open_session(conn, rid, grace_ms, skip);
            }
            Op::Suspend { conn } => {
                self.table.apply(now, &Command::Suspend { session: self.model.conns[conn].id }, &mut out);
                self.model.suspend(conn);
            }
            Op::Resume { conn } => {
                // A new connection: its own fresh session first, which the resume then replaces.
                let from = self.table.next_session();
                prop_assert!(!self.sessions.contains(&from), "{:?} handed out twice", from);
                self.sessions.push(from);
                let new_label = label(conn, from);
                self.table.apply(now, &Command::Attach { session: from, label: new_label.clone() }, &mut out);
                let rid = self.request(conn);
                let session = self.model.conns[conn].id;
                let cmd = Command::Resume { session, request_id: rid, from, secret: SECRET };
                self.table.apply(now, &cmd, &mut out);
                self.model.resume(conn, rid, new_label);
            }
        }
        self.check(op, out)
    }

    fn check(&mut self, op: &Op, out: Vec<Output>) -> Result<(), TestCaseError> {
        let expected = std::mem::take(&mut self.model.out);
        prop_assert_eq!(per_conn(&out), per_conn(&expected), "after {:?}", op);
        for o in &out {
            let live =
                self.model.conns.iter().any(|c| c.connected && c.detached.is_none() && c.id == o.session);
            prop_assert!(live, "answer to a departed or detached connection: {:?}", o);
            if o.request_id == NOTICE_REQUEST_ID {
                // Unsolicited: answers no request (TAKEN_OVER goes to a session's older connection).
                let notice = matches!(
                    o.response,
                    Response::Lost { .. }
                        | Response::Contended { .. }
                        | Response::Error { code: ErrorCode::TakenOver, .. }
                );
                prop_assert!(notice, "notice {:?}", o);
                continue;
            }
            let count = self.answers.get_mut(&(o.session, o.request_id));
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
        let held = self.model.locks.iter().filter(|l| !l.holders.is_empty()).count();
        prop_assert_eq!((stats.locks_held, stats.waiters), (held, waiters));
        prop_assert_eq!(self.table.last_token(), self.model.next_token - 1);
        prop_assert_eq!(self.table.has_pending_releases(), !self.model.pending.is_empty());
        prop_assert_eq!(self.table.check_invariants(), Ok(()), "after {:?}", op);
        prop_assert_eq!(self.model.invariants(), Ok(()), "after {:?}", op);
        Ok(())
    }

    /// Turns of the loop until no release is pending and no due timeout is left.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..1_000 {
            let due = self.table.next_deadline().is_some_and(|d| d <= self.now);
            if !due && !self.table.has_pending_releases() {
                return Ok(());
            }
            self.apply(&Op::Step)?;
        }
        prop_assert!(false, "pending work never ended");
        Ok(())
    }

    /// Ends every pending wait with a RESET, then checks each request got exactly one answer
    /// (at most one for connections that went away).
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.settle()?;
        // Detached sessions are resumed, so what they were kept is delivered and counted.
        for conn in 0..CONNS {
            if self.model.conns[conn].detached.is_some() {
                self.apply(&Op::Resume { conn })?;
            }
        }
        for conn in 0..CONNS {
            self.apply(&Op::Reset { conn })?;
            self.settle()?;
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
    fn table_matches_reference_model(
        limits in limits(),
        batches in batches(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut run = Run::new(limits, batches);
        for op in &ops {
            run.apply(op)?;
        }
        run.finish()?;
    }

    /// One read/write lock and the semaphore, with no limits: waits that end at the head of a
    /// queue (a writer or a big permit request timing out, cancelled or gone) are frequent.
    #[test]
    fn modes_match_reference_model(
        batches in batches(),
        ops in prop::collection::vec(op_on(vec![0, 2]), 1..120),
    ) {
        let limits = TableLimits { max_locks_per_conn: 0, max_waiters_per_lock: 0, list_max_default: 100, max_lock_delay_ms: 100 };
        let mut run = Run::new(limits, batches);
        for op in &ops {
            run.apply(op)?;
        }
        run.finish()?;
    }
}
