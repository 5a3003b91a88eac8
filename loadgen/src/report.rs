//! What a run measured: live counters for the progress line, per-participant tallies
//! merged at the end, and the summary (human and JSON).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use orelay_relay::telemetry::AtomicHistogram;
use serde::Serialize;

/// Counters updated live by every participant.
#[derive(Debug, Default)]
pub struct Live {
    /// Participants admitted.
    pub joined: AtomicU64,
    /// Joins that failed.
    pub join_failed: AtomicU64,
    /// Video objects sent.
    pub video_sent: AtomicU64,
    /// Audio objects sent.
    pub audio_sent: AtomicU64,
    /// Video objects received and authenticated.
    pub video_received: AtomicU64,
    /// Audio objects received and authenticated.
    pub audio_received: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Payloads that failed authentication.
    pub decrypt_failures: AtomicU64,
    /// Audio objects expected so far, from the sequence ranges receivers saw.
    pub audio_expected: AtomicU64,
    /// End-to-end latency of every received object (for `/metrics`).
    pub latency: AtomicHistogram,
    /// Time from connect to admission (for `/metrics`).
    pub join_time: AtomicHistogram,
}

/// Sequence bookkeeping for one received audio track.
#[derive(Debug, Default, Clone, Copy)]
struct AudioSeq {
    first: u64,
    last: u64,
    count: u64,
}

/// Group bookkeeping for one received video track layer.
#[derive(Debug, Default, Clone, Copy)]
struct GroupSeq {
    last: Option<u64>,
    gaps: u64,
}

/// One participant's receive-side measurements.
#[derive(Debug)]
pub struct Tally {
    /// End-to-end latency, microseconds.
    pub latency_us: Histogram<u64>,
    audio: HashMap<(u64, u64), AudioSeq>,
    groups: HashMap<(u64, u64), GroupSeq>,
    /// Groups received completely.
    pub groups_complete: u64,
    /// Groups the relay reset because this subscriber fell behind.
    pub groups_reset: u64,
}

/// A latency histogram: 1 us to 1 hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|e| panic!("fixed histogram bounds rejected: {e}"))
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            latency_us: histogram(),
            audio: HashMap::new(),
            groups: HashMap::new(),
            groups_complete: 0,
            groups_reset: 0,
        }
    }
}

impl Tally {
    /// Records an audio object's arrival; returns how many more objects this makes
    /// expected (the growth of the track's sequence range).
    pub fn audio(&mut self, publisher: u64, track: u64, seq: u64, latency_us: u64) -> u64 {
        let mut before = 0;
        let s = self
            .audio
            .entry((publisher, track))
            .and_modify(|s| before = s.last - s.first + 1)
            .or_insert(AudioSeq {
                first: seq,
                last: seq,
                count: 0,
            });
        s.first = s.first.min(seq);
        s.last = s.last.max(seq);
        s.count += 1;
        let grew = (s.last - s.first + 1) - before;
        let _ = self.latency_us.record(latency_us.max(1));
        grew
    }

    /// Records a video object's arrival.
    pub fn video(&mut self, latency_us: u64) {
        let _ = self.latency_us.record(latency_us.max(1));
    }

    /// Records that a group started arriving, noting groups that never did.
    pub fn group_started(&mut self, publisher: u64, track: u64, group: u64) {
        let g = self.groups.entry((publisher, track)).or_default();
        if let Some(last) = g.last {
            if group > last + 1 {
                g.gaps += group - last - 1;
            }
        }
        g.last = Some(g.last.map_or(group, |l| l.max(group)));
    }

    /// Audio objects expected (from the sequence numbers seen) and received.
    fn audio_expected_received(&self) -> (u64, u64) {
        self.audio
            .values()
            .fold((0, 0), |(e, r), s| (e + s.last - s.first + 1, r + s.count))
    }

    fn group_gaps(&self) -> u64 {
        self.groups.values().map(|g| g.gaps).sum()
    }
}

