//! The server's own deadlines: housekeeping, the `--stats` line, the accept back-off after
//! running out of descriptors, and the systemd watchdog ping.
//!
//! A handful of fixed timers, so a small array, not a wheel: `next_deadline` is what the loop
//! sleeps towards (with the lock table's and the idle wheel's deadlines, which stay with their
//! owners), and `pop_due` hands back what is due, one at a time, in the fixed order of
//! `ServerTimer::ALL`. A periodic timer is re-armed at `due.max(now) + every` as it is handed
//! back: on time it keeps its grid, and after a stall it fires once, not once per missed period.

use crate::wheel::Tick;

/// One of the server's own deadlines. The declaration order is the order due timers are
/// served within a wake-up: housekeeping samples the acquire rate that the stats line then
/// reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerTimer {
    /// Resume accepting after EMFILE/ENFILE (one-shot, armed by the accept path).
    AcceptResume,
    /// Ping systemd's watchdog (periodic, when WATCHDOG_USEC asks for it).
    Watchdog,
    /// State-file reservation, rate sample, memory give-back, scrape deadlines (every second).
    Housekeeping,
    /// The `--stats` log line (periodic, when asked for).
    StatsLine,
}

impl ServerTimer {
    const ALL: [ServerTimer; 4] =
        [ServerTimer::AcceptResume, ServerTimer::Watchdog, ServerTimer::Housekeeping, ServerTimer::StatsLine];
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    at: Option<Tick>,
    /// Re-arm period; `None` for a one-shot timer.
    every: Option<Tick>,
}

#[derive(Debug, Default)]
pub(super) struct ServerTimers {
    slots: [Slot; ServerTimer::ALL.len()],
}

/// Housekeeping runs this often, from the start.
const HOUSEKEEPING_EVERY: Tick = 1000;

impl ServerTimers {
    /// Housekeeping every second; the stats line and the watchdog ping only when asked for,
    /// each first due one period after the start.
    pub(super) fn new(stats_every: Option<Tick>, watchdog_every: Option<Tick>) -> ServerTimers {
        let mut timers = ServerTimers::default();
        timers.arm_every(ServerTimer::Housekeeping, HOUSEKEEPING_EVERY, HOUSEKEEPING_EVERY);
        if let Some(every) = stats_every {
            timers.arm_every(ServerTimer::StatsLine, every, every);
        }
        if let Some(every) = watchdog_every {
            timers.arm_every(ServerTimer::Watchdog, every, every);
        }
        timers
    }

    /// Arms `timer` once, at `at` (replacing any earlier deadline).
    pub(super) fn arm(&mut self, timer: ServerTimer, at: Tick) {
        self.slots[timer as usize] = Slot { at: Some(at), every: None };
    }

    /// Arms `timer` at `first`, then every `every` ticks (at least 1, so it cannot spin).
    pub(super) fn arm_every(&mut self, timer: ServerTimer, first: Tick, every: Tick) {
        self.slots[timer as usize] = Slot { at: Some(first), every: Some(every.max(1)) };
    }

    pub(super) fn is_armed(&self, timer: ServerTimer) -> bool {
        self.slots[timer as usize].at.is_some()
    }

    /// The earliest armed deadline.
    pub(super) fn next_deadline(&self) -> Option<Tick> {
        self.slots.iter().filter_map(|s| s.at).min()
    }

