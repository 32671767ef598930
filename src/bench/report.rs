//! The result of a cycle run: rates and latency percentiles, as a human line or JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use super::{CycleConfig, Mode};

#[derive(Debug, Clone)]
pub struct CycleReport {
    pub mode: Mode,
    pub connections: usize,
    pub pipeline: usize,
    pub names: u64,
    pub cycles: u64,
    pub elapsed: Duration,
    /// Cycle latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Server CPU time per cycle, when a server pid was given.
    pub server_cpu_us_per_cycle: Option<f64>,
    /// Responses other than the expected ones (timeouts, errors).
    pub unexpected: u64,
}

impl CycleReport {
    pub(crate) fn new(
        config: &CycleConfig,
        hist: &Histogram<u64>,
        elapsed: Duration,
        server_cpu: Option<Duration>,
        unexpected: u64,
    ) -> CycleReport {
        let cycles = hist.len();
        CycleReport {
            mode: config.mode,
            connections: config.connections,
            pipeline: config.pipeline,
            names: config.names,
            cycles,
            elapsed,
            p50_us: hist.value_at_quantile(0.5),
            p90_us: hist.value_at_quantile(0.9),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
            server_cpu_us_per_cycle: server_cpu
                .filter(|_| cycles > 0)
                .map(|cpu| cpu.as_secs_f64() * 1e6 / cycles as f64),
            unexpected,
        }
    }

    pub fn cycles_per_sec(&self) -> f64 {
        self.cycles as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mode_str(&self) -> &'static str {
        match self.mode {
            Mode::Lock => "lock",
            Mode::Ping => "ping",
            Mode::Shared => "shared",
            Mode::Semaphore => "semaphore",
        }
    }

    /// One line for people.
    pub fn human(&self) -> String {
        let cpu =
            self.server_cpu_us_per_cycle.map_or(String::new(), |c| format!(" server_cpu/cycle={c:.2}us"));
        format!(
            "{} c={} P={} k={}: {:.0} cycles/s {:.0} ops/s | latency us p50={} p90={} p99={} p99.9={} max={}{cpu}{}",
            self.mode_str(),
            self.connections,
            self.pipeline,
            self.names,
            self.cycles_per_sec(),
            2.0 * self.cycles_per_sec(),
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            if self.unexpected > 0 { format!(" unexpected={}", self.unexpected) } else { String::new() },
        )
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "mode": self.mode_str(),
            "connections": self.connections,
            "pipeline": self.pipeline,
            "names": self.names,
            "cycles": self.cycles,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "cycles_per_sec": self.cycles_per_sec(),
            "ops_per_sec": 2.0 * self.cycles_per_sec(),
            "latency_us": {"p50": self.p50_us, "p90": self.p90_us, "p99": self.p99_us,
                           "p99_9": self.p999_us, "max": self.max_us},
            "server_cpu_us_per_cycle": self.server_cpu_us_per_cycle,
            "unexpected": self.unexpected,
        })
    }
}
