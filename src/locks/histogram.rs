//! A fixed-bucket histogram of millisecond durations, cheap enough to record on every grant
//! and release: one comparison loop over a dozen bounds, no allocation.

/// Upper bounds (inclusive) of the buckets in milliseconds; a last bucket takes the rest.
pub const BOUNDS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 30_000, 300_000];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]` observations fell in bucket `i` (not cumulative); the last is +Inf.
    pub counts: [u64; BOUNDS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl Histogram {
    pub fn record(&mut self, ms: u64) {
        let bucket = BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }

    /// `(upper bound, cumulative count)` pairs as Prometheus wants them; `None` is +Inf.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut total = 0;
        self.counts.iter().enumerate().map(move |(i, c)| {
            total += c;
            (BOUNDS_MS.get(i).copied(), total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_and_cumulative() {
        let mut h = Histogram::default();
        for ms in [0, 1, 2, 5, 400_000] {
            h.record(ms);
        }
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_ms, 400_008);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum[0], (Some(1), 2));
        assert_eq!(cum[1], (Some(5), 4));
        assert_eq!(cum.last(), Some(&(None, 5)));
    }
}
