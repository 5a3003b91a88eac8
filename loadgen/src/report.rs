//! What a run measured: raw counts and histograms (mergeable across shards), the
//! figures derived from them, threshold verdicts, and the human summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hist::{Hist, Millis};
use crate::schedule::Expected;
use crate::tally::Tally;
use crate::threshold::{Threshold, Verdict};

/// Per media kind: audio, video, screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Kinds {
    /// Audio.
    pub audio: u64,
    /// Camera video.
    pub video: u64,
    /// Screen share.
    pub screen: u64,
}

impl Kinds {
    /// From an array indexed by [`crate::tally::Kind`].
    pub fn from_array(a: [u64; 3]) -> Kinds {
        Kinds {
            audio: a[0],
            video: a[1],
            screen: a[2],
        }
    }
    fn add(&mut self, o: &Kinds) {
        self.audio += o.audio;
        self.video += o.video;
        self.screen += o.screen;
    }
}

/// The histograms behind the report, µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hists {
    /// Connect to admitted.
    pub join: Hist,
    /// Connect to the relay's first handshake flight.
    pub connect: Hist,
    /// First flight to TLS handshake complete.
    pub tls: Hist,
    /// Handshake complete to admitted.
    pub admit: Hist,
    /// Admitted to the first media object received.
    pub first_media: Hist,
    /// Audio latency, sender's seal to receiver's open.
    pub audio: Hist,
    /// Video latency.
    pub video: Hist,
    /// Screen-share latency.
    pub screen: Hist,
    /// Skipped group to the next complete group of that track.
    pub keyframe_recovery: Hist,
    /// How late loadgen sent against its schedule.
    pub send_skew: Hist,
}

impl Hists {
    fn add(&mut self, o: &Hists) {
        let pairs = [
            (&mut self.join, &o.join),
            (&mut self.connect, &o.connect),
            (&mut self.tls, &o.tls),
            (&mut self.admit, &o.admit),
            (&mut self.first_media, &o.first_media),
            (&mut self.audio, &o.audio),
            (&mut self.video, &o.video),
            (&mut self.screen, &o.screen),
            (&mut self.keyframe_recovery, &o.keyframe_recovery),
            (&mut self.send_skew, &o.send_skew),
        ];
        for (a, b) in pairs {
            a.add(b);
        }
    }

    fn latency(&self) -> Hist {
        let mut all = self.audio.clone();
        all.add(&self.video);
        all.add(&self.screen);
        all
    }
}

/// CPU and memory of a process over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUse {
    /// CPU seconds used during the run.
    pub cpu_seconds: f64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Cores available to the process.
    pub cores: usize,
    /// Resident memory at the start, bytes.
    pub rss_start_bytes: u64,
    /// Peak resident memory seen, bytes.
    pub rss_peak_bytes: u64,
}

impl ProcessUse {
    /// CPU use in percent of the available cores.
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_seconds / (self.wall_seconds * self.cores.max(1) as f64).max(1e-9)
    }
}

/// The relay's figures over the run: from its `/metrics`, or read in-process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayFigures {
    /// `in-process` or the scraped URL.
    pub source: String,
    /// The relay's CPU and memory (absent in-process: it shares loadgen's process).
    pub process: Option<ProcessUse>,
    /// Counter increases during the run, by metric name as in `docs/METRICS.md`.
    pub counters: BTreeMap<String, f64>,
}

/// Where and with what the run was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Shards merged into this report, as `I/N`.
    pub shards: Vec<String>,
    /// loadgen's version.
    pub loadgen_version: String,
    /// Wire protocol version.
    pub protocol_version: u64,
    /// OS and architecture.
    pub os: String,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Kernel release, when readable.
    pub kernel: Option<String>,
}

impl Provenance {
    /// This machine and build.
    pub fn here(scenario: &crate::Scenario, shard: crate::schedule::Shard) -> Provenance {
        Provenance {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            shards: vec![format!("{}/{}", shard.index, shard.count)],
            loadgen_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: orelay_proto::PROTOCOL_VERSION,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
        }
    }
}

