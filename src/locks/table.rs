//! The transitions of the lock table: LOCK, UNLOCK, RESET, detach and wait timeouts.
//! Each one pushes the responses it causes, in causal order, to the caller's output list.

use std::collections::VecDeque;
use std::mem;

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;

use super::holders::{Holder, Mode};
use super::lease::{Extra, GrantOpts};
use super::refusal::Refusal;
use super::release::Release;
use super::revoke::{Revoke, REVOKE_BATCH};
use super::session::SessionState;
use super::store::{Lock, Store, Waiter};
use super::{LockOpts, Name, Output, SessionId, SessionStats, TableLimits, TableStats};
use crate::protocol::{ErrorCode, Response};
use crate::wheel::{Tick, TimerHandle, Wheel};

/// What a timer of the table carries to find its subject again. It is looked up, not trusted:
/// every path that ends a wait cancels its timer, and a timer that still outlived its waiter is
/// ignored. An enum so that lease and grace timers (issues 13 and 14) join the same wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The wait of `session`'s LOCK `request_id` on lock `lock` times out.
    Wait { lock: u32, session: SessionId, request_id: u32 },
    /// The lease or hold budget of grant `token` ends (`lease`).
    Lease { token: u64 },
    /// The lock-delay of lock `lock` ends.
    Delay { lock: u32 },
    /// The grace of detached `session` ends (`suspend`).
    Grace { session: SessionId },
}

/// Named locks with FIFO wait queues; see the module documentation for the guarantees.
pub struct LockTable {
    pub(super) store: Store,
    pub(super) sessions: HashMap<SessionId, SessionState>,
    pub(super) timers: Wheel<Timer>,
    /// The lease state of the grants that have one, by token.
    pub(super) extras: HashMap<u64, Extra>,
    /// The timer of each lock whose lock-delay runs, by lock key.
    pub(super) delays: HashMap<u32, TimerHandle>,
    /// Locks in a lock-delay with no holder: in the table, but not held.
    pub(super) delayed_unheld: usize,
    /// Reused buffer for fired timers, so `expire` does not allocate in steady state; it never
    /// holds more than `expire_batch` of them.
    fired: Vec<Timer>,
    pub(super) next_token: u64,
    /// The id `next_session` hands out: above every session id the table has seen.
    pub(super) next_session: u64,
    pub(super) limits: TableLimits,
    /// The monotone counters; the gauges are filled in by `stats()`.
    pub(super) counters: TableStats,
    pub(super) waiters: usize,
    /// RESETs and detaches whose holds are still being released, oldest first.
    pub(super) releasing: VecDeque<Release>,
    /// Most timers one `Expire` answers, and most holds one release step gives up.
    expire_batch: usize,
    pub(super) release_batch: usize,
    /// What RESETs and detaches may still release inline until the next release step.
    pub(super) inline_budget: usize,
    /// Sessions detached now (`suspend`): while 0, `apply` diverts nothing.
    pub(super) detached: usize,
    /// The detached sessions by grace end (`suspend`): the soonest for STATS and /metrics in
    /// O(1), and SESSIONS' first page without a pass over every session.
    pub(super) grace_ends: std::collections::BTreeSet<(Tick, SessionId)>,
    /// Where in the caller's output list `apply`'s outputs not yet diverted begin (`suspend`).
    pub(super) divert_from: usize,
    pub(super) session_stats: SessionStats,
    /// REVOKEs of every grant of a name still revoking, oldest first (`revoke`).
    pub(super) revoking: VecDeque<Revoke>,
    /// Most grants one REVOKE, or one revoke step, ends.
    pub(super) revoke_batch: usize,
    /// Reused buffer for the grants of one revoke batch.
    pub(super) revoked: Vec<Holder>,
    /// Locks whose run of waiters that fit was cut at `grant_batch` (`grant`), oldest first.
    pub(super) granting: VecDeque<u32>,
    /// Most waiters one release, or one grant step, grants.
    pub(super) grant_batch: usize,
}

