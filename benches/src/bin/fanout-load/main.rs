//! `fanout-load`: the load side of the fan-out benchmark (`scripts/bench-fanout.sh`).
//!
//! - `cell`: one publisher (audio: several) and N subscribers on separate QUIC
//!   connections to a target (the relay, or `raw-forwarder`), paced media through a
//!   warm-up and a measured window, then one JSON line: delivered objects/s, loss,
//!   latency p50/p99, the target's CPU time per 1,000 delivered objects and RSS (from
//!   `/proc/PID/stat` and `/proc/PID/status`), and this process's own CPU so a
//!   saturated load core is reported rather than hidden;
//! - `idle`: join many participants that publish nothing, report RSS per participant;
//! - `report`: turn the JSON lines into a markdown table and one JSON document.
//!
//! Everything runs on one thread (the script pins it to its own core) and stops by
//! itself; it only talks to the address it is given.

mod cell;
mod idle;
mod procfs;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Load side of the fan-out benchmark: relay vs raw quinn forwarder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure one profile × N cell against one target; prints one JSON line.
    Cell(CellArgs),
    /// Join many idle participants and measure the target's memory per participant.
    Idle(IdleArgs),
    /// Print the JSON lines of a run as a markdown table and write one JSON document.
    Report(ReportArgs),
}

/// Which server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The relay: subscribers wait for `TrackPublished` and subscribe.
    Relay,
    /// `raw-forwarder`: it forwards to every joined subscriber; no subscription needed.
    Raw,
}

impl Target {
    /// The name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Target::Relay => "relay",
            Target::Raw => "raw",
        }
    }
}

/// A media profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// 30 objects/s × 10,000 B, 60-object (2 s) groups on streams.
    Video,
    /// 1,000 objects/s × 1,200 B, 100-object groups on streams.
    Small,
    /// 50 datagrams/s × 100 B from each of `--audio-publishers` publishers.
    Audio,
}

impl Profile {
    /// The name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Video => "video",
            Profile::Small => "small",
            Profile::Audio => "audio",
        }
    }
}

/// Arguments of `fanout-load cell`.
#[derive(Debug, clap::Args)]
pub struct CellArgs {
    /// Target kind.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Target address (loopback).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Target certificate SHA-256 fingerprint (64 hex digits).
    #[arg(long)]
    pub fingerprint: String,
    /// Target process ID, for CPU time and RSS.
    #[arg(long)]
    pub pid: u32,
    /// Media profile.
    #[arg(long, value_enum)]
    pub profile: Profile,
    /// Number of subscribers (each its own connection).
    #[arg(long)]
    pub subscribers: usize,
    /// Publishers in the audio profile (video and small have one).
    #[arg(long, default_value_t = 10)]
    pub audio_publishers: usize,
    /// Seconds of media before the measured window.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    pub window: f64,
    /// Seconds to keep receiving after the window (later arrivals count as lost).
    #[arg(long, default_value_t = 1.0)]
    pub drain: f64,
    /// Kernel clock ticks per second (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
    /// This process's CPU % of one core from which the load side counts as saturated.
    #[arg(long, default_value_t = 90.0)]
    pub saturated_pct: f64,
}

/// Arguments of `fanout-load idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Target kind (only reported).
    #[arg(long, value_enum, default_value = "relay")]
    pub target: Target,
    /// Target address (loopback).
    #[arg(long)]
    pub addr: SocketAddr,
    /// Target certificate SHA-256 fingerprint (64 hex digits).
    #[arg(long)]
    pub fingerprint: String,
    /// Target process ID, for RSS.
    #[arg(long)]
    pub pid: u32,
    /// Participants to join.
    #[arg(long, default_value_t = 5_000)]
    pub participants: usize,
    /// Participants per meeting.
    #[arg(long, default_value_t = 5)]
    pub per_meeting: usize,
    /// Joins in flight at once (keep it under the relay's `--max-unjoined`).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait after the last join before sampling.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Kernel clock ticks per second (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
}

/// Arguments of `fanout-load report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// File of JSON lines from `cell` and `idle`.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write all cells as one JSON document.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let line = match cli.command {
        Command::Cell(args) => cell::run(args).await?,
        Command::Idle(args) => idle::run(args).await?,
        Command::Report(args) => return report::run(args),
    };
    println!("{line}");
    // Leave without waiting for hundreds of connections to close gracefully.
    std::process::exit(0);
}
