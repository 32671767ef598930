//! Per-session state of the lock table: the label shown in listings, the locks held and the
//! locks awaited, so RESET and detach find everything a session owns without a scan.

use hashbrown::HashMap;

use super::lease::LostGrant;
use super::store::NO_LOCK;
use super::suspend::Resumable;

/// Sets up to this capacity are never shrunk.
const SET_SHRINK_FLOOR: usize = 64;

/// The bit of a wait's sequence number that marks it as skipping while detached.
const SKIP_BIT: u64 = 1;

/// Whether a wait's sequence number (`stop_waiting`) marks it as skipping while detached.
pub fn is_skipping(seq: u64) -> bool {
    seq & SKIP_BIT != 0
}

/// What one session holds and awaits, by lock key.
#[derive(Debug)]
pub(super) struct SessionState {
    /// `ip:port` or `unix:N`.
    pub label: Box<str>,
    /// How many grants it holds: the length of its list of holds (`held_head`), which is
    /// what RESET, detach and the listings walk. No set beside it: UNLOCK unlinks a grant in
    /// O(1) through the links in the lock, so a set would only cost an insert and a remove
    /// per hold (about a tenth of an uncontended LOCK and UNLOCK).
    pub held: usize,
    /// Awaited locks with the sequence number of their wait: the first in `first_wait`, inline,
    /// and the others in a map. Most sessions await at most one lock at a time, and the slot
    /// makes that wait's start and end a compare and a store (a map insert and remove were
    /// about 140 instructions of a contended hand-off of about 1660); the map keeps a session
    /// with many waits (nothing limits them by default) at O(1) per wait that ends, not
    /// O(waits). The sequence gives back the order the waits started in when all of them end
    /// at once. A lock is in one of the two, never both (a session waits once per lock).
    /// The sequence's lowest bit is the wait's skip flag (`SKIP_BIT`, §6.14), so the flag
    /// costs no memory and comes back for free when the wait ends; the order is unchanged by it.
    pub(super) first_wait: Option<(u32, u64)>,
    pub(super) more_waits: HashMap<u32, u64>,
    pub(super) next_wait: u64,
    /// First and last of the holds in acquisition order, linked through the locks
    /// (`Holder::held_prev` / `held_next` of its grant in each); `NO_LOCK` when nothing is held.
    pub held_head: u32,
    pub held_tail: u32,
    /// The session is gone and its holds are still being released in batches: it is never
    /// granted anything and never answered again.
    pub gone: bool,
    /// A RESET or detach is releasing its holds in batches (`LockTable::release_step`).
    pub releasing: bool,
    /// Grants it lost without asking, oldest first, at most `LOST_MEMORY`.
    pub lost: Vec<LostGrant>,
    /// Set by SESSION_OPEN: the secret, the grace and, while detached, the outbox (`suspend`).
    pub resumable: Option<Box<Resumable>>,
    /// SESSION_OPEN flags bit 0: every wait of the session skips while detached (§6.14); read
    /// only when a grant finds some session detached.
    pub skip_default: bool,
}

impl SessionState {
    pub fn new(label: Box<str>) -> Self {
        SessionState {
            label,
            held: 0,
            first_wait: None,
            more_waits: HashMap::new(),
            next_wait: 0,
            held_head: NO_LOCK,
            held_tail: NO_LOCK,
            gone: false,
            releasing: false,
            lost: Vec::new(),
            skip_default: false,
            resumable: None,
        }
    }

    /// Gives back the memory of the map of waits once it is far below its peak (a quarter of
    /// the capacity, above a small floor). O(entries) when it shrinks, which the halving makes
    /// amortised O(1) per removal; inline, as every wait that ends in the map asks.
    #[inline]
    pub fn shrink_if_sparse(&mut self) {
        let capacity = self.more_waits.capacity();
        if capacity > SET_SHRINK_FLOOR && self.more_waits.len() * 4 <= capacity {
            self.more_waits.shrink_to(self.more_waits.len() * 2);
        }
    }

    /// Holds plus waits, the quantity `max_locks_per_conn` bounds.
    pub fn count(&self) -> usize {
        self.held + self.waiting()
    }

    /// How many locks it awaits.
    pub fn waiting(&self) -> usize {
        usize::from(self.first_wait.is_some()) + self.more_waits.len()
    }