    /// The first timer (in `ServerTimer::ALL` order) due at `now`, re-armed or disarmed as
    /// it is handed back; `None` once nothing is due. Each periodic timer comes back at most
    /// once per `now`, so a loop over this ends.
    pub(super) fn pop_due(&mut self, now: Tick) -> Option<ServerTimer> {
        let timer =
            ServerTimer::ALL.into_iter().find(|&t| self.slots[t as usize].at.is_some_and(|at| at <= now))?;
        let slot = &mut self.slots[timer as usize];
        slot.at = match (slot.at, slot.every) {
            (Some(due), Some(every)) => Some(due.max(now) + every),
            _ => None,
        };
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::ServerTimer::*;
    use super::*;

    fn drain(timers: &mut ServerTimers, now: Tick) -> Vec<ServerTimer> {
        std::iter::from_fn(|| timers.pop_due(now)).collect()
    }

    #[test]
    fn nothing_armed_means_no_deadline_and_nothing_due() {
        let mut timers = ServerTimers::default();
        assert_eq!(timers.next_deadline(), None);
        assert_eq!(drain(&mut timers, 1_000_000), []);
    }

    #[test]
    fn a_new_server_runs_housekeeping_each_second_and_the_rest_only_when_asked() {
        let mut timers = ServerTimers::new(None, None);
        assert_eq!(timers.next_deadline(), Some(1000));
        assert_eq!(drain(&mut timers, 999), []);
        assert_eq!(drain(&mut timers, 1000), [Housekeeping]);
        assert_eq!(drain(&mut timers, 2000), [Housekeeping]);
        assert!(!timers.is_armed(StatsLine) && !timers.is_armed(Watchdog) && !timers.is_armed(AcceptResume));
        let mut timers = ServerTimers::new(Some(5000), Some(400));
        assert_eq!(drain(&mut timers, 400), [Watchdog]);
        assert_eq!(drain(&mut timers, 1000), [Watchdog, Housekeeping]);
        assert_eq!(drain(&mut timers, 5000), [Watchdog, Housekeeping, StatsLine]);
        assert_eq!(timers.next_deadline(), Some(5400));
    }

    #[test]
    fn due_timers_come_back_in_serving_order_whatever_their_deadlines() {
        let mut timers = ServerTimers::default();
        timers.arm_every(StatsLine, 100, 5000);
        timers.arm_every(Housekeeping, 400, 1000);
        timers.arm_every(Watchdog, 300, 700);
        timers.arm(AcceptResume, 500);
        assert_eq!(timers.next_deadline(), Some(100));
        assert_eq!(drain(&mut timers, 99), []);
        assert_eq!(drain(&mut timers, 350), [Watchdog, StatsLine]);
        assert_eq!(drain(&mut timers, 500), [AcceptResume, Housekeeping]);
        // Re-armed: watchdog 300 -> 350+700, housekeeping 400 -> 500+1000, stats 100 -> 350+5000.
        assert_eq!(timers.next_deadline(), Some(1050));
        assert_eq!(drain(&mut timers, 1049), []);
    }

    #[test]
    fn periodic_timers_keep_their_grid_when_on_time_and_fire_once_after_a_stall() {
        let mut timers = ServerTimers::default();
        timers.arm_every(StatsLine, 1000, 1000);
        assert_eq!(drain(&mut timers, 1000), [StatsLine]);
        assert_eq!(timers.next_deadline(), Some(2000));
        // A wake-up 1 tick early fires nothing; on time keeps the grid.
        assert_eq!(drain(&mut timers, 1999), []);
        assert_eq!(drain(&mut timers, 2000), [StatsLine]);
        assert_eq!(timers.next_deadline(), Some(3000));
        // Woken 3.5 periods late: one line, the next a full period after now.
        assert_eq!(drain(&mut timers, 6500), [StatsLine]);
        assert_eq!(timers.next_deadline(), Some(7500));
    }

    #[test]
    fn a_one_shot_timer_fires_once_and_can_be_armed_again() {
        let mut timers = ServerTimers::default();
        timers.arm(AcceptResume, 100);
        assert!(timers.is_armed(AcceptResume));
        assert_eq!(drain(&mut timers, 150), [AcceptResume]);
        assert!(!timers.is_armed(AcceptResume));
        assert_eq!(timers.next_deadline(), None);
        timers.arm(AcceptResume, 250);
        assert_eq!(timers.next_deadline(), Some(250));
        assert_eq!(drain(&mut timers, 250), [AcceptResume]);
    }

    #[test]
    fn a_zero_period_is_one_tick_so_the_loop_cannot_spin() {
        let mut timers = ServerTimers::default();
        timers.arm_every(StatsLine, 0, 0);
        assert_eq!(drain(&mut timers, 0), [StatsLine]);
        assert_eq!(timers.next_deadline(), Some(1));
    }
}
