//! The server's clock: whole milliseconds since it started, read once per wake-up.
//!
//! `Instant::elapsed` builds a `Duration` through checked `Timespec` arithmetic and then a
//! `u128` millisecond count, about 60 instructions a read (issue 12). This reads the same
//! monotonic clock `Instant` reads on Linux and does the arithmetic in nanoseconds, in `u64`:
//! the same tick, floor((now - start) / 1 ms), for 580 years of uptime.

use crate::wheel::Tick;

/// Where the ticks start; `Clock::ticks` is never below a previous reading.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    start_ns: u64,
}

impl Clock {
    pub(super) fn start() -> Clock {
        Clock { start_ns: monotonic_ns() }
    }

    /// Whole milliseconds since `start`.
    #[inline]
    pub(super) fn ticks(&self) -> Tick {
        (monotonic_ns().saturating_sub(self.start_ns) / 1_000_000) as Tick
    }
}

#[inline]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC is always supported, and
    // should the call fail `ts` keeps zero (the tick then saturates at the last start).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_whole_milliseconds_of_the_clock_instant_reads() {
        let before = std::time::Instant::now();
        let clock = Clock::start();
        let after = std::time::Instant::now();
        let mut last = clock.ticks();
        // A bounded spin: until 3 ms have passed since `after`.
        while after.elapsed().as_millis() < 3 {
            let t = clock.ticks();
            assert!(t >= last, "the clock went back: {t} < {last}");
            last = t;
        }
        let t = clock.ticks();
        // Started after `before` and before `after`: between their readings, floor for floor.
        assert!(t >= 3, "3 ms passed since after the start, the clock says {t}");
        assert!(t as u128 <= before.elapsed().as_millis(), "ahead of Instant: {t}");
    }
}
