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

pub use crate::keying::Receiver;

/// One meeting's measurements (its participants share it: a tally per participant
/// would cost a set of histograms per connection).
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
    audio: HashMap<(Receiver, u64, u64), AudioSeq>,
    groups: HashMap<(Receiver, u64, u64), GroupSeq>,
    /// Groups whose first object arrived.
    pub groups_started: u64,
    /// Groups received completely.
    pub groups_complete: u64,
    /// Groups the relay reset because this subscriber fell behind.
    pub groups_reset: u64,
    /// Participants' key epochs and rekeys (E2EE runs).
    pub keys: crate::keying::RekeyWatch,
    /// Receivers admitted and waiting for their first media object.
    admitted: HashMap<Receiver, Instant>,
}

impl Tally {
    /// A tally for meeting `meeting`.
    pub fn new(meeting: usize) -> Tally {
        Tally {
            meeting,
            ..Tally::default()
        }
    }

    /// Notes that `receiver` was admitted now (first media is timed from here).
    pub fn admitted(&mut self, receiver: Receiver) {
        self.admitted.insert(receiver, Instant::now());
    }

    fn arrived(&mut self, receiver: Receiver, kind: Kind, latency_us: u64) {
        self.latency[kind as usize].record_us(latency_us);
        if let Some(at) = self.admitted.remove(&receiver) {
            self.join_phases[3].record_us(at.elapsed().as_micros() as u64);
        }
    }

    /// Records an audio object's arrival; returns how many more objects this makes
    /// expected (the growth of the track's sequence range).
    pub fn audio(
        &mut self,
        receiver: Receiver,
        publisher: u64,
        track: u64,
        seq: u64,
        latency_us: u64,
    ) -> u64 {
        let mut before = 0;
        let s = self
            .audio
            .entry((receiver, publisher, track))
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
        self.arrived(receiver, Kind::Audio, latency_us);
        grew
    }

    /// Records a video or screen object's arrival.
    pub fn object(&mut self, receiver: Receiver, kind: Kind, latency_us: u64) {
        self.arrived(receiver, kind, latency_us);
    }

    /// Records that a group started arriving, noting groups that never did.
    pub fn group_started(&mut self, receiver: Receiver, publisher: u64, track: u64, group: u64) {
        self.groups_started += 1;
        let g = self.groups.entry((receiver, publisher, track)).or_default();
        if let Some(last) = g.last {
            if group > last + 1 {
                g.gaps += group - last - 1;
                g.broken_since.get_or_insert_with(Instant::now);
            }
        }
        g.last = Some(g.last.map_or(group, |l| l.max(group)));
    }

    /// Records a complete group; closes a keyframe-recovery interval if one was open.
    pub fn group_complete(&mut self, receiver: Receiver, publisher: u64, track: u64) {
        self.groups_complete += 1;
        let g = self.groups.entry((receiver, publisher, track)).or_default();
        if let Some(since) = g.broken_since.take() {
            self.keyframe_recovery
                .record_us(since.elapsed().as_micros() as u64);
        }
    }

    /// Records a group the relay reset.
    pub fn group_reset(&mut self, receiver: Receiver, publisher: u64, track: u64) {
        self.groups_reset += 1;
        let g = self.groups.entry((receiver, publisher, track)).or_default();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_gaps_and_recovery_are_counted() {
        let mut t = Tally::new(0);
        for seq in [0, 1, 3, 4] {
            t.audio(1, 7, 1, seq, 1000);
        }
        // Another receiver of the same track keeps its own sequence range.
        t.audio(2, 7, 1, 9, 1000);
        assert_eq!(t.audio_expected_received(), (6, 5));
        t.group_started(1, 7, 2, 0);
        t.group_complete(1, 7, 2);
        t.group_started(1, 7, 2, 2);
        assert_eq!(t.group_gaps(), 1);
        t.group_complete(1, 7, 2);
        assert_eq!(t.keyframe_recovery.count(), 1);
        t.group_reset(1, 7, 2);
        t.group_started(1, 7, 2, 3);
        t.group_complete(1, 7, 2);
        assert_eq!(t.keyframe_recovery.count(), 2);
        t.admitted(5);
        t.object(5, Kind::Video, 10);
        t.object(5, Kind::Video, 10);
        assert_eq!(t.join_phases[3].count(), 1, "first media once per receiver");
    }
}