/// The outcome of a run, as printed and as written to JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario, seed, versions, machine.
    pub provenance: Provenance,
    /// Meetings run.
    pub meetings: usize,
    /// Participants run.
    pub participants: usize,
    /// What the plan said would be sent.
    pub expected: Expected,
    /// Joins admitted (one per stint).
    pub joins: u64,
    /// Joins that failed.
    pub join_failed: u64,
    /// Objects sent.
    pub sent: Kinds,
    /// Objects received and authenticated, all receivers.
    pub received: Kinds,
    /// Sealed payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Seconds media was scheduled to flow (first join to media end).
    pub media_seconds: f64,
    /// Audio objects receivers expected from the sequence ranges they saw.
    pub audio_expected: u64,
    /// Of those, received.
    pub audio_got: u64,
    /// Groups whose first object arrived.
    pub groups_started: u64,
    /// Groups received completely.
    pub groups_complete: u64,
    /// Groups reset by the relay or never delivered.
    pub groups_skipped: u64,
    /// Payloads that failed authentication (should be 0).
    pub decrypt_failures: u64,
    /// Sends scheduled while their participant was still joining (sent on admission).
    pub send_catchup: u64,
    /// Each meeting's latency p99, ms (for fairness).
    pub meeting_latency_p99_ms: Vec<f64>,
    /// Each meeting's audio loss, percent.
    pub meeting_loss_percent: Vec<f64>,
    /// The histograms.
    pub hist: Hists,
    /// loadgen's own CPU and memory.
    pub loadgen: ProcessUse,
    /// The relay's figures, when known.
    pub relay: Option<RelayFigures>,
    /// Guessing attackers' outcomes, when the scenario had attackers.
    pub attack: Option<crate::attack::AttackFigures>,
    /// Threshold verdicts.
    pub thresholds: Vec<Verdict>,
    /// Parts of the scenario not run, and why.
    pub pending: Vec<String>,
    /// Loud warnings (loadgen saturated, ...).
    pub warnings: Vec<String>,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

impl Report {
    /// Folds participants' tallies into the report.
    pub fn add_tallies(&mut self, tallies: Vec<Tally>) {
        let mut meetings: BTreeMap<usize, (Hist, u64, u64)> = BTreeMap::new();
        for t in tallies {
            let h = &mut self.hist;
            h.join.add(&t.join);
            for (dst, src) in [&mut h.connect, &mut h.tls, &mut h.admit, &mut h.first_media]
                .into_iter()
                .zip(&t.join_phases)
            {
                dst.add(src);
            }
            for (dst, src) in [&mut h.audio, &mut h.video, &mut h.screen]
                .into_iter()
                .zip(&t.latency)
            {
                dst.add(src);
            }
            h.keyframe_recovery.add(&t.keyframe_recovery);
            h.send_skew.add(&t.send_skew);
            self.send_catchup += t.send_catchup;
            let (e, r) = t.audio_expected_received();
            self.audio_expected += e;
            self.audio_got += r;
            self.groups_started += t.groups_started;
            self.groups_complete += t.groups_complete;
            self.groups_skipped += t.groups_reset + t.group_gaps();
            let m = meetings.entry(t.meeting).or_default();
            for l in &t.latency {
                m.0.add(l);
            }
            m.1 += e;
            m.2 += r;
        }
        for (h, e, r) in meetings.into_values() {
            self.meeting_latency_p99_ms
                .push(h.quantile_ms(0.99).unwrap_or(f64::NAN));
            self.meeting_loss_percent.push(percent(e - r.min(e), e));
        }
    }

    /// Audio loss in percent.
    pub fn loss_percent(&self) -> f64 {
        percent(
            self.audio_expected - self.audio_got.min(self.audio_expected),
            self.audio_expected,
        )
    }

    /// Latency of every kind together.
    pub fn latency(&self) -> Millis {
        self.hist.latency().millis()
    }

