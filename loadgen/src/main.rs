//! `loadgen`: run simulated meetings against a relay and report what users felt.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use orelay_loadgen::{Admission, LocalIssuer, Scenario, Target};

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
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Relay address as IP:port. Without it a relay starts in-process on 127.0.0.1.
    #[arg(long, requires = "cert_fingerprint")]
    relay: Option<std::net::SocketAddr>,
    /// SHA-256 fingerprint of the relay's certificate (64 hex digits, as `relay` prints).
    #[arg(long)]
    cert_fingerprint: Option<String>,
    /// Number of meetings.
    #[arg(long, default_value_t = 20)]
    meetings: usize,
    /// Participants per meeting; each publishes audio and video and subscribes to all others.
    #[arg(long, default_value_t = 6)]
    participants: usize,
    /// Seconds of media after the join window (participants send from the moment they join).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds over which joins are spread (0.1 for a storm).
    #[arg(long, default_value_t = 2.0)]
    join_window: f64,
    /// Video frames per second.
    #[arg(long, default_value_t = 15)]
    video_fps: u32,
    /// Comma-separated simulcast layer bitrates in kbit/s, lowest first.
    #[arg(long, default_value = "150,500", value_delimiter = ',')]
    layer_kbps: Vec<u32>,
    /// Simulcast layer subscribers receive (0 = lowest).
    #[arg(long, default_value_t = 0)]
    subscribe_layer: u8,
    /// Milliseconds between keyframes (a new group each time).
    #[arg(long, default_value_t = 2000)]
    keyframe_interval_ms: u64,
    /// Audio packets per second per participant.
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Client UDP sockets to spread participants over.
    #[arg(long, default_value_t = 8)]
    client_sockets: usize,
    /// Meeting IDs are this prefix plus the meeting number, so another client can join
    /// a loadgen meeting [default: derived from the process ID].
    #[arg(long)]
    meeting_prefix: Option<String>,
    /// Passcode of every meeting [default: pass-<meeting number>].
    #[arg(long)]
    passcode: Option<String>,
    /// Serve live run metrics (Prometheus) on this TCP address, e.g. 127.0.0.1:9465.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// With --relay: the token-signing private key (written by `relay keygen`) whose
    /// public key the relay accepts; loadgen mints a token per participant.
    #[arg(long, value_name = "FILE", conflicts_with = "host_secret")]
    token_key: Option<PathBuf>,
    /// With --relay in open mode: the relay's host secret.
    #[arg(long, env = "ORELAY_HOST_SECRET", hide_env_values = true)]
    host_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    orelay_relay::logging::init("warn");
    let Command::Run(args) = Cli::parse().command;
    let scenario = Scenario {
        meetings: args.meetings,
        participants: args.participants,
        duration: Duration::from_secs(args.duration),
        join_window: Duration::try_from_secs_f64(args.join_window)
            .context("join_window must be a non-negative number of seconds")?,
        audio_pps: args.audio_pps,
        video_fps: args.video_fps,
        layer_kbps: args.layer_kbps,
        subscribe_layer: args.subscribe_layer,
        keyframe_interval: Duration::from_millis(args.keyframe_interval_ms),
        client_sockets: args.client_sockets,
        meeting_prefix: args.meeting_prefix,
        passcode: args.passcode,
        ..Scenario::default()
    };
    let target = match (args.relay, args.cert_fingerprint) {
        (Some(addr), Some(fp)) => Target::External {
            addr,
            fingerprint: orelay_client::parse_fingerprint(&fp)
                .context("--cert-fingerprint must be 64 hex digits (colons allowed)")?,
            admission: match (args.token_key, args.host_secret) {
                (Some(path), _) => Admission::Tokens(Arc::new(LocalIssuer::from_key_file(&path)?)),
                (None, Some(secret)) => Admission::HostSecret(secret),
                (None, None) => anyhow::bail!(
                    "--relay needs --token-key FILE (the private key from `relay keygen` whose \
                     public key the relay accepts) or, for an open-mode relay, --host-secret"
                ),
            },
        },
        _ => Target::InProcess,
    };
    if matches!(target, Target::InProcess) {
        eprintln!("no --relay given: starting a relay in-process on 127.0.0.1");
    }
    eprintln!(
        "running {} meetings x {} participants for {} s",
        scenario.meetings,
        scenario.participants,
        scenario.duration.as_secs()
    );
    let report = orelay_loadgen::run_observed(scenario, target, args.metrics_addr, |line| {
        eprintln!("{line}")
    })
    .await?;
    println!("{report}");
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
