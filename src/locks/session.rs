//! Per-session state of the lock table: the label shown in listings, the locks held and the
//! locks awaited, so RESET and detach find everything a session owns without a scan.

use hashbrown::HashMap;

use super::lease::LostGrant;
use super::store::NO_LOCK;
use super::suspend::Resumable;

/// The bit of a wait's sequence number that marks it as skipping while detached.
const SKIP_BIT: u64 = 1;

/// Whether a wait's sequence number (`stop_waiting`) marks it as skipping while detached.
pub fn is_skipping(seq: u64) -> bool {
    seq & SKIP_BIT != 0
}

/// Sets up to this capacity are never shrunk.
const SET_SHRINK_FLOOR: usize = 64;

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
    /// Awaited locks with the sequence number of their wait. A map, so that a session with
    /// many waits (nothing limits them by default) pays O(1) per wait that ends, not O(waits);
    /// the sequence gives back the order the waits started in when all of them end at once.
    /// Its lowest bit is the wait's skip flag (`SKIP_BIT`, §6.14), so the flag costs no
    /// memory and comes back for free when the wait ends; the order is unchanged by it.
    waiting: HashMap<u32, u64>,
    next_wait: u64,
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
            waiting: HashMap::new(),
            next_wait: 0,
            held_head: NO_LOCK,
            held_tail: NO_LOCK,
            gone: false,
            releasing: false,
            lost: Vec::new(),
            resumable: None,
            skip_default: false,
        }
    }

    /// Gives back the memory of the map of waits once it is far below its peak (a quarter of
    /// the capacity, above a small floor). O(entries) when it shrinks, which the halving makes
    /// amortised O(1) per removal; inline, as every wait that ends asks.
    #[inline]
    pub fn shrink_if_sparse(&mut self) {
        let capacity = self.waiting.capacity();
        if capacity > SET_SHRINK_FLOOR && self.waiting.len() * 4 <= capacity {
            self.waiting.shrink_to(self.waiting.len() * 2);
        }
    }

    /// Holds plus waits, the quantity `max_locks_per_conn` bounds.
    pub fn count(&self) -> usize {
        self.held + self.waiting.len()
    }

    /// Records a wait for `lock`; `skip`: it is skipped if its turn comes while detached.
    pub fn start_waiting(&mut self, lock: u32, skip: bool) {
        // Sequence numbers go up by 2, so the skip bit needs no shift.
        self.waiting.insert(lock, self.next_wait | u64::from(skip));
        self.next_wait += 2;
    }

    pub fn waits_on(&self, lock: u32) -> bool {
        self.waiting.contains_key(&lock)
    }

    /// Forgets the wait for `lock`; returns its sequence number (0 if there was none), whose
    /// [`is_skipping`] says whether it skips while detached.
    pub fn stop_waiting(&mut self, lock: u32) -> u64 {
        let seq = self.waiting.remove(&lock);
        self.shrink_if_sparse();
        seq.unwrap_or(0)
    }

    /// The awaited locks with the sequence number of each wait, in no particular order, so a
    /// listing can select the first few waits without sorting all of them.
    pub fn waits(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.waiting.iter().map(|(&lock, &seq)| (lock, seq))
    }

    /// The awaited locks in the order the waits started.
    pub fn waiting_in_order(&self) -> Vec<u32> {
        let mut waits: Vec<(u64, u32)> = self.waiting.iter().map(|(&lock, &seq)| (seq, lock)).collect();
        waits.sort_unstable();
        waits.into_iter().map(|(_, lock)| lock).collect()
    }

    /// Forgets every wait and returns them in the order they started.
    pub fn take_waiting(&mut self) -> Vec<u32> {
        let waits = self.waiting_in_order();
        self.waiting.clear();
        waits
    }
}
