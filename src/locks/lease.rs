//! Grants that can end by themselves (issue 13, PROTOCOL.md §6.9): a lease that ends the grant
//! unless renewed (RENEW), and a `max_hold` no renewal extends. Their state lives out of line,
//! keyed by the grant's token (unique over the table's life), so a grant without options pays
//! one flag test when it ends and nothing else. Each such grant has at most one timer in the
//! wheel, at the earlier of its two deadlines; it shares the wait timers' `EXPIRE_BATCH`.
//!
//! When a grant ends this way, or by revocation (`revoke`), its holder gets an unsolicited LOST (request
//! id `NOTICE_REQUEST_ID`) and the session remembers the loss, so that its next UNLOCK, RENEW
//! or DOWNGRADE of that grant is answered LOST too, not a puzzling "not held".

use super::holders::Holder;
use super::refusal::Refusal;
use super::table::{reply, LockTable, Timer};
use super::{LockOpts, Name, Output, SessionId};
use crate::protocol::{LostReason, Response, NOTICE_REQUEST_ID};
use crate::wheel::{Tick, TimerHandle};

/// The most losses a session remembers; older ones are forgotten first (their LOST notice
/// was sent all the same). Bounds the memory a session that never asks again can pin.
pub const LOST_MEMORY: usize = 64;

/// The options of a grant beyond its mode, kept while it waits and while it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GrantOpts {
    pub lease_ms: Option<u32>,
    pub max_hold_ms: Option<u32>,
    /// How long the name stays unavailable after an abnormal end; 0: not at all.
    pub lock_delay_ms: u32,
    /// Send CONTENDED the first time a request waits behind the grant.
    pub notify: bool,
}

impl GrantOpts {
    /// The options of `opts` that need state beside the grant; `None` for a v1 LOCK.
    pub fn of(opts: &LockOpts) -> Option<GrantOpts> {
        let grant = GrantOpts {
            lease_ms: opts.lease_ms,
            max_hold_ms: opts.max_hold_ms,
            lock_delay_ms: opts.lock_delay_ms,
            notify: opts.notify_contention,
        };
        let needed = grant.lease_ms.is_some() || grant.max_hold_ms.is_some() || grant.lock_delay_ms != 0;
        (needed || grant.notify).then_some(grant)
    }
}

/// The out-of-line state of one held grant with options.
#[derive(Debug)]
pub(super) struct Extra {
    pub lock: u32,
    pub session: SessionId,
    pub opts: GrantOpts,
    /// When the lease ends unless renewed; `None` without a lease.
    pub lease_end: Option<Tick>,
    /// When `max_hold` ends the grant; `None` without one.
    pub hold_end: Option<Tick>,
    /// The timer at the earlier of the two ends.
    pub timer: Option<TimerHandle>,
    /// A CONTENDED is still to be sent (the grant asked for one and none was sent yet).
    pub notify: bool,
}

