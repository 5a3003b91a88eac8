//! Loadgen with end-to-end encryption against the in-process relay: participants that
//! leave make the leader rekey, every remaining participant reaches the new epoch, and
//! no frame fails to decrypt; `--no-e2ee` runs the shared-key baseline and says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use orelay_loadgen::scenario::{Arrival, SizeDist};
use orelay_loadgen::schedule::{build, Shard};
use orelay_loadgen::{Scenario, Target};

fn churning() -> Scenario {
    Scenario {
        meetings: 1,
        size: SizeDist::Fixed(4),
        duration: Duration::from_secs(4),
        arrival: Arrival::Ramp {
            over: Duration::from_millis(300),
        },
        churn_per_min: 20.0,
        rejoin_after: Duration::from_millis(500),
        keyframe_interval: Duration::from_millis(500),
        client_sockets: 2,
        seed: 3,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_is_rekeyed_and_every_remaining_participant_reaches_the_new_epoch() {
    let scenario = churning();
    // The plan has leaves in the middle of the run (not only the run's end).
    let plan = build(&scenario, Shard::ALL);
    let churn_leaves: usize = plan.slots.iter().map(|s| s.stints.len() - 1).sum();
    assert!(churn_leaves >= 1, "{plan:?}");
    let report = orelay_loadgen::run(scenario, Target::InProcess, |_| {})
        .await
        .unwrap();
    let e = &report.e2ee;
    assert!(e.enabled, "{report}");
    assert!(
        report.to_string().contains("mode           E2EE"),
        "{report}"
    );
    assert_eq!(report.join_failed, 0, "{report}");
    assert_eq!(report.decrypt_failures, 0, "{report}");
    // A rekey is counted only once every participant still in the meeting runs an
    // epoch newer than any present at the leave.
    assert!(e.rekeys >= 1, "{report}");
    assert_eq!(e.rekey_time.count(), e.rekeys);
    assert_eq!(e.rekeys_unfinished, 0, "{report}");
    assert!(e.highest_epoch >= 2, "{report}");
    assert_eq!(e.warnings, 0, "{report}");
    assert!(e.key_messages > 0);
    assert!(
        report.received.audio > 0 && report.received.video > 0,
        "{report}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["e2ee"]["rekeys"], e.rekeys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_e2ee_runs_the_shared_key_baseline_and_says_so() {
    let scenario = Scenario {
        e2ee: false,
        size: SizeDist::Fixed(2),
        duration: Duration::from_secs(1),
        churn_per_min: 0.0,
        ..churning()
    };
    let report = orelay_loadgen::run(scenario, Target::InProcess, |_| {})
        .await
        .unwrap();
    assert!(!report.e2ee.enabled);
    assert!(
        report.to_string().contains("mode           NO E2EE"),
        "{report}"
    );
    assert_eq!(report.decrypt_failures, 0, "{report}");
    assert_eq!(report.e2ee.key_messages, 0);
    assert_eq!(report.e2ee.highest_epoch, 0);
    assert!(report.received.audio > 0, "{report}");
}
