//! Read-only views of the lock table: the LOCKS, CONNECTIONS and MY_LOCKS listings, statistics
//! and monitoring helpers. They may cost O(locks): they serve operators, not the lock path.

use std::cmp::{Ordering, Reverse};

use super::conn::ConnState;
use super::{ConnId, LockTable, TableStats};
use crate::protocol::{ConnectionInfo, LockInfo, Response};
use crate::wheel::Tick;

impl LockTable {
    /// LOCKS: locks whose name starts with `prefix`, sorted by name, each with its queue (holder
    /// first). `max` 0 means the default; any `max` is capped by the default.
    pub fn locks(&self, prefix: &str, max: u32) -> Response {
        let mut found: Vec<_> = self.store.iter().filter(|lock| lock.name.starts_with(prefix)).collect();
        let truncated = keep_smallest(&mut found, self.list_cap(max), |a, b| a.name.cmp(&b.name));
        let locks = found
            .into_iter()
            .map(|lock| LockInfo { name: lock.name.to_string(), queue: self.queue_labels(lock) })
            .collect();
        Response::Locks { locks, truncated }
    }

    /// CONNECTIONS: connections whose label starts with `prefix`, sorted by label, with the
    /// locks each holds (by name) and awaits (in the order the waits started).
    pub fn connections(&self, prefix: &str, max: u32) -> Response {
        let mut found: Vec<(&ConnId, &ConnState)> =
            self.conns.iter().filter(|(_, state)| state.label.starts_with(prefix)).collect();
        // Labels should be unique; the id breaks ties so the order never depends on hashing.
        let by_label = |a: &(&ConnId, &ConnState), b: &(&ConnId, &ConnState)| {
            a.1.label.cmp(&b.1.label).then(a.0.cmp(b.0))
        };
        let truncated = keep_smallest(&mut found, self.list_cap(max), by_label);
        let connections = found
            .into_iter()
            .map(|(_, state)| ConnectionInfo {
                label: state.label.to_string(),
                held: self.held_names(state),
                waiting: self.waiting_names(state),
            })
            .collect();
        Response::Connections { connections, truncated }
    }

    /// MY_LOCKS: what `conn` holds (sorted by name) and awaits (in order); empty if unknown.
    pub fn my_locks(&self, conn: ConnId) -> Response {
        match self.conns.get(&conn) {
            Some(state) => {
                Response::MyLocks { held: self.held_names(state), waiting: self.waiting_names(state) }
            }
            None => Response::MyLocks { held: Vec::new(), waiting: Vec::new() },
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            connections: self.conns.len(),
            locks_held: self.store.len(),
            waiters: self.waiters,
            last_token: self.last_token(),
            ..self.counters.clone()
        }
    }

    /// The `n` locks held longest: `(name, held since)`, oldest first.
    pub fn longest_holds(&self, n: usize) -> Vec<(String, Tick)> {
        let mut found: Vec<(Tick, &str)> = self.store.iter().map(|lock| (lock.since, &*lock.name)).collect();
        keep_smallest(&mut found, n, Ord::cmp);
        found.into_iter().map(|(since, name)| (name.to_owned(), since)).collect()
    }

    /// The `n` locks with the most waiters: `(name, waiters)`, deepest first; only locks with
    /// at least one waiter.
    pub fn deepest_queues(&self, n: usize) -> Vec<(String, usize)> {
        let mut found: Vec<(Reverse<usize>, &str)> = self
            .store
            .iter()
            .filter(|lock| !lock.waiters.is_empty())
            .map(|lock| (Reverse(lock.waiters.len()), &*lock.name))
            .collect();
        keep_smallest(&mut found, n, Ord::cmp);
        found.into_iter().map(|(Reverse(depth), name)| (name.to_owned(), depth)).collect()
    }

    fn list_cap(&self, max: u32) -> usize {
        let ceiling = match self.limits.list_max_default {
            0 => u32::MAX,
            default => default,
        };
        let wanted = if max == 0 { ceiling } else { max.min(ceiling) };
        wanted as usize
    }

    fn held_names(&self, state: &ConnState) -> Vec<String> {
        let mut names: Vec<&str> =
            state.held.iter().filter_map(|&key| self.store.get(key)).map(|l| &*l.name).collect();
        names.sort_unstable();
        names.into_iter().map(str::to_owned).collect()
    }

    fn waiting_names(&self, state: &ConnState) -> Vec<String> {
        state
            .waiting_in_order()
            .into_iter()
            .filter_map(|key| self.store.get(key))
            .map(|lock| lock.name.to_string())
            .collect()
    }
}

/// Keeps the `cap` smallest items, sorted; returns whether any were cut. Selection first, so a
/// small listing of a large table costs O(n), not O(n log n).
pub(super) fn keep_smallest<T>(items: &mut Vec<T>, cap: usize, cmp: impl Fn(&T, &T) -> Ordering) -> bool {
    let truncated = items.len() > cap;
    if truncated {
        if cap > 0 {
            items.select_nth_unstable_by(cap - 1, &cmp);
        }
        items.truncate(cap);
    }
    items.sort_unstable_by(&cmp);
    truncated
}