    /// Records a wait on `lock`, which the session does not wait for yet; `skip`: it is
    /// skipped if its turn comes while the session is detached.
    #[inline]
    pub fn start_waiting(&mut self, lock: u32, skip: bool) {
        debug_assert!(!self.waits_on(lock), "a second wait of one session on lock {lock}");
        // Sequence numbers go up by 2, so the skip bit needs no shift.
        let seq = self.next_wait | u64::from(skip);
        self.next_wait += 2;
        if self.first_wait.is_none() {
            self.first_wait = Some((lock, seq));
        } else {
            self.more_waits.insert(lock, seq);
        }
    }

    #[inline]
    pub fn waits_on(&self, lock: u32) -> bool {
        self.first_wait.is_some_and(|(first, _)| first == lock)
            || (!self.more_waits.is_empty() && self.more_waits.contains_key(&lock))
    }

    /// Forgets the wait for `lock`; returns its sequence number (0 if there was none), whose
    /// [`is_skipping`] says whether it skips while detached.
    #[inline]
    pub fn stop_waiting(&mut self, lock: u32) -> u64 {
        match self.first_wait {
            Some((first, seq)) if first == lock => {
                self.first_wait = None;
                seq
            }
            _ => self.stop_waiting_in_map(lock),
        }
    }

    /// `stop_waiting` of a wait that is not the inline one: out of line, so the common one
    /// inlines to a compare and a store.
    #[inline(never)]
    fn stop_waiting_in_map(&mut self, lock: u32) -> u64 {
        let seq = self.more_waits.remove(&lock);
        if seq.is_some() {
            self.shrink_if_sparse();
        }
        seq.unwrap_or(0)
    }

    /// The awaited locks with the sequence number of each wait, in no particular order, so a
    /// listing can select the first few waits without sorting all of them.
    pub fn waits(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.first_wait.into_iter().chain(self.more_waits.iter().map(|(&lock, &seq)| (lock, seq)))
    }

    /// The awaited locks in the order the waits started.
    pub fn waiting_in_order(&self) -> Vec<u32> {
        let mut waits: Vec<(u64, u32)> = self.waits().map(|(lock, seq)| (seq, lock)).collect();
        waits.sort_unstable();
        waits.into_iter().map(|(_, lock)| lock).collect()
    }

