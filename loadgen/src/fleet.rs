//! `loadgen plan`: a measured per-relay capacity and a forecast become relays per
//! region, with every step of the arithmetic written out.
//!
//! Peak concurrency follows Little's law: participants joining in the peak hour,
//! each staying the average meeting length, are `joins per hour × minutes / 60`
//! at once. Each region gets its share; a relay is filled to the target
//! utilisation; and each region keeps enough relays in its other zones to carry
//! the peak with one zone lost.

use serde::{Deserialize, Serialize};

/// A forecast and a measured capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Participants one relay held within the thresholds (`loadgen capacity`).
    pub capacity_per_relay: f64,
    /// Participants (joins) per day.
    pub daily_participants: f64,
    /// Share of the day's joins in the busiest hour (0..=1).
    pub peak_hour_share: f64,
    /// Average time a participant stays, minutes.
    pub meeting_minutes: f64,
    /// Fill relays to at most this share of their capacity (0..=1).
    pub target_utilisation: f64,
    /// Availability zones per region (the peak must survive losing one; 1 = no spare).
    pub zones: usize,
    /// Largest meeting expected (one meeting lives on one relay).
    pub largest_meeting: usize,
    /// Regions and their share of the traffic.
    pub regions: Vec<(String, f64)>,
}

/// One region's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPlan {
    /// Region name.
    pub region: String,
    /// Its share of traffic (normalised).
    pub share: f64,
    /// Concurrent participants at peak.
    pub peak_concurrent: f64,
    /// Relays needed at peak with every zone up.
    pub relays_needed: u64,
    /// Relays per zone so that all zones but one carry the peak.
    pub relays_per_zone: u64,
    /// Relays to deploy.
    pub relays: u64,
    /// The arithmetic, written out.
    pub working: String,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPlan {
    /// The inputs.
    pub forecast: Forecast,
    /// Joins in the peak hour.
    pub peak_joins_per_hour: f64,
    /// Concurrent participants at peak, all regions.
    pub peak_concurrent: f64,
    /// Participants one relay is planned to carry.
    pub usable_per_relay: f64,
    /// Per region.
    pub regions: Vec<RegionPlan>,
    /// Relays in all.
    pub total_relays: u64,
    /// Checks that failed (e.g. a meeting larger than one relay's usable capacity).
    pub warnings: Vec<String>,
    /// The global arithmetic, written out.
    pub working: Vec<String>,
}

/// Why a forecast cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan: {0}")]
pub struct PlanError(pub String);

/// Plans the fleet.
pub fn plan(f: &Forecast) -> Result<FleetPlan, PlanError> {
    let bad = |m: &str| Err(PlanError(m.into()));
    // Written as "is positive" checks so that NaN fails them too.
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !positive(f.capacity_per_relay) {
        return bad("capacity_per_relay must be positive");
    }
    let share = |v: f64| (0.0..=1.0).contains(&v);
    if !(f.daily_participants == 0.0 || positive(f.daily_participants)) || !share(f.peak_hour_share)
    {
        return bad("daily_participants must be >= 0 and peak_hour_share in 0..=1");
    }
    if !positive(f.meeting_minutes)
        || !positive(f.target_utilisation)
        || !share(f.target_utilisation)
    {
        return bad("meeting_minutes must be positive and target_utilisation in (0, 1]");
    }
    if f.zones == 0 || f.regions.is_empty() || f.regions.iter().any(|r| !positive(r.1)) {
        return bad("zones must be >= 1 and every region needs a positive share");
    }
    let peak_joins = f.daily_participants * f.peak_hour_share;
    let peak = peak_joins * f.meeting_minutes / 60.0;
    let usable = f.capacity_per_relay * f.target_utilisation;
    let share_total: f64 = f.regions.iter().map(|r| r.1).sum();
    let working = vec![
        format!(
            "peak joins/hour = {} daily × {} peak-hour share = {peak_joins:.0}",
            f.daily_participants, f.peak_hour_share
        ),
        format!(
            "peak concurrent = {peak_joins:.0} joins/hour × {} min / 60 = {peak:.0}",
            f.meeting_minutes
        ),
        format!(
            "usable per relay = {} measured × {} utilisation = {usable:.1}",
            f.capacity_per_relay, f.target_utilisation
        ),
    ];
    let mut regions = Vec::new();
    for (name, raw) in &f.regions {
        let share = raw / share_total;
        let conc = peak * share;
        let needed = (conc / usable).ceil() as u64;
        let (per_zone, total, zones_text) = if f.zones > 1 {
            let per_zone = needed.div_ceil(f.zones as u64 - 1);
            (
                per_zone,
                per_zone * f.zones as u64,
                format!(
                    "ceil({needed} / ({} zones − 1)) = {per_zone} per zone × {} zones",
                    f.zones, f.zones
                ),
            )
        } else {
            (needed, needed, "1 zone, no spare".into())
        };
        regions.push(RegionPlan {
            region: name.clone(),
            share,
            peak_concurrent: conc,
            relays_needed: needed,
            relays_per_zone: per_zone,
            relays: total,
            working: format!("{peak:.0} × {share:.3} = {conc:.0} concurrent; ceil({conc:.0} / {usable:.1}) = {needed} relays; {zones_text} = {total}"),
        });
    }
    let mut warnings = Vec::new();
    if f.largest_meeting as f64 > usable {
        warnings.push(format!("the largest meeting ({}) exceeds one relay's usable capacity ({usable:.0}): it needs a relay cascade or bigger relays", f.largest_meeting));
    }
    Ok(FleetPlan {
        forecast: f.clone(),
        peak_joins_per_hour: peak_joins,
        peak_concurrent: peak,
        usable_per_relay: usable,
        total_relays: regions.iter().map(|r| r.relays).sum(),
        regions,
        warnings,
        working,
    })
}

