//! The TOP view for monitoring: the locks held longest and the locks with the most waiters.
//! It scans every lock (O(locks)); it serves operators and scrapes, never the lock path.

use std::cmp::Reverse;

use super::listing::keep_smallest;
use super::store::Lock;
use super::LockTable;
use crate::protocol::{Response, TopEntry};
use crate::wheel::Tick;

/// Entries per list when the request asks for 0, and the most it may ask for.
pub const TOP_DEFAULT: u32 = 10;
pub const TOP_MAX: u32 = 1000;

impl LockTable {
    /// Response::Top with at most `n` entries per list (0 = default), as of `now`.
    pub fn top(&self, now: Tick, n: u32) -> Response {
        let n = if n == 0 { TOP_DEFAULT } else { n.min(TOP_MAX) } as usize;
        // Selection, not a full sort: O(locks) even with a million of them.
        let mut held: Vec<&Lock> = self.store.iter().collect();
        keep_smallest(&mut held, n, |a, b| (a.since, &*a.name).cmp(&(b.since, &*b.name)));
        let mut deep: Vec<&Lock> = self.store.iter().filter(|l| !l.waiters.is_empty()).collect();
        keep_smallest(&mut deep, n, |a, b| {
            (Reverse(a.waiters.len()), &*a.name).cmp(&(Reverse(b.waiters.len()), &*b.name))
        });
        Response::Top {
            longest_held: held.into_iter().map(|l| self.top_entry(l, now)).collect(),
            deepest_queues: deep.into_iter().map(|l| self.top_entry(l, now)).collect(),
        }
    }

    fn top_entry(&self, lock: &Lock, now: Tick) -> TopEntry {
        TopEntry {
            name: lock.name.to_string(),
            holder: self.conns.get(&lock.holder).map_or_else(String::new, |c| c.label.to_string()),
            held_ms: now.saturating_sub(lock.since),
            waiters: lock.waiters.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::{ConnId, TableLimits};
    use crate::protocol::LockRequest;

    fn req(name: &str) -> LockRequest<'_> {
        LockRequest { name, timeout_ms: None, queue_max: None }
    }

    #[test]
    fn oldest_holds_and_deepest_queues_first() {
        let mut t = LockTable::new(1, TableLimits::default());
        let (a, b, c) = (
            ConnId { slot: 0, generation: 1 },
            ConnId { slot: 1, generation: 1 },
            ConnId { slot: 2, generation: 1 },
        );
        t.connect(a, "A".into());
        t.connect(b, "B".into());
        t.connect(c, "C".into());
        let mut out = Vec::new();
        t.lock(10, a, 1, &req("young"), &mut out);
        t.lock(5, b, 2, &req("old"), &mut out);
        t.lock(20, b, 3, &req("young"), &mut out);
        t.lock(20, c, 4, &req("young"), &mut out);
        t.lock(20, a, 5, &req("old"), &mut out);
        let Response::Top { longest_held, deepest_queues } = t.top(100, 1) else { panic!() };
        assert_eq!(
            longest_held,
            vec![TopEntry { name: "old".into(), holder: "B".into(), held_ms: 95, waiters: 1 }]
        );
        assert_eq!(
            deepest_queues,
            vec![TopEntry { name: "young".into(), holder: "A".into(), held_ms: 90, waiters: 2 }]
        );
    }
}
