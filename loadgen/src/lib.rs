//! `loadgen`: simulated meetings of real QUIC clients against an Oblivious Relay.
//!
//! A [`Scenario`] (flags or a TOML file, [`spec`]) becomes a seeded, sans-IO plan
//! ([`schedule`]); the driver here executes it: every participant is a real client
//! ([`orelay_client`]) with its own connection, a real join, AES-GCM-sealed media
//! ([`seal`]) paced on the plan's grid, and receivers that authenticate and time
//! every object. With no relay address, a relay runs in-process on loopback.
#![forbid(unsafe_code)]

pub mod attack;
pub mod capacity;
pub mod fleet;
pub mod hist;
pub mod metrics;
pub mod participant;
pub mod probe;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod seal;
pub mod spec;
pub mod tally;
pub mod threshold;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use orelay_client::Client;
use orelay_proto::{Credential, Role};
pub use orelay_relay::tools::LocalIssuer;

pub use report::Report;
pub use scenario::Scenario;
pub use schedule::Shard;

use crate::report::Kinds;
use crate::tally::{Live, Tally};

/// Where the relay is.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start a relay in this process on loopback.
    InProcess,
    /// Start a relay in this process on loopback with at most this many connections
    /// (a small, known capacity, for capacity-search tests).
    InProcessLimited(usize),
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
    /// first seat is its host, the others participants; every token requires
    /// the meeting passcode.
    Tokens(Arc<LocalIssuer>),
    /// An open-mode relay: every participant presents the host secret (which is what
    /// may create a meeting there, whoever joins first).
    HostSecret(String),
}

impl Admission {
    /// The credential of seat `seat` of a meeting.
    fn credential(&self, meeting_id: &str, passcode: &str, seat: usize) -> Credential {
        match self {
            Admission::Tokens(issuer) => {
                let role = if seat == 0 {
                    Role::Host
                } else {
                    Role::Participant
                };
                let identity = format!("loadgen-{seat}");
                issuer
                    .token(meeting_id, &identity, role, Some(passcode), 86_400)
                    .map_or(Credential::None, Credential::Token)
            }
            Admission::HostSecret(secret) => Credential::HostSecret(secret.clone()),
        }
    }
}

/// Optional parts of a run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// This process's part of the scenario ([`Shard::ALL`] when `None`).
    pub shard: Option<Shard>,
    /// Serve loadgen's own `/metrics` here.
    pub metrics_addr: Option<SocketAddr>,
    /// Sample the relay's `/metrics` at this URL through the run.
    pub relay_metrics: Option<String>,
    /// Append one JSON line a second with the live figures.
    pub series: Option<std::path::PathBuf>,
}

/// Runs a scenario to completion and reports what participants experienced.
/// `progress` is called about once a second with a one-line status.
pub async fn run(
    scenario: Scenario,
    target: Target,
    progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    run_with(scenario, target, Options::default(), progress).await
}

/// [`run`], also serving the run's live figures on `metrics_addr` (`/metrics`,
/// `/healthz`, `/readyz`) while it lasts; the bound address goes to `progress`.
pub async fn run_observed(
    scenario: Scenario,
    target: Target,
    metrics_addr: Option<SocketAddr>,
    progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    let opts = Options {
        metrics_addr,
        ..Options::default()
    };
    run_with(scenario, target, opts, progress).await
}

/// The upper bound of the bucket holding the `q` quantile, in milliseconds.
fn bucket_quantile_ms(h: &orelay_relay::stats::histogram::HistogramSnapshot, q: f64) -> f64 {
    let total = h.count();
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, c) in h.counts.iter().enumerate() {
        seen += c;
        if seen >= want && total > 0 {
            return h.bounds.get(i).map_or(f64::INFINITY, |b| *b as f64 / 1e6);
        }
    }
    0.0
}