/// Distribution summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Millis {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Millis {
    fn from_us(h: &Histogram<u64>) -> Millis {
        if h.is_empty() {
            return Millis::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Millis {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// The outcome of a run, as printed and as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Meetings simulated.
    pub meetings: usize,
    /// Participants attempted.
    pub participants: usize,
    /// Participants admitted.
    pub joined: u64,
    /// Joins that failed.
    pub join_failed: u64,
    /// Time from connect to admission.
    pub join_ms: Millis,
    /// Seconds media flowed.
    pub media_seconds: f64,
    /// Video objects sent.
    pub video_sent: u64,
    /// Video objects received (all subscribers).
    pub video_received: u64,
    /// Audio objects sent.
    pub audio_sent: u64,
    /// Audio objects received (all subscribers).
    pub audio_received: u64,
    /// End-to-end latency, sender's seal to receiver's open.
    pub latency_ms: Millis,
    /// Audio loss: objects missing from the sequence ranges each receiver saw, percent.
    pub audio_loss_percent: f64,
    /// Video groups received completely.
    pub groups_complete: u64,
    /// Video groups skipped: reset by the relay, or never delivered.
    pub groups_skipped: u64,
    /// Payloads that failed authentication (should be 0).
    pub decrypt_failures: u64,
    /// Payload throughput received, Mbit/s.
    pub receive_mbps: f64,
    /// Counters of the in-process relay, when there was one.
    pub relay: Option<RelaySummary>,
}

/// The in-process relay's view of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RelaySummary {
    /// Groups dropped for slow subscribers.
    pub groups_dropped: u64,
    /// Audio datagrams not forwarded.
    pub datagrams_dropped: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Connections closed by the relay, by close code.
    pub closes: std::collections::BTreeMap<&'static str, u64>,
}

/// Builds the report from live counters and merged tallies.
pub fn build(
    scenario: &crate::Scenario,
    live: &Live,
    join_us: &Histogram<u64>,
    tallies: &[Tally],
    media: Duration,
    relay: Option<RelaySummary>,
) -> Report {
    let mut latency = histogram();
    let (mut expected, mut got, mut complete, mut skipped) = (0, 0, 0, 0);
    for t in tallies {
        let _ = latency.add(&t.latency_us);
        let (e, r) = t.audio_expected_received();
        expected += e;
        got += r.min(e);
        complete += t.groups_complete;
        skipped += t.groups_reset + t.group_gaps();
    }
    let secs = media.as_secs_f64().max(1e-9);
    Report {
        meetings: scenario.meetings,
        participants: scenario.total_participants(),
        joined: live.joined.load(Relaxed),
        join_failed: live.join_failed.load(Relaxed),
        join_ms: Millis::from_us(join_us),
        media_seconds: media.as_secs_f64(),
        video_sent: live.video_sent.load(Relaxed),
        video_received: live.video_received.load(Relaxed),
        audio_sent: live.audio_sent.load(Relaxed),
        audio_received: live.audio_received.load(Relaxed),
        latency_ms: Millis::from_us(&latency),
        audio_loss_percent: if expected == 0 {
            0.0
        } else {
            100.0 * (expected - got) as f64 / expected as f64
        },
        groups_complete: complete,
        groups_skipped: skipped,
        decrypt_failures: live.decrypt_failures.load(Relaxed),
        receive_mbps: live.bytes_received.load(Relaxed) as f64 * 8.0 / secs / 1e6,
        relay,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "== loadgen summary ==")?;
        writeln!(
            f,
            "participants   {} joined of {} in {} meetings ({} failed)",
            self.joined, self.participants, self.meetings, self.join_failed
        )?;
        writeln!(
            f,
            "join time      p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            self.join_ms.p50, self.join_ms.p99, self.join_ms.max
        )?;
        writeln!(
            f,
            "video objects  sent {}  received {}  (groups complete {}, skipped {})",
            self.video_sent, self.video_received, self.groups_complete, self.groups_skipped
        )?;
        writeln!(
            f,
            "audio objects  sent {}  received {}  loss {:.3}%",
            self.audio_sent, self.audio_received, self.audio_loss_percent
        )?;
        writeln!(
            f,
            "latency        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (end to end, sealed to opened)",
            self.latency_ms.p50, self.latency_ms.p99, self.latency_ms.max
        )?;
        writeln!(
            f,
            "throughput     {:.1} Mbit/s received over {:.1} s; {} payloads failed authentication",
            self.receive_mbps, self.media_seconds, self.decrypt_failures
        )?;
        if let Some(r) = &self.relay {
            writeln!(
                f,
                "relay          groups dropped {}  datagrams dropped {}  keyframe requests {}  closes {:?}",
                r.groups_dropped, r.datagrams_dropped, r.keyframe_requests, r.closes
            )?;
        }
        Ok(())
    }
}
