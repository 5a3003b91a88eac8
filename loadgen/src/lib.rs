//! `loadgen`: simulated meetings of real QUIC clients against an Oblivious Relay.
//!
//! Every participant is a real client ([`orelay_client`]) with its own connection, a
//! real join, AES-GCM-sealed media ([`seal`]) paced like a real sender, and receivers
//! that authenticate and time every object. With no relay address, a relay runs
//! in-process on loopback.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod participant;
pub mod report;
pub mod scenario;
pub mod seal;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use orelay_client::Client;
use orelay_proto::{Credential, Role};
pub use orelay_relay::tools::LocalIssuer;

pub use report::Report;
pub use scenario::Scenario;

/// Where the relay is.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start a relay in this process on loopback.
    InProcess,
    /// An external relay, pinned by its certificate's SHA-256 fingerprint.
    External {
        /// Its address.
        addr: SocketAddr,
        /// Its certificate fingerprint.
        fingerprint: [u8; 32],
        /// How participants are admitted there.
        admission: Admission,
    },
}

/// How loadgen's participants get into an external relay's meetings.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Tokens signed with this key (the relay must list its public key): each meeting's
    /// first participant is its host, the others participants; every token requires
    /// the meeting passcode.
    Tokens(Arc<LocalIssuer>),
    /// An open-mode relay: every participant presents the host secret (which is what
    /// may create a meeting there, whoever joins first).
    HostSecret(String),
}

impl Admission {
    fn credential(&self, meeting_id: &str, passcode: &str, index: usize) -> Credential {
        match self {
            Admission::Tokens(issuer) => {
                let role = if index == 0 {
                    Role::Host
                } else {
                    Role::Participant
                };
                let identity = format!("loadgen-{index}");
                issuer
                    .token(meeting_id, &identity, role, Some(passcode), 86_400)
                    .map_or(Credential::None, Credential::Token)
            }
            Admission::HostSecret(secret) => Credential::HostSecret(secret.clone()),
        }
    }
}

/// Runs a scenario to completion and reports what participants experienced.
/// `progress` is called about once a second with a one-line status.
pub async fn run(
    scenario: Scenario,
    target: Target,
    progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    run_observed(scenario, target, None, progress).await
}

/// [`run`], also serving the run's live figures on `metrics_addr` (`/metrics`,
/// `/healthz`, `/readyz`) while it lasts; the bound address goes to `progress`.
pub async fn run_observed(
    scenario: Scenario,
    target: Target,
    metrics_addr: Option<SocketAddr>,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    scenario.validate()?;
    let (relay, addr, fingerprint, admission) = match target {
        Target::InProcess => {
            let mut config = orelay_relay::Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                max_connections: scenario.total_participants() + 64,
                max_unjoined: scenario.total_participants().min(10_000) + 64,
                ..orelay_relay::Config::default()
            };
            // Loadgen plays the meeting service too: it mints its own join tokens.
            let issuer = Arc::new(LocalIssuer::generate()?);
            issuer.configure(&mut config);
            let relay = orelay_relay::Relay::bind(config)
                .context("starting the in-process relay")?
                .spawn()?;
            let pin = orelay_client::parse_fingerprint(&relay.fingerprint)
                .context("relay fingerprint")?;
            let addr = relay.addr;
            (Some(relay), addr, pin, Admission::Tokens(issuer))
        }
        Target::External {
            addr,
            fingerprint,
            admission,
        } => (None, addr, fingerprint, admission),
    };
    let bind = if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let clients = (0..scenario.client_sockets)
        .map(|_| Client::new(bind, fingerprint))
        .collect::<Result<Vec<_>, _>>()
        .context("creating client endpoints")?;

    let scenario = Arc::new(scenario);
    let live = Arc::new(report::Live::default());
    let total = scenario.total_participants();
    if let Some(addr) = metrics_addr {
        let bound = metrics::spawn(addr, live.clone(), total)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        progress(&format!("metrics on http://{bound}/metrics"));
    }
    let start = Instant::now() + Duration::from_millis(100);
    let media_start = start + scenario.join_window;
    let media_until = media_start + scenario.duration;
    let run_tag = std::process::id();
    let mut tasks = Vec::with_capacity(total);
    for m in 0..scenario.meetings {
        let key = Arc::new(seal::MeetingKey::generate()?);
        let meeting_id = scenario.meeting_id(m, run_tag);
        for p in 0..scenario.participants {
            let n = m * scenario.participants + p;
            let passcode = scenario.passcode(m);
            let plan = participant::Plan {
                scenario: scenario.clone(),
                relay: addr,
                credential: admission.credential(&meeting_id, &passcode, p),
                meeting_id: meeting_id.clone(),
                passcode,
                key: key.clone(),
                join_at: start + scenario.join_window.mul_f64(n as f64 / total as f64),
                media_until,
                drain: Duration::from_millis(1500),
                live: live.clone(),
            };
            let client = clients[n % clients.len()].clone();
            // Every participant stops by this time, whatever the relay does.
            let hard_stop = media_until + plan.drain + Duration::from_secs(15);
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout_at(hard_stop.into(), participant::run(client, plan))
                    .await
                    .unwrap_or_else(|_| {
                        tracing::warn!("participant did not finish in time; abandoned");
                        (None, report::Tally::default())
                    })
            }));
        }
    }

    let ticker = {
        let live = live.clone();
        let begun = Instant::now();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = (0u64, 0u64);
            loop {
                tick.tick().await;
                let rx = (
                    live.video_received.load(Relaxed),
                    live.audio_received.load(Relaxed),
                );
                let line = format!(
                    "[{:>4.0}s] joined {}/{}  video rx {}/s  audio rx {}/s  auth failures {}",
                    begun.elapsed().as_secs_f64(),
                    live.joined.load(Relaxed),
                    total,
                    rx.0 - last.0,
                    rx.1 - last.1,
                    live.decrypt_failures.load(Relaxed),
                );
                last = rx;
                progress(&line);
            }
        }
    };
    let mut join_us = report::histogram();
    let mut tallies = Vec::with_capacity(total);
    let gather = async {
        for t in tasks {
            if let Ok((join, tally)) = t.await {
                if let Some(j) = join {
                    let _ = join_us.record((j.as_micros() as u64).max(1));
                }
                tallies.push(tally);
            }
        }
    };
    tokio::select! {
        () = gather => {}
        () = ticker => {}
    }
    let relay_summary = relay.as_ref().map(|r| {
        let s = r.stats.snapshot();
        report::RelaySummary {
            groups_dropped: s.groups_dropped,
            datagrams_dropped: s.datagrams_dropped,
            keyframe_requests: s.keyframe_requests,
            closes: s.closes,
        }
    });
    // Participants send from their join until `media_until`.
    let media = media_until.saturating_duration_since(start);
    let report = report::build(&scenario, &live, &join_us, &tallies, media, relay_summary);
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    Ok(report)
}
