//! `loadgen`: run simulated meetings against a relay and report what users felt.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use orelay_loadgen::capacity::{self, Search};
use orelay_loadgen::scenario::SizeDist;
use orelay_loadgen::threshold::Threshold;
use orelay_loadgen::{
    fleet, spec, Admission, LocalIssuer, Options, Report, Scenario, Shard, Target,
};

/// Load generator for Oblivious Relay: meetings of real QUIC clients with sealed media.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and print a summary (with no --relay, against an in-process relay).
    /// Exits 1 when a threshold fails.
    Run(RunArgs),
    /// Step the load up until a threshold breaks, bisect the edge, print the step table.
    Capacity(CapacityArgs),
    /// Turn a measured capacity and a forecast into relays per region.
    Plan(PlanArgs),
    /// Merge shard reports (JSON from `run --json`) into one; histograms are added.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Relay address as IP:port. Without it a relay starts in-process on 127.0.0.1.
    #[arg(long, requires = "cert_fingerprint")]
    relay: Option<std::net::SocketAddr>,
    /// SHA-256 fingerprint of the relay's certificate (64 hex digits, as `relay` prints).
    #[arg(long)]
    cert_fingerprint: Option<String>,
    /// The relay's metrics URL (e.g. http://127.0.0.1:9464/metrics): its CPU, memory
    /// and counters are sampled every second and reported.
    #[arg(long)]
    relay_metrics: Option<String>,
    /// With --relay: the token-signing private key (written by `relay keygen`) whose
    /// public key the relay accepts; loadgen mints a token per participant.
    #[arg(long, value_name = "FILE", conflicts_with = "host_secret")]
    token_key: Option<PathBuf>,
    /// With --relay in open mode: the relay's host secret.
    #[arg(long, env = "ORELAY_HOST_SECRET", hide_env_values = true)]
    host_secret: Option<String>,
}

/// The scenario: a file, then flags overriding it (defaults are the file's, else as shown).
#[derive(Debug, Args)]
struct ScenarioArgs {
    /// Scenario file (TOML; see docs/LOADGEN.md and loadgen/scenarios/).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Number of meetings [default: 20].
    #[arg(long)]
    meetings: Option<usize>,
    /// Participants in every meeting (a fixed size) [default: 6].
    #[arg(long)]
    participants: Option<usize>,
    /// Seconds of media after the last scheduled join [default: 30].
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds over which joins are spread evenly (a linear ramp) [default: 2].
    #[arg(long)]
    join_window: Option<f64>,
    /// Video frames per second [default: 15].
    #[arg(long)]
    video_fps: Option<u32>,
    /// Comma-separated simulcast layer bitrates in kbit/s, lowest first [default: 150,500].
    #[arg(long, value_delimiter = ',')]
    layer_kbps: Option<Vec<u32>>,
    /// Simulcast layer subscribers receive from speakers (0 = lowest) [default: 0].
    #[arg(long)]
    subscribe_layer: Option<u8>,
    /// Milliseconds between keyframes (a new group each time) [default: 2000].
    #[arg(long)]
    keyframe_interval_ms: Option<u64>,
    /// Audio packets per second per speaker [default: 50].
    #[arg(long)]
    audio_pps: Option<u32>,
    /// Speakers per meeting (send audio and all video layers) [default: everyone].
    #[arg(long)]
    speakers: Option<usize>,
    /// Share of publishers (speakers included) with the camera on, 0..=1 [default: 1].
    #[arg(long)]
    camera_on: Option<f64>,
    /// Video subscription: all, speaker or gallery:N [default: all].
    #[arg(long)]
    subscribe: Option<String>,
    /// Seed of every random choice [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Client UDP sockets to spread participants over [default: 8].
    #[arg(long)]
    client_sockets: Option<usize>,
    /// Meeting IDs are this prefix plus the meeting number, so another client can join
    /// a loadgen meeting [default: derived from the process ID].
    #[arg(long)]
    meeting_prefix: Option<String>,
    /// Passcode of every meeting [default: pass-<meeting number>].
    #[arg(long)]
    passcode: Option<String>,
    /// A threshold such as "join_p99 < 500ms" or "loss < 1%" (repeatable; added to the file's).
    #[arg(long = "threshold")]
    thresholds: Vec<String>,
}