/// The most queue entries a LOCKS entry reports (PROTOCOL.md §4.12).
pub const QUEUE_REPORT_MAX: usize = 1000;

/// The most queue entries a TIMED_OUT or QUEUE_MAXED reports: the holder and the first
/// waiters (PROTOCOL.md §4.6). A burst of n waiters timing out together then costs O(n), not
/// O(n x queue), in work and in memory.
pub const REFUSAL_QUEUE_MAX: usize = 32;

/// The most fired wait timers one `Expire` call answers (PROTOCOL.md §6.3); the rest stay due
/// and the next call, one turn of the server's loop later, answers them.
pub const EXPIRE_BATCH: usize = 1000;

/// The most holds one RESET, detach or release step gives up (PROTOCOL.md §6.5).
pub const RELEASE_BATCH: usize = 1000;

/// The most waiters one change grants at once (a run of readers or permit takers at the head
/// of a queue, PROTOCOL.md §6.7); the rest stay at the head and each later turn's grant step
/// grants this many more.
pub const GRANT_BATCH: usize = 1000;

/// The `Output` of a response about lock `name`.
pub(super) fn reply(
    out: &mut Vec<Output>,
    session: SessionId,
    request_id: u32,
    name: &Name,
    response: Response,
) {
    reply_owned(out, session, request_id, Name::clone(name), response);
}

/// `reply` with a `Name` the caller already owns (a grant's clone of its lock's name): it moves
/// into the output, so a grant clones the name once, not twice.
#[inline]
pub(super) fn reply_owned(
    out: &mut Vec<Output>,
    session: SessionId,
    request_id: u32,
    name: Name,
    response: Response,
) {
    out.push(Output { session, request_id, lock: Some(name), response });
}

/// How a LOCK may wait: the fields of `Command::Lock` besides whom it is from and what it names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Terms {
    pub timeout_ms: Option<u32>,
    pub queue_max: Option<u32>,
    pub opts: LockOpts,
}

/// Why the request itself cannot be served, whatever the table holds; `None` for every v1 LOCK
/// after one comparison.
fn refusal_of(opts: &LockOpts, limits: &TableLimits) -> Option<Refusal> {
    if *opts == LockOpts::default() {
        return None;
    }
    if let Mode::Permits { count, limit } = opts.mode {
        if count == 0 || count > limit {
            return Some(Refusal::BadPermits { count, limit });
        }
    }
    if opts.lock_delay_ms > limits.max_lock_delay_ms {
        return Some(Refusal::LockDelayTooLong { asked: opts.lock_delay_ms, max: limits.max_lock_delay_ms });
    }
    None
}

impl LockTable {
    /// An empty table whose first token is `first_token`.
    pub fn new(first_token: u64, limits: TableLimits) -> Self {
        LockTable {
            store: Store::new(),
            sessions: HashMap::new(),
            timers: Wheel::new(),
            extras: HashMap::new(),
            delays: HashMap::new(),
            delayed_unheld: 0,
            fired: Vec::new(),
            next_token: first_token,
            next_session: 1,
            limits,
            counters: TableStats::default(),
            waiters: 0,
            releasing: VecDeque::new(),
            expire_batch: EXPIRE_BATCH,
            release_batch: RELEASE_BATCH,
            inline_budget: RELEASE_BATCH,
            detached: 0,
            grace_ends: std::collections::BTreeSet::new(),
            divert_from: 0,
            session_stats: SessionStats::default(),
            revoking: VecDeque::new(),
            revoke_batch: REVOKE_BATCH,
            revoked: Vec::new(),
            granting: VecDeque::new(),
            grant_batch: GRANT_BATCH,
        }
    }

    /// Changes the batch sizes (each at least 1): tests and benchmarks use small ones to
    /// exercise batching with few locks. The turn's inline release budget is state (a
    /// snapshot carries it), so it is only cut down to the new batch, never refilled: a
    /// restored table configured like the original keeps the original's budget. A larger
    /// batch takes effect at the next turn's refill.
    pub fn set_batches(&mut self, expire_batch: usize, release_batch: usize) {
        self.expire_batch = expire_batch.max(1);
        self.release_batch = release_batch.max(1);
        self.inline_budget = self.inline_budget.min(self.release_batch);
    }

