//! The lock table: named locks, their FIFO wait queues, per-session holdings and lock-wait
//! timeouts, as a deterministic state machine driven by one owned [`Command`] type.
//!
//! The table is handed `now` (milliseconds since server start, see [`crate::wheel::Tick`]) with
//! each command given to [`LockTable::apply`], and never reads a clock, does I/O, logs or fails:
//! every refusal is a [`Response`], pushed with the session, the request id it answers and the
//! lock it is about into a caller-owned `Vec<Output>`. Sessions are the table's own opaque
//! [`SessionId`]s, carried in `Attach`, so that replaying the same commands gives the same table.
//! The server applies [`Command::Expire`] once per turn of its loop (it also polls without
//! sleeping while [`LockTable::next_deadline`] has passed or releases are pending).
//!
//! Guarantees:
//! - every request gets exactly one response, possibly later (a wait ends in `Acquired`,
//!   `TimedOut` or `Cancelled`), except requests of a detached session; the notices LOST and
//!   CONTENDED (request id `NOTICE_REQUEST_ID`) answer no request;
//! - waiters are granted in strict arrival order across modes (issue 13, PROTOCOL.md §6.7,
//!   §6.8): the head is granted while it fits beside every holder, no one barges past it;
//! - tokens are strictly increasing over the life of the table, one per grant;
//! - a lock with no holder is removed at once (a lock with waiters always has a holder),
//!   except while its lock-delay runs (§6.10).
//!
//! Bounded work (README "Limits and guarantees"): one `Expire` answers at most `EXPIRE_BATCH`
//! timeouts, one RESET, detach or release step releases at most `RELEASE_BATCH` holds, one
//! REVOKE or revoke step ends at most `REVOKE_BATCH` grants,
//! and TIMED_OUT / QUEUE_MAXED report at most `REFUSAL_QUEUE_MAX` queue entries; the rest is
//! left for the next call, which the server makes on its next turn.
//!
//! Layout: `command` is the way in (`Command`, `LockOpts`, `SessionId`, `Name`, `apply`);
//! `store` keeps each lock (and its name) once, `queue` its waiters out of line; `holders` who holds a lock, in which mode, and
//! what it admits; `session` keeps per-session state; `table` holds the LOCK, UNLOCK and timeout
//! transitions; `grant` grants in FIFO order, DOWNGRADE and CHECK; `lease` leases, RENEW,
//! LOST, lock-delay and CONTENDED; `revoke` the batched REVOKE; `refusal` the refusals of what a LOCK asks for;
//! `release` the batched RESET and detach; `listing` and `top` the read-only views and metrics;
//! `check` a self-check for tests.

mod census;
mod check;
mod command;
#[cfg(test)]
mod command_tests;
mod detail;
#[cfg(feature = "cluster")]
mod digest;
mod grant;
mod histogram;
mod holders;
mod lease;
#[cfg(test)]
mod lease_tests;
mod listing;
#[cfg(test)]
mod mode_tests;
mod name;
mod queue;
mod refusal;
mod release;
mod revoke;
mod session;
#[cfg(feature = "cluster")]
mod snapshot;
#[cfg(all(test, feature = "cluster"))]
mod snapshot_tests;
mod store;
mod suspend;
#[cfg(test)]
mod suspend_tests;
mod table;
#[cfg(test)]
mod tests;
mod top;

pub use crate::wheel::Tick;
pub use census::ModeCensus;
pub use command::{Command, LockOpts, SessionId};
pub use histogram::{Histogram, BOUNDS_MS};
pub use holders::Mode;
pub use lease::LOST_MEMORY;
pub use name::Name;
pub use revoke::REVOKE_BATCH;
#[cfg(feature = "cluster")]
pub use snapshot::SnapshotError;
pub use suspend::{DetachedInfo, SessionStats, DETACHED_SUFFIX};
pub use table::{LockTable, EXPIRE_BATCH, GRANT_BATCH, REFUSAL_QUEUE_MAX, RELEASE_BATCH};

