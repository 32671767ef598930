//! `officer bench`: a load generator in the spirit of redis-benchmark.
//!
//! All connections are driven from one non-blocking mio loop on one thread, so the generator
//! costs little next to the server on a small machine. A cycle is LOCK of a random name then
//! UNLOCK of it (exclusive, or with `--lock-mode` shared or one permit of a semaphore, through
//! LOCK_EXT); `--ping` sends two PINGs of the same sizes instead, which measures the floor
//! the event loop and loopback syscalls set. `hold` and `idle` modes measure the server's
//! memory per held lock and per idle connection from its /proc entry. `bystander` mode runs one
//! hostile pattern while an unrelated client pings, and reports that client's latency.
//!
//! Like the server, this module touches sockets: it is a client-side tool, kept apart from
//! `client` (blocking, one connection) because its whole point is a different I/O model.

mod driver;
mod hostile;
mod memory;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use driver::run_cycles;
pub use hostile::{run_bystander, BystanderConfig, BystanderReport, Pattern};
pub use memory::{measure_hold, measure_idle, MemoryReport};
pub use report::CycleReport;

/// Where the server under test listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What a cycle consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// LOCK a random name, then UNLOCK it.
    Lock,
    /// Two PINGs padded to the sizes of LOCK and UNLOCK: the same syscalls, no lock work.
    Ping,
    /// LOCK_EXT shared of a random name, then UNLOCK it (issue 13).
    Shared,
    /// LOCK_EXT of one permit of a semaphore of `SEMAPHORE_LIMIT` on a random name, then UNLOCK.
    Semaphore,
}

/// The limit of the semaphores of `Mode::Semaphore`: above 1, so a cycle is a semaphore's
/// acquire, not an exclusive lock in disguise.
pub const SEMAPHORE_LIMIT: u32 = 4;

/// Parameters of a cycle run.
#[derive(Debug, Clone)]
pub struct CycleConfig {
    pub target: Target,
    pub connections: usize,
    /// Distinct lock names: large = uncontended, small = contended.
    pub names: u64,
    /// Cycles in flight per connection.
    pub pipeline: usize,
    /// Measure for this long (after the warm-up)...
    pub duration: Option<Duration>,
    /// ...or until this many cycles were measured.
    pub cycles: Option<u64>,
    pub warmup: Duration,
    pub mode: Mode,
    /// Sample this process's CPU time over the measured window.
    pub server_pid: Option<u32>,
    pub seed: u64,
}

/// Lock names are `bench:` and ten digits: 16 bytes, the size the memory target names.
pub(crate) fn lock_name(index: u64) -> String {
    format!("bench:{:010}", index % 10_000_000_000)
}

/// xorshift64*: cheap and good enough to spread names; no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub use crate::procfs::{process_cpu_time, process_rss};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sixteen_bytes() {
        assert_eq!(lock_name(0).len(), 16);
        assert_eq!(lock_name(9_999_999_999).len(), 16);
        assert_eq!(lock_name(12_345_678_901).len(), 16);
    }
}
