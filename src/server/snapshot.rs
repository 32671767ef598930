//! The numbers the server reports: its own live counters, and `Snapshot`, one reading of
//! every number, the one description STATS, `/metrics` and the `--stats` line render from.
//!
//! `Server::snapshot` is the only place that reaches into the server, the lock table and
//! /proc for them; the renderers (`stats::entries`, `stats::line`, `metrics::render`) are pure
//! functions of a `Snapshot`, testable with a hand-built one. What only `/metrics` shows (the
//! top locks, which take a pass over the table, the endpoint's own counters and the full
//! process figures) is added by `Server::metrics_snapshot`, so a STATS request does not pay
//! for it.

use std::collections::VecDeque;

use super::conn::CloseReason;
use super::Server;
use crate::locks::TableStats;
use crate::procfs::ProcStat;
use crate::protocol::TopEntry;
use crate::wheel::Tick;

/// Every reported number, read at one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Snapshot {
    pub uptime_ms: Tick,
    /// Connections open now.
    pub connections: u64,
    pub max_connections: u64,
    pub counters: ServerStats,
    pub acquire_rate_per_sec: u64,
    pub table: TableStats,
    pub process: ProcessFigures,
    /// For `/metrics` only; `None` renders as an empty table.
    pub top: Option<TopLocks>,
    /// The metrics endpoint's own counters; `None` when it is not enabled.
    pub scrapes: Option<ScrapeCounts>,
    /// Resumable sessions (issue 14), described in `metrics/sessions.rs`.
    pub sessions: super::metrics::SessionFigures,
    /// Cluster mode's STATS entries (`cluster_*`, docs/CLUSTER.md), for `/metrics`: the one
    /// view of a follower, which answers clients only with `not_leader`. Empty on a single
    /// server.
    pub cluster: Vec<(String, u64)>,
}

/// The server's own counters, kept live on `Server` and copied into a `Snapshot` (the lock
/// table keeps its own in `TableStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ServerStats {
    pub accepted: u64,
    /// Refused at the connection limit: never a connection, so not a `CloseReason`.
    pub refused: u64,
    pub accept_errors: u64,
    pub requests: u64,
    pub responses: u64,
    pub bad_requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections closed, one counter per reason (indexed by `CloseReason::index`).
    closed: [u64; CloseReason::COUNT],
}

impl ServerStats {
    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }

    /// Every close reason with its count, in `CloseReason::ALL` order: the one list STATS,
    /// /metrics and the `--stats` line all render.
    pub(crate) fn closed(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::ALL.iter().map(|&r| (r, self.closed[r.index()]))
    }
}

/// A request-traffic counter as STATS and /metrics name it: STATS lists all of them, in this
/// order, after `last_token`; /metrics those with a series, in this order, after the close
/// reasons. A new counter is its `ServerStats` field and one line here.
pub(super) struct TrafficCounter {
    /// The STATS key (and `--stats` line key).
    pub key: &'static str,
    /// The /metrics counter and its help; `None` for a number only STATS reports.
    pub series: Option<(&'static str, &'static str)>,
    pub value: fn(&ServerStats) -> u64,
}

pub(super) const TRAFFIC: [TrafficCounter; 6] = [
    TrafficCounter {
        key: "requests",
        series: Some(("officer_requests_total", "Requests decoded.")),
        value: |s| s.requests,
    },
    TrafficCounter { key: "responses", series: None, value: |s| s.responses },
    TrafficCounter {
        key: "bad_requests",
        series: Some(("officer_bad_requests_total", "Requests answered with an error.")),
        value: |s| s.bad_requests,
    },
    TrafficCounter {
        key: "bytes_in",
        series: Some(("officer_received_bytes_total", "Bytes read from clients.")),
        value: |s| s.bytes_in,
    },
    TrafficCounter {
        key: "bytes_out",
        series: Some(("officer_sent_bytes_total", "Bytes written to clients.")),
        value: |s| s.bytes_out,
    },
    TrafficCounter { key: "accept_errors", series: None, value: |s| s.accept_errors },
];

/// Samples kept for the acquire rate: one per housekeeping second.
const RATE_WINDOW: usize = 10;

