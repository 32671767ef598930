//! The gauges of held locks by mode (issue 13), described once: each is its `/metrics` series,
//! its help, and how it is read from the table's `ModeCensus`, either one sample per `mode`
//! label or one unlabelled sample. The census is taken in the table pass that also finds the
//! longest holds (at most once a second, `Server::top_locks`). A new one is one entry here.

use crate::locks::ModeCensus;

/// How a series reads the census.
pub(in crate::server) enum ModeValue {
    /// One sample per mode, labelled `mode="exclusive"|"shared"|"semaphore"`.
    ByMode(fn(&ModeCensus) -> [u64; 3]),
    /// One sample.
    Total(fn(&ModeCensus) -> u64),
}

/// One gauge family: its name, help and value.
pub(in crate::server) struct ModeSeries {
    pub series: &'static str,
    pub help: &'static str,
    pub value: ModeValue,
}

pub(in crate::server) const MODES: [ModeSeries; 4] = [
    ModeSeries {
        series: "officer_locks_held_by_mode",
        help: "Locks (names) held now, by the mode they are held in.",
        value: ModeValue::ByMode(|c| c.locks),
    },
    ModeSeries {
        series: "officer_grants_by_mode",
        help: "Grants held now, by mode: one per exclusive lock, each reader, each semaphore holder.",
        value: ModeValue::ByMode(|c| c.grants),
    },
    ModeSeries {
        series: "officer_semaphore_permits_in_use",
        help: "Permits held now over all semaphores.",
        value: ModeValue::Total(|c| c.permits_in_use),
    },
    ModeSeries {
        series: "officer_semaphore_permits_limit",
        help: "The limits of the semaphores held now, summed.",
        value: ModeValue::Total(|c| c.permits_limit),
    },
];