impl Extra {
    pub fn ends_at(&self) -> Option<Tick> {
        match (self.lease_end, self.hold_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A grant the session lost without asking: remembered for its next request about it.
#[derive(Debug, Clone)]
pub(super) struct LostGrant {
    pub name: Name,
    pub token: u64,
    pub reason: LostReason,
}

/// The tick at which a span of `ms` started at `now` is over for certain. Ticks are whole
/// milliseconds rounded down, so the grant (or renewal, or abnormal end) made "at `now`" may
/// have happened up to a tick later: ending at `now + ms` could end it up to 1 ms early on the
/// monotonic clock. One more tick, as the server gives wait timeouts, means a lease, hold
/// budget or lock-delay never ends before its `ms` have passed (it may last up to 1 ms more).
pub(super) fn end_after(now: Tick, ms: u32) -> Tick {
    now.saturating_add(u64::from(ms)).saturating_add(1)
}

/// The time left until `at` as a client may count on it: the slack tick of [`end_after`] is not
/// promised, so a RENEW or a listing right after the grant reports the full `ms`.
pub(super) fn ms_left(now: Tick, at: Tick) -> u32 {
    u32::try_from(at.saturating_sub(now).saturating_sub(1)).unwrap_or(u32::MAX - 1)
}

fn after(now: Tick, ms: Option<u32>) -> Option<Tick> {
    ms.map(|ms| end_after(now, ms))
}

impl LockTable {
    /// Starts the lease and hold budget of grant `token` of `session` on lock `key`, just made
    /// at `now` with its `extra` flag set.
    pub(super) fn start_extra(
        &mut self,
        now: Tick,
        key: u32,
        session: SessionId,
        token: u64,
        opts: GrantOpts,
    ) {
        let mut extra = Extra {
            lock: key,
            session,
            opts,
            lease_end: after(now, opts.lease_ms),
            hold_end: after(now, opts.max_hold_ms),
            timer: None,
            notify: opts.notify,
        };
        extra.timer = extra.ends_at().map(|at| self.timers.insert(at, Timer::Lease { token }));
        self.extras.insert(token, extra);
    }

    /// The grant `holder` ended (by any path): its lease state and timer go with it.
    pub(super) fn end_extra(&mut self, holder: &Holder) {
        if !holder.extra {
            return;
        }
        if let Some(extra) = self.extras.remove(&holder.token) {
            if let Some(timer) = extra.timer {
                self.timers.cancel(timer);
            }
        }
    }

    /// A lease timer fired: the grant ends with LOST `max_hold` or `lease_expired`, unless it
    /// is gone already (the timer outlived it) or was renewed past `now`.
    pub(super) fn lease_timer(&mut self, now: Tick, token: u64, out: &mut Vec<Output>) {
        let Some(extra) = self.extras.get_mut(&token) else { return };
        extra.timer = None;
        let reason = if extra.hold_end.is_some_and(|at| at <= now) {
            LostReason::MaxHold
        } else if extra.lease_end.is_some_and(|at| at <= now) {
            LostReason::LeaseExpired
        } else {
            // Not due: only a renewal that moved the end can get here; re-arm.
            let at = extra.ends_at();
            extra.timer = at.map(|at| self.timers.insert(at, Timer::Lease { token }));
            return;
        };
        let (key, session) = (extra.lock, extra.session);
        self.lose(now, session, key, token, reason, out);
    }

    /// Ends grant `token` of `session` on lock `key` without its UNLOCK: LOST to the holder
    /// (remembered for its next request about it), and the waiters it made room for are
    /// granted. The holder of a gone session is told nothing.
    pub(super) fn lose(
        &mut self,
        now: Tick,
        session: SessionId,
        key: u32,
        token: u64,
        reason: LostReason,
        out: &mut Vec<Output>,
    ) {
        let Some(lock) = self.store.get(key) else { return };
        if lock.holders.of(session).is_none_or(|h| h.token != token) {
            return;
        }
        let name = Name::clone(&lock.name);
        self.unlink_held(session, key);
        self.counters.lost += 1;
        self.tell_lost(session, &name, token, reason, out);
        self.end_grant(now, session, key, true, out);
    }

    /// LOST to the holder of grant `token` of `name`, remembered for its next request about it;
    /// nothing for a gone session.
    pub(super) fn tell_lost(
        &mut self,
        session: SessionId,
        name: &Name,
        token: u64,
        reason: LostReason,
        out: &mut Vec<Output>,
    ) {
        let Some(state) = self.sessions.get_mut(&session).filter(|state| !state.gone) else { return };
        if state.lost.len() >= LOST_MEMORY {
            state.lost.remove(0);
        }
        state.lost.push(LostGrant { name: Name::clone(name), token, reason });
        let response = Response::Lost { token, reason, name: name.to_string() };
        out.push(Output { session, request_id: NOTICE_REQUEST_ID, lock: Some(Name::clone(name)), response });
    }

    /// The grant of `session` on lock `key` ends (it is out of the session's list of holds).
    /// After an `abnormal` end (detach, lease, hold budget, REVOKE) of a grant with a
    /// lock-delay, the lock grants nothing until the delay ends (the latest of several counts);
    /// its other holders keep their grants and its waiters their places (PROTOCOL.md §6.10).
    pub(super) fn end_grant(
        &mut self,
        now: Tick,
        session: SessionId,
        key: u32,
        abnormal: bool,
        out: &mut Vec<Output>,
    ) {
        if let Some(delay) = abnormal.then(|| self.lock_delay_of(key, session)).flatten() {
            self.start_delay(key, end_after(now, delay));
        }
        self.hand_over(now, session, key, out);
    }

    fn lock_delay_of(&self, key: u32, session: SessionId) -> Option<u32> {
        let holder = self.store.get(key)?.holders.of(session).filter(|h| h.extra)?;
        let delay = self.extras.get(&holder.token)?.opts.lock_delay_ms;
        (delay != 0).then_some(delay)
    }

    /// Lock `key` grants nothing until `until` (or a later end it has already).
    pub(super) fn start_delay(&mut self, key: u32, until: Tick) {
        let Some(lock) = self.store.get_mut(key) else { return };
        if lock.delay_until >= until {
            return;
        }
        if lock.delay_until == 0 && lock.holders.is_empty() {
            self.delayed_unheld += 1;
        }
        lock.delay_until = until;
        let timer = self.timers.insert(until, Timer::Delay { lock: key });
        if let Some(old) = self.delays.insert(key, timer) {
            self.timers.cancel(old);
        }
    }

    /// The lock-delay of lock `key` ended: the queue moves on as after a release, and a lock
    /// with no holder and no waiter goes.
    ///
    /// A timer that is no longer the lock's is ignored: one `expire` batch takes several timers
    /// off the wheel before handling them, and a lease ending earlier in the batch may have
    /// moved the delay later (`start_delay`'s cancel of this timer then came too late). Its
    /// `delay_until` is past `now` in that case, since a delay starts at least one tick ahead.
    pub(super) fn delay_end(&mut self, now: Tick, key: u32, out: &mut Vec<Output>) {
        let Some(lock) = self.store.get_mut(key) else { return };
        if lock.delay_until == 0 || lock.delay_until > now {
            return;
        }
        self.delays.remove(&key);
        let Some(lock) = self.store.get_mut(key) else { return };
        lock.delay_until = 0;
        if lock.holders.is_empty() {
            self.delayed_unheld -= 1;
        }
        self.grant_waiters(now, key, out);
    }

    /// Sends CONTENDED (PROTOCOL.md §6.11) to each holder of lock `key` that asked for it and
    /// was not told yet, if requests wait for the lock: at most one per grant. O(holders) flag
    /// tests; one for an exclusive lock.
    pub(super) fn notify_contention(&mut self, key: u32, out: &mut Vec<Output>) {
        // Only a grant with lease state can ask for notices: without any, every wait that
        // starts (the hot path of a contended lock) costs one test, not a scan of the holders.
        if self.extras.is_empty() {
            return;
        }
        let Some(lock) = self.store.get(key) else { return };
        if lock.waiters.is_empty() {
            return;
        }
        for holder in lock.holders.iter().filter(|h| h.extra) {
            // A gone session whose holds are still being released in batches is never told
            // anything again (§6.5).
            if self.sessions.get(&holder.session).is_none_or(|state| state.gone) {
                continue;
            }
            let Some(extra) = self.extras.get_mut(&holder.token).filter(|e| e.notify) else { continue };
            extra.notify = false;
            let response = Response::Contended { token: holder.token, name: lock.name.to_string() };
            let notice = Output {
                session: holder.session,
                request_id: NOTICE_REQUEST_ID,
                lock: Some(Name::clone(&lock.name)),
                response,
            };
            out.push(notice);
        }
    }

    /// The loss `session` remembers of grant `token` (any token if `None`) of `name`, taken:
    /// the answer to its request about that grant is LOST.
    pub(super) fn take_lost(
        &mut self,
        session: SessionId,
        name: &Name,
        token: Option<u64>,
    ) -> Option<Response> {
        let state = self.sessions.get_mut(&session)?;
        if state.lost.is_empty() {
            return None;
        }
        let matches = |l: &LostGrant| l.name == *name && token.is_none_or(|t| t == l.token);
        let pos = state.lost.iter().position(matches)?;
        let lost = state.lost.remove(pos);
        Some(Response::Lost { token: lost.token, reason: lost.reason, name: lost.name.to_string() })
    }

    /// RENEW: the lease of grant `token` of `session` on `name` starts again from `now`, never
    /// past its `max_hold`; RENEWED says when the grant now ends. A grant without a lease is
    /// answered with its end unchanged; one the session lost, LOST; any other, `not_holder`.
    pub(super) fn renew(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        name: &Name,
        token: u64,
        out: &mut Vec<Output>,
    ) {
        if !self.ready(now, session, out) {
            return;
        }
        let held = self.store.find(name).and_then(|k| self.store.get(k)).and_then(|l| l.holders.of(session));
        let response = match held.filter(|h| h.token == token) {
            Some(_) => self.renew_grant(now, token),
            None => {
                self.take_lost(session, name, Some(token)).unwrap_or_else(|| Refusal::NotHolder.response())
            }
        };
        reply(out, session, request_id, name, response);
    }

    fn renew_grant(&mut self, now: Tick, token: u64) -> Response {
        let Some(extra) = self.extras.get_mut(&token) else { return Response::Renewed { ends_in_ms: None } };
        if let Some(ms) = extra.opts.lease_ms {
            let lease_end = end_after(now, ms);
            extra.lease_end = Some(extra.hold_end.map_or(lease_end, |hold| lease_end.min(hold)));
            if let Some(timer) = extra.timer.take() {
                self.timers.cancel(timer);
            }
            extra.timer = extra.ends_at().map(|at| self.timers.insert(at, Timer::Lease { token }));
        }
        let ends_in = extra.ends_at().map(|at| ms_left(now, at));
        Response::Renewed { ends_in_ms: ends_in }
    }
}