impl ScenarioArgs {
    fn build(&self) -> anyhow::Result<Scenario> {
        let mut s = match &self.scenario {
            Some(p) => spec::load(p)?,
            None => Scenario::default(),
        };
        macro_rules! set {
            ($($f:ident => $to:ident),*) => { $(if let Some(v) = self.$f.clone() { s.$to = v; })* };
        }
        set!(meetings => meetings, video_fps => video_fps, layer_kbps => layer_kbps,
             subscribe_layer => subscribe_layer, audio_pps => audio_pps, camera_on => camera_on,
             seed => seed, client_sockets => client_sockets);
        if let Some(n) = self.participants {
            s.size = SizeDist::Fixed(n);
        }
        if let Some(d) = self.duration {
            s.duration = Duration::from_secs(d);
        }
        if let Some(w) = self.join_window {
            let over = Duration::try_from_secs_f64(w)
                .context("--join-window must be a non-negative number of seconds")?;
            s.arrival = orelay_loadgen::scenario::Arrival::Ramp { over };
        }
        if let Some(k) = self.keyframe_interval_ms {
            s.keyframe_interval = Duration::from_millis(k);
        }
        if let Some(n) = self.speakers {
            s.speakers = Some(n);
        }
        if let Some(sub) = &self.subscribe {
            s.subscribe = spec::parse_subscribe(sub).map_err(anyhow::Error::msg)?;
        }
        s.meeting_prefix = self.meeting_prefix.clone().or(s.meeting_prefix);
        s.passcode = self.passcode.clone().or(s.passcode);
        for t in &self.thresholds {
            s.thresholds
                .push(Threshold::parse(t).map_err(anyhow::Error::msg)?);
        }
        s.validate()?;
        Ok(s)
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Run only part I of N of the scenario (whole meetings, deterministic from the seed), e.g. 0/4.
    #[arg(long)]
    shard: Option<String>,
    /// Serve live run metrics (Prometheus) on this TCP address, e.g. 127.0.0.1:9465.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a JSON line a second (live figures) to this file.
    #[arg(long)]
    series: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Meetings in the first step.
    #[arg(long, default_value_t = 10)]
    start: usize,
    /// Never run more meetings than this.
    #[arg(long, default_value_t = 2000)]
    max: usize,
    /// Growth per step until a threshold breaks, percent (100 doubles).
    #[arg(long, default_value_t = 100)]
    growth_percent: usize,
    /// Stop bisecting when the edge is known to this many meetings.
    #[arg(long, default_value_t = 1)]
    resolution: usize,
    /// At most this many steps.
    #[arg(long, default_value_t = 12)]
    max_steps: usize,
    /// In-process relay only: its connection limit (a known capacity, for trying the search).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Also write the step table as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Participants one relay held (from `loadgen capacity`).
    #[arg(long)]
    capacity: f64,
    /// Participants (joins) per day.
    #[arg(long)]
    daily: f64,
    /// Share of the day's joins in the busiest hour, 0..=1.
    #[arg(long, default_value_t = 0.1)]
    peak_hour_share: f64,
    /// Average minutes a participant stays.
    #[arg(long, default_value_t = 40.0)]
    meeting_minutes: f64,
    /// Fill relays to at most this share of the measured capacity, 0..=1.
    #[arg(long, default_value_t = 0.7)]
    utilisation: f64,
    /// Availability zones per region; the peak must survive losing one.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Largest meeting expected (one meeting lives on one relay).
    #[arg(long, default_value_t = 1000)]
    largest_meeting: usize,
    /// A region and its traffic share as NAME=SHARE (repeatable) [default: global=1].
    #[arg(long = "region")]
    regions: Vec<String>,
    /// Also write the plan as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Shard reports to merge.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Write the merged report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn target(t: &TargetArgs) -> anyhow::Result<Target> {
    Ok(match (t.relay, &t.cert_fingerprint) {
        (Some(addr), Some(fp)) => Target::External {
            addr,
            fingerprint: orelay_client::parse_fingerprint(fp)
                .context("--cert-fingerprint must be 64 hex digits (colons allowed)")?,
            admission: match (&t.token_key, &t.host_secret) {
                (Some(path), _) => Admission::Tokens(Arc::new(LocalIssuer::from_key_file(path)?)),
                (None, Some(secret)) => Admission::HostSecret(secret.clone()),
                (None, None) => anyhow::bail!(
                    "--relay needs --token-key FILE (the private key from `relay keygen` whose \
                     public key the relay accepts) or, for an open-mode relay, --host-secret"
                ),
            },
        },
        _ => {
            eprintln!("no --relay given: starting a relay in-process on 127.0.0.1");
            Target::InProcess
        }
    })
}

fn write_json(path: &Option<PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(value)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A live progress line rewritten in place on a terminal; plain lines otherwise
/// (logs, CI). Lines that are not progress ticks (e.g. the metrics address) stay.
fn progress_printer() -> impl FnMut(&str) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    move |line: &str| {
        if tty && line.starts_with('[') {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

fn verdict(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: at least one threshold did not hold");
        ExitCode::FAILURE
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    orelay_relay::logging::init("warn");
    match Cli::parse().command {
        Command::Run(args) => {
            let scenario = args.scenario.build()?;
            let target = target(&args.target)?;
            let shard = args
                .shard
                .as_deref()
                .map(Shard::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "running scenario {:?}: {} meetings for {} s after the last join",
                scenario.name,
                scenario.meetings,
                scenario.duration.as_secs()
            );
            let opts = Options {
                shard,
                metrics_addr: args.metrics_addr,
                relay_metrics: args.target.relay_metrics.clone(),
                series: args.series,
            };
            let report =
                orelay_loadgen::run_with(scenario, target, opts, progress_printer()).await?;
            eprintln!(); // ends a progress line rewritten in place
            println!("{report}");
            write_json(&args.json, &report)?;
            Ok(verdict(report.passed()))
        }
        Command::Capacity(args) => {
            let mut base = args.scenario.build()?;
            if base.thresholds.is_empty() {
                for t in [
                    "join_p99 < 1s",
                    "latency_p99 < 150ms",
                    "loss < 1%",
                    "join_failures == 0",
                    "auth_failures == 0",
                ] {
                    base.thresholds
                        .push(Threshold::parse(t).map_err(anyhow::Error::msg)?);
                }
            }
            let tgt = match args.max_connections {
                Some(n) => Target::InProcessLimited(n),
                None => target(&args.target)?,
            };
            let search = Search::new(args.start, args.max, args.growth_percent, args.resolution);
            let relay_metrics = args.target.relay_metrics.clone();
            let cap = capacity::search(&base, search, args.max_steps, |s| {
                let opts = Options {
                    relay_metrics: relay_metrics.clone(),
                    ..Options::default()
                };
                let tgt = tgt.clone();
                async move {
                    eprintln!("step: {} meetings", s.meetings);
                    orelay_loadgen::run_with(s, tgt, opts, |_| {}).await
                }
            })
            .await?;
            println!("{cap}");
            write_json(&args.json, &cap)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let regions = if args.regions.is_empty() {
                vec![("global".to_owned(), 1.0)]
            } else {
                args.regions
                    .iter()
                    .map(|r| {
                        let (n, s) = r.split_once('=').context("--region must be NAME=SHARE")?;
                        Ok((
                            n.to_owned(),
                            s.parse::<f64>()
                                .context("--region share must be a number")?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let f = fleet::Forecast {
                capacity_per_relay: args.capacity,
                daily_participants: args.daily,
                peak_hour_share: args.peak_hour_share,
                meeting_minutes: args.meeting_minutes,
                target_utilisation: args.utilisation,
                zones: args.zones,
                largest_meeting: args.largest_meeting,
                regions,
            };
            let p = fleet::plan(&f)?;
            println!("{p}");
            write_json(&args.json, &p)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge(args) => {
            let reports = args
                .reports
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    serde_json::from_str::<Report>(&text)
                        .with_context(|| format!("{} is not a loadgen JSON report", p.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut merged = Report::merge(&reports);
            let thresholds = reports
                .first()
                .map(|r| {
                    r.thresholds
                        .iter()
                        .filter_map(|v| Threshold::parse(&v.threshold).ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            merged.check(&thresholds);
            println!("{merged}");
            write_json(&args.json, &merged)?;
            Ok(verdict(merged.passed()))
        }
    }
}
