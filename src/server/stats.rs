//! Server-level counters, the STATS response and the periodic `--stats` log line.

use log::info;

use super::conn::CloseReason;
use super::Server;
use crate::wheel::Tick;

/// Samples kept for the acquire rate: one per housekeeping second.
const RATE_WINDOW: usize = 10;

#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub accepted: u64,
    pub refused: u64,
    pub accept_errors: u64,
    pub requests: u64,
    pub responses: u64,
    pub bad_requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub closed_eof: u64,
    pub closed_error: u64,
    pub closed_idle: u64,
    pub closed_protocol: u64,
    pub closed_output_overflow: u64,
    pub closed_auth: u64,
    pub closed_shutdown: u64,
    /// (tick, acquired counter) samples, oldest first.
    rate_samples: std::collections::VecDeque<(Tick, u64)>,
}

impl ServerStats {
    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Eof => &mut self.closed_eof,
            CloseReason::Error => &mut self.closed_error,
            CloseReason::Idle => &mut self.closed_idle,
            CloseReason::Protocol => &mut self.closed_protocol,
            CloseReason::OutputOverflow => &mut self.closed_output_overflow,
            CloseReason::Auth => &mut self.closed_auth,
            CloseReason::Shutdown => &mut self.closed_shutdown,
        };
        *counter += 1;
    }

    pub(crate) fn sample_rate(&mut self, now: Tick, acquired: u64) {
        if self.rate_samples.len() == RATE_WINDOW {
            self.rate_samples.pop_front();
        }
        self.rate_samples.push_back((now, acquired));
    }

    /// Grants per second over the last few seconds.
    pub(crate) fn acquire_rate(&self, now: Tick, acquired: u64) -> u64 {
        match self.rate_samples.front() {
            Some(&(t, a)) if now > t => (acquired - a) * 1000 / (now - t),
            _ => 0,
        }
    }
}

impl Server {
    /// Every number STATS reports, as stable snake_case keys (clients ignore unknown keys).
    pub(super) fn stats_entries(&self, now: Tick) -> Vec<(String, u64)> {
        let t = self.table.stats();
        let s = &self.stats;
        let entries: [(&str, u64); 25] = [
            ("uptime_ms", now),
            ("connections", self.conns.len() as u64),
            ("connections_accepted", s.accepted),
            ("connections_refused", s.refused),
            ("connections_closed_eof", s.closed_eof),
            ("connections_closed_error", s.closed_error),
            ("connections_closed_idle", s.closed_idle),
            ("connections_closed_protocol", s.closed_protocol),
            ("connections_closed_output_overflow", s.closed_output_overflow),
            ("connections_closed_auth", s.closed_auth),
            ("connections_closed_shutdown", s.closed_shutdown),
            ("max_connections", self.config.max_connections as u64),
            ("locks_held", t.locks_held as u64),
            ("waiters", t.waiters as u64),
            ("grants_after_wait", t.grants_after_wait),
            ("wait_time_total_ms", t.wait_time_total_ms),
            ("acquire_rate_per_sec", self.stats.acquire_rate(now, t.acquired)),
            ("last_token", t.last_token),
            ("requests", s.requests),
            ("responses", s.responses),
            ("bad_requests", s.bad_requests),
            ("bytes_in", s.bytes_in),
            ("bytes_out", s.bytes_out),
            ("accept_errors", s.accept_errors),
            ("table_connections", t.connections as u64),
        ];
        let results = t.results();
        let mut entries: Vec<(String, u64)> =
            entries.iter().chain(results.iter()).map(|(k, v)| (k.to_string(), *v)).collect();
        for (name, h) in [("wait_ms", &t.wait_ms), ("hold_ms", &t.hold_ms)] {
            entries.push((format!("{name}_count"), h.count));
            entries.push((format!("{name}_sum"), h.sum_ms));
            for (bound, count) in h.cumulative() {
                let le = bound.map_or_else(|| "inf".to_string(), |b| b.to_string());
                entries.push((format!("{name}_le_{le}"), count));
            }
        }
        if let Some(fds) = crate::procfs::open_fds() {
            entries.push(("open_fds".into(), fds));
        }
        if let Some(rss) = crate::procfs::process_rss(std::process::id()) {
            entries.push(("resident_memory_bytes".into(), rss));
        }
        entries
    }

    /// The `--stats` log line: the numbers STATS and /metrics report, plus the deepest queues.
    pub(super) fn log_stats(&self, now: Tick) {
        let mut line = String::from("stats");
        for (key, value) in self.stats_entries(now) {
            if !key.contains("_le_") {
                line.push_str(&format!(" {key}={value}"));
            }
        }
        info!("{line} deepest_queues={:?}", self.table.deepest_queues(3));
    }
}
