//! Key-schedule measurements of one meeting (sans-IO: driven by `now` and events) and
//! the report's E2EE section.
//!
//! Rekey time is timed from a participant's leave (churn, not the end of the run) to
//! the moment every participant still in the meeting runs an epoch newer than any
//! epoch present when it left. "Newer than present at the leave" is what loadgen can
//! observe from outside the key schedule; a rekey started for an earlier leave also
//! satisfies it, so back-to-back leaves share one rekey.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::hist::Hist;

/// Who received: one ID per participant connection (stint).
pub type Receiver = u64;

/// Leaves waiting for their rekey, most per meeting; beyond, the oldest is dropped and
/// counted as abandoned (a meeting churning faster than it can rekey).
const MAX_PENDING: usize = 64;

#[derive(Debug)]
struct Pending {
    at: Instant,
    /// Every epoch present at the leave is at most this.
    before: u64,
    waiting: HashSet<Receiver>,
    /// Some participant reached a newer epoch (else a pending emptied by leaves only).
    reached: bool,
}

/// One meeting's view of its participants' epochs.
#[derive(Debug, Default)]
pub struct RekeyWatch {
    /// Participants in the meeting now and their epoch (`None`: not keyed yet).
    /// Bounded by the meeting's size.
    members: HashMap<Receiver, Option<u64>>,
    pending: VecDeque<Pending>,
    /// What was measured.
    pub figures: E2eeFigures,
}

impl RekeyWatch {
    /// `who` is in the meeting (admitted, possibly not keyed yet).
    pub fn joined(&mut self, who: Receiver) {
        self.members.insert(who, None);
    }

    /// `who` now runs `epoch`.
    pub fn epoch(&mut self, who: Receiver, epoch: u64, now: Instant) {
        if let Some(e) = self.members.get_mut(&who) {
            *e = Some(epoch);
        }
        self.figures.highest_epoch = self.figures.highest_epoch.max(epoch);
        for p in &mut self.pending {
            if epoch > p.before && p.waiting.remove(&who) {
                p.reached = true;
            }
        }
        self.settle(now);
    }

    /// `who` leaves; `churn` when this is a leave in the middle of the run (timed),
    /// not the run's end.
    pub fn left(&mut self, who: Receiver, churn: bool, now: Instant) {
        let had = self.members.remove(&who);
        for p in &mut self.pending {
            p.waiting.remove(&who);
        }
        if churn && had.is_some() && !self.members.is_empty() {
            let before = self.members.values().flatten().copied().max().unwrap_or(0);
            let before = before.max(had.flatten().unwrap_or(0));
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.figures.rekeys_abandoned += 1;
            }
            self.pending.push_back(Pending {
                at: now,
                before,
                waiting: self.members.keys().copied().collect(),
                reached: false,
            });
        }
        self.settle(now);
    }

    fn settle(&mut self, now: Instant) {
        let f = &mut self.figures;
        self.pending.retain(|p| {
            if !p.waiting.is_empty() {
                return true;
            }
            if p.reached {
                f.rekeys += 1;
                f.rekey_time
                    .record_us(now.duration_since(p.at).as_micros() as u64);
            } else {
                f.rekeys_abandoned += 1;
            }
            false
        });
    }

    /// Ends the run: leaves still waiting for their rekey are counted, and the figures
    /// returned.
    pub fn finish(mut self) -> E2eeFigures {
        self.figures.rekeys_unfinished += self.pending.len() as u64;
        self.figures
    }
}

