//! The STATS response and the periodic `--stats` log line, both renderings of a `Snapshot`.

use log::info;

use super::snapshot::{Snapshot, TRAFFIC};
use super::Server;
use crate::wheel::Tick;

/// Every number STATS reports, as stable snake_case keys (clients ignore unknown keys).
pub(super) fn entries(snap: &Snapshot) -> Vec<(String, u64)> {
    let (t, s) = (&snap.table, &snap.counters);
    let mut entries: Vec<(String, u64)> = [
        ("uptime_ms", snap.uptime_ms),
        ("connections", snap.connections),
        ("connections_accepted", s.accepted),
        ("connections_refused", s.refused),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), *v))
    .collect();
    entries.extend(s.closed().map(|(r, v)| (format!("connections_closed_{}", r.as_str()), v)));
    let rest = [
        ("max_connections", snap.max_connections),
        ("locks_held", t.locks_held as u64),
        ("waiters", t.waiters as u64),
        ("grants_after_wait", t.grants_after_wait),
        ("wait_time_total_ms", t.wait_time_total_ms),
        ("acquire_rate_per_sec", snap.acquire_rate_per_sec),
        ("last_token", t.last_token),
    ];
    let traffic = TRAFFIC.iter().map(|c| (c.key, (c.value)(s)));
    // grants_lost (issue 13) comes after the keys that were there before it.
    let table = [("table_connections", t.connections as u64)]
        .into_iter()
        .chain(t.results())
        .chain([("grants_lost", t.lost)]);
    entries.extend(rest.into_iter().chain(traffic).chain(table).map(|(k, v)| (k.to_string(), v)));
    // Resumable sessions (issue 14): after the table's keys, before the histograms.
    entries.extend(super::metrics::SESSIONS.iter().map(|n| (n.key.to_string(), (n.value)(&snap.sessions))));
    for (name, h) in [("wait_ms", &t.wait_ms), ("hold_ms", &t.hold_ms)] {
        entries.push((format!("{name}_count"), h.count));
        entries.push((format!("{name}_sum"), h.sum_ms));
        for (bound, count) in h.cumulative() {
            let le = bound.map_or_else(|| "inf".to_string(), |b| b.to_string());
            entries.push((format!("{name}_le_{le}"), count));
        }
    }
    if let Some(fds) = snap.process.open_fds {
        entries.push(("open_fds".into(), fds));
    }
    if let Some(rss) = snap.process.rss {
        entries.push(("resident_memory_bytes".into(), rss));
    }
    entries
}

