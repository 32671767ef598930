//! Grants: a request granted at once, the waiters granted when a holder lets go, a downgrade,
//! and each session's list of holds in acquisition order (linked through its grants).
//!
//! Strict FIFO across modes: after every change that can make room (a release, a downgrade, a
//! wait that leaves the head of the queue) the head is granted while it fits beside every
//! holder, so a run of readers at the head is granted together, and a writer at the head stops
//! the readers behind it. A waiter is never granted past the one before it.

use std::mem;

use super::holders::Holder;
use super::lease::GrantOpts;
use super::refusal::Refusal;
use super::session::SessionState;
use super::store::{Store, NO_LOCK};
use super::table::{reply, reply_owned, LockTable};
use super::{LockOpts, Name, Output, SessionId};
use crate::protocol::{ErrorCode, Response};
use crate::wheel::Tick;

impl LockTable {
    /// Whether a request of `session` is served: never one of a gone session; a releasing
    /// one's pending release is finished first, as for LOCK.
    pub(super) fn ready(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) -> bool {
        if self.sessions.get(&session).is_some_and(|state| state.gone) {
            return false;
        }
        self.finish_release(now, session, out);
        true
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token = token.saturating_add(1);
        token
    }

    /// Grants lock `key` to `session` beside its holders; the caller checked that it fits and
    /// that no one waits.
    pub(super) fn grant_now(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        key: u32,
        opts: &LockOpts,
        out: &mut Vec<Output>,
    ) {
        let token = self.take_token();
        let extra = GrantOpts::of(opts);
        let Some(lock) = self.store.get_mut(key) else { return };
        let mut holder = Holder::new(session, token, now, opts.mode.weight());
        holder.extra = extra.is_some();
        lock.holders.grant(holder);
        let name = Name::clone(&lock.name);
        self.link_held(session, key);
        if let Some(extra) = extra {
            self.start_extra(now, key, session, token, extra);
        }
        self.counters.acquired += 1;
        reply_owned(out, session, request_id, name, Response::Acquired { token });
    }

    /// DOWNGRADE: the exclusive grant `token` of `session` on `name` becomes a shared one, with
    /// its token, at once: no writer can come between. The readers at the head of the queue
    /// join it, after the DOWNGRADED.
    pub(super) fn downgrade(
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
        let key = self.store.find_name(name);
        let Some((key, lock)) = key.and_then(|k| Some((k, self.store.get_mut(k)?))) else {
            let answer = self.take_lost(session, name, Some(token));
            return reply(
                out,
                session,
                request_id,
                name,
                answer.unwrap_or_else(|| Refusal::NotHolder.response()),
            );
        };
        let response = match lock.holders.of(session) {
            Some(hold) if hold.token == token => {
                if lock.holders.downgrade(session) {
                    Response::Downgraded
                } else {
                    Refusal::ModeConflict.response()
                }
            }
            _ => self.take_lost(session, name, Some(token)).unwrap_or_else(|| Refusal::NotHolder.response()),
        };
        let downgraded = response == Response::Downgraded;
        reply(out, session, request_id, name, response);
        if downgraded {
            self.grant_waiters(now, key, out);
        }
    }

    /// CHECK: whether grant `token` of `name` is held now, by anyone (any session may ask).
    pub(super) fn check(
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
        let lock = self.store.find_name(name).and_then(|key| self.store.get(key));
        let held = lock.is_some_and(|lock| lock.holders.iter().any(|h| h.token == token));
        reply(out, session, request_id, name, Response::Checked { held });
    }

    /// The grant of `session` on lock `key` ends (it is already out of the session's list of
    /// holds): the waiters it made room for are granted, or the lock is removed.
    pub(super) fn hand_over(&mut self, now: Tick, session: SessionId, key: u32, out: &mut Vec<Output>) {
        let Some(lock) = self.store.get_mut(key) else { return };
        if let Some(holder) = lock.holders.remove(session) {
            if lock.delay_until != 0 && lock.holders.is_empty() {
                self.delayed_unheld += 1;
            }
            self.counters.hold_ms.record(now.saturating_sub(holder.since));
            self.end_extra(&holder);
        }
        self.grant_waiters(now, key, out);
    }

    /// Grants the head of lock `key`'s queue while it fits beside the holders, then removes the
    /// lock if no one holds it. Costs one admission check when nothing fits (every exclusive
    /// lock with a holder), else O(1) per grant, for at most `GRANT_BATCH` grants: a longer run
    /// that fits (readers, permits) goes on in the grant steps of the next turns.
    pub(super) fn grant_waiters(&mut self, now: Tick, key: u32, out: &mut Vec<Output>) {
        self.grant_run(now, key, self.grant_batch, out);
    }

