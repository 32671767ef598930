//! Per-connection state of the lock table: the label shown in listings, the locks held and the
//! locks awaited, so RESET and disconnect find everything a connection owns without a scan.

use hashbrown::HashSet;

/// What one connection holds and awaits, by lock key.
#[derive(Debug)]
pub(super) struct ConnState {
    /// `ip:port` or `unix:N`.
    pub label: Box<str>,
    /// A set, not a list: a connection may hold millions of locks and UNLOCK must stay O(1).
    pub held: HashSet<u32>,
    /// In the order the waits started; a connection awaits few locks, so a list is enough.
    pub waiting: Vec<u32>,
}

impl ConnState {
    pub fn new(label: Box<str>) -> Self {
        ConnState { label, held: HashSet::new(), waiting: Vec::new() }
    }

    /// Holds plus waits, the quantity `max_locks_per_conn` bounds.
    pub fn count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }

    pub fn waits_on(&self, lock: u32) -> bool {
        self.waiting.contains(&lock)
    }

    /// Forgets a wait, keeping the order of the others.
    pub fn stop_waiting(&mut self, lock: u32) {
        if let Some(pos) = self.waiting.iter().position(|&k| k == lock) {
            self.waiting.remove(pos);
        }
    }
}
