//! Lock storage: every lock lives once in a slab, found by name through a hash index that holds
//! only slab keys, so each name is stored exactly once (in the lock itself).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use slab::Slab;

use super::holders::{Holder, Holders};
use super::lease::GrantOpts;
use super::queue::Queue;
use super::{Name, SessionId};
use crate::wheel::{Tick, TimerHandle};

/// A lock request waiting in a queue.
#[derive(Debug)]
pub(super) struct Waiter {
    pub session: SessionId,
    /// The LOCK request to answer when the wait ends.
    pub request_id: u32,
    /// The share of the lock's capacity it asks for (see `Mode::weight`).
    pub weight: u32,
    /// The lease and hold budget the grant will have; boxed, as few waits have them.
    pub opts: Option<Box<GrantOpts>>,
    /// When the wait started, for wait-time metrics.
    pub since: Tick,
    /// When the wait times out; `None` waits forever. Kept beside the timer so the wheel can be
    /// rebuilt from the waiters alone (a snapshot need not carry the wheel).
    pub deadline: Option<Tick>,
    /// The wheel's timer for `deadline`, present exactly when `deadline` is: waits forever
    /// never touch the wheel.
    pub timer: Option<TimerHandle>,
}

/// A held lock. A lock without a holder is removed, so `holders` is never empty, except
/// while a lock-delay runs. 120 bytes: what is rare (a wait queue, more than one holder,
/// lease state) lives out of line, so the common lock stays small in memory and its moves
/// into and out of the slab stay inline copies (a `memcpy` call above 128 bytes).
#[derive(Debug)]
pub(super) struct Lock {
    pub name: Name,
    /// The hash the store's index files `name` under (set by `Store::insert`): a lock that goes
    /// and an index that resizes find it without hashing the name again.
    hash: u64,
    pub holders: Holders,
    /// Waiting requests in arrival order; boxed on the first wait, so an uncontended lock
    /// costs no allocation beyond its name.
    pub waiters: Queue,
    /// While nonzero, a lock-delay runs until this tick (PROTOCOL.md §6.10): the lock grants
    /// nothing, and it is kept even with no holder and no waiter. One compare on the paths
    /// that grant.
    pub delay_until: Tick,
}

/// The end of a holder's list of holds.
pub(super) const NO_LOCK: u32 = u32::MAX;

impl Lock {
    /// A lock just granted to `holder`, not yet linked into its list of holds; `limit` is the
    /// semaphore limit, or 0 for a read/write lock.
    pub fn new(name: Name, holder: Holder, limit: u32) -> Lock {
        Lock { name, hash: 0, holders: Holders::new(holder, limit), waiters: Queue::new(), delay_until: 0 }
    }

    /// Whether the first waiter could be granted now: what must never stay true at rest.
    pub fn head_admitted(&self) -> bool {
        self.delay_until == 0 && self.waiters.front().is_some_and(|w| self.holders.admits(w.weight))
    }

    /// Gives back queue memory once the queue is far below its peak (a quarter of the capacity,
    /// above a small floor): a burst of waiters must not pin its queue, and the hysteresis keeps
    /// a steady queue from reallocating. O(waiters) when it shrinks, amortised O(1).
    pub fn shrink_queue(&mut self) {
        let (len, capacity) = (self.waiters.len(), self.waiters.capacity());
        if capacity > QUEUE_SHRINK_FLOOR && len * 4 <= capacity {
            self.waiters.shrink_to(len * 2);
        }
    }
}

/// Queues up to this capacity are never shrunk.
const QUEUE_SHRINK_FLOOR: usize = 16;

/// Below this slab capacity, vacant slots are not worth a shrinking scan.
const MIN_SHRINK_CAPACITY: usize = 4096;

/// The locks, keyed by a `u32` slab key (4 bytes per index entry and per holding).
pub(super) struct Store {
    locks: Slab<Lock>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// A shrink gave memory back since `take_shrank` was last called (housekeeping then asks
    /// the allocator to return the pages).
    shrank: bool,
    /// `(locks, capacity)` at the last shrink attempt: a slab whose highest key is still held
    /// cannot shrink, and retrying the O(capacity) pass every second would gain nothing.
    last_try: Option<(usize, usize)>,
}

