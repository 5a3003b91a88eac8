//! A small scenario against the in-process relay: everyone joins, every payload
//! authenticates, and audio arrives without loss on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use orelay_loadgen::scenario::{Arrival, SizeDist};
use orelay_loadgen::{Admission, LocalIssuer, Scenario, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_scenario_runs_clean() {
    let scenario = Scenario {
        meetings: 2,
        size: SizeDist::Fixed(3),
        duration: Duration::from_secs(2),
        arrival: Arrival::Ramp {
            over: Duration::from_millis(300),
        },
        keyframe_interval: Duration::from_millis(500),
        client_sockets: 2,
        ..Scenario::default()
    };
    let report = orelay_loadgen::run(scenario, Target::InProcess, |_| {})
        .await
        .unwrap();
    assert_eq!(report.joins, 6, "{report}");
    assert_eq!(report.join_failed, 0);
    assert_eq!(report.decrypt_failures, 0, "{report}");
    // Each of 6 participants hears 2 others at 50 packets/s for over 2 s.
    assert!(report.received.audio > 6 * 2 * 50 * 2 * 9 / 10, "{report}");
    assert!(
        report.received.video > 0 && report.groups_complete > 0,
        "{report}"
    );
    assert!(report.loss_percent() < 1.0, "{report}");
    assert!(
        report.latency().p50 > 0.0 && report.latency().p99 < 500.0,
        "{report}"
    );
    let relay = report.relay.unwrap();
    assert_eq!(relay.source, "in-process");
    assert_eq!(
        relay.counters["orelay_closes_total"], 0.0,
        "relay closed connections: {relay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_relay_is_reached_by_address_and_pinned_fingerprint() {
    let issuer = Arc::new(LocalIssuer::generate().unwrap());
    let mut config = orelay_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..orelay_relay::Config::default()
    };
    issuer.configure(&mut config);
    let relay = orelay_relay::Relay::bind(config).unwrap().spawn().unwrap();
    let scenario = Scenario {
        meetings: 1,
        size: SizeDist::Fixed(2),
        duration: Duration::from_secs(1),
        arrival: Arrival::Ramp {
            over: Duration::from_millis(100),
        },
        client_sockets: 1,
        ..Scenario::default()
    };
    let target = Target::External {
        addr: relay.addr,
        fingerprint: orelay_client::parse_fingerprint(&relay.fingerprint).unwrap(),
        admission: Admission::Tokens(issuer.clone()),
    };
    let report = orelay_loadgen::run(scenario.clone(), target, |_| {})
        .await
        .unwrap();
    assert_eq!(report.joins, 2, "{report}");
    assert!(report.received.audio > 0, "{report}");
    assert!(report.relay.is_none(), "no in-process relay was started");
    assert_eq!(relay.stats.snapshot().joins_admitted, 2);

    // A wrong pin fails every join instead of talking to an unverified relay.
    let wrong = Target::External {
        addr: relay.addr,
        fingerprint: [0u8; 32],
        admission: Admission::Tokens(issuer),
    };
    let report = orelay_loadgen::run(scenario, wrong, |_| {}).await.unwrap();
    assert_eq!((report.joins, report.join_failed), (0, 2), "{report}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_client_can_join_a_loadgen_meeting_by_its_id_and_passcode() {
    let issuer = Arc::new(LocalIssuer::generate().unwrap());
    let mut config = orelay_relay::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..orelay_relay::Config::default()
    };
    issuer.configure(&mut config);
    let relay = orelay_relay::Relay::bind(config).unwrap().spawn().unwrap();
    let fingerprint = orelay_client::parse_fingerprint(&relay.fingerprint).unwrap();
    let scenario = Scenario {
        meetings: 1,
        size: SizeDist::Fixed(2),
        duration: Duration::from_secs(3),
        arrival: Arrival::Ramp {
            over: Duration::from_millis(100),
        },
        client_sockets: 1,
        meeting_prefix: Some("outside".into()),
        passcode: Some("sesame".into()),
        ..Scenario::default()
    };
    let meeting = scenario.meeting_id(0, 0);
    let target = Target::External {
        addr: relay.addr,
        fingerprint,
        admission: Admission::Tokens(issuer.clone()),
    };
    let run = tokio::spawn(orelay_loadgen::run(scenario, target, |_| {}));
    let client =
        orelay_client::Client::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), fingerprint)
            .unwrap();
    // The outsider holds its own token from the same meeting service.
    let token = issuer
        .token(
            &meeting,
            "outsider",
            orelay_proto::Role::Participant,
            Some("sesame"),
            600,
        )
        .unwrap();
    let request = orelay_client::JoinRequest {
        meeting_id: meeting.clone(),
        passcode: "sesame".into(),
        info: b"outsider".to_vec(),
        credential: orelay_proto::Credential::Token(token),
        keys: bytes::Bytes::new(),
    };
    let mut me = client.join_with(relay.addr, &request).await.unwrap();
    // The loadgen participants show up in the outsider's roster.
    let mut seen = 0;
    while seen < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), me.next_event())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let orelay_proto::ServerMessage::ParticipantJoined(_) = event {
            seen += 1;
        }
    }
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.joins, 2, "{report}");
    drop(me);
    relay.shutdown().await;
}