/// Runs `scenario` with `opts`; see [`run`].
pub async fn run_with(
    scenario: Scenario,
    target: Target,
    opts: Options,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Report> {
    scenario.validate()?;
    let shard = opts.shard.unwrap_or(Shard::ALL);
    let plan = schedule::build(&scenario, shard);
    let total = plan.participants();
    let (relay, addr, fingerprint, admission) = match target {
        Target::InProcess | Target::InProcessLimited(_) => {
            let max = match target {
                Target::InProcessLimited(n) => n,
                _ => total + 64,
            };
            let mut config = orelay_relay::Config {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                max_connections: max,
                max_unjoined: max.min(10_064),
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
    let mut relay_probe = match &opts.relay_metrics {
        Some(url) => Some(
            probe::RelayProbe::start(url)
                .await
                .with_context(|| format!("reading the relay's metrics at {url}"))?,
        ),
        None => None,
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
    let mut series = match &opts.series {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };

    let expected = plan.expected(&scenario);
    let scenario = Arc::new(scenario);
    let live = Arc::new(Live::default());
    if let Some(addr) = opts.metrics_addr {
        let bound = metrics::spawn(addr, live.clone(), total)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        progress(&format!("metrics on http://{bound}/metrics"));
    }
    let mut self_probe = probe::SelfProbe::start();
    let start = Instant::now() + Duration::from_millis(100);
    // Long enough for what is in flight on a loaded host, short for short test runs.
    let drain =
        (scenario.duration / 4).clamp(Duration::from_millis(250), Duration::from_millis(1500));
    let hard_stop = start + plan.media_end + drain + Duration::from_secs(15);
    // Distinct meeting IDs for every run of this process (capacity steps reuse a relay).
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run_tag = std::process::id().wrapping_add(RUNS.fetch_add(1, Relaxed).wrapping_mul(7919));
    let keys = plan
        .meetings
        .iter()
        .map(|&m| Ok((m, Arc::new(seal::MeetingKey::generate()?))))
        .collect::<anyhow::Result<std::collections::HashMap<_, _>>>()?;
    let tallies: std::collections::HashMap<usize, Arc<Mutex<Tally>>> = plan
        .meetings
        .iter()
        .map(|&m| (m, Arc::new(Mutex::new(Tally::new(m)))))
        .collect();
    let mut tasks = Vec::with_capacity(total);
    for (n, slot) in plan.slots.iter().enumerate() {
        let m = slot.meeting;
        let tally = tallies[&m].clone();
        let meeting_id = scenario.meeting_id(m, run_tag);
        let passcode = scenario.passcode(m);
        let p = participant::Plan {
            scenario: scenario.clone(),
            relay: addr,
            credential: admission.credential(&meeting_id, &passcode, slot.seat),
            meeting_id,
            passcode,
            key: keys[&m].clone(),
            slot: slot.clone(),
            index: n,
            start,
            drain,
            live: live.clone(),
        };
        let client = clients[n % clients.len()].clone();
        // Every participant stops by this time, whatever the relay does.
        tasks.push(tokio::spawn(async move {
            if tokio::time::timeout_at(hard_stop.into(), participant::run(client, p, tally))
                .await
                .is_err()
            {
                tracing::warn!("participant did not finish in time; abandoned");
            }
        }));
    }

    let attack_live = Arc::new(attack::AttackLive::default());
    if let Some(a) = scenario.attackers.clone() {
        let ids: Vec<String> = plan
            .meetings
            .iter()
            .map(|&m| scenario.meeting_id(m, run_tag))
            .collect();
        for source in 0..a.sources {
            tasks.push(tokio::spawn(attack::run_source(
                a.clone(),
                source,
                addr,
                fingerprint,
                ids.clone(),
                start + plan.media_end,
                attack_live.clone(),
            )));
        }
    }
    let ticker = async {
        let begun = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = (0u64, 0u64);
        loop {
            tick.tick().await;
            let joined = live.joined.load(Relaxed);
            let rx: u64 = live.received.iter().map(|c| c.load(Relaxed)).sum();
            let p99 = bucket_quantile_ms(&live.latency.snapshot(), 0.99);
            let skew = bucket_quantile_ms(&live.send_skew.snapshot(), 0.99);
            let cpu = self_probe.sample();
            if let Some(p) = relay_probe.as_mut() {
                p.sample().await;
            }
            let secs = begun.elapsed().as_secs_f64();
            progress(&format!(
                "[{secs:>4.0}s] connected {}/{total}  joins/s {}  rx {}/s  latency p99 <= {p99:.1} ms  send skew p99 <= {skew:.1} ms  loadgen CPU {:.0}%  auth failures {}",
                live.connected.load(Relaxed),
                joined - last.0,
                rx - last.1,
                cpu.cpu_percent(),
                live.decrypt_failures.load(Relaxed),
            ));
            if let Some(f) = series.as_mut() {
                let relay = relay_probe.as_ref().map(|p| {
                    let keep = |k: &String| {
                        probe::RELAY_COUNTERS.contains(&k.as_str()) || k.starts_with("process_")
                    };
                    p.last()
                        .iter()
                        .filter(|(k, _)| keep(k))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect::<std::collections::BTreeMap<_, _>>()
                });
                let line = serde_json::json!({
                    "t": secs, "connected": live.connected.load(Relaxed), "joined": joined,
                    "join_failed": live.join_failed.load(Relaxed), "received": rx,
                    "latency_p99_ms_bound": p99, "send_skew_p99_ms_bound": skew,
                    "loadgen_cpu_seconds": cpu.cpu_seconds, "relay": relay,
                });
                let _ = writeln!(f, "{line}");
            }
            last = (joined, rx);
        }
    };
    let gather = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    tokio::select! {
        () = gather => {}
        () = ticker => {}
    }
    let loadgen_use = self_probe.sample();
    let relay_figures = match (&relay, relay_probe.as_mut()) {
        (_, Some(p)) => {
            p.sample().await;
            Some(p.figures())
        }
        (Some(r), None) => Some(probe::in_process(&r.stats.snapshot())),
        (None, None) => None,
    };
    let first_join = plan
        .slots
        .iter()
        .filter_map(|s| s.stints.first())
        .map(|s| s.join)
        .min()
        .unwrap_or_default();
    let load = |a: &[std::sync::atomic::AtomicU64; 3]| {
        Kinds::from_array([0, 1, 2].map(|i| a[i].load(Relaxed)))
    };
    let mut report = Report {
        provenance: report::Provenance::here(&scenario, shard),
        meetings: plan.meetings.len(),
        participants: total,
        expected,
        joins: live.joined.load(Relaxed),
        join_failed: live.join_failed.load(Relaxed),
        sent: load(&live.sent),
        received: load(&live.received),
        bytes_sent: live.bytes_sent.load(Relaxed),
        bytes_received: live.bytes_received.load(Relaxed),
        media_seconds: (plan.media_end - first_join).as_secs_f64(),
        decrypt_failures: live.decrypt_failures.load(Relaxed),
        loadgen: loadgen_use,
        relay: relay_figures,
        pending: scenario.pending.clone(),
        attack: scenario.attackers.as_ref().map(|_| attack_live.figures()),
        ..Report::default()
    };
    report.add_tallies(
        tallies
            .values()
            .map(|t| std::mem::take(&mut *t.lock().unwrap_or_else(|p| p.into_inner())))
            .collect(),
    );
    report.warnings = bottleneck_warnings(&report);
    report.check(&scenario.thresholds);
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    Ok(report)
}

/// Loud warnings when loadgen itself limited the run, so a saturated generator is
/// not mistaken for a saturated relay.
fn bottleneck_warnings(r: &Report) -> Vec<String> {
    let mut w = Vec::new();
    let cpu = r.loadgen.cpu_percent();
    if cpu > 85.0 {
        w.push(format!("LOADGEN IS THE BOTTLENECK: it used {cpu:.0}% of its {} cores; latency and loss include its own queueing", r.loadgen.cores));
    }
    if let Some(skew) = r.hist.send_skew.quantile_ms(0.99) {
        if skew > 20.0 {
            w.push(format!("LOADGEN SENT LATE: send skew p99 {skew:.1} ms (> 20 ms); the offered load was lower and burstier than planned"));
        }
    }
    w
}
