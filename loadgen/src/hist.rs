//! HDR histograms in microseconds that travel in the JSON report, so `loadgen merge`
//! adds shards' distributions instead of averaging their percentiles.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A latency histogram: 1 µs to 1 hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|e| panic!("fixed histogram bounds rejected: {e}"))
}

/// A histogram of microseconds, serialised as `[[value, count], ...]`.
#[derive(Clone)]
pub struct Hist(pub Histogram<u64>);

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hist({})", self.millis())
    }
}

impl Default for Hist {
    fn default() -> Self {
        Hist(histogram())
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter_recorded()
                .zip(other.0.iter_recorded())
                .all(|(a, b)| {
                    a.value_iterated_to() == b.value_iterated_to()
                        && a.count_at_value() == b.count_at_value()
                })
    }
}

impl Hist {
    /// Records microseconds (0 counts as 1).
    pub fn record_us(&mut self, us: u64) {
        let _ = self.0.record(us.clamp(1, 3_600_000_000));
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile in milliseconds (`None` when empty).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Median, p99 and maximum in milliseconds.
    pub fn millis(&self) -> Millis {
        if self.0.is_empty() {
            return Millis::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Millis {
            count: self.0.len(),
            p50: ms(self.0.value_at_quantile(0.50)),
            p99: ms(self.0.value_at_quantile(0.99)),
            max: ms(self.0.max()),
        }
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = Hist::default();
        for (v, c) in pairs {
            h.0.record_n(v.clamp(1, 3_600_000_000), c)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(h)
    }
}

/// Distribution summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Millis {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  (n={})",
            self.p50, self.p99, self.max, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_merges_by_counts() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in 1..=100 {
            a.record_us(v * 1000);
            b.record_us(v * 10_000);
        }
        let json = serde_json::to_string(&a).unwrap();
        let back: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        a.add(&b);
        assert_eq!(a.count(), 200);
        // Merged by counts: 100 of a's values and 9 of b's lie below 91 ms, so the
        // p50 is ~91 ms, not the mean of the two p50s (~275 ms).
        let p50 = a.quantile_ms(0.5).unwrap();
        assert!((88.0..=94.0).contains(&p50), "{p50}");
    }
}
