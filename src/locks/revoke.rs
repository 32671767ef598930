//! REVOKE (issue 13, part 7; PROTOCOL.md §6.12): an operator ends one grant of a name, or every
//! grant of it, each with LOST `revoked` to its holder, as a lease does (a lock-delay starts).
//!
//! A REVOKE of every grant is batched as RESET's releases are (`release`): a semaphore of a
//! million permits, or a name with a million readers, is not ended in one O(holders) step. The
//! victims are the grants held when the REVOKE arrives: tokens below the next one to be issued,
//! which, as grants are kept in token order, are always the oldest holders. One REVOKE ends at most
//! `revoke_batch` of them at once, and each revoke step (`Command::Expire`, once per turn) at most
//! `revoke_batch` more, taking pending REVOKEs in turn; REVOKED, with the count, follows the last.
//! A batch costs one shift of the name's younger grants plus O(1) per grant ended (and the
//! unlinking of each from its holder's list of holds), and the waiters it made room for are
//! granted once per batch. While a REVOKE is pending its session is `is_releasing`, so the server
//! holds its later requests back, as for a RESET.

use std::mem;

use super::holders::Holder;
use super::lease::end_after;
use super::table::{reply, LockTable};
use super::{Name, Output, SessionId};
use crate::protocol::{LostReason, Response};
use crate::wheel::Tick;

/// The most grants one REVOKE, or one revoke step, ends (PROTOCOL.md §6.12).
pub const REVOKE_BATCH: usize = 1000;

/// A REVOKE of every grant of a name whose victims are not all ended yet.
#[derive(Debug)]
pub(super) struct Revoke {
    /// Who asked, and the request to answer when done.
    pub session: SessionId,
    pub request_id: u32,
    /// Found again by name at each step: the lock may go and its slot be reused meanwhile.
    pub name: Name,
    /// The grants with tokens below this one are the victims.
    pub below: u64,
    /// Grants ended so far.
    pub count: u32,
}

impl LockTable {
    /// Changes the number of grants one REVOKE or revoke step ends (at least 1): tests use
    /// small ones to exercise batching with few holders.
    pub fn set_revoke_batch(&mut self, batch: usize) {
        self.revoke_batch = batch.max(1);
    }

    /// Whether a REVOKE of `session` is still revoking: O(pending REVOKEs), which the server
    /// looks at only while `has_pending_releases`.
    pub(super) fn is_revoking(&self, session: SessionId) -> bool {
        self.revoking.iter().any(|r| r.session == session)
    }

    /// REVOKE: ends grant `token` of `name` (O(holders) of the name), or every grant of it if
    /// `None`, batched as the module documentation says, then answers REVOKED with the count.
    /// Only the grants held when it arrives are revoked, not the waiters they make room for.
    /// Whether the session may revoke is the server's business.
    pub(super) fn revoke(
        &mut self,
        now: Tick,
        session: SessionId,
        request_id: u32,
        name: &Name,
        token: Option<u64>,
        out: &mut Vec<Output>,
    ) {
        if !self.ready(now, session, out) {
            return;
        }
        if let Some(token) = token {
            let key = self.store.find(name);
            let victim = key
                .and_then(|key| self.store.get(key))
                .and_then(|lock| lock.holders.iter().find(|h| h.token == token))
                .map(|h| h.session);
            if let (Some(key), Some(victim)) = (key, victim) {
                self.lose(now, victim, key, token, LostReason::Revoked, out);
            }
            let count = u32::from(victim.is_some());
            return reply(out, session, request_id, name, Response::Revoked { count });
        }
        let mut revoke =
            Revoke { session, request_id, name: Name::clone(name), below: self.next_token, count: 0 };
        let mut budget = self.revoke_batch;
        if self.revoke_some(now, &mut revoke, &mut budget, out) {
            self.end_revoke(revoke, out);
        } else {
            self.revoking.push_back(revoke);
        }
    }

    /// One turn of pending REVOKEs: ends at most `revoke_batch` grants, taking the REVOKEs in
    /// turn (the one the budget ran out on goes to the back), answering each that is done.
    pub(super) fn revoke_step(&mut self, now: Tick, out: &mut Vec<Output>) {
        let mut budget = self.revoke_batch;
        while let Some(mut revoke) = self.revoking.pop_front() {
            if self.revoke_some(now, &mut revoke, &mut budget, out) {
                self.end_revoke(revoke, out);
            } else {
                self.revoking.push_back(revoke);
                break;
            }
        }
    }

    /// REVOKED to its session, unless it is gone.
    fn end_revoke(&mut self, revoke: Revoke, out: &mut Vec<Output>) {
        if self.sessions.get(&revoke.session).is_some_and(|state| !state.gone) {
            let response = Response::Revoked { count: revoke.count };
            reply(out, revoke.session, revoke.request_id, &revoke.name, response);
        }
    }

    /// Ends the victims of `revoke` while `budget` lasts; true when none is left.
    fn revoke_some(
        &mut self,
        now: Tick,
        revoke: &mut Revoke,
        budget: &mut usize,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(key) = self.store.find(&revoke.name) else { return true };
        let victims_left = |table: &Self| {
            table
                .store
                .get(key)
                .and_then(|lock| lock.holders.iter().next())
                .is_some_and(|h| h.token < revoke.below)
        };
        if !victims_left(self) {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        let mut victims = mem::take(&mut self.revoked);
        let Some(lock) = self.store.get_mut(key) else { return true };
        lock.holders.take_oldest(revoke.below, *budget, &mut victims);
        // A lock already in its delay that has just lost its last holder is a delayed name
        // with no holder, as `hand_over` counts it.
        if lock.delay_until != 0 && lock.holders.is_empty() {
            self.delayed_unheld += 1;
        }
        let name = Name::clone(&lock.name);
        *budget -= victims.len();
        revoke.count = revoke.count.saturating_add(u32::try_from(victims.len()).unwrap_or(u32::MAX));
        let mut delay = 0;
        for victim in victims.drain(..) {
            delay = delay.max(self.end_revoked(now, &name, &victim, out));
        }
        self.revoked = victims;
        if delay != 0 {
            self.start_delay(key, end_after(now, delay));
        }
        self.grant_waiters(now, key, out);
        !victims_left(self)
    }

    /// The bookkeeping of grant `victim` of lock `name`, already out of the lock: out of its
    /// holder's list of holds, its lease state gone, LOST to its holder. Returns its lock-delay.
    fn end_revoked(&mut self, now: Tick, name: &Name, victim: &Holder, out: &mut Vec<Output>) -> u32 {
        self.unlink_links(victim.session, victim.held_prev, victim.held_next);
        self.counters.lost += 1;
        self.counters.hold_ms.record(now.saturating_sub(victim.since));
        let delay =
            if victim.extra { self.extras.get(&victim.token).map_or(0, |e| e.opts.lock_delay_ms) } else { 0 };
        self.end_extra(victim);
        self.tell_lost(victim.session, name, victim.token, LostReason::Revoked, out);
        delay
    }
}
