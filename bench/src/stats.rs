//! Latency histograms (microsecond resolution, as wrk records them) that merge
//! exactly across runs and processes, and percentiles over them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts of latencies, keyed by microseconds.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: BTreeMap<u64, u64>,
}

impl Histogram {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Histogram {
        let mut h = Histogram::default();
        for (value, count) in pairs {
            h.add(value, count);
        }
        h
    }

    pub fn add(&mut self, value_us: u64, count: u64) {
        if count > 0 {
            *self.counts.entry(value_us).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (&value, &count) in &other.counts {
            self.add(value, count);
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The smallest recorded value with at least `p` percent of the samples at or
    /// below it (nearest-rank). None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (&value, &count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(value);
            }
        }
        self.counts.keys().next_back().copied()
    }

    pub fn max(&self) -> Option<u64> {
        self.counts.keys().next_back().copied()
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            samples: self.count(),
            p50_us: self.percentile(50.0),
            p99_us: self.percentile(99.0),
            p999_us: self.percentile(99.9),
            max_us: self.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub max_us: Option<u64>,
}

/// The median of `values` (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let h = Histogram::from_pairs((1..=100).map(|v| (v, 1)));
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(99.9), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::from_pairs([(10, 98), (20, 1)]);
        a.merge(&Histogram::from_pairs([(30, 1), (10, 0)]));
        assert_eq!(a.count(), 100);
        assert_eq!(a.percentile(99.0), Some(20));
        assert_eq!(a.percentile(100.0), Some(30));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
