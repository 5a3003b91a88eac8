//! Guessing attackers: clients on other loopback addresses (127.0.0.2, ...) that try
//! to join with guessed meeting IDs or passcodes and no credential, at a fixed total
//! rate, for as long as media flows. Every outcome is counted; a single admission
//! is a failure of the relay's admission checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use orelay_client::{Client, ClientError};
use serde::{Deserialize, Serialize};

/// What attackers guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    /// Existing meetings' passcodes.
    Passcode,
    /// Meeting IDs.
    MeetingId,
}

/// Attackers of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Attackers {
    /// Source addresses, 127.0.0.2 upwards (1..=16).
    pub sources: usize,
    /// Guesses per second, all sources together.
    pub rate: f64,
    /// What they guess.
    pub target: Guess,
}

/// Live counts of attack outcomes.
#[derive(Debug, Default)]
pub struct AttackLive {
    attempts: AtomicU64,
    admitted: AtomicU64,
    rejected: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
}

/// Attack outcomes over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackFigures {
    /// Join attempts made.
    pub attempts: u64,
    /// Attempts admitted (must be 0).
    pub admitted: u64,
    /// Answered with a rejection (bad passcode, invalid meeting, no credential, ...).
    pub rejected: u64,
    /// Answered `Throttled` or `Overloaded`.
    pub throttled: u64,
    /// Failed before a join answer (refused before the handshake, timed out, closed).
    pub refused: u64,
}

impl AttackFigures {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &AttackFigures) {
        self.attempts += o.attempts;
        self.admitted += o.admitted;
        self.rejected += o.rejected;
        self.throttled += o.throttled;
        self.refused += o.refused;
    }
}

impl AttackLive {
    /// The counts so far.
    pub fn figures(&self) -> AttackFigures {
        AttackFigures {
            attempts: self.attempts.load(Relaxed),
            admitted: self.admitted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

/// Runs one source's guesses until `until`: `meetings` are the run's real meeting
/// IDs (passcode guessing targets them).
pub async fn run_source(
    a: Attackers,
    source: usize,
    relay: SocketAddr,
    fingerprint: [u8; 32],
    meetings: Vec<String>,
    until: Instant,
    live: std::sync::Arc<AttackLive>,
) {
    let bind = SocketAddr::from(([127, 0, 0, 2 + source as u8], 0));
    let client = match Client::new(bind, fingerprint) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "attacker could not bind its loopback address");
            return;
        }
    };
    let period = Duration::from_secs_f64(a.sources as f64 / a.rate);
    let mut next = Instant::now();
    for n in 0u64.. {
        if next >= until || meetings.is_empty() {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        next += period;
        let (meeting, passcode) = match a.target {
            Guess::Passcode => (
                meetings[n as usize % meetings.len()].clone(),
                format!("guess-{source}-{n}"),
            ),
            Guess::MeetingId => (
                format!("{:011}", 90_000_000_000u64 + n * 16 + source as u64),
                "guess".into(),
            ),
        };
        live.attempts.fetch_add(1, Relaxed);
        let attempt = client.join(relay, &meeting, &passcode, b"attacker");
        let counter = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(session)) => {
                let _ = session.leave().await;
                &live.admitted
            }
            Ok(Err(ClientError::Rejected(_))) => &live.rejected,
            Ok(Err(ClientError::Throttled { .. } | ClientError::Overloaded { .. })) => {
                &live.throttled
            }
            Ok(Err(_)) | Err(_) => &live.refused,
        };
        counter.fetch_add(1, Relaxed);
    }
}
