//! The numbers of resumable sessions (PROTOCOL.md §6.14), described once: each is its STATS key,
//! its `/metrics` series and kind, and how it is read from a `SessionFigures`. STATS appends
//! them in this order after its other keys; `/metrics` renders them after the connections.
//! A new one is one line here.

use crate::locks::SessionStats;

/// What a snapshot reads of the sessions: the table's counters and the soonest grace end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::server) struct SessionFigures {
    pub stats: SessionStats,
    /// Milliseconds until the first detached session's grace ends; 0 when none is detached.
    pub grace_left_min_ms: u64,
}

/// One number: STATS key, /metrics name, help, whether a gauge, and its value.
pub(in crate::server) struct SessionNumber {
    pub key: &'static str,
    pub series: &'static str,
    pub help: &'static str,
    pub gauge: bool,
    pub value: fn(&SessionFigures) -> u64,
}

pub(in crate::server) const SESSIONS: [SessionNumber; 8] = [
    SessionNumber {
        key: "sessions_detached",
        series: "officer_sessions_detached",
        help: "Resumable sessions whose connection is lost, within their grace now.",
        gauge: true,
        value: |f| f.stats.detached as u64,
    },
    SessionNumber {
        key: "session_grace_left_min_ms",
        series: "officer_session_grace_left_min_milliseconds",
        help: "Grace left to the detached session whose grace ends first (0: none detached).",
        gauge: true,
        value: |f| f.grace_left_min_ms,
    },
    SessionNumber {
        key: "sessions_opened",
        series: "officer_sessions_opened_total",
        help: "Resumable sessions opened (SESSION_OPEN granted a grace).",
        gauge: false,
        value: |f| f.stats.opened,
    },
    SessionNumber {
        key: "sessions_resumed",
        series: "officer_sessions_resumed_total",
        help: "Sessions resumed by a new connection, takeovers included.",
        gauge: false,
        value: |f| f.stats.resumed,
    },
    SessionNumber {
        key: "sessions_taken_over",
        series: "officer_sessions_taken_over_total",
        help: "Resumes of a session whose older connection was still open (it was closed).",
        gauge: false,
        value: |f| f.stats.taken_over,
    },
    SessionNumber {
        key: "sessions_expired",
        series: "officer_sessions_expired_total",
        help: "Detached sessions whose grace ran out: everything they had was released.",
        gauge: false,
        value: |f| f.stats.expired,
    },
    SessionNumber {
        key: "session_resume_failures",
        series: "officer_session_resume_failures_total",
        help: "SESSION_RESUME refused: unknown or ended session, or a wrong secret.",
        gauge: false,
        value: |f| f.stats.resume_failures,
    },
    SessionNumber {
        key: "session_waits_skipped",
        series: "officer_session_waits_skipped_total",
        help: "Waits of detached sessions skipped, not granted, when their turn came (they asked).",
        gauge: false,
        value: |f| f.stats.skipped,
    },
];
