//! `officer bench`: a load generator in the spirit of redis-benchmark.
//!
//! All connections are driven from one non-blocking mio loop on one thread, so the generator
//! costs little next to the server on a small machine. A cycle is LOCK of a random name then
//! UNLOCK of it; `--ping` sends two PINGs of the same sizes instead, which measures the floor
//! the event loop and loopback syscalls set. `hold` and `idle` modes measure the server's
//! memory per held lock and per idle connection from its /proc entry.
//!
//! Like the server, this module touches sockets: it is a client-side tool, kept apart from
//! `client` (blocking, one connection) because its whole point is a different I/O model.

mod driver;
mod memory;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use driver::run_cycles;
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
}

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

/// CPU time (user + system) a process has used, from /proc/PID/stat.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are space-separated.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Resident set size of a process in bytes, from /proc/PID/status.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sixteen_bytes() {
        assert_eq!(lock_name(0).len(), 16);
        assert_eq!(lock_name(9_999_999_999).len(), 16);
        assert_eq!(lock_name(12_345_678_901).len(), 16);
    }

    #[test]
    fn own_process_cpu_and_rss_are_readable() {
        let pid = std::process::id();
        assert!(process_rss(pid).unwrap() > 0);
        assert!(process_cpu_time(pid).is_some());
    }
}
