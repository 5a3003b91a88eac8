//! A short storm against an in-process relay: the report's counts match the plan
//! and the relay's own counters, thresholds pass; an impossible threshold makes
//! the binary exit non-zero; two shards merged count what one unsharded run does;
//! a capacity search against a relay of known size finds its edge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use orelay_loadgen::capacity::{self, Search};
use orelay_loadgen::scenario::{Arrival, ScreenShare, SizeDist};
use orelay_loadgen::threshold::Threshold;
use orelay_loadgen::{Options, Report, Scenario, Shard, Target};

fn storm() -> Scenario {
    Scenario {
        name: "test-storm".into(),
        meetings: 4,
        size: SizeDist::Fixed(3),
        duration: Duration::from_secs(2),
        arrival: Arrival::Storm {
            window: Duration::from_millis(300),
        },
        video_fps: 10,
        layer_kbps: vec![100, 300],
        speakers: Some(2),
        camera_on: 1.0,
        keyframe_interval: Duration::from_millis(500),
        screen: Some(ScreenShare {
            meetings: 0.5,
            kbps: 300,
            burst_fps: 5,
            burst: Duration::from_millis(600),
            every: Duration::from_secs(1),
        }),
        client_sockets: 2,
        thresholds: [
            "join_failures == 0",
            "auth_failures == 0",
            "loss < 5%",
            "latency_p99 < 5s",
        ]
        .into_iter()
        .map(|t| Threshold::parse(t).unwrap())
        .collect(),
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_match_the_plan_and_the_relay() {
    let report = orelay_loadgen::run(storm(), Target::InProcess, |_| {})
        .await
        .unwrap();
    let e = report.expected;
    assert_eq!(
        (e.joins, report.joins, report.join_failed),
        (12, 12, 0),
        "{report}"
    );
    assert!(e.audio > 0 && e.video > 0 && e.screen > 0, "{e:?}");
    assert_eq!(report.sent.audio, e.audio, "{report}");
    assert_eq!(report.sent.video, e.video, "{report}");
    assert_eq!(report.sent.screen, e.screen, "{report}");
    let relay = report.relay.as_ref().unwrap();
    assert_eq!(
        relay.counters["orelay_joins_total{result=\"admitted\"}"],
        12.0
    );
    assert_eq!(
        relay.counters["orelay_datagrams_received_total"], e.audio as f64,
        "{report}"
    );
    assert!(
        report.received.audio > 0 && report.received.video > 0 && report.received.screen > 0,
        "{report}"
    );
    // Every join phase and every kind was measured.
    for h in [
        &report.hist.connect,
        &report.hist.tls,
        &report.hist.admit,
        &report.hist.first_media,
    ] {
        assert_eq!(h.count(), 12);
    }
    assert_eq!(report.thresholds.len(), 4);
    assert!(report.passed(), "{report}");
    assert_eq!(report.meeting_latency_p99_ms.len(), 4);
    // The JSON report round-trips.
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (back.hist, back.sent, back.expected),
        (report.hist, report.sent, report.expected)
    );
}

#[test]
fn an_impossible_threshold_exits_non_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--meetings",
            "1",
            "--participants",
            "2",
            "--duration",
            "1",
            "--join-window",
            "0.1",
        ])
        .args([
            "--threshold",
            "auth_failures == 0",
            "--threshold",
            "latency_p99 < 1us",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("✓ auth_failures == 0"), "{stdout}");
    assert!(stdout.contains("✗ latency_p99 < 1us"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_merged_count_what_one_run_does() {
    let s = Scenario {
        screen: None,
        churn_per_min: 30.0,
        rejoin_after: Duration::from_millis(200),
        ..storm()
    };
    let shard = |index| Options {
        shard: Some(Shard { index, count: 2 }),
        ..Options::default()
    };
    let (a, b, whole) = tokio::join!(
        orelay_loadgen::run_with(s.clone(), Target::InProcess, shard(0), |_| {}),
        orelay_loadgen::run_with(s.clone(), Target::InProcess, shard(1), |_| {}),
        orelay_loadgen::run(s.clone(), Target::InProcess, |_| {}),
    );
    let (a, b, whole) = (a.unwrap(), b.unwrap(), whole.unwrap());
    assert!(a.participants > 0 && b.participants > 0);
    let merged = Report::merge(&[a, b]);
    assert_eq!(merged.expected, whole.expected);
    assert!(
        whole.expected.joins > 12,
        "churn rejoins: {:?}",
        whole.expected
    );
    assert_eq!(
        (merged.joins, merged.participants, merged.meetings),
        (whole.joins, whole.participants, whole.meetings)
    );
    assert_eq!(merged.sent, whole.sent, "{merged}\n{whole}");
    assert_eq!(merged.sent.audio, whole.expected.audio);
    assert_eq!(merged.hist.join.count(), whole.hist.join.count());
    assert_eq!(merged.provenance.shards, ["0/2", "1/2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_search_finds_the_edge_of_a_small_relay() {
    let base = Scenario {
        size: SizeDist::Fixed(2),
        duration: Duration::from_secs(1),
        arrival: Arrival::Ramp {
            over: Duration::from_millis(100),
        },
        audio_pps: 20,
        camera_on: 0.0,
        speakers: Some(1),
        client_sockets: 1,
        thresholds: vec![Threshold::parse("join_failures == 0").unwrap()],
        ..Scenario::default()
    };
    // The relay admits 12 connections: 6 meetings of 2.
    let cap = capacity::search(&base, Search::new(2, 20, 100, 1), 8, |s| {
        orelay_loadgen::run(s, Target::InProcessLimited(12), |_| {})
    })
    .await
    .unwrap();
    assert_eq!(cap.held_participants, 12, "{cap}");
    assert!(cap.monotone, "{cap}");
    let loads: Vec<usize> = cap.steps.iter().map(|s| s.meetings).collect();
    assert!(loads.windows(2).all(|w| w[0] < w[1]), "{loads:?}");
    assert_eq!(loads, [2, 4, 6, 7, 8], "{cap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_attackers_on_other_loopback_addresses_get_nowhere() {
    use orelay_loadgen::attack::{Attackers, Guess};
    let s = Scenario {
        screen: None,
        camera_on: 0.0,
        attackers: Some(Attackers {
            sources: 2,
            rate: 20.0,
            target: Guess::Passcode,
        }),
        thresholds: ["attacker_admitted == 0", "attacker_attempts > 10"]
            .into_iter()
            .map(|t| Threshold::parse(t).unwrap())
            .collect(),
        ..storm()
    };
    let report = orelay_loadgen::run(s, Target::InProcess, |_| {})
        .await
        .unwrap();
    let a = report.attack.unwrap();
    assert_eq!(a.admitted, 0, "{report}");
    assert_eq!(a.rejected + a.throttled + a.refused, a.attempts, "{report}");
    assert!(
        a.rejected > 0,
        "some guesses reached the admission check: {report}"
    );
    assert!(report.passed(), "{report}");
    // The meetings themselves went on.
    assert_eq!(report.joins, report.expected.joins, "{report}");
}