    /// ATTACH: registers a session under its listing label (`ip:port` or `unix:N`), or
    /// relabels it.
    pub(super) fn attach(&mut self, session: SessionId, label: &str) {
        self.saw_session(session);
        match self.sessions.get_mut(&session) {
            Some(state) => state.label = label.into(),
            None => {
                self.sessions.insert(session, SessionState::new(label.into()));
            }
        }
    }

    /// LOCK: acquire, report an existing hold or wait, refuse, or join the queue.
    pub(super) fn lock(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        name: &Name,
        terms: Terms,
        out: &mut Vec<Output>,
    ) {
        // A session that was never attached still gets consistent bookkeeping.
        let state = match self.sessions.entry(session) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.next_session = self.next_session.max(session.0.saturating_add(1));
                entry.insert(SessionState::new(Box::from("")))
            }
        };
        if state.gone {
            return;
        }
        if !state.lost.is_empty() {
            // A LOCK of a name starts afresh: a loss of it is no longer news.
            state.lost.retain(|lost| lost.name != *name);
        }
        // The server holds a releasing session's requests back; a caller that does not
        // gets the release finished first, so the request sees the state after it.
        if state.releasing {
            self.finish_release(now, session, out);
        }
        if let Some(refusal) = refusal_of(&terms.opts, &self.limits) {
            return reply(out, session, request_id, name, refusal.response());
        }
        let hash = self.store.hash(name);
        match self.store.find_hashed(hash, name) {
            None => self.acquire_free(now, session, request_id, (name, hash), &terms.opts, out),
            Some(key) => self.contend(now, session, request_id, key, name, terms, out),
        }
    }

    fn acquire_free(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        (name, hash): (&Name, u64),
        opts: &LockOpts,
        out: &mut Vec<Output>,
    ) {
        if let Some(message) = self.limit_refusal(session, None) {
            return self.refuse(session, request_id, name, message, out);
        }
        let (token, mode, extra) = (self.next_token, opts.mode, GrantOpts::of(opts));
        let mut holder = Holder::new(session, token, now, mode.weight());
        holder.extra = extra.is_some();
        let lock = Lock::new(Name::clone(name), holder, mode.limit());
        let Some(key) = self.store.insert(hash, lock) else {
            return self.refuse(session, request_id, name, "the lock table is full".to_owned(), out);
        };
        self.next_token = token.saturating_add(1);
        self.link_held(session, key);
        if let Some(extra) = extra {
            self.start_extra(now, key, session, token, extra);
        }
        self.counters.acquired += 1;
        reply(out, session, request_id, name, Response::Acquired { token });
    }

    /// LOCK of a held lock, in the order of precedence the protocol defines.
    #[allow(clippy::too_many_arguments)] // the fields of one LOCK, unpacked on the hot path
    fn contend(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        key: u32,
        name: &Name,
        terms: Terms,
        out: &mut Vec<Output>,
    ) {
        let Some(lock) = self.store.get(key) else { return };
        let mode = terms.opts.mode;
        let response = if !lock.holders.kind_matches(mode) {
            let (held_limit, asked_limit) = (lock.holders.limit(), mode.limit());
            Refusal::KindMismatch { held_limit, asked_limit }.response()
        } else if let Some(hold) = lock.holders.of(session) {
            // A downgrade is its own request (DOWNGRADE), never a LOCK in another mode.
            if lock.holders.mode_of(hold) == mode {
                self.counters.already_acquired += 1;
                Response::AlreadyAcquired { token: hold.token }
            } else {
                Refusal::ModeConflict.response()
            }
        } else if !lock.waiters.is_empty() && self.sessions.get(&session).is_some_and(|s| s.waits_on(key)) {
            // (A session that waits for the lock is in its queue: an empty one needs no lookup.)
            // The first request keeps waiting with its own timer; this one is answered now.
            self.counters.already_waiting += 1;
            Response::AlreadyWaiting
        } else if lock.waiters.is_empty() && lock.delay_until == 0 && lock.holders.admits(mode.weight()) {
            // Compatible with every holder and no one waits before it: granted now. An
            // exclusive hold admits nothing, so a v1 LOCK never gets here.
            if let Some(message) = self.limit_refusal(session, None) {
                return self.refuse(session, request_id, name, message, out);
            }
            return self.grant_now(now, session, request_id, key, &terms.opts, out);
        } else if terms.queue_max.is_some_and(|q| 1 + lock.waiters.len() >= q as usize) {
            self.counters.queue_maxed += 1;
            Response::QueueMaxed { queue: self.queue_head(lock) }
        } else if terms.timeout_ms == Some(0) {
            self.counters.timed_out += 1;
            Response::TimedOut { queue: self.queue_head(lock) }
        } else if let Some(message) = self.limit_refusal(session, Some(lock.waiters.len())) {
            return self.refuse(session, request_id, name, message, out);
        } else {
            return self.enqueue(now, session, request_id, key, terms, out);
        };
        reply(out, session, request_id, name, response);
    }

    /// Joins the queue of lock `key`; only a finite timeout puts a timer in the wheel.
    fn enqueue(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        key: u32,
        terms: Terms,
        out: &mut Vec<Output>,
    ) {
        let (timeout_ms, weight) = (terms.timeout_ms, terms.opts.mode.weight());
        let opts = GrantOpts::of(&terms.opts).map(Box::new);
        let deadline = timeout_ms.map(|ms| now.saturating_add(u64::from(ms)));
        let timer = deadline.map(|at| self.timers.insert(at, Timer::Wait { lock: key, session, request_id }));
        if let Some(lock) = self.store.get_mut(key) {
            lock.waiters.push_back(Waiter { session, request_id, weight, opts, since: now, deadline, timer });
        }
        if let Some(state) = self.sessions.get_mut(&session) {
            // The session's default (`skip_default`) is read at the grant, and only while
            // some session is detached: a wait that starts pays for no lookup.
            state.start_waiting(key, terms.opts.skip_while_detached);
        }
        self.waiters += 1;
        self.counters.queued += 1;
        // Only a grant with lease state asks for notices: one test on every wait that starts.
        if !self.extras.is_empty() {
            self.notify_contention(key, out);
        }
    }

    /// Why a new hold or wait by `session` (on a lock with `lock_waiters` waiters) is refused.
    /// Inline, so that the usual case (no limit set) costs two tests on every LOCK.
    #[inline]
    fn limit_refusal(&self, session: SessionId, lock_waiters: Option<usize>) -> Option<String> {
        if self.limits.max_locks_per_conn == 0 && self.limits.max_waiters_per_lock == 0 {
            return None;
        }
        self.limit_message(session, lock_waiters)
    }

    #[cold]
    fn limit_message(&self, session: SessionId, lock_waiters: Option<usize>) -> Option<String> {
        let per_conn = self.limits.max_locks_per_conn as usize;
        // The limit is usually off: skip the session lookup then (this is on every LOCK).
        if per_conn != 0 {
            let count = self.sessions.get(&session).map_or(0, SessionState::count);
            if count >= per_conn {
                return Some(format!("connection holds or awaits {count} locks, the limit is {per_conn}"));
            }
        }
        let per_lock = self.limits.max_waiters_per_lock as usize;
        match lock_waiters {
            Some(n) if per_lock != 0 && n >= per_lock => {
                Some(format!("lock has {n} waiters, the limit is {per_lock}"))
            }
            _ => None,
        }
    }

    fn refuse(
        &mut self,
        session: SessionId,
        request_id: u32,
        name: &Name,
        message: String,
        out: &mut Vec<Output>,
    ) {
        self.counters.limit_refused += 1;
        reply(out, session, request_id, name, Response::error(ErrorCode::LimitExceeded, message));
    }

    /// UNLOCK: the holder releases (and the next waiter is granted); a waiter abandons its wait.
    ///
    /// A waiter's UNLOCK pushes `Cancelled` for its pending LOCK first, then `Released` for the
    /// UNLOCK, so the client sees the wait end before the request that ended it is answered.
    pub(super) fn unlock(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        name: &Name,
        token: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        // Gone or releasing sessions exist only while a release is pending.
        if !self.releasing.is_empty() {
            if self.sessions.get(&session).is_some_and(|state| state.gone) {
                return;
            }
            self.finish_release(now, session, out);
        }
        let key = self.store.find_name(name);
        let hold = key.and_then(|k| self.store.get(k)).and_then(|lock| lock.holders.of(session));
        let holds = hold.is_some_and(|h| token.is_none_or(|t| t == h.token));
        match key {
            Some(key) if holds => {
                self.unlink_held(session, key);
                self.counters.released += 1;
                reply(out, session, request_id, name, Response::Released);
                self.hand_over(now, session, key, out);
            }
            Some(key)
                if token.is_none()
                    && self.sessions.get(&session).is_some_and(|state| state.waits_on(key)) =>
            {
                let waiter = self.remove_waiter(key, session);
                if let Some(waiter) = &waiter {
                    self.counters.cancelled += 1;
                    reply(out, session, waiter.request_id, name, Response::Cancelled);
                }
                reply(out, session, request_id, name, Response::Released);
                self.grant_waiters(now, key, out);
            }
            _ => match self.take_lost(session, name, token) {
                Some(lost) => reply(out, session, request_id, name, lost),
                None => {
                    self.counters.release_failed += 1;
                    reply(out, session, request_id, name, Response::ReleaseFailed);
                }
            },
        }
    }

    /// Ends the waits of `session`, in the order they started, answering `Cancelled` when
    /// `notify`. Each costs O(its queue position); their number is what `max_locks_per_conn`
    /// bounds.
    /// A wait that leaves may let the waiters behind it in (a writer that gives up lets the
    /// readers behind it join the readers that hold), so each is followed by a grant step.
    pub(super) fn cancel_waits(
        &mut self,
        now: Tick,
        session: SessionId,
        notify: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(state) = self.sessions.get_mut(&session) else { return };
        for key in state.take_waiting() {
            let Some(name) = self.store.get(key).map(|lock| Name::clone(&lock.name)) else { continue };
            if let Some(waiter) = self.remove_waiter(key, session) {
                self.counters.cancelled += 1;
                if notify {
                    reply(out, session, waiter.request_id, &name, Response::Cancelled);
                }
            }
            self.grant_waiters(now, key, out);
        }
    }

    /// Takes the wait of `session` out of lock `key`'s queue, cancelling its timer.
    fn remove_waiter(&mut self, key: u32, session: SessionId) -> Option<Waiter> {
        let lock = self.store.get_mut(key)?;
        let pos = lock.waiters.iter().position(|w| w.session == session)?;
        let waiter = lock.waiters.remove(pos)?;
        if let Some(timer) = waiter.timer {
            self.timers.cancel(timer);
        }
        if let Some(state) = self.sessions.get_mut(&session) {
            state.stop_waiting(key);
        }
        lock.shrink_queue();
        self.waiters -= 1;
        Some(waiter)
    }

    /// Answers `TimedOut` to the waits whose deadline is at or before `now`, in deadline order,
    /// at most `EXPIRE_BATCH` of them: the others stay due, `next_deadline` reports them, and
    /// the next call answers them. Cost: O(batch x `REFUSAL_QUEUE_MAX`) plus the queue scans.
    pub(super) fn expire(&mut self, now: Tick, out: &mut Vec<Output>) {
        let mut fired = mem::take(&mut self.fired);
        self.timers.poll_max(now, self.expire_batch, &mut fired);
        for timer in fired.drain(..) {
            match timer {
                Timer::Wait { lock, session, request_id } => {
                    self.time_out(now, lock, session, request_id, out)
                }
                Timer::Lease { token } => self.lease_timer(now, token, out),
                Timer::Delay { lock } => self.delay_end(now, lock, out),
                Timer::Grace { session } => self.grace_end(now, session, out),
            }
        }
        self.fired = fired;
    }

    /// Ends one timed-out wait; the queue reported is the holder and the first waiters left.
    /// A head of the queue that leaves may let the waiters behind it in, after the TIMED_OUT.
    fn time_out(&mut self, now: Tick, key: u32, session: SessionId, request_id: u32, out: &mut Vec<Output>) {
        let Some(lock) = self.store.get_mut(key) else { return };
        let matches = |w: &Waiter| w.session == session && w.request_id == request_id && w.timer.is_some();
        let Some(pos) = lock.waiters.iter().position(matches) else { return };
        lock.waiters.remove(pos);
        lock.shrink_queue();
        let gone = match self.sessions.get_mut(&session) {
            Some(state) => {
                state.stop_waiting(key);
                state.gone
            }
            None => true,
        };
        self.waiters -= 1;
        self.counters.timed_out += 1;
        if !gone {
            let Some(lock) = self.store.get(key) else { return };
            let queue = self.queue_head(lock);
            reply(out, session, request_id, &lock.name, Response::TimedOut { queue });
        }
        if pos == 0 {
            self.grant_waiters(now, key, out);
        }
    }

    /// A tick at or before the earliest wait deadline; `None` when no wait can time out.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.timers.next_deadline()
    }

    /// The highest token issued so far (`first_token - 1` if none, saturating at 0).
    pub fn last_token(&self) -> u64 {
        self.next_token.saturating_sub(1)
    }

    pub(super) fn label(&self, session: SessionId) -> &str {
        self.sessions.get(&session).map_or("", |state| &state.label)
    }

    /// The head of the queue reported in TIMED_OUT and QUEUE_MAXED, cut at `REFUSAL_QUEUE_MAX`.
    pub(super) fn queue_head(&self, lock: &Lock) -> Vec<String> {
        self.queue_cut(lock, REFUSAL_QUEUE_MAX)
    }

    fn queue_cut(&self, lock: &Lock, max: usize) -> Vec<String> {
        let holders = lock.holders.iter().map(|h| h.session);
        let conns = holders.chain(lock.waiters.iter().map(|w| w.session));
        conns.take(max).map(|session| self.label(session).to_owned()).collect()
    }

    /// Housekeeping: gives back the memory of containers far below their peak (each at most a
    /// quarter full, above a floor, so a steady load does not reallocate). True when anything
    /// shrank. Per-lock queues and per-session sets shrink as they empty, not here.
    pub fn shrink(&mut self) -> bool {
        let mut shrank = self.store.shrink_if_sparse();
        // A bulk release shrinks the store when it ends; that counts too.
        shrank |= self.store.take_shrank();
        shrank |= self.timers.shrink_if_sparse();
        let (len, capacity) = (self.sessions.len(), self.sessions.capacity());
        if capacity > CONTAINER_SHRINK_FLOOR && len * 4 <= capacity {
            self.sessions.shrink_to(len * 2);
            shrank = true;
        }
        if self.releasing.capacity() > CONTAINER_SHRINK_FLOOR
            && self.releasing.len() * 4 <= self.releasing.capacity()
        {
            self.releasing.shrink_to(self.releasing.len() * 2);
            shrank = true;
        }
        shrank
    }

    /// The capacities `shrink` works on, for tests and benchmarks.
    pub fn capacities(&self) -> super::TableCapacities {
        super::TableCapacities {
            lock_slots: self.store.capacity(),
            conns: self.sessions.capacity(),
            timers: self.timers.capacity(),
            fired: self.fired.capacity(),
            releasing: self.releasing.capacity(),
        }
    }

    /// The capacity of lock `name`'s wait queue, for tests of its shrinking.
    pub fn queue_capacity(&self, name: &str) -> Option<usize> {
        self.store.find(name).and_then(|key| self.store.get(key)).map(|lock| lock.waiters.capacity())
    }
}

/// Containers up to this capacity are never shrunk.
const CONTAINER_SHRINK_FLOOR: usize = 64;