/// Capacities of the table's containers, to check that memory is given back after a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCapacities {
    /// Lock slots in the store's slab.
    pub lock_slots: usize,
    /// Entries the per-session map can hold without growing.
    pub conns: usize,
    /// Timer slots of the wait-timer wheel.
    pub timers: usize,
    /// Fired timers buffered by `expire`.
    pub fired: usize,
    /// Pending releases the release queue can hold.
    pub releasing: usize,
}

use crate::protocol::Response;

/// One response to deliver: to `session`, answering its request `request_id`. `lock` names
/// the lock a response is about (every answer to a LOCK or UNLOCK, a `Cancelled` of a RESET,
/// a grant); `None` only for `ResetOk`. It is a clone of the stored [`Name`]: a copy of a
/// short name or a refcount of a long one, never an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub session: SessionId,
    pub request_id: u32,
    pub lock: Option<Name>,
    pub response: Response,
}

/// Limits enforced by the table; refusals are `Error { code: LimitExceeded }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Most locks one connection may hold plus await; 0 = unlimited.
    pub max_locks_per_conn: u32,
    /// Most waiters one lock may queue (the holder not counted); 0 = unlimited.
    pub max_waiters_per_lock: u32,
    /// Default and ceiling of entries in LOCKS and CONNECTIONS listings; 0 = no ceiling.
    pub list_max_default: u32,
    /// The longest lock-delay a LOCK may ask for; longer ones are refused (`bad_value`).
    pub max_lock_delay_ms: u32,
}

/// The default of `TableLimits::max_lock_delay_ms`: a minute, Chubby's order of magnitude.
pub const MAX_LOCK_DELAY_MS: u32 = 60_000;

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            max_locks_per_conn: 0,
            max_waiters_per_lock: 0,
            list_max_default: 10_000,
            max_lock_delay_ms: MAX_LOCK_DELAY_MS,
        }
    }
}

/// A snapshot of the table's gauges and monotone counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Sessions known to the table (one per connection the server has).
    pub connections: usize,
    /// Locks currently held (equal to the locks in the table).
    pub locks_held: usize,
    /// Lock requests currently waiting.
    pub waiters: usize,
    /// `Acquired` responses, immediate or after a wait.
    pub acquired: u64,
    pub already_acquired: u64,
    pub already_waiting: u64,
    /// Lock requests that joined a wait queue.
    pub queued: u64,
    /// `TimedOut` responses, immediate (timeout 0) or when a wait's timer fired.
    pub timed_out: u64,
    pub queue_maxed: u64,
    /// Holds ended by UNLOCK, RESET or disconnect.
    pub released: u64,
    pub release_failed: u64,
    /// Waits ended by UNLOCK or RESET (answered `Cancelled`) or by disconnect (unanswered).
    pub cancelled: u64,
    /// `LimitExceeded` refusals.
    pub limit_refused: u64,
    /// Grants to a waiter, and the sum of their waits in milliseconds.
    pub grants_after_wait: u64,
    pub wait_time_total_ms: u64,
    /// Grants ended by a lease, `max_hold` or revocation (each told with LOST).
    pub lost: u64,
    /// The highest token issued so far (`first_token - 1` if none).
    pub last_token: u64,
    /// How long granted waiters waited, in milliseconds.
    pub wait_ms: Histogram,
    /// How long holds lasted until UNLOCK, RESET or disconnect, in milliseconds.
    pub hold_ms: Histogram,
}

impl TableStats {
    /// The outcome counters by result name, as STATS and /metrics report them.
    pub fn results(&self) -> [(&'static str, u64); 9] {
        [
            ("acquired", self.acquired),
            ("already_acquired", self.already_acquired),
            ("already_waiting", self.already_waiting),
            ("timed_out", self.timed_out),
            ("queue_maxed", self.queue_maxed),
            ("released", self.released),
            ("release_failed", self.release_failed),
            ("cancelled", self.cancelled),
            ("limit_exceeded", self.limit_refused),
        ]
    }
}