impl std::fmt::Display for FleetPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for w in &self.working {
            writeln!(f, "{w}")?;
        }
        writeln!(
            f,
            "{:<16} {:>6} {:>14} {:>8} {:>9} {:>8}",
            "region", "share", "peak conc.", "needed", "per zone", "relays"
        )?;
        for r in &self.regions {
            writeln!(
                f,
                "{:<16} {:>6.3} {:>14.0} {:>8} {:>9} {:>8}",
                r.region, r.share, r.peak_concurrent, r.relays_needed, r.relays_per_zone, r.relays
            )?;
        }
        for r in &self.regions {
            writeln!(f, "  {}: {}", r.region, r.working)?;
        }
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        write!(f, "total relays: {}", self.total_relays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forecast() -> Forecast {
        Forecast {
            capacity_per_relay: 10_000.0,
            daily_participants: 300e6,
            peak_hour_share: 0.1,
            meeting_minutes: 40.0,
            target_utilisation: 0.7,
            zones: 3,
            largest_meeting: 1000,
            regions: vec![("eu".into(), 0.5), ("us".into(), 0.3), ("apac".into(), 0.2)],
        }
    }

    #[test]
    fn arithmetic_matches_hand_computation() {
        let p = plan(&forecast()).unwrap();
        // 300e6 × 0.1 = 30e6 joins in the peak hour; × 40/60 = 20e6 concurrent.
        assert_eq!(p.peak_joins_per_hour, 30e6);
        assert!((p.peak_concurrent - 20e6).abs() < 1.0);
        assert_eq!(p.usable_per_relay, 7000.0);
        // eu: 10e6 / 7000 = 1428.6 → 1429; ceil(1429 / 2) = 715 per zone × 3 = 2145.
        let eu = &p.regions[0];
        assert_eq!(
            (eu.relays_needed, eu.relays_per_zone, eu.relays),
            (1429, 715, 2145)
        );
        // us: 6e6 / 7000 = 857.1 → 858; 429 × 3 = 1287. apac: 4e6 / 7000 → 572; 286 × 3 = 858.
        assert_eq!(p.regions[1].relays, 1287);
        assert_eq!(p.regions[2].relays, 858);
        assert_eq!(p.total_relays, 2145 + 1287 + 858);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn one_zone_has_no_spare_and_big_meetings_warn() {
        let f = Forecast {
            zones: 1,
            largest_meeting: 8000,
            regions: vec![("only".into(), 1.0)],
            ..forecast()
        };
        let p = plan(&f).unwrap();
        // 20e6 / 7000 = 2857.1 → 2858 relays, no zone spare.
        assert_eq!(p.total_relays, 2858);
        assert_eq!(p.warnings.len(), 1);
        let f = Forecast {
            target_utilisation: 0.0,
            ..forecast()
        };
        assert!(plan(&f).is_err());
    }
}