/// Grants per second over the last few housekeeping seconds.
#[derive(Debug, Default)]
pub(super) struct AcquireRate {
    /// (tick, acquired counter) samples, oldest first.
    samples: VecDeque<(Tick, u64)>,
}

impl AcquireRate {
    pub(super) fn sample(&mut self, now: Tick, acquired: u64) {
        if self.samples.len() == RATE_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((now, acquired));
    }

    pub(super) fn per_sec(&self, now: Tick, acquired: u64) -> u64 {
        match self.samples.front() {
            Some(&(t, a)) if now > t => (acquired - a) * 1000 / (now - t),
            _ => 0,
        }
    }
}

/// What /proc and the resource limits say about this process; each `None` when unreadable
/// (or, for `stat` and `max_fds`, not read: STATS does not report them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ProcessFigures {
    pub open_fds: Option<u64>,
    pub rss: Option<u64>,
    pub stat: Option<ProcStat>,
    pub max_fds: Option<u64>,
}

/// The longest holds and deepest queues, at least one of each kind when there are any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TopLocks {
    /// `--metrics-per-lock` (capped): how many per-lock series to show; 0 for none.
    pub per_lock: u32,
    pub longest_held: Vec<TopEntry>,
    pub deepest_queues: Vec<TopEntry>,
    /// Held locks, grants and permits by mode, from the same pass.
    pub modes: crate::locks::ModeCensus,
}

/// The metrics endpoint's counters; `dropped` is by reason label, in exposition order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ScrapeCounts {
    pub served: u64,
    pub table_scans: u64,
    pub dropped: [(&'static str, u64); 6],
}

/// How old the open descriptor count that STATS and `/metrics` report may be.
pub(super) const OPEN_FDS_MAX_AGE_MS: Tick = 1000;

impl Server {
    /// The numbers STATS and the `--stats` line report.
    pub(super) fn snapshot(&self, now: Tick) -> Snapshot {
        let table = self.table().stats();
        let pid = std::process::id();
        Snapshot {
            uptime_ms: now,
            connections: self.conns.len() as u64,
            max_connections: self.config.max_connections as u64,
            counters: self.stats,
            acquire_rate_per_sec: self.acquire_rate.per_sec(now, table.acquired),
            table,
            process: ProcessFigures {
                open_fds: self.open_fds(now),
                rss: crate::procfs::process_rss(pid),
                ..ProcessFigures::default()
            },
            top: None,
            scrapes: None,
            sessions: self.session_figures(now),
            cluster: self.cluster_entries(),
        }
    }

    fn cluster_entries(&self) -> Vec<(String, u64)> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            return cluster.stats_entries();
        }
        Vec::new()
    }

    /// The number of open descriptors, read from /proc at most once per
    /// `OPEN_FDS_MAX_AGE_MS`: the read is O(descriptors), and STATS may be asked for by every
    /// connection in every turn.
    fn open_fds(&self, now: Tick) -> Option<u64> {
        if let Some((at, fds)) = self.open_fds.get() {
            if now.saturating_sub(at) < OPEN_FDS_MAX_AGE_MS {
                return fds;
            }
        }
        let fds = crate::procfs::open_fds();
        self.open_fds.set(Some((now, fds)));
        fds
    }

    /// The table's session counters and the soonest grace end, O(1).
    fn session_figures(&self, now: Tick) -> super::metrics::SessionFigures {
        let stats = self.table().session_stats();
        let grace_left_min_ms = self.table().soonest_grace_left(now).unwrap_or(0);
        super::metrics::SessionFigures { stats, grace_left_min_ms }
    }

    /// Everything `/metrics` shows. The top pass may come from the endpoint's cache (see
    /// `Server::top_locks`), and it is taken before the scrape counts so that a pass this
    /// scrape made is counted in the answer it produces.
    pub(super) fn metrics_snapshot(&mut self, now: Tick) -> Snapshot {
        let mut snapshot = self.snapshot(now);
        snapshot.top = Some(self.top_locks(now));
        snapshot.scrapes = self.scrape_counts();
        let pid = std::process::id();
        snapshot.process.stat = crate::procfs::process_stat(pid);
        snapshot.process.max_fds = crate::procfs::max_fds();
        snapshot
    }
}
