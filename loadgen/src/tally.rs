//! What one participant measured, merged into the report at the end. Live counters
//! for the progress line and `/metrics` are in [`Live`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use orelay_relay::telemetry::AtomicHistogram;

use crate::hist::Hist;

/// Media kinds as measured (index into per-kind arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Audio datagrams.
    Audio = 0,
    /// Camera video.
    Video = 1,
    /// Screen share.
    Screen = 2,
}

/// Counters updated live by every participant.
#[derive(Debug, Default)]
pub struct Live {
    /// Joins admitted (one per stint).
    pub joined: AtomicU64,
    /// Joins that failed.
    pub join_failed: AtomicU64,
    /// Participants connected now.
    pub connected: AtomicU64,
    /// Objects sent, by [`Kind`].
    pub sent: [AtomicU64; 3],
    /// Objects received and authenticated, by [`Kind`].
    pub received: [AtomicU64; 3],
    /// Payload bytes sent (sealed).
    pub bytes_sent: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Payloads that failed authentication.
    pub decrypt_failures: AtomicU64,
    /// Audio objects expected so far, from the sequence ranges receivers saw.
    pub audio_expected: AtomicU64,
    /// End-to-end latency of every received object (for `/metrics`), nanoseconds.
    pub latency: AtomicHistogram,
    /// Time from connect to admission (for `/metrics`).
    pub join_time: AtomicHistogram,
    /// How late sends were against their schedule (for `/metrics`).
    pub send_skew: AtomicHistogram,
}

#[derive(Debug, Default, Clone, Copy)]
struct AudioSeq {
    first: u64,
    last: u64,
    count: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct GroupSeq {
    last: Option<u64>,
    gaps: u64,
    /// Since when this track has had a skipped group and no complete one.
    broken_since: Option<Instant>,
}

/// One participant's measurements.
#[derive(Debug, Default)]
pub struct Tally {
    /// Meeting number.
    pub meeting: usize,
    /// End-to-end latency by [`Kind`], µs.
    pub latency: [Hist; 3],
    /// Join phases, µs: connect (first server flight), TLS done, admitted, first media.
    pub join_phases: [Hist; 4],
    /// Whole join (connect to admitted), µs.
    pub join: Hist,
    /// Skipped group to the next complete group of the same track, µs.
    pub keyframe_recovery: Hist,
    /// How late each scheduled send went out, µs (sends scheduled while joining excluded).
    pub send_skew: Hist,
    /// Sends scheduled while the join was still in progress, sent on admission.
    pub send_catchup: u64,
    audio: HashMap<(u64, u64), AudioSeq>,
    groups: HashMap<(u64, u64), GroupSeq>,
    /// Groups whose first object arrived.
    pub groups_started: u64,
    /// Groups received completely.
    pub groups_complete: u64,
    /// Groups the relay reset because this subscriber fell behind.
    pub groups_reset: u64,
    /// Waiting for the first media object since admission (cleared on arrival).
    pub admitted_at: Option<Instant>,
}

impl Tally {
    /// A tally for a participant of meeting `meeting`.
    pub fn new(meeting: usize) -> Tally {
        Tally {
            meeting,
            ..Tally::default()
        }
    }

    fn arrived(&mut self, kind: Kind, latency_us: u64) {
        self.latency[kind as usize].record_us(latency_us);
        if let Some(at) = self.admitted_at.take() {
            self.join_phases[3].record_us(at.elapsed().as_micros() as u64);
        }
    }

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
        self.arrived(Kind::Audio, latency_us);
        grew
    }

    /// Records a video or screen object's arrival.
    pub fn object(&mut self, kind: Kind, latency_us: u64) {
        self.arrived(kind, latency_us);
    }

    /// Records that a group started arriving, noting groups that never did.
    pub fn group_started(&mut self, publisher: u64, track: u64, group: u64) {
        self.groups_started += 1;
        let g = self.groups.entry((publisher, track)).or_default();
        if let Some(last) = g.last {
            if group > last + 1 {
                g.gaps += group - last - 1;
                g.broken_since.get_or_insert_with(Instant::now);
            }
        }
        g.last = Some(g.last.map_or(group, |l| l.max(group)));
    }

    /// Records a complete group; closes a keyframe-recovery interval if one was open.
    pub fn group_complete(&mut self, publisher: u64, track: u64) {
        self.groups_complete += 1;
        let g = self.groups.entry((publisher, track)).or_default();
        if let Some(since) = g.broken_since.take() {
            self.keyframe_recovery
                .record_us(since.elapsed().as_micros() as u64);
        }
    }

    /// Records a group the relay reset.
    pub fn group_reset(&mut self, publisher: u64, track: u64) {
        self.groups_reset += 1;
        let g = self.groups.entry((publisher, track)).or_default();
        g.broken_since.get_or_insert_with(Instant::now);
    }

    /// Audio objects expected (from the sequence numbers seen) and received.
    pub fn audio_expected_received(&self) -> (u64, u64) {
        self.audio.values().fold((0, 0), |(e, r), s| {
            let expected = s.last - s.first + 1;
            (e + expected, r + s.count.min(expected))
        })
    }

    /// Groups that never arrived (gaps in group numbers).
    pub fn group_gaps(&self) -> u64 {
        self.groups.values().map(|g| g.gaps).sum()
    }

    /// Folds another tally of the same participant (a later stint) into this one.
    pub fn absorb(&mut self, other: Tally) {
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            a.add(b);
        }
        for (a, b) in self.join_phases.iter_mut().zip(&other.join_phases) {
            a.add(b);
        }
        self.join.add(&other.join);
        self.keyframe_recovery.add(&other.keyframe_recovery);
        self.send_skew.add(&other.send_skew);
        self.send_catchup += other.send_catchup;
        self.groups_started += other.groups_started;
        self.groups_complete += other.groups_complete;
        self.groups_reset += other.groups_reset;
        // Sequence state is per connection: a rejoin starts new ranges.
        let base = self.audio.len() as u64 + self.groups.len() as u64;
        for (i, (k, v)) in other.audio.into_iter().enumerate() {
            self.audio.insert((k.0 | (base + i as u64) << 48, k.1), v);
        }
        for (i, (k, v)) in other.groups.into_iter().enumerate() {
            self.groups.insert((k.0 | (base + i as u64) << 48, k.1), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_gaps_and_recovery_are_counted() {
        let mut t = Tally::new(0);
        for seq in [0, 1, 3, 4] {
            t.audio(7, 1, seq, 1000);
        }
        assert_eq!(t.audio_expected_received(), (5, 4));
        t.group_started(7, 2, 0);
        t.group_complete(7, 2);
        t.group_started(7, 2, 2);
        assert_eq!(t.group_gaps(), 1);
        t.group_complete(7, 2);
        assert_eq!(t.keyframe_recovery.count(), 1);
        t.group_reset(7, 2);
        t.group_started(7, 2, 3);
        t.group_complete(7, 2);
        assert_eq!(t.keyframe_recovery.count(), 2);
        let mut later = Tally::new(0);
        later.audio(7, 1, 100, 1000);
        t.absorb(later);
        assert_eq!(t.audio_expected_received(), (6, 5));
    }
}