    /// The value of a threshold metric (see [`crate::threshold::METRICS`]).
    pub fn value(&self, metric: &str) -> Option<f64> {
        let h = &self.hist;
        let worst = self
            .meeting_latency_p99_ms
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        match metric {
            "join_p50" => h.join.quantile_ms(0.5),
            "join_p99" => h.join.quantile_ms(0.99),
            "join_max" => h.join.quantile_ms(1.0),
            "latency_p50" => h.latency().quantile_ms(0.5),
            "latency_p99" => h.latency().quantile_ms(0.99),
            "audio_latency_p99" => h.audio.quantile_ms(0.99),
            "video_latency_p99" => h.video.quantile_ms(0.99),
            "screen_latency_p99" => h.screen.quantile_ms(0.99),
            "first_media_p99" => h.first_media.quantile_ms(0.99),
            "keyframe_recovery_p99" => Some(h.keyframe_recovery.quantile_ms(0.99).unwrap_or(0.0)),
            "loss" => Some(self.loss_percent()),
            "join_failures" => Some(self.join_failed as f64),
            "auth_failures" => Some(self.decrypt_failures as f64),
            "groups_skipped" => Some(self.groups_skipped as f64),
            "skipped_groups_percent" => Some(percent(
                self.groups_skipped,
                self.groups_started + self.groups_skipped,
            )),
            "send_skew_p99" => Some(h.send_skew.quantile_ms(0.99).unwrap_or(0.0)),
            "worst_meeting_latency_p99" => worst,
            "loadgen_cpu" => Some(self.loadgen.cpu_percent()),
            "attacker_admitted" => self.attack.map(|a| a.admitted as f64),
            "attacker_attempts" => self.attack.map(|a| a.attempts as f64),
            _ => None,
        }
    }

    /// Checks `thresholds`, replacing earlier verdicts; true when all held.
    pub fn check(&mut self, thresholds: &[Threshold]) -> bool {
        self.thresholds = thresholds
            .iter()
            .map(|t| t.check(self.value(&t.metric)))
            .collect();
        self.thresholds.iter().all(|v| v.passed)
    }

