//! War-dialing over real QUIC: attackers on several loopback addresses guess meeting
//! IDs and passcodes as fast as they can while an honest meeting keeps joining. Nobody
//! gets in, attackers are slowed by a growing back-off, the targeted meeting is
//! flagged at risk (counter, gauge, a message to its host), and honest joins keep
//! their pace. `ORELAY_BRUTE_GUESSES` sets the number of guesses (default 1,500) and
//! `ORELAY_BRUTE_RATE` their pace per second (default 1,000); the figures in the
//! closing note used 10,000.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use orelay_client::{Client, ClientError, JoinRequest};
use orelay_proto::{Credential, RejectReason, ServerMessage};
use orelay_relay::config::AdmissionMode;

const SECRET: &str = "a-host-secret-for-tests";
const PASSCODE: &str = "918273";
const SOURCES: u8 = 8;
const TASKS_PER_SOURCE: usize = 8;
const HONEST_JOINS: usize = 200;

#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    /// Refused at the door (QUIC CONNECTION_REFUSED) while backing off.
    refused: AtomicU64,
    other: AtomicU64,
}

/// Joins `meeting` `HONEST_JOINS` times one after another; returns the p99 (the
/// second slowest of 200) and median join times.
async fn honest_joins(client: &Client, addr: SocketAddr, meeting: &str) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(HONEST_JOINS);
    for i in 0..HONEST_JOINS {
        let started = Instant::now();
        let s = client
            .join(addr, meeting, PASSCODE, format!("honest {i}").as_bytes())
            .await
            .unwrap();
        times.push(started.elapsed());
        s.leave().await.unwrap();
    }
    times.sort();
    eprintln!("slowest honest joins: {:?}", &times[times.len() - 5..]);
    (times[times.len() * 99 / 100], times[times.len() / 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_admits_no_one_flags_the_meeting_and_spares_honest_joins() {
    let guesses: u64 = std::env::var("ORELAY_BRUTE_GUESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    // Guesses per second across all attackers: a war-dialer's pace (the attackers run in
    // this process, on the relay's two cores, so an unpaced loop measures them, not it).
    let rate: f64 = std::env::var("ORELAY_BRUTE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000.0);
    let tasks = f64::from(SOURCES) * TASKS_PER_SOURCE as f64;
    let period = Duration::from_secs_f64(tasks / rate);
    let mut cfg = config();
    cfg.admission.mode = AdmissionMode::Open;
    cfg.admission.host_secret = SECRET.into();
    // The production defaults, not the test helpers' generous ones.
    let defaults = orelay_relay::config::AdmissionConfig::default();
    cfg.admission.attempts_per_source_per_minute = defaults.attempts_per_source_per_minute;
    cfg.admission.attempts_per_meeting_per_minute = defaults.attempts_per_meeting_per_minute;
    cfg.max_unjoined = 2_000;
    let (relay, _) = start(cfg);
    let pin = orelay_client::parse_fingerprint(&relay.fingerprint).unwrap();
    let honest = Client::new("127.0.0.1:0".parse().unwrap(), pin).unwrap();
    let host_of = |meeting: &str| JoinRequest {
        meeting_id: meeting.to_owned(),
        passcode: PASSCODE.into(),
        credential: Credential::HostSecret(SECRET.into()),
        ..JoinRequest::default()
    };
    let target = meeting_id(900);
    let calm = meeting_id(901);
    let mut target_host = honest
        .join_with(relay.addr, &host_of(&target))
        .await
        .unwrap();
    let _calm_host = honest.join_with(relay.addr, &host_of(&calm)).await.unwrap();

    let (calm_p99, calm_median) = honest_joins(&honest, relay.addr, &calm).await;

    let tally = Arc::new(Tally::default());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut attackers = tokio::task::JoinSet::new();
    for source in 0..SOURCES {
        let bind = SocketAddr::from(([127, 0, 0, 2 + source], 0));
        let client = Client::new(bind, pin).unwrap();
        for task in 0..TASKS_PER_SOURCE {
            let (client, tally, issued, target) = (
                client.clone(),
                tally.clone(),
                issued.clone(),
                target.clone(),
            );
            attackers.spawn(async move {
                let mut n = (u64::from(source) << 32) | task as u64;
                let mut pace = tokio::time::interval(period);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while issued.fetch_add(1, Relaxed) < guesses {
                    pace.tick().await;
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Half the guesses hit the targeted meeting, half war-dial IDs.
                    let meeting = if n >> 63 == 0 {
                        target.clone()
                    } else {
                        format!("{:011}", (n >> 20) % 100_000_000_000)
                    };
                    let passcode = format!("{:06}", (n >> 8) % 1_000_000);
                    match client.join(relay.addr, &meeting, &passcode, b"x").await {
                        Ok(_) => tally.admitted.fetch_add(1, Relaxed),
                        Err(ClientError::Rejected(_)) => tally.rejected.fetch_add(1, Relaxed),
                        Err(ClientError::Throttled { .. }) => tally.throttled.fetch_add(1, Relaxed),
                        Err(ClientError::Connection(quinn::ConnectionError::ConnectionClosed(
                            close,
                        ))) if close.error_code
                            == quinn::TransportErrorCode::CONNECTION_REFUSED =>
                        {
                            tally.refused.fetch_add(1, Relaxed)
                        }
                        Err(_) => tally.other.fetch_add(1, Relaxed),
                    };
                }
            });
        }
    }
    // Honest joins while the attack runs.
    let (attacked_p99, attacked_median) = honest_joins(&honest, relay.addr, &calm).await;
    // The targeted meeting's host is told.
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match target_host.next_event().await {
                Some(Ok(ServerMessage::AtRisk { failed_attempts })) => return failed_attempts,
                Some(Ok(_)) => {}
                other => panic!("host lost its session: {other:?}"),
            }
        }
    })
    .await
    .expect("the targeted meeting's host was never told it is at risk");
    while attackers.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    let (admitted, rejected, throttled, refused, other) = (
        tally.admitted.load(Relaxed),
        tally.rejected.load(Relaxed),
        tally.throttled.load(Relaxed),
        tally.refused.load(Relaxed),
        tally.other.load(Relaxed),
    );
    let stats = relay.stats.snapshot();
    println!(
        "brute force: {guesses} guesses at up to {rate}/s from {SOURCES} addresses in {:.1} s: admitted {admitted}, \
         rejected {rejected}, throttled {throttled}, refused while backing off {refused}, \
         other {other}; at-risk signals {} \
         (host told at {failed} failed attempts); honest join p99 {:.1} ms / median {:.1} ms \
         unattacked, p99 {:.1} ms / median {:.1} ms attacked",
        elapsed.as_secs_f64(),
        stats.at_risk_total,
        calm_p99.as_secs_f64() * 1e3,
        calm_median.as_secs_f64() * 1e3,
        attacked_p99.as_secs_f64() * 1e3,
        attacked_median.as_secs_f64() * 1e3,
    );
    assert_eq!(admitted, 0, "a guess got in");
    assert_eq!(admitted + rejected + throttled + refused + other, guesses);
    // After a few free failures every source waits, so most guesses are turned away
    // before any passcode is checked, most of them before any handshake.
    assert!(
        (throttled + refused) * 2 > guesses,
        "back-off must answer most guesses: {throttled} throttled, {refused} refused"
    );
    assert!(other * 20 < guesses, "unexplained failures: {other}");
    assert!(stats.at_risk_total >= 1);
    assert!(stats.meetings_at_risk >= 1);
    assert_eq!(stats.joins_throttled, throttled);
    assert!(stats.connections_refused >= refused);
    let rejected_bad = RejectReason::BAD_PASSCODE;
    assert!(
        rejected > 0,
        "some guesses were checked and refused ({rejected_bad})"
    );
    // Honest joins keep their pace: within twice the unattacked p99, with 250 ms of
    // slack for a shared 2-core machine.
    assert!(
        attacked_p99 <= calm_p99 * 2 + Duration::from_millis(250),
        "honest join p99 {attacked_p99:?} under attack vs {calm_p99:?} without"
    );
    relay.shutdown().await;
}
