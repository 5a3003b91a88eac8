//! `loadgen capacity`: step the load up until a threshold breaks, then bisect the
//! edge. The search is sans-IO ([`Search`]); [`search`] runs a scenario per step.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::{Report, Scenario};

/// Where the search is: meetings last held and first broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Meetings of the first step.
    pub start: usize,
    /// Never try more meetings than this.
    pub max: usize,
    /// Growth per step before the first failure (percent, e.g. 100 doubles).
    pub growth_percent: usize,
    /// Stop bisecting when the edge is known to this many meetings.
    pub resolution: usize,
    held: usize,
    broke: Option<usize>,
}

impl Search {
    /// A search from `start` meetings up to `max`.
    pub fn new(start: usize, max: usize, growth_percent: usize, resolution: usize) -> Search {
        Search {
            start: start.max(1),
            max: max.max(1),
            growth_percent: growth_percent.max(1),
            resolution: resolution.max(1),
            held: 0,
            broke: None,
        }
    }

    /// The next load to try, in meetings; `None` when the edge is found.
    pub fn next(&self) -> Option<usize> {
        match self.broke {
            None if self.held >= self.max => None,
            None if self.held == 0 => Some(self.start.min(self.max)),
            None => {
                let grown = self.held + (self.held * self.growth_percent).div_ceil(100);
                Some(grown.min(self.max))
            }
            Some(b) if b <= self.held + self.resolution => None,
            Some(b) => Some(self.held + (b - self.held) / 2),
        }
    }

    /// Records a step's outcome.
    pub fn record(&mut self, meetings: usize, passed: bool) {
        if passed {
            self.held = self.held.max(meetings);
        } else {
            self.broke = Some(self.broke.map_or(meetings, |b| b.min(meetings)));
        }
    }

    /// The largest load held, in meetings (0 if none).
    pub fn held(&self) -> usize {
        self.held
    }
}

/// One row of the step table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Meetings run.
    pub meetings: usize,
    /// Participants run.
    pub participants: usize,
    /// Every threshold held.
    pub passed: bool,
    /// Thresholds that failed.
    pub failed: Vec<String>,
    /// Join p99, ms.
    pub join_p99_ms: f64,
    /// Latency p99 (all kinds), ms.
    pub latency_p99_ms: f64,
    /// Audio loss, percent.
    pub loss_percent: f64,
    /// loadgen's CPU, percent of its cores.
    pub loadgen_cpu_percent: f64,
    /// Relay CPU per participant, milliseconds of CPU per second (from `--relay-metrics`).
    pub relay_cpu_ms_per_participant_s: Option<f64>,
    /// Relay memory growth per participant, KiB (from `--relay-metrics`).
    pub relay_kib_per_participant: Option<f64>,
}

impl Step {
    fn from_report(meetings: usize, r: &Report) -> Step {
        let n = r.participants.max(1) as f64;
        let relay = r.relay.as_ref().and_then(|x| x.process.as_ref());
        Step {
            meetings,
            participants: r.participants,
            passed: r.passed(),
            failed: r
                .thresholds
                .iter()
                .filter(|v| !v.passed)
                .map(|v| v.threshold.clone())
                .collect(),
            join_p99_ms: r.value("join_p99").unwrap_or(0.0),
            latency_p99_ms: r.value("latency_p99").unwrap_or(0.0),
            loss_percent: r.loss_percent(),
            loadgen_cpu_percent: r.loadgen.cpu_percent(),
            relay_cpu_ms_per_participant_s: relay
                .map(|p| 1000.0 * p.cpu_seconds / p.wall_seconds.max(1e-9) / n),
            relay_kib_per_participant: relay
                .map(|p| p.rss_peak_bytes.saturating_sub(p.rss_start_bytes) as f64 / 1024.0 / n),
        }
    }
}

/// The outcome of a capacity search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Steps, sorted by load.
    pub steps: Vec<Step>,
    /// The largest load held, participants (0 if even the first step failed).
    pub held_participants: usize,
    /// Meetings at that load.
    pub held_meetings: usize,
    /// Every held step is below every broken one.
    pub monotone: bool,
}

impl Capacity {
    fn from_steps(mut steps: Vec<Step>) -> Capacity {
        steps.sort_by_key(|s| s.meetings);
        let best = steps.iter().filter(|s| s.passed).max_by_key(|s| s.meetings);
        let first_fail = steps.iter().find(|s| !s.passed).map(|s| s.meetings);
        let monotone = steps
            .iter()
            .all(|s| !s.passed || first_fail.is_none_or(|f| s.meetings < f));
        Capacity {
            held_participants: best.map_or(0, |s| s.participants),
            held_meetings: best.map_or(0, |s| s.meetings),
            monotone,
            steps,
        }
    }
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>8} {:>12} {:>6} {:>10} {:>12} {:>8} {:>10} {:>14} {:>12}  failed",
            "meetings",
            "participants",
            "held",
            "join p99",
            "latency p99",
            "loss %",
            "loadgen %",
            "relay ms/p/s",
            "relay KiB/p"
        )?;
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        for s in &self.steps {
            writeln!(
                f,
                "{:>8} {:>12} {:>6} {:>10.1} {:>12.1} {:>8.3} {:>10.0} {:>14} {:>12}  {}",
                s.meetings,
                s.participants,
                if s.passed { "✓" } else { "✗" },
                s.join_p99_ms,
                s.latency_p99_ms,
                s.loss_percent,
                s.loadgen_cpu_percent,
                opt(s.relay_cpu_ms_per_participant_s),
                opt(s.relay_kib_per_participant),
                s.failed.join("; ")
            )?;
        }
        write!(
            f,
            "capacity: {} participants ({} meetings) held{}",
            self.held_participants,
            self.held_meetings,
            if self.monotone {
                ""
            } else {
                " (table NOT monotone: noisy edge, repeat the run)"
            }
        )
    }
}

/// Runs `step` for each load the search asks for (the scenario with its meeting
/// count set), at most `max_steps` times.
pub async fn search<F, Fut>(
    base: &Scenario,
    mut s: Search,
    max_steps: usize,
    mut step: F,
) -> anyhow::Result<Capacity>
where
    F: FnMut(Scenario) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    let mut steps = Vec::new();
    while let Some(meetings) = s.next() {
        if steps.len() >= max_steps {
            break;
        }
        let scenario = Scenario {
            meetings,
            ..base.clone()
        };
        let report = step(scenario).await?;
        let row = Step::from_report(meetings, &report);
        s.record(meetings, row.passed);
        steps.push(row);
    }
    Ok(Capacity::from_steps(steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_grows_then_bisects_to_the_edge() {
        // A system that holds 37 meetings.
        let mut s = Search::new(4, 1000, 100, 1);
        let mut tried = Vec::new();
        while let Some(m) = s.next() {
            tried.push(m);
            s.record(m, m <= 37);
        }
        assert_eq!(s.held(), 37);
        assert_eq!(&tried[..5], &[4, 8, 16, 32, 64]);
        assert!(tried.len() <= 12, "{tried:?}");
        // Capped at max when nothing breaks.
        let mut s = Search::new(4, 10, 100, 1);
        while let Some(m) = s.next() {
            s.record(m, true);
        }
        assert_eq!(s.held(), 10);
    }
}
