//! The census of held locks by mode for `/metrics` (issue 13): how many names are held in each
//! mode, by how many grants, and how many semaphore permits are in use. O(1) per lock from what
//! each holder set already keeps (its capacity in use and its length), so one pass over the
//! store; the server takes it in its once-a-second table pass beside TOP, never on a request.

use super::LockTable;

/// Held locks by mode, and the permits of the held semaphores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeCensus {
    /// Names held in each mode: exclusive, shared, semaphore (`ModeCensus::MODES` order).
    pub locks: [u64; 3],
    /// Grants of each mode: one per exclusive lock, each reader, each semaphore holder.
    pub grants: [u64; 3],
    /// Permits held over all semaphores.
    pub permits_in_use: u64,
    /// The limits of the semaphores held now, summed: how many permits they have in all.
    pub permits_limit: u64,
}

impl ModeCensus {
    /// The `mode` label of each index of `locks` and `grants`.
    pub const MODES: [&'static str; 3] = ["exclusive", "shared", "semaphore"];
}

impl LockTable {
    /// The census of the locks held now: one pass over the store, O(1) per lock.
    pub fn mode_census(&self) -> ModeCensus {
        let mut census = ModeCensus::default();
        for lock in self.store.iter().filter(|lock| !lock.holders.is_empty()) {
            let holders = &lock.holders;
            let kind = match (holders.limit(), holders.used()) {
                (0, u32::MAX) => 0,
                (0, _) => 1,
                (limit, used) => {
                    census.permits_in_use += u64::from(used);
                    census.permits_limit += u64::from(limit);
                    2
                }
            };
            census.locks[kind] += 1;
            census.grants[kind] += holders.len() as u64;
        }
        census
    }
}
