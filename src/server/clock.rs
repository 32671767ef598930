//! The server's clock: whole milliseconds since it started, read once per wake-up.
//!
//! It reads `Instant` (monotonic, as every deadline here must be), but counts the elapsed time
//! in `u64` whole seconds and milliseconds rather than through `Duration::as_millis`, whose
//! `u128` arithmetic made a read cost about 60 instructions (issue 12). The tick is the same:
//! floor((now - start) / 1 ms).

use std::time::Instant;

use crate::wheel::Tick;

/// Where the ticks start; `Clock::ticks` is never below a previous reading.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    start: Instant,
}

impl Clock {
    pub(super) fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Whole milliseconds since `start`.
    #[inline]
    pub(super) fn ticks(&self) -> Tick {
        let elapsed = self.start.elapsed();
        elapsed.as_secs().saturating_mul(1000).saturating_add(u64::from(elapsed.subsec_millis()))
    }
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
