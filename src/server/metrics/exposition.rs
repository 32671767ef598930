//! The `/metrics` text: the Prometheus exposition format rendered from a `Snapshot`, with no
//! access to the server (so each series is tested from a hand-built snapshot).
//!
//! Families come in a fixed order (lock table, connections, top locks, the endpoint's own
//! counters, build info, process); label values are escaped, and lock names, the only label
//! a peer chooses, are cut and hashed beyond NAME_LABEL_MAX bytes.

use std::fmt::Write as _;

use crate::locks::{Histogram, ModeCensus, TableStats};
use crate::protocol::TopEntry;
use crate::server::snapshot::{ProcessFigures, ScrapeCounts, Snapshot, TopLocks, TRAFFIC};

/// Longest lock name shown whole in a label; longer ones are cut and hashed (`name_label`).
const NAME_LABEL_MAX: usize = 128;

/// The exposition text: counters, gauges, histograms, the longest hold and deepest queue
/// (per lock only when opted in), the endpoint's own counters, process metrics.
pub(in crate::server) fn render(snap: &Snapshot) -> String {
    let mut m = String::with_capacity(8192);
    render_table(&mut m, &snap.table);
    render_connections(&mut m, snap);
    for n in &super::SESSIONS {
        let value = (n.value)(&snap.sessions);
        if n.gauge {
            gauge(&mut m, n.series, n.help, value);
        } else {
            counter(&mut m, n.series, n.help, value);
        }
    }
    render_top(&mut m, snap.top.as_ref().unwrap_or(&NO_LOCKS));
    for (key, value) in &snap.cluster {
        gauge(
            &mut m,
            &format!("officer_{key}"),
            "Cluster mode: this node's STATS entry of the same name.",
            *value,
        );
    }
    if let Some(scrapes) = &snap.scrapes {
        render_scrapes(&mut m, scrapes);
    }
    header(&mut m, "officer_build_info", "gauge", "Always 1; the version of the running server.");
    let _ = writeln!(m, "officer_build_info{{version=\"{}\"}} 1", escape(env!("CARGO_PKG_VERSION")));
    render_process(&mut m, &snap.process);
    m
}

/// What an empty lock table shows.
const NO_LOCKS: TopLocks = TopLocks {
    per_lock: 0,
    longest_held: Vec::new(),
    deepest_queues: Vec::new(),
    modes: ModeCensus { locks: [0; 3], grants: [0; 3], permits_in_use: 0, permits_limit: 0 },
};

fn render_table(m: &mut String, t: &TableStats) {
    header(m, "officer_lock_results_total", "counter", "Lock and unlock outcomes by result.");
    for (result, v) in t.results() {
        let _ = writeln!(m, "officer_lock_results_total{{result=\"{result}\"}} {v}");
    }
    gauge(m, "officer_locks_held", "Locks held now.", t.locks_held as u64);
    gauge(m, "officer_waiters", "Lock requests waiting now.", t.waiters as u64);
    gauge(m, "officer_last_token", "Highest fencing token issued.", t.last_token);
    counter(m, "officer_grants_lost_total", "Grants ended by a lease, max_hold or revocation.", t.lost);
    histogram(m, "officer_lock_wait_seconds", "Time granted waiters waited.", &t.wait_ms);
    histogram(m, "officer_lock_hold_seconds", "Time locks were held until released.", &t.hold_ms);
}

fn render_connections(m: &mut String, snap: &Snapshot) {
    let s = &snap.counters;
    gauge(m, "officer_connections", "Connections open now.", snap.connections);
    counter(m, "officer_connections_accepted_total", "Connections accepted.", s.accepted);
    header(m, "officer_connections_closed_total", "counter", "Connections closed, by reason.");
    // Every CloseReason, then refusals at the connection limit (not a CloseReason: they
    // never became a connection, and STATS counts them as connections_refused).
    let closed = s.closed().map(|(r, v)| (r.as_str(), v)).chain([("limit", s.refused)]);
    for (reason, v) in closed {
        let _ = writeln!(m, "officer_connections_closed_total{{reason=\"{reason}\"}} {v}");
    }
    for c in &TRAFFIC {
        if let Some((name, help)) = c.series {
            counter(m, name, help, (c.value)(s));
        }
    }
}

/// The longest hold and the deepest queue always, without labels; per lock (name only,
/// never the holder) for the top `--metrics-per-lock` locks when that is above 0.
fn render_top(m: &mut String, top: &TopLocks) {
    let oldest = top.longest_held.first().map_or(0, |e| e.held_ms);
    gauge_f(
        m,
        "officer_oldest_hold_seconds",
        "How long the longest current hold has lasted.",
        seconds(oldest),
    );
    let deepest = top.deepest_queues.first().map_or(0, |e| e.waiters);
    gauge(m, "officer_max_queue_depth", "Waiters of the lock with the deepest queue.", deepest.into());
    if top.per_lock > 0 {
        render_per_lock(m, &top.longest_held, &top.deepest_queues);
    }
    render_modes(m, &top.modes);
}