/// The report's E2EE section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct E2eeFigures {
    /// Whether the run used end-to-end encryption (false: `--no-e2ee`).
    pub enabled: bool,
    /// Key epochs: the highest epoch each meeting reached, summed over meetings.
    pub highest_epoch: u64,
    /// Epoch switches over all participants.
    pub epoch_switches: u64,
    /// Timed rekeys: a leave, then every remaining participant on a newer epoch.
    pub rekeys: u64,
    /// Leave to every remaining participant on the new epoch, µs.
    pub rekey_time: Hist,
    /// Leaves whose remaining participants all left before reaching a new epoch.
    pub rekeys_abandoned: u64,
    /// Leaves still waiting for their rekey when the run ended.
    pub rekeys_unfinished: u64,
    /// Frames received before their key, opened once it arrived (within 1 s).
    pub opened_late: u64,
    /// Frames not sent because their sender held no meeting key yet (or was blocked
    /// by a roster mismatch).
    pub unkeyed_not_sent: u64,
    /// Security warnings raised (roster mismatch, bad key message, unkeyed…).
    pub warnings: u64,
    /// Key messages sent (deliveries, rosters, info).
    pub key_messages: u64,
    /// Decrypt failures by cause: no key, replayed (or older than the replay
    /// window), forged, other.
    #[serde(default)]
    pub failures: [u64; 4],
}

impl E2eeFigures {
    /// Adds another meeting's or shard's figures.
    pub fn add(&mut self, o: &E2eeFigures) {
        self.enabled |= o.enabled;
        self.highest_epoch += o.highest_epoch;
        self.epoch_switches += o.epoch_switches;
        self.rekeys += o.rekeys;
        self.rekey_time.add(&o.rekey_time);
        self.rekeys_abandoned += o.rekeys_abandoned;
        self.rekeys_unfinished += o.rekeys_unfinished;
        self.opened_late += o.opened_late;
        self.unkeyed_not_sent += o.unkeyed_not_sent;
        self.warnings += o.warnings;
        self.key_messages += o.key_messages;
        for (a, b) in self.failures.iter_mut().zip(&o.failures) {
            *a += b;
        }
    }

    /// The summary lines.
    pub fn summary(&self, decrypt_failures: u64) -> String {
        if !self.enabled {
            return "mode           NO E2EE (--no-e2ee: one AES-GCM key per meeting shared in-process, no key schedule)".into();
        }
        format!(
            "mode           E2EE (X-Wing HPKE key schedule, SFrame media)\n\
             e2ee           decrypt failures {decrypt_failures} (no key {}, replayed {}, forged {}, other {})  opened late {}  epochs {} (switches {})  key messages {}  warnings {}  unkeyed frames not sent {}\n\
             rekey          {} timed: {}  abandoned {}  unfinished {}",
            self.failures[0],
            self.failures[1],
            self.failures[2],
            self.failures[3],
            self.opened_late,
            self.highest_epoch,
            self.epoch_switches,
            self.key_messages,
            self.warnings,
            self.unkeyed_not_sent,
            self.rekeys,
            self.rekey_time.millis(),
            self.rekeys_abandoned,
            self.rekeys_unfinished,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_leave_is_timed_until_every_remaining_participant_is_on_a_newer_epoch() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = RekeyWatch::default();
        for p in 1..=3 {
            w.joined(p);
            w.epoch(p, 1, t0);
        }
        w.left(3, true, ms(10));
        w.epoch(1, 2, ms(20));
        assert_eq!(w.figures.rekeys, 0, "participant 2 is still on epoch 1");
        w.epoch(2, 2, ms(40));
        assert_eq!(w.figures.rekeys, 1);
        assert_eq!(w.figures.rekey_time.count(), 1);
        let t = w.figures.rekey_time.quantile_ms(0.5).unwrap();
        assert!((29.0..=31.0).contains(&t), "{t}");
        // The run's end is not a rekey; a leave whose others all go is abandoned.
        w.left(2, false, ms(50));
        w.left(1, true, ms(60));
        let f = w.finish();
        assert_eq!(
            (f.rekeys, f.rekeys_abandoned, f.rekeys_unfinished),
            (1, 0, 0)
        );
        assert_eq!(f.highest_epoch, 2);
    }

    #[test]
    fn remaining_participants_that_leave_unkeyed_abandon_the_measurement() {
        let t0 = Instant::now();
        let mut w = RekeyWatch::default();
        w.joined(1);
        w.joined(2);
        w.epoch(1, 1, t0);
        w.left(1, true, t0);
        w.left(2, true, t0);
        let f = w.finish();
        assert_eq!((f.rekeys, f.rekeys_abandoned), (0, 1));
    }
}