    /// Whether every threshold held.
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|v| v.passed)
    }

    /// Merges shard reports: counts and histograms add; per-meeting figures concatenate.
    pub fn merge(reports: &[Report]) -> Report {
        let mut out = Report::default();
        for r in reports {
            if out.provenance.scenario.is_empty() {
                out.provenance = Provenance {
                    shards: Vec::new(),
                    ..r.provenance.clone()
                };
            }
            out.provenance
                .shards
                .extend(r.provenance.shards.iter().cloned());
            out.meetings += r.meetings;
            out.participants += r.participants;
            let (e, x) = (&mut out.expected, &r.expected);
            e.joins += x.joins;
            e.audio += x.audio;
            e.video += x.video;
            e.screen += x.screen;
            out.joins += r.joins;
            out.join_failed += r.join_failed;
            out.sent.add(&r.sent);
            out.received.add(&r.received);
            out.bytes_sent += r.bytes_sent;
            out.bytes_received += r.bytes_received;
            out.media_seconds = out.media_seconds.max(r.media_seconds);
            out.audio_expected += r.audio_expected;
            out.audio_got += r.audio_got;
            out.groups_started += r.groups_started;
            out.groups_complete += r.groups_complete;
            out.groups_skipped += r.groups_skipped;
            out.decrypt_failures += r.decrypt_failures;
            out.send_catchup += r.send_catchup;
            out.meeting_latency_p99_ms.extend(&r.meeting_latency_p99_ms);
            out.meeting_loss_percent.extend(&r.meeting_loss_percent);
            out.hist.add(&r.hist);
            out.loadgen.cpu_seconds += r.loadgen.cpu_seconds;
            out.loadgen.cores += r.loadgen.cores;
            out.loadgen.wall_seconds = out.loadgen.wall_seconds.max(r.loadgen.wall_seconds);
            out.loadgen.rss_peak_bytes += r.loadgen.rss_peak_bytes;
            out.loadgen.rss_start_bytes += r.loadgen.rss_start_bytes;
            if let Some(a) = &r.attack {
                out.attack.get_or_insert_with(Default::default).add(a);
            }
            out.pending.extend(r.pending.iter().cloned());
            out.warnings.extend(
                r.warnings
                    .iter()
                    .map(|w| format!("[{}] {w}", r.provenance.shards.join(","))),
            );
        }
        out.pending.sort();
        out.pending.dedup();
        out
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.hist;
        writeln!(
            f,
            "== loadgen summary: {} (seed {}, shards {}) ==",
            self.provenance.scenario,
            self.provenance.seed,
            self.provenance.shards.join(",")
        )?;
        writeln!(
            f,
            "participants   {} in {} meetings; joins {} admitted of {} planned, {} failed",
            self.participants, self.meetings, self.joins, self.expected.joins, self.join_failed
        )?;
        writeln!(f, "join           {}", h.join.millis())?;
        writeln!(f, "  connect      {}", h.connect.millis())?;
        writeln!(f, "  tls          {}", h.tls.millis())?;
        writeln!(f, "  admit        {}", h.admit.millis())?;
        writeln!(f, "  first media  {}", h.first_media.millis())?;
        let e = &self.expected;
        writeln!(
            f,
            "sent           audio {} / {} planned  video {} / {}  screen {} / {}",
            self.sent.audio, e.audio, self.sent.video, e.video, self.sent.screen, e.screen
        )?;
        writeln!(
            f,
            "received       audio {}  video {}  screen {}  (all receivers)",
            self.received.audio, self.received.video, self.received.screen
        )?;
        writeln!(f, "latency audio  {}", h.audio.millis())?;
        writeln!(f, "latency video  {}", h.video.millis())?;
        writeln!(f, "latency screen {}", h.screen.millis())?;
        writeln!(
            f,
            "loss           audio {:.3}%  groups complete {}  skipped {}  keyframe recovery {}",
            self.loss_percent(),
            self.groups_complete,
            self.groups_skipped,
            h.keyframe_recovery.millis()
        )?;
        let secs = self.media_seconds.max(1e-9);
        writeln!(f, "throughput     out {:.1} Mbit/s  in {:.1} Mbit/s over {:.1} s; {} payloads failed authentication", self.bytes_sent as f64 * 8.0 / secs / 1e6, self.bytes_received as f64 * 8.0 / secs / 1e6, self.media_seconds, self.decrypt_failures)?;
        writeln!(f, "fairness       meeting latency p99: median {:.2} ms, worst {:.2} ms; meeting loss: median {:.3}%, worst {:.3}%", median(&self.meeting_latency_p99_ms), self.value("worst_meeting_latency_p99").unwrap_or(0.0), median(&self.meeting_loss_percent), self.meeting_loss_percent.iter().copied().fold(0.0, f64::max))?;
        writeln!(f, "loadgen        CPU {:.0}% of {} cores ({:.1} s)  RSS {:.0} MiB  send skew {}  catch-up sends {}", self.loadgen.cpu_percent(), self.loadgen.cores, self.loadgen.cpu_seconds, self.loadgen.rss_peak_bytes as f64 / 1048576.0, h.send_skew.millis(), self.send_catchup)?;
        if let Some(r) = &self.relay {
            write!(f, "relay ({})", r.source)?;
            if let Some(p) = &r.process {
                let n = self.participants.max(1) as f64;
                write!(f, "  CPU {:.0}% of {} cores  RSS peak {:.0} MiB ({:.1} KiB/participant over the start), {:.3} ms CPU/participant/s", p.cpu_percent(), p.cores, p.rss_peak_bytes as f64 / 1048576.0, p.rss_peak_bytes.saturating_sub(p.rss_start_bytes) as f64 / 1024.0 / n, 1000.0 * p.cpu_seconds / p.wall_seconds.max(1e-9) / n)?;
            }
            writeln!(f)?;
            for (k, v) in &r.counters {
                writeln!(f, "  {k:<44} {v}")?;
            }
        }
        if let Some(a) = &self.attack {
            writeln!(f, "attackers      {} guesses: {} admitted, {} rejected, {} throttled, {} refused or timed out", a.attempts, a.admitted, a.rejected, a.throttled, a.refused)?;
        }
        for p in &self.pending {
            writeln!(f, "not run        {p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "WARNING        {w}")?;
        }
        if !self.thresholds.is_empty() {
            writeln!(f, "thresholds")?;
            for v in &self.thresholds {
                let mark = if v.passed { "✓" } else { "✗" };
                writeln!(f, "  {mark} {:<32} measured {:.3}", v.threshold, v.value)?;
            }
        }
        Ok(())
    }
}