impl Store {
    pub fn new() -> Self {
        Store {
            locks: Slab::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            shrank: false,
            last_try: None,
        }
    }

    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// The hash the index files `name` under, for `find_hashed` and `insert`.
    pub fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.find_hashed(self.hash(name), name)
    }

    /// `find` with the hash of `name` already computed (by `hash`).
    pub fn find_hashed(&self, hash: u64, name: &str) -> Option<u32> {
        let locks = &self.locks;
        self.index.find(hash, |&key| locks.get(key as usize).is_some_and(|l| &*l.name == name)).copied()
    }

    /// Adds a lock the caller has checked is absent, `hash` being the `hash` of its name;
    /// `None` once keys no longer fit a `u32` (four billion locks), which the caller reports
    /// as a limit. The hash comes from the caller's lookup: hashing the name again here would
    /// cost a second hash on every LOCK of a free name, and would read the lock's name just
    /// after it was moved in, a store-forwarding stall.
    pub fn insert(&mut self, hash: u64, mut lock: Lock) -> Option<u32> {
        let key = u32::try_from(self.locks.vacant_key()).ok()?;
        debug_assert_eq!(hash, self.hash(&lock.name));
        lock.hash = hash;
        self.locks.insert(lock);
        let locks = &self.locks;
        self.index.insert_unique(hash, key, |&k| rehash(locks, k));
        Some(key)
    }

    /// Removes lock `key` and drops it: no caller wants it back, and a lock returned would be
    /// one more move of it.
    pub fn remove(&mut self, key: u32) {
        let Some(hash) = self.locks.get(key as usize).map(|lock| lock.hash) else { return };
        if let Ok(entry) = self.index.find_entry(hash, |&k| k == key) {
            entry.remove();
        }
        self.locks.try_remove(key as usize);
    }

    /// Returns memory once the slab is at most a quarter full; called by housekeeping only,
    /// since a try costs O(capacity). The slab cannot move live keys: it drops only the vacant
    /// tail after its highest live key, so a failed try is repeated only once the slab grew or
    /// the lock count halved. The index is rehashed only when it is itself at most a quarter
    /// full, and keeps room for twice the locks, so a load hovering around a size does not
    /// rehash back and forth.
    pub fn shrink_if_sparse(&mut self) -> bool {
        let (len, capacity) = (self.locks.len(), self.locks.capacity());
        if capacity < MIN_SHRINK_CAPACITY || len * 4 > capacity {
            return false;
        }
        if let Some((last_len, last_capacity)) = self.last_try {
            if capacity == last_capacity && len * 2 > last_len {
                return false;
            }
        }
        self.locks.shrink_to_fit();
        if self.index.capacity() >= len.saturating_mul(4).max(MIN_SHRINK_CAPACITY) {
            let locks = &self.locks;
            self.index.shrink_to(len * 2, |&k| rehash(locks, k));
        }
        self.last_try = Some((len, self.locks.capacity()));
        let shrank = self.locks.capacity() < capacity;
        self.shrank |= shrank;
        shrank
    }

    /// Whether a shrink gave memory back since the last call.
    pub fn take_shrank(&mut self) -> bool {
        std::mem::take(&mut self.shrank)
    }

    pub fn capacity(&self) -> usize {
        self.locks.capacity()
    }

    pub fn get(&self, key: u32) -> Option<&Lock> {
        self.locks.get(key as usize)
    }

    pub fn get_mut(&mut self, key: u32) -> Option<&mut Lock> {
        self.locks.get_mut(key as usize)
    }

    /// The locks with their keys, in key order.
    pub fn iter_keyed(&self) -> impl Iterator<Item = (u32, &Lock)> {
        self.locks.iter().map(|(key, lock)| (key as u32, lock))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lock> {
        self.locks.iter().map(|(_, lock)| lock)
    }
}

/// The hash of lock `key`'s name, for the index to rehash when it resizes.
fn rehash(locks: &Slab<Lock>, key: u32) -> u64 {
    locks.get(key as usize).map_or(0, |lock| lock.hash)
}