    /// Forgets every wait and returns them in the order they started.
    pub fn take_waiting(&mut self) -> Vec<u32> {
        let waits = self.waiting_in_order();
        self.first_wait = None;
        self.more_waits.clear();
        waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{Command, LockOpts, LockTable, Name, Output, SessionId, TableLimits};
    use crate::protocol::Response;

    fn sorted(state: &SessionState) -> Vec<(u32, u64)> {
        let mut waits: Vec<(u32, u64)> = state.waits().collect();
        waits.sort_unstable();
        waits
    }

    /// The inline slot and the map together keep every wait once, with its sequence, whichever
    /// of them ends first: the slot is refilled by the next wait while older ones sit in the map.
    #[test]
    fn waits_in_the_slot_and_the_map_keep_their_order() {
        let mut state = SessionState::new("t".into());
        assert_eq!((state.waiting(), state.count()), (0, 0));
        assert!(!state.waits_on(0) && !state.waits_on(NO_LOCK));
        state.stop_waiting(7); // not awaited: nothing happens
        for (lock, skip) in [(5, false), (3, true), (9, false)] {
            state.start_waiting(lock, skip);
        }
        assert_eq!(sorted(&state), [(3, 3), (5, 0), (9, 4)], "sequences go up by 2, the skip flag in bit 0");
        assert!(state.waits_on(5) && state.waits_on(3) && state.waits_on(9) && !state.waits_on(4));
        // The slot's wait ends first; the next wait takes the slot, after the map's in order.
        assert!(!is_skipping(state.stop_waiting(5)));
        assert!(!state.waits_on(5) && state.waiting() == 2);
        state.start_waiting(5, true);
        state.start_waiting(1, false);
        assert_eq!(state.waiting_in_order(), [3, 9, 5, 1]);
        // A map wait ends: the slot stays.
        assert_eq!(state.stop_waiting(9), 4);
        assert_eq!(state.stop_waiting(9), 0, "no longer awaited");
        assert_eq!(state.waiting_in_order(), [3, 5, 1]);
        state.held = 2;
        assert_eq!(state.count(), 5);
        assert_eq!(state.take_waiting(), [3, 5, 1]);
        assert_eq!((state.waiting(), state.waits().count()), (0, 0));
        assert!(!state.waits_on(3) && !state.waits_on(5) && !state.waits_on(1));
        // Empty again: the next wait goes to the slot, with a later sequence.
        state.start_waiting(3, false);
        assert_eq!(sorted(&state), [(3, 10)]);
        assert!(is_skipping(3) && !is_skipping(10));
    }

    fn lock(session: u64, request_id: u32, name: &str) -> Command {
        let (session, name, opts) = (SessionId(session), Name::from(name), LockOpts::default());
        Command::Lock { session, request_id, name, timeout_ms: None, queue_max: None, opts }
    }

    fn unlock(session: u64, request_id: u32, name: &str) -> Command {
        Command::Unlock { session: SessionId(session), request_id, name: Name::from(name), token: None }
    }

    fn answers(out: &mut Vec<Output>) -> Vec<(u64, u32, Response)> {
        out.drain(..).map(|o| (o.session.0, o.request_id, o.response)).collect()
    }

    /// Through the table: waits in the slot and in the map are found by a second LOCK and by
    /// a waiter's UNLOCK, listed and cancelled in the order they started, whichever holds them,
    /// also after the slot was emptied by a grant and refilled by a later wait.
    #[test]
    fn a_sessions_waits_in_the_slot_and_the_map_end_in_start_order() {
        let mut t = LockTable::new(1, TableLimits::default());
        let mut out = Vec::new();
        for s in 0..2 {
            t.apply(0, &Command::Attach { session: SessionId(s), label: format!("s{s}") }, &mut out);
        }
        for (i, name) in (0..).zip(["a", "b", "c", "d"]) {
            t.apply(0, &lock(0, i, name), &mut out);
        }
        // Session 1 waits on a (the slot), then b and c (the map).
        for (i, name) in (10..).zip(["a", "b", "c"]) {
            t.apply(0, &lock(1, i, name), &mut out);
        }
        out.clear();
        t.apply(0, &lock(1, 20, "a"), &mut out);
        t.apply(0, &lock(1, 21, "c"), &mut out);
        assert_eq!(answers(&mut out), [(1, 20, Response::AlreadyWaiting), (1, 21, Response::AlreadyWaiting)]);
        // a is handed over (the slot empties); the wait on d takes the slot, after b and c.
        t.apply(0, &unlock(0, 30, "a"), &mut out);
        let token = t.last_token();
        assert_eq!(answers(&mut out), [(0, 30, Response::Released), (1, 10, Response::Acquired { token })]);
        t.apply(0, &lock(1, 13, "d"), &mut out);
        assert!(out.is_empty());
        t.check_invariants().unwrap();
        let waiting = ["b", "c", "d"].map(String::from).to_vec();
        assert_eq!(t.my_locks(SessionId(1)), Response::MyLocks { held: vec!["a".into()], waiting });
        // Abandoning the map's wait on b: its LOCK is cancelled, then the UNLOCK answered.
        t.apply(0, &unlock(1, 31, "b"), &mut out);
        assert_eq!(answers(&mut out), [(1, 11, Response::Cancelled), (1, 31, Response::Released)]);
        t.apply(0, &lock(1, 22, "b"), &mut out);
        t.apply(0, &Command::Reset { session: SessionId(1), request_id: 40 }, &mut out);
        let cancelled = [12, 13, 22].map(|id| (1, id, Response::Cancelled));
        assert_eq!(answers(&mut out), [&cancelled[..], &[(1, 40, Response::ResetOk)]].concat());
        t.check_invariants().unwrap();
        let empty = Response::MyLocks { held: Vec::new(), waiting: Vec::new() };
        assert_eq!(t.my_locks(SessionId(1)), empty);
        let state = &t.sessions[&SessionId(1)];
        assert_eq!((state.count(), state.first_wait, state.more_waits.len()), (0, None, 0));
    }

    /// Many waits that come and go: the map gives its memory back once mostly empty.
    #[test]
    fn the_map_of_waits_shrinks_once_sparse() {
        let mut state = SessionState::new("t".into());
        for lock in 0..10_000 {
            state.start_waiting(lock, false);
        }
        let peak = state.more_waits.capacity();
        for lock in 0..10_000 {
            state.stop_waiting(lock);
        }
        assert_eq!(state.waiting(), 0);
        assert!(peak > SET_SHRINK_FLOOR && state.more_waits.capacity() <= SET_SHRINK_FLOOR);
    }
}
