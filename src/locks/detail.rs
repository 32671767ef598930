//! The detailed view of one lock for LOCKS_DETAIL (issue 13, PROTOCOL.md §4.28): every holder
//! with its mode, permits, token, age and end, every waiter with its mode. Read-only; the
//! listing around it (prefix, page, frame bound) is the caller's.

use super::holders::Mode;
use super::lease::ms_left;
use super::store::Lock;
use super::table::LockTable;
use crate::protocol::{self, HolderInfo, LockDetail, WaiterInfo};
use crate::wheel::Tick;

/// The wire mode and permits of a grant or wait in `mode`.
fn wire_mode(mode: Mode) -> (protocol::Mode, u32) {
    match mode {
        Mode::Exclusive => (protocol::Mode::Exclusive, 0),
        Mode::Shared => (protocol::Mode::Shared, 0),
        Mode::Permits { count, .. } => (protocol::Mode::Semaphore, count),
    }
}

impl LockTable {
    /// The detail of lock `name` at `now`; `None` if the name is not listed (§6.10: a name in
    /// its lock-delay with neither holders nor waiters is not).
    pub fn lock_detail(&self, now: Tick, name: &str) -> Option<LockDetail> {
        let lock = self.store.find(name).and_then(|key| self.store.get(key))?;
        (!lock.holders.is_empty() || !lock.waiters.is_empty()).then(|| self.detail_of(now, lock))
    }

    fn detail_of(&self, now: Tick, lock: &Lock) -> LockDetail {
        let holders = lock.holders.iter().map(|h| {
            let (mode, permits) = wire_mode(lock.holders.mode_of(h));
            let ends = h.extra.then(|| self.extras.get(&h.token).and_then(|e| e.ends_at())).flatten();
            let ends_in_ms = ends.map(|at| ms_left(now, at));
            let label = self.label(h.session).to_owned();
            HolderInfo {
                label,
                mode,
                permits,
                token: h.token,
                held_ms: now.saturating_sub(h.since),
                ends_in_ms,
            }
        });
        let waiters = lock.waiters.iter().map(|w| {
            let mode = match (lock.holders.limit(), w.weight) {
                (0, u32::MAX) => Mode::Exclusive,
                (0, _) => Mode::Shared,
                (limit, count) => Mode::Permits { count, limit },
            };
            let (mode, permits) = wire_mode(mode);
            WaiterInfo { label: self.label(w.session).to_owned(), mode, permits }
        });
        LockDetail {
            name: lock.name.to_string(),
            limit: lock.holders.limit(),
            holders: holders.collect(),
            waiters: waiters.collect(),
        }
    }
}
