//! k6-style pass/fail conditions: `join_p99 < 500ms`, `loss < 1%`, `auth_failures == 0`.
//! Durations are compared in milliseconds, shares in percent.

use serde::{Deserialize, Serialize};

/// Metrics a threshold can name, with their unit.
pub const METRICS: &[(&str, Unit, &str)] = &[
    (
        "join_p50",
        Unit::Millis,
        "join time (connect to admitted), median",
    ),
    ("join_p99", Unit::Millis, "join time, 99th percentile"),
    ("join_max", Unit::Millis, "join time, maximum"),
    (
        "latency_p50",
        Unit::Millis,
        "end-to-end latency, all kinds, median",
    ),
    (
        "latency_p99",
        Unit::Millis,
        "end-to-end latency, all kinds, 99th percentile",
    ),
    (
        "audio_latency_p99",
        Unit::Millis,
        "audio latency, 99th percentile",
    ),
    (
        "video_latency_p99",
        Unit::Millis,
        "video latency, 99th percentile",
    ),
    (
        "screen_latency_p99",
        Unit::Millis,
        "screen latency, 99th percentile",
    ),
    (
        "first_media_p99",
        Unit::Millis,
        "admitted to first media object, 99th percentile",
    ),
    (
        "keyframe_recovery_p99",
        Unit::Millis,
        "skipped group to next complete group, 99th percentile",
    ),
    (
        "loss",
        Unit::Percent,
        "audio objects missing from the sequence ranges receivers saw",
    ),
    ("join_failures", Unit::Count, "joins that failed"),
    (
        "auth_failures",
        Unit::Count,
        "payloads that failed authentication",
    ),
    (
        "groups_skipped",
        Unit::Count,
        "video groups reset or never delivered",
    ),
    (
        "skipped_groups_percent",
        Unit::Percent,
        "groups skipped among groups started",
    ),
    (
        "send_skew_p99",
        Unit::Millis,
        "how late loadgen sent, 99th percentile",
    ),
    (
        "worst_meeting_latency_p99",
        Unit::Millis,
        "the worst meeting's latency p99",
    ),
    (
        "loadgen_cpu",
        Unit::Percent,
        "loadgen's CPU use, percent of its cores",
    ),
    (
        "attacker_admitted",
        Unit::Count,
        "guessing attackers' joins that were admitted",
    ),
    (
        "attacker_attempts",
        Unit::Count,
        "guessing attackers' join attempts",
    ),
];

/// How a metric is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds (`ms`, `s` and `us` accepted).
    Millis,
    /// Percent (`%` accepted, or a bare number).
    Percent,
    /// A plain count.
    Count,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `==`
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Eq => value == limit,
        }
    }
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// As written.
    pub text: String,
    /// The metric's name (one of [`METRICS`]).
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The limit, in the metric's unit.
    pub limit: f64,
}

/// A threshold checked against a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The condition as written.
    pub threshold: String,
    /// The measured value, in the metric's unit.
    pub value: f64,
    /// Whether it held.
    pub passed: bool,
}

impl Threshold {
    /// Parses `metric op value[unit]`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (at, sym, op) = ops
            .iter()
            .filter_map(|(s, op)| t.find(s).map(|i| (i, *s, *op)))
            .min_by_key(|(i, s, _)| (*i, usize::MAX - s.len()))
            .ok_or_else(|| format!("`{t}`: no comparison (<, <=, >, >=, ==)"))?;
        let metric = t[..at].trim();
        let (_, unit, _) = METRICS
            .iter()
            .find(|(n, _, _)| *n == metric)
            .ok_or_else(|| {
                let names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
                format!(
                    "`{metric}` is not a threshold metric (one of: {})",
                    names.join(", ")
                )
            })?;
        let rhs = t[at + sym.len()..].trim();
        let split = rhs
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(rhs.len());
        let (num, suffix) = rhs.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{t}`: `{num}` is not a number"))?;
        let limit = match (unit, suffix.trim()) {
            (Unit::Millis, "ms") => n,
            (Unit::Millis, "s") => n * 1000.0,
            (Unit::Millis, "us" | "µs") => n / 1000.0,
            (Unit::Percent, "%" | "") | (Unit::Count, "") => n,
            (_, s) => {
                return Err(format!(
                    "`{t}`: unit `{s}` does not fit `{metric}` ({unit:?})"
                ))
            }
        };
        Ok(Threshold {
            text: t.to_owned(),
            metric: metric.to_owned(),
            op,
            limit,
        })
    }

    /// Checks the condition on `value` (`None`: not measured in this run, which fails).
    pub fn check(&self, value: Option<f64>) -> Verdict {
        Verdict {
            threshold: self.text.clone(),
            value: value.unwrap_or(f64::NAN),
            passed: value.is_some_and(|v| self.op.holds(v, self.limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_operators() {
        let t = Threshold::parse("join_p99 < 0.5s").unwrap();
        assert_eq!((t.op, t.limit), (Op::Lt, 500.0));
        let t = Threshold::parse("loss<=1%").unwrap();
        assert_eq!((t.op, t.limit), (Op::Le, 1.0));
        let t = Threshold::parse("auth_failures == 0").unwrap();
        assert_eq!((t.op, t.limit), (Op::Eq, 0.0));
        assert!(t.check(Some(0.0)).passed && !t.check(Some(1.0)).passed);
        assert!(!t.check(None).passed, "an unmeasured value fails");
        assert!(Threshold::parse("latency_p99 < 5%")
            .unwrap_err()
            .contains("unit"));
        assert!(Threshold::parse("nonsense < 5")
            .unwrap_err()
            .contains("nonsense"));
        assert!(Threshold::parse("loss 5")
            .unwrap_err()
            .contains("comparison"));
    }
}