    /// Grants the head of lock `key`'s queue while it fits, at most `limit` waiters; a run cut
    /// short by the limit puts the lock in `granting`, for the grant step of a later
    /// `Command::Expire` to go on. Returns the waiters taken off the queue.
    fn grant_run(&mut self, now: Tick, key: u32, limit: usize, out: &mut Vec<Output>) -> usize {
        let (mut taken, mut granted) = (0, false);
        loop {
            let Some(lock) = self.store.get_mut(key) else { return taken };
            if lock.delay_until != 0 {
                return taken;
            }
            let Some(head) = lock.waiters.front() else {
                if lock.holders.is_empty() {
                    self.store.remove(key);
                    // A cut run's key must not outlive its lock: a new lock reusing the slot
                    // would be served by it, and a table restored from a snapshot (which cannot
                    // name a vacant slot's future lock) would not be. O(locks with a cut run),
                    // at most one per GRANT_BATCH waiters granted, and nearly always empty:
                    // the test keeps the usual UNLOCK from paying for a call (callgrind: +26
                    // instructions per lock/unlock cycle without it).
                    if !self.granting.is_empty() {
                        self.granting.retain(|&k| k != key);
                    }
                }
                return taken;
            };
            if !lock.holders.admits(head.weight) {
                break;
            }
            if taken == limit {
                // A long run of readers (or of small permit requests) at the head: the rest
                // wait their turn, still at the head, so no later request passes them.
                self.granting.push_back(key);
                break;
            }
            taken += 1;
            let Some(waiter) = lock.waiters.pop_front() else { return taken };
            lock.shrink_queue();
            self.waiters -= 1;
            if let Some(timer) = waiter.timer {
                self.timers.cancel(timer);
            }
            // Detach drops a session's waits first; this guard only keeps a waiter whose
            // session is unknown or gone from ever being granted.
            let Some(state) = self.sessions.get_mut(&waiter.session).filter(|state| !state.gone) else {
                continue;
            };
            let seq = state.stop_waiting(key);
            if self.detached != 0 && skipped(state, seq) {
                // Its session is away and asked not to be granted meanwhile (§6.14): the wait
                // ends, kept for the replay, and the next waiter is served in this same run.
                self.session_stats.skipped += 1;
                let response = Response::error(ErrorCode::Skipped, "skipped while detached");
                reply(out, waiter.session, waiter.request_id, &lock.name, response);
                continue;
            }
            let token = self.next_token;
            self.next_token = token.saturating_add(1);
            let mut holder = Holder::new(waiter.session, token, now, waiter.weight);
            holder.extra = waiter.opts.is_some();
            // Linked at the end of the session's holds as it goes in: no lookup of it after.
            (holder.held_prev, holder.held_next) = (state.held_tail, NO_LOCK);
            lock.holders.grant(holder);
            let (name, last) = (Name::clone(&lock.name), lock.waiters.is_empty());
            append_held(&mut self.store, state, waiter.session, key);
            if let Some(opts) = waiter.opts.as_deref() {
                self.start_extra(now, key, waiter.session, token, *opts);
            }
            let waited = now.saturating_sub(waiter.since);
            self.counters.acquired += 1;
            self.counters.grants_after_wait += 1;
            self.counters.wait_time_total_ms += waited;
            self.counters.wait_ms.record(waited);
            reply_owned(out, waiter.session, waiter.request_id, name, Response::Acquired { token });
            granted = true;
            if last {
                // The queue is empty and the lock held: the next turn would only find that
                // out (the usual hand-off of an exclusive lock to its only waiter).
                break;
            }
        }
        // New grants with requests still waiting behind them are contended from the start
        // (only grants with lease state ask for notices).
        if granted && !self.extras.is_empty() {
            self.notify_contention(key, out);
        }
        taken
    }

    /// One turn's grant step (`Command::Expire`): goes on with the runs `grant_run` cut short,
    /// at most `grant_batch` waiters in all, oldest run first.
    pub(super) fn grant_step(&mut self, now: Tick, out: &mut Vec<Output>) {
        let mut budget = self.grant_batch;
        while budget > 0 {
            let Some(key) = self.granting.pop_front() else { break };
            // A key whose lock went (or was reused) costs one look: only a head that fits is
            // granted, which is what any lock's queue wants after any change.
            budget -= self.grant_run(now, key, budget, out).clamp(1, budget);
        }
    }

