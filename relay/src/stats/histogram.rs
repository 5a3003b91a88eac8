//! A lock-free, fixed-bucket histogram for the hot path, rendered as a Prometheus
//! histogram at scrape time.
//!
//! Recording is one bucket search over a short sorted slice and two relaxed atomic
//! adds: no lock, no allocation, no clock unless the caller asks for one
//! ([`AtomicHistogram::record_since`]). Values are integers in the histogram's base
//! unit (nanoseconds for durations, bytes for sizes, plain counts); rendering scales
//! them to the Prometheus base unit (seconds, bytes).
//!
//! Why not the `metrics` facade's histograms: they keep every sample until the
//! scrape (or a sketch), which costs an allocation-prone buffer per series on the
//! hot path; fixed buckets cost two atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Bucket upper bounds for forwarding and join latencies, in nanoseconds: 50 µs to 1 s.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Bucket upper bounds for network round-trip times, in nanoseconds: 500 µs to 5 s.
pub const RTT_BOUNDS_NS: &[u64] = &[
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Bucket upper bounds for queue depths, in bytes: 1 KiB to 16 MiB, by powers of 4.
pub const QUEUE_BOUNDS_BYTES: &[u64] = &[
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
];

/// Bucket upper bounds for meeting sizes, in participants.
pub const MEETING_SIZE_BOUNDS: &[u64] = &[1, 2, 3, 4, 6, 8, 12, 16, 25, 50, 100, 250, 500, 1000];

/// A histogram with bucket bounds fixed at construction, safe to record from any thread.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds (inclusive), ascending, in the base unit.
    bounds: &'static [u64],
    /// One count per bound, then the overflow bucket (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// Sum of recorded values, in the base unit.
    sum: AtomicU64,
}

/// A consistent-enough copy of a histogram: per-bucket counts (not cumulative) and the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds in the base unit.
    pub bounds: &'static [u64],
    /// Counts per bucket; one more than `bounds` (the last is `+Inf`).
    pub counts: Vec<u64>,
    /// Sum of values in the base unit.
    pub sum: u64,
}

impl AtomicHistogram {
    /// A histogram with these ascending upper bounds (in the base unit).
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// For durations: [`LATENCY_BOUNDS_NS`].
    pub fn latency() -> Self {
        Self::new(LATENCY_BOUNDS_NS)
    }

    /// Records one value in the base unit.
    #[inline]
    pub fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        // `counts` has one slot more than `bounds`, so `i` is always in range.
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
    }

    /// Records `n` observations of the same value: what `n` calls of
    /// [`AtomicHistogram::record`] would, for the cost of one.
    #[inline]
    pub fn record_n(&self, value: u64, n: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(n, Relaxed);
        }
        self.sum.fetch_add(value.saturating_mul(n), Relaxed);
    }

    /// Records a duration, in nanoseconds (saturating at `u64::MAX`).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records the time elapsed since `t0`.
    #[inline]
    pub fn record_since(&self, t0: Instant) {
        self.record_duration(t0.elapsed());
    }

    /// Copies the counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum.load(Relaxed),
        }
    }
}

impl Default for AtomicHistogram {
    /// A latency histogram ([`LATENCY_BOUNDS_NS`]).
    fn default() -> Self {
        Self::latency()
    }
}

impl HistogramSnapshot {
    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Appends the histogram in the Prometheus text format as metric `name`, with
    /// `HELP`, values divided by `divisor` (1e9 turns nanoseconds into seconds; a
    /// division by a power of ten keeps bounds such as `0.00005` exact in the text).
    pub fn render(&self, out: &mut String, name: &str, help: &str, divisor: f64) {
        write_header(out, name, help);
        self.write_series(out, name, None, divisor);
    }

    /// Appends this histogram's samples (no header) as one series of family `name`,
    /// with an optional extra label.
    pub fn write_series(
        &self,
        out: &mut String,
        name: &str,
        label: Option<(&str, &str)>,
        divisor: f64,
    ) {
        let (head, sep) = match label {
            Some((k, v)) => (format!("{k}=\"{v}\""), ","),
            None => (String::new(), ""),
        };
        let mut cumulative = 0u64;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let le = *bound as f64 / divisor;
            let _ = writeln!(out, "{name}_bucket{{{head}{sep}le=\"{le}\"}} {cumulative}");
        }
        let total = self.count();
        let _ = writeln!(out, "{name}_bucket{{{head}{sep}le=\"+Inf\"}} {total}");
        let braces = if head.is_empty() {
            String::new()
        } else {
            format!("{{{head}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum as f64 / divisor);
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// Appends the `HELP` and `TYPE histogram` lines of a histogram family.
pub fn write_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::new(&[10, 20, 30]);
        for v in [0, 10, 11, 20, 30, 31, 1_000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 1, 2]);
        assert_eq!(s.sum, 1_102);
        assert_eq!(s.count(), 7);
        h.record_n(15, 3);
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 5, 1, 2]);
        assert_eq!(s.sum, 1_147);
    }

    #[test]
    fn renders_cumulative_buckets_in_base_units() {
        let h = AtomicHistogram::latency();
        h.record_duration(Duration::from_micros(40));
        h.record_duration(Duration::from_millis(3));
        h.record_duration(Duration::from_secs(5));
        let mut out = String::new();
        h.snapshot().render(&mut out, "x_seconds", "A test.", 1e9);
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(
            out.contains("x_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 5.00304\n"), "{out}");
        let mut out = String::new();
        h.snapshot()
            .write_series(&mut out, "y_seconds", Some(("transport", "stream")), 1e9);
        assert!(
            out.contains("y_seconds_bucket{transport=\"stream\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("y_seconds_count{transport=\"stream\"} 3\n"),
            "{out}"
        );
    }
}