/// The gauges by mode, as `MODES` describes them.
fn render_modes(m: &mut String, census: &ModeCensus) {
    for s in &super::MODES {
        match s.value {
            super::ModeValue::ByMode(value) => {
                header(m, s.series, "gauge", s.help);
                for (mode, v) in ModeCensus::MODES.iter().zip(value(census)) {
                    let _ = writeln!(m, "{}{{mode=\"{mode}\"}} {v}", s.series);
                }
            }
            super::ModeValue::Total(value) => gauge(m, s.series, s.help, value(census)),
        }
    }
}

fn render_per_lock(m: &mut String, longest_held: &[TopEntry], deepest_queues: &[TopEntry]) {
    header(
        m,
        "officer_longest_hold_seconds",
        "gauge",
        "The locks held longest (--metrics-per-lock), by name.",
    );
    for e in longest_held {
        let _ = writeln!(
            m,
            "officer_longest_hold_seconds{{name=\"{}\"}} {:.3}",
            name_label(&e.name),
            seconds(e.held_ms)
        );
    }
    header(m, "officer_queue_depth", "gauge", "Waiters of the deepest queues (--metrics-per-lock), by name.");
    for e in deepest_queues {
        let _ = writeln!(m, "officer_queue_depth{{name=\"{}\"}} {}", name_label(&e.name), e.waiters);
    }
}

fn render_scrapes(m: &mut String, scrapes: &ScrapeCounts) {
    counter(m, "officer_metrics_scrapes_total", "Answers sent by this endpoint.", scrapes.served);
    counter(
        m,
        "officer_metrics_table_scans_total",
        "Passes over the lock table for the hold and queue gauges.",
        scrapes.table_scans,
    );
    header(
        m,
        "officer_metrics_scrapes_dropped_total",
        "counter",
        "Scrape connections closed unanswered, by reason.",
    );
    for (reason, v) in scrapes.dropped {
        let _ = writeln!(m, "officer_metrics_scrapes_dropped_total{{reason=\"{reason}\"}} {v}");
    }
}

