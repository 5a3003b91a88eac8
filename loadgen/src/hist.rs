//! HDR histograms in microseconds that travel in the JSON report, so `loadgen merge`
//! adds shards' distributions instead of averaging their percentiles.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A latency histogram: 1 µs to 1 hour at 2 significant digits (1 % resolution,
/// ~25 KiB; there is one per meeting and figure, so 3 digits' 190 KiB would not fit
/// 1,000s of meetings).
pub fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .unwrap_or_else(|e| panic!("fixed histogram bounds rejected: {e}"))
}

/// A histogram of microseconds, allocated on its first value, serialised as
/// `[[value, count], ...]`.
#[derive(Clone, Default)]
pub struct Hist(Option<Box<Histogram<u64>>>);

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hist({})", self.millis())
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Hist {
    fn get(&mut self) -> &mut Histogram<u64> {
        self.0.get_or_insert_with(|| Box::new(histogram()))
    }

    /// `(value, count)` of every recorded value bucket.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.0.as_ref().map_or_else(Vec::new, |h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
    }

    /// Records microseconds (0 counts as 1).
    pub fn record_us(&mut self, us: u64) {
        let _ = self.get().record(us.clamp(1, 3_600_000_000));
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Hist) {
        if let Some(o) = &other.0 {
            let _ = self.get().add(&**o);
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    /// The `q` quantile in milliseconds (`None` when empty).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let h = self.0.as_ref().filter(|h| !h.is_empty())?;
        Some(h.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Median, p99 and maximum in milliseconds.
    pub fn millis(&self) -> Millis {
        let Some(h) = self.0.as_ref().filter(|h| !h.is_empty()) else {
            return Millis::default();
        };
        let ms = |v: u64| v as f64 / 1000.0;
        Millis {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pairs().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        let mut h = Hist::default();
        for (v, c) in pairs {
            h.get()
                .record_n(v.clamp(1, 3_600_000_000), c)
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