/// The `--stats` line up to its deepest queues: STATS without the histogram buckets.
pub(super) fn line(snap: &Snapshot) -> String {
    let mut line = String::from("stats");
    for (key, value) in entries(snap) {
        if !key.contains("_le_") {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    line
}

impl Server {
    /// The STATS response's entries.
    pub(super) fn stats_entries(&self, now: Tick) -> Vec<(String, u64)> {
        let snap = self.snapshot(now);
        let mut entries = entries(&snap);
        entries.extend(snap.cluster);
        entries
    }

    /// The `--stats` log line: the numbers STATS and /metrics report, plus the deepest queues.
    pub(super) fn log_stats(&self, now: Tick) {
        info!("{} deepest_queues={:?}", line(&self.snapshot(now)), self.table().deepest_queues(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::CloseReason;
    use crate::server::{Config, Listen};

    fn server() -> Server {
        let config = Config { listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()), ..Default::default() };
        Server::bind(config).unwrap()
    }

    /// Counting /proc/self/fd is O(descriptors): STATS reads it at most once a second, so a
    /// flood of STATS at 10,000 connections does not list 10,000 entries per request.
    #[test]
    fn the_open_descriptor_count_is_read_at_most_once_a_second() {
        let server = server();
        let fds = |server: &Server, now| {
            server.stats_entries(now).into_iter().find(|(k, _)| k == "open_fds").map(|(_, v)| v)
        };
        let before = fds(&server, 10).expect("open_fds is readable on Linux");
        // Many, so that other tests closing their sockets meanwhile cannot hide them.
        let extra: Vec<std::fs::File> =
            (0..2000).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
        let max_age = crate::server::snapshot::OPEN_FDS_MAX_AGE_MS;
        assert_eq!(fds(&server, 10 + max_age - 1), Some(before), "the count of the last second is reused");
        let after = fds(&server, 10 + max_age).expect("read again");
        assert!(after >= before + 1000, "a second later it is read again: {before} -> {after}");
        drop(extra);
    }

    #[test]
    fn close_reasons_have_distinct_snake_case_names_and_slots() {
        let mut names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?} is not at its own slot of ALL");
            let name = r.as_str();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{r:?} has no usable name: {name:?}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CloseReason::COUNT, "two close reasons share a name");
    }

    /// Each reason gets a different count, so a reason reported under another's name, or
    /// missing from either output, fails.
    #[test]
    fn every_close_reason_is_in_stats_the_stats_line_and_metrics() {
        let mut server = server();
        for (i, &r) in CloseReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                server.stats.count_close(r);
            }
        }
        server.stats.refused = 1000;
        let entries = server.stats_entries(0);
        let metrics = crate::server::metrics::render(&server.metrics_snapshot(0));
        for (i, &r) in CloseReason::ALL.iter().enumerate() {
            let count = i as u64 + 1;
            let key = format!("connections_closed_{}", r.as_str());
            let found: Vec<u64> = entries.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect();
            assert_eq!(found, [count], "STATS {key}");
            let series = format!("officer_connections_closed_total{{reason=\"{}\"}} {count}\n", r.as_str());
            assert_eq!(metrics.matches(&series).count(), 1, "/metrics lacks {series:?}:\n{metrics}");
        }
        assert!(metrics.contains("officer_connections_closed_total{reason=\"limit\"} 1000\n"), "{metrics}");
        // The stats line is STATS without the histogram buckets: the close keys stay in it.
        let line: Vec<&String> = entries.iter().map(|(k, _)| k).filter(|k| !k.contains("_le_")).collect();
        assert!(CloseReason::ALL
            .iter()
            .all(|r| line.contains(&&format!("connections_closed_{}", r.as_str()))));
    }

    #[test]
    fn entries_and_the_line_take_each_value_from_its_snapshot_field() {
        let mut snap = Snapshot {
            uptime_ms: 1,
            connections: 2,
            max_connections: 3,
            acquire_rate_per_sec: 4,
            ..Default::default()
        };
        (snap.counters.accepted, snap.counters.accept_errors, snap.counters.responses) = (5, 6, 7);
        for _ in 0..8 {
            snap.counters.count_close(CloseReason::Shutdown);
        }
        snap.table.connections = 9;
        snap.table.hold_ms.record(3);
        snap.process.rss = Some(10);
        let entries = entries(&snap);
        let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let expected = [
            ("uptime_ms", 1),
            ("connections", 2),
            ("max_connections", 3),
            ("acquire_rate_per_sec", 4),
            ("connections_accepted", 5),
            ("accept_errors", 6),
            ("responses", 7),
            ("connections_closed_shutdown", 8),
            ("table_connections", 9),
            ("hold_ms_count", 1),
            ("hold_ms_le_5", 1),
            ("resident_memory_bytes", 10),
        ];
        for (key, value) in expected {
            assert_eq!(get(key), Some(value), "{key}");
        }
        assert_eq!(get("open_fds"), None, "a figure that was not read is left out");
        assert_eq!(entries.last().map(|(k, _)| k.as_str()), Some("resident_memory_bytes"));
        let line = line(&snap);
        assert!(line.starts_with("stats uptime_ms=1 connections=2 connections_accepted=5 "), "{line}");
        assert!(line.ends_with(" hold_ms_count=1 hold_ms_sum=3 resident_memory_bytes=10"), "{line}");
        assert!(!line.contains("_le_"), "{line}");
    }

    #[test]
    fn traffic_counters_sit_between_last_token_and_table_connections_in_stats() {
        let keys: Vec<String> = entries(&Snapshot::default()).into_iter().map(|(k, _)| k).collect();
        let at = keys.iter().position(|k| k == "last_token").unwrap();
        let expected = ["requests", "responses", "bad_requests", "bytes_in", "bytes_out", "accept_errors"];
        assert_eq!(keys[at + 1..at + 1 + expected.len()], expected);
        assert_eq!(keys[at + 1 + expected.len()], "table_connections");
        assert_eq!(keys[at + 2 + expected.len()], "acquired");
    }

    /// STATS clients and dashboards key on names and order: the close keys sit in ALL order
    /// between connections_refused and max_connections, and today's reasons keep their places
    /// (a new reason is appended to the list, so this test does not need an edit for it).
    #[test]
    fn stats_keys_keep_their_order() {
        let keys: Vec<String> = server().stats_entries(0).into_iter().map(|(k, _)| k).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(keys[..4], ["uptime_ms", "connections", "connections_accepted", "connections_refused"]);
        let closed: Vec<String> =
            CloseReason::ALL.iter().map(|r| format!("connections_closed_{}", r.as_str())).collect();
        assert_eq!(keys[4..4 + closed.len()], closed);
        assert_eq!(keys[4 + closed.len()], "max_connections");
        let historical = ["eof", "error", "idle", "protocol", "output_overflow", "auth", "shutdown"];
        let names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names[..historical.len()], historical);
    }
}