    /// Changes the most waiters one release, or one grant step, grants (at least 1): tests use
    /// small ones to exercise batching with few waiters.
    pub fn set_grant_batch(&mut self, batch: usize) {
        self.grant_batch = batch.max(1);
    }

    /// Links lock `key`, just granted to `session`, at the end of its holds.
    pub(super) fn link_held(&mut self, session: SessionId, key: u32) {
        if let Some(state) = self.sessions.get_mut(&session) {
            link_held(&mut self.store, state, session, key);
        }
    }

    /// Takes lock `key` out of the holds of `session` in O(1) for exclusive locks (O(holders)
    /// of the neighbouring locks otherwise); the grant itself stays.
    pub(super) fn unlink_held(&mut self, session: SessionId, key: u32) {
        let Some(grant) = grant_of(&mut self.store, key, session) else { return };
        let (prev, next) =
            (mem::replace(&mut grant.held_prev, NO_LOCK), mem::replace(&mut grant.held_next, NO_LOCK));
        self.unlink_links(session, prev, next);
    }

    /// Takes a grant that linked to `prev` and `next` out of the holds of `session`: for a
    /// grant already taken out of its lock (a REVOKE batch).
    pub(super) fn unlink_links(&mut self, session: SessionId, prev: u32, next: u32) {
        if let Some(p) = grant_of(&mut self.store, prev, session) {
            p.held_next = next;
        }
        if let Some(n) = grant_of(&mut self.store, next, session) {
            n.held_prev = prev;
        }
        let Some(state) = self.sessions.get_mut(&session) else { return };
        if prev == NO_LOCK {
            state.held_head = next;
        }
        if next == NO_LOCK {
            state.held_tail = prev;
        }
        state.held = state.held.saturating_sub(1);
    }

    /// The locks `session` (whose state is `state`) holds, in the order it acquired them: a
    /// walk of its list of holds, one store lookup per hold (and a scan of each shared lock's
    /// holders for its grant).
    pub(super) fn held_keys<'a>(&'a self, session: SessionId, state: &SessionState) -> HeldKeys<'a> {
        HeldKeys { store: &self.store, session, next: state.held_head, left: state.held }
    }
}

/// The iterator of [`LockTable::held_keys`]; it stops after the session's count of holds, so
/// a broken list could never make it loop.
pub(super) struct HeldKeys<'a> {
    store: &'a Store,
    session: SessionId,
    next: u32,
    left: usize,
}

impl Iterator for HeldKeys<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        let key = self.next;
        let grant = self.store.get(key)?.holders.of(self.session)?;
        (self.next, self.left) = (grant.held_next, self.left - 1);
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Whether the wait `seq` of `state` is skipped now: it asked to skip (its LOCK_EXT flag, or
/// its session's SESSION_OPEN flag) and its session is detached. Cold: while no session is
/// detached, the grant path pays one counter test.
#[cold]
fn skipped(state: &SessionState, seq: u64) -> bool {
    (super::session::is_skipping(seq) || state.skip_default)
        && state.resumable.as_deref().is_some_and(|r| r.is_detached())
}

/// The grant `session` holds on lock `key`.
fn grant_of(store: &mut Store, key: u32, session: SessionId) -> Option<&mut Holder> {
    store.get_mut(key)?.holders.of_mut(session)
}

/// Links lock `key` at the end of the holds of `state` (the session of its new grant), in O(1)
/// for exclusive locks.
fn link_held(store: &mut Store, state: &mut SessionState, session: SessionId, key: u32) {
    let tail = state.held_tail;
    append_held(store, state, session, key);
    if let Some(grant) = grant_of(store, key, session) {
        (grant.held_prev, grant.held_next) = (tail, NO_LOCK);
    }
}

/// The session's side of `link_held`: lock `key` becomes the last of the holds of `state`,
/// after the one that was last. The new grant's own links are the caller's (`link_held`, or a
/// grant made with them set).
fn append_held(store: &mut Store, state: &mut SessionState, session: SessionId, key: u32) {
    let tail = mem::replace(&mut state.held_tail, key);
    if tail == NO_LOCK {
        state.held_head = key;
    }
    state.held += 1;
    if let Some(prev) = grant_of(store, tail, session) {
        prev.held_next = key;
    }
}
