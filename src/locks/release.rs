//! RESET and detach: every wait of the session ends at once, and its holds are released
//! in acquisition order (so grants and their tokens never depend on hash order) at most
//! `release_batch` per call, so that a session holding a million locks costs the server a
//! bounded step per turn of its loop, not one O(million) step (PROTOCOL.md §6.5). RESETs and
//! detaches release inline from a budget of `release_batch` holds that each release step
//! (once per turn) refills, so many sessions closing in one turn cost at most two batches
//! per turn too; what does not fit waits for the next step.
//!
//! While a release is pending, the session's holds stay held by it: a LOCK by anyone else
//! queues behind them and is granted in FIFO order when its hold is released. A gone
//! session is never granted anything and never answered; a RESETting one gets `ResetOk`
//! only once its last hold is released (the server holds its later requests back until then).

use super::table::LockTable;
use super::{Output, SessionId};
use crate::protocol::Response;
use crate::wheel::Tick;

/// A RESET or detach whose holds are not all released yet.
#[derive(Debug)]
pub(super) struct Release {
    pub session: SessionId,
    /// The RESET to answer when done; `None` for a detach (or a RESET whose session
    /// went away meanwhile).
    pub reset: Option<u32>,
}

impl LockTable {
    /// RESET: cancels every wait of `session` (answering `Cancelled`, in the order the waits
    /// started), releases up to `release_batch` holds, and answers `ResetOk` when none is
    /// left; otherwise the rest is released by a release step (`Command::Expire`), which answers
    /// `ResetOk` after the last one.
    pub(super) fn reset(&mut self, now: Tick, session: SessionId, request_id: u32, out: &mut Vec<Output>) {
        if self.sessions.get(&session).is_some_and(|state| state.gone) {
            return;
        }
        self.finish_release(now, session, out);
        self.cancel_waits(now, session, true, out);
        let mut budget = std::mem::take(&mut self.inline_budget);
        let done = self.release_holds(now, session, &mut budget, out);
        self.inline_budget = budget;
        if done {
            out.push(Output { session, request_id, lock: None, response: Response::ResetOk });
        } else {
            self.start_release(Release { session, reset: Some(request_id) });
        }
    }

    /// The session is gone: its waits end unanswered, up to `release_batch` holds are
    /// released now and the rest by a release step (`Command::Expire`); then it is forgotten.
    pub(super) fn detach(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        let Some(state) = self.sessions.get_mut(&session) else { return };
        if state.gone {
            return;
        }
        state.gone = true;
        let releasing = state.releasing;
        self.cancel_waits(now, session, false, out);
        if releasing {
            // A RESET of this session is under way: it goes on, and answers nobody.
            if let Some(release) = self.releasing.iter_mut().find(|r| r.session == session) {
                release.reset = None;
            }
            return;
        }
        let mut budget = std::mem::take(&mut self.inline_budget);
        let done = self.release_holds(now, session, &mut budget, out);
        self.inline_budget = budget;
        if done {
            self.sessions.remove(&session);
        } else {
            self.start_release(Release { session, reset: None });
        }
    }

    /// Releases up to `release_batch` holds of pending RESETs and detaches, taking them in
    /// turn (the one the budget ran out on goes to the back), answering each RESET whose last hold went, and refills the inline budget of the RESETs
    /// and detaches to come. Returns the holds released. The server calls it once per turn.
    pub(super) fn release_step(&mut self, now: Tick, out: &mut Vec<Output>) -> usize {
        self.inline_budget = self.release_batch;
        let mut budget = self.release_batch;
        while let Some(release) = self.releasing.front() {
            let session = release.session;
            if !self.release_holds(now, session, &mut budget, out) {
                // Round robin: a small release queued behind a big one waits one step, not
                // the big one's whole release.
                self.releasing.rotate_left(1);
                break;
            }
            if let Some(release) = self.releasing.pop_front() {
                self.end_release(release, out);
            }
        }
        // The store is shrunk by housekeeping (`shrink`, once a second), never here: a shrink
        // costs O(capacity), and a turn must not pay it for one UNLOCK or RESET.
        self.release_batch - budget
    }

    /// Whether RESETs or detaches are still releasing holds, REVOKEs revoking or runs of
    /// waiters granting: the server then polls without sleeping and applies
    /// `Command::Expire` each turn.
    pub fn has_pending_releases(&self) -> bool {
        !self.releasing.is_empty() || !self.revoking.is_empty() || !self.granting.is_empty()
    }

    /// Whether `session` has a RESET still releasing, or a REVOKE still revoking (`revoke`):
    /// the server serves none of its requests until it is answered.
    pub fn is_releasing(&self, session: SessionId) -> bool {
        self.sessions.get(&session).is_some_and(|state| state.releasing) || self.is_revoking(session)
    }

    /// Completes a pending release of `session` now, whatever it costs: only for a caller that
    /// sends requests of a releasing session (the server does not).
    pub(super) fn finish_release(&mut self, now: Tick, session: SessionId, out: &mut Vec<Output>) {
        if !self.sessions.get(&session).is_some_and(|state| state.releasing) {
            return;
        }
        let mut budget = usize::MAX;
        self.release_holds(now, session, &mut budget, out);
        if let Some(pos) = self.releasing.iter().position(|r| r.session == session) {
            if let Some(release) = self.releasing.remove(pos) {
                self.end_release(release, out);
            }
        }
    }

    fn start_release(&mut self, release: Release) {
        if let Some(state) = self.sessions.get_mut(&release.session) {
            state.releasing = true;
        }
        self.releasing.push_back(release);
    }

    /// All holds of the release are gone: answer its RESET, or forget its gone session.
    fn end_release(&mut self, release: Release, out: &mut Vec<Output>) {
        let Some(state) = self.sessions.get_mut(&release.session) else { return };
        state.releasing = false;
        state.shrink_if_sparse();
        if state.gone {
            self.sessions.remove(&release.session);
        } else if let Some(request_id) = release.reset {
            out.push(Output {
                session: release.session,
                request_id,
                lock: None,
                response: Response::ResetOk,
            });
        }
    }

    /// Releases the holds of `session` from the oldest, while `budget` lasts. True when none is
    /// left (also when the budget ran out exactly on the last one).
    fn release_holds(
        &mut self,
        now: Tick,
        session: SessionId,
        budget: &mut usize,
        out: &mut Vec<Output>,
    ) -> bool {
        loop {
            let Some(state) = self.sessions.get(&session) else { return true };
            let (key, gone) = (state.held_head, state.gone);
            if self.store.get(key).is_none() {
                return true;
            }
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            self.unlink_held(session, key);
            self.counters.released += 1;
            // A detach is an abnormal end: a grant's lock-delay applies; a RESET's is not.
            self.end_grant(now, session, key, gone, out);
        }
    }
}