/// The standard process collector's series, as the Prometheus client libraries name them.
fn render_process(m: &mut String, p: &ProcessFigures) {
    if let Some(stat) = &p.stat {
        let cpu = stat.cpu.as_secs_f64();
        header(m, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        let _ = writeln!(m, "process_cpu_seconds_total {cpu:.3}");
        gauge_f(
            m,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            stat.start_time_secs,
        );
        gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.", stat.virtual_bytes);
    }
    if let Some(rss) = p.rss {
        gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.", rss);
    }
    if let Some(fds) = p.open_fds {
        gauge(m, "process_open_fds", "Number of open file descriptors.", fds);
    }
    if let Some(max) = p.max_fds {
        gauge(m, "process_max_fds", "Maximum number of open file descriptors.", max);
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn header(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(m: &mut String, name: &str, help: &str, v: u64) {
    header(m, name, "counter", help);
    let _ = writeln!(m, "{name} {v}");
}

fn gauge(m: &mut String, name: &str, help: &str, v: u64) {
    header(m, name, "gauge", help);
    let _ = writeln!(m, "{name} {v}");
}

fn gauge_f(m: &mut String, name: &str, help: &str, v: f64) {
    header(m, name, "gauge", help);
    let _ = writeln!(m, "{name} {v:.3}");
}

fn histogram(m: &mut String, name: &str, help: &str, h: &Histogram) {
    header(m, name, "histogram", help);
    for (bound, count) in h.cumulative() {
        match bound {
            Some(ms) => {
                let _ = writeln!(m, "{name}_bucket{{le=\"{}\"}} {count}", seconds(ms));
            }
            None => {
                let _ = writeln!(m, "{name}_bucket{{le=\"+Inf\"}} {count}");
            }
        }
    }
    let _ = writeln!(m, "{name}_sum {:.3}\n{name}_count {}", seconds(h.sum_ms), h.count);
}

/// A lock name as a label value: escaped, and a name longer than NAME_LABEL_MAX bytes cut at
/// a character boundary and followed by `~` and the FNV-1a 64 of the whole name, so two long
/// names sharing a prefix stay two series and an answer stays small (names may be 64 KiB).
fn name_label(name: &str) -> String {
    if name.len() <= NAME_LABEL_MAX {
        return escape(name);
    }
    let cut = (0..=NAME_LABEL_MAX).rev().find(|&i| name.is_char_boundary(i)).unwrap_or(0);
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{}~{hash:016x}", escape(&name[..cut]))
}

/// Label values escape backslash, double quote and newline (the exposition format's rule).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::CloseReason;
    use crate::server::snapshot::ServerStats;

    fn entry(name: &str, held_ms: u64, waiters: u32) -> TopEntry {
        TopEntry { name: name.into(), holder: "127.0.0.1:40000".into(), held_ms, waiters }
    }

    /// A snapshot with a different value in every field, so a series rendered from the wrong
    /// field shows.
    fn snapshot() -> Snapshot {
        let mut table = TableStats {
            locks_held: 3,
            waiters: 4,
            last_token: 77,
            acquired: 11,
            lost: 6,
            ..Default::default()
        };
        table.limit_refused = 19;
        table.wait_ms.record(3);
        table.hold_ms.record(2000);
        let mut counters = ServerStats::default();
        (counters.accepted, counters.refused, counters.requests, counters.bad_requests) = (21, 22, 23, 24);
        (counters.bytes_in, counters.bytes_out) = (25, 26);
        for _ in 0..27 {
            counters.count_close(CloseReason::Idle);
        }
        Snapshot {
            connections: 5,
            counters,
            table,
            process: ProcessFigures { open_fds: Some(31), rss: Some(32), stat: None, max_fds: Some(33) },
            top: Some(TopLocks {
                per_lock: 2,
                longest_held: vec![entry("old", 1500, 0), entry("new", 250, 1)],
                deepest_queues: vec![entry("new", 250, 1)],
                modes: ModeCensus {
                    locks: [61, 62, 63],
                    grants: [64, 65, 66],
                    permits_in_use: 67,
                    permits_limit: 68,
                },
            }),
            scrapes: Some(ScrapeCounts {
                served: 41,
                table_scans: 42,
                dropped: [
                    ("evicted", 43),
                    ("head_timeout", 0),
                    ("deadline", 0),
                    ("busy", 0),
                    ("bad_request", 0),
                    ("closed", 0),
                ],
            }),
            sessions: crate::server::metrics::SessionFigures {
                stats: crate::locks::SessionStats {
                    detached: 51,
                    opened: 53,
                    resumed: 54,
                    taken_over: 55,
                    expired: 56,
                    resume_failures: 57,
                    skipped: 58,
                },
                grace_left_min_ms: 52,
            },
            cluster: vec![("cluster_term".to_owned(), 71), ("cluster_snapshots_installed".to_owned(), 72)],
            ..Default::default()
        }
    }

    #[test]
    fn a_hand_built_snapshot_renders_each_field_in_its_series_and_families_in_order() {
        let m = render(&snapshot());
        for line in [
            "officer_lock_results_total{result=\"acquired\"} 11\n",
            "officer_lock_results_total{result=\"limit_exceeded\"} 19\n",
            "officer_locks_held 3\n",
            "officer_waiters 4\n",
            "officer_last_token 77\n",
            "officer_grants_lost_total 6\n",
            "officer_lock_wait_seconds_count 1\n",
            "officer_lock_hold_seconds_sum 2.000\n",
            "officer_connections 5\n",
            "officer_connections_accepted_total 21\n",
            "officer_connections_closed_total{reason=\"idle\"} 27\n",
            "officer_connections_closed_total{reason=\"eof\"} 0\n",
            "officer_connections_closed_total{reason=\"limit\"} 22\n",
            "officer_requests_total 23\n",
            "officer_bad_requests_total 24\n",
            "officer_received_bytes_total 25\n",
            "officer_sent_bytes_total 26\n",
            "officer_sessions_detached 51\n",
            "officer_session_grace_left_min_milliseconds 52\n",
            "officer_sessions_opened_total 53\n",
            "officer_sessions_resumed_total 54\n",
            "officer_sessions_taken_over_total 55\n",
            "officer_sessions_expired_total 56\n",
            "officer_session_resume_failures_total 57\n",
            "officer_session_waits_skipped_total 58\n",
            "officer_oldest_hold_seconds 1.500\n",
            "officer_max_queue_depth 1\n",
            "officer_longest_hold_seconds{name=\"old\"} 1.500\n",
            "officer_longest_hold_seconds{name=\"new\"} 0.250\n",
            "officer_queue_depth{name=\"new\"} 1\n",
            "officer_locks_held_by_mode{mode=\"exclusive\"} 61\n",
            "officer_locks_held_by_mode{mode=\"shared\"} 62\n",
            "officer_locks_held_by_mode{mode=\"semaphore\"} 63\n",
            "officer_grants_by_mode{mode=\"exclusive\"} 64\n",
            "officer_grants_by_mode{mode=\"shared\"} 65\n",
            "officer_grants_by_mode{mode=\"semaphore\"} 66\n",
            "officer_semaphore_permits_in_use 67\n",
            "officer_semaphore_permits_limit 68\n",
            "officer_cluster_term 71\n",
            "officer_cluster_snapshots_installed 72\n",
            "officer_metrics_scrapes_total 41\n",
            "officer_metrics_table_scans_total 42\n",
            "officer_metrics_scrapes_dropped_total{reason=\"evicted\"} 43\n",
            "process_resident_memory_bytes 32\n",
            "process_open_fds 31\n",
            "process_max_fds 33\n",
        ] {
            assert_eq!(m.matches(line).count(), 1, "{line:?} not once in:\n{m}");
        }
        assert!(!m.contains("127.0.0.1") && !m.contains("process_cpu_seconds_total"), "{m}");
        let families: Vec<&str> = m.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        assert_eq!(
            families,
            [
                "officer_lock_results_total counter",
                "officer_locks_held gauge",
                "officer_waiters gauge",
                "officer_last_token gauge",
                "officer_grants_lost_total counter",
                "officer_lock_wait_seconds histogram",
                "officer_lock_hold_seconds histogram",
                "officer_connections gauge",
                "officer_connections_accepted_total counter",
                "officer_connections_closed_total counter",
                "officer_requests_total counter",
                "officer_bad_requests_total counter",
                "officer_received_bytes_total counter",
                "officer_sent_bytes_total counter",
                "officer_sessions_detached gauge",
                "officer_session_grace_left_min_milliseconds gauge",
                "officer_sessions_opened_total counter",
                "officer_sessions_resumed_total counter",
                "officer_sessions_taken_over_total counter",
                "officer_sessions_expired_total counter",
                "officer_session_resume_failures_total counter",
                "officer_session_waits_skipped_total counter",
                "officer_oldest_hold_seconds gauge",
                "officer_max_queue_depth gauge",
                "officer_longest_hold_seconds gauge",
                "officer_queue_depth gauge",
                "officer_locks_held_by_mode gauge",
                "officer_grants_by_mode gauge",
                "officer_semaphore_permits_in_use gauge",
                "officer_semaphore_permits_limit gauge",
                "officer_cluster_term gauge",
                "officer_cluster_snapshots_installed gauge",
                "officer_metrics_scrapes_total counter",
                "officer_metrics_table_scans_total counter",
                "officer_metrics_scrapes_dropped_total counter",
                "officer_build_info gauge",
                "process_resident_memory_bytes gauge",
                "process_open_fds gauge",
                "process_max_fds gauge",
            ]
        );
    }

    #[test]
    fn without_top_locks_or_an_endpoint_the_gauges_read_zero_and_no_per_lock_series_show() {
        let snap = Snapshot { top: None, scrapes: None, ..snapshot() };
        let m = render(&snap);
        assert!(
            m.contains("officer_oldest_hold_seconds 0.000\n")
                && m.contains("officer_max_queue_depth 0\n")
                && m.contains("officer_locks_held_by_mode{mode=\"shared\"} 0\n")
                && m.contains("officer_semaphore_permits_in_use 0\n"),
            "{m}"
        );
        for absent in ["officer_longest_hold_seconds", "officer_queue_depth", "officer_metrics_"] {
            assert!(!m.contains(absent), "{absent} in:\n{m}");
        }
        // Per-lock series only when asked for, even with entries at hand.
        let top = TopLocks { per_lock: 0, ..snapshot().top.unwrap() };
        let m = render(&Snapshot { top: Some(top), ..snapshot() });
        assert!(m.contains("officer_oldest_hold_seconds 1.500\n") && !m.contains("{name="), "{m}");
    }

    #[test]
    fn long_names_are_cut_and_hashed_in_labels() {
        assert_eq!(name_label("short"), "short");
        let a = format!("{}a", "x".repeat(200));
        let b = format!("{}b", "x".repeat(200));
        let (la, lb) = (name_label(&a), name_label(&b));
        assert_ne!(la, lb, "a shared prefix must not merge two series");
        assert!(la.starts_with(&"x".repeat(128)) && la.len() == 128 + 1 + 16, "{la}");
        // A cut never splits a character.
        let wide = "é".repeat(100);
        assert!(name_label(&wide).starts_with(&"é".repeat(64)), "{}", name_label(&wide));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn histogram_lines_are_cumulative_with_inf() {
        let mut h = Histogram::default();
        h.record(3);
        h.record(2000);
        let mut m = String::new();
        histogram(&mut m, "x", "help", &h);
        assert!(m.contains("x_bucket{le=\"0.005\"} 1\n"), "{m}");
        assert!(m.contains("x_bucket{le=\"+Inf\"} 2\n"), "{m}");
        assert!(m.contains("x_count 2\n"), "{m}");
    }
}
