//! A participant's side: assembling the leader's signed roster and checking it against
//! the meeting as the relay shows it.

use std::time::Instant;

use super::{Assembly, MeetingSecurity, Roster, Warning};
use crate::envelope::RosterPart;
use crate::roster::digest;
use crate::{E2eeError, ParticipantId, Recipient};

impl MeetingSecurity {
    pub(super) fn on_roster_part(
        &mut self,
        from: ParticipantId,
        part: RosterPart,
        now: Instant,
    ) -> Result<(), E2eeError> {
        if part.leader != from {
            return Err(E2eeError::Forged);
        }
        if self
            .roster
            .as_ref()
            .is_some_and(|r| r.leader == from && part.seq <= r.seq)
        {
            // An old or replayed roster.
            return Ok(());
        }
        let fresh = !self.assembly.as_ref().is_some_and(|a| {
            a.leader == from
                && a.seq == part.seq
                && a.digest == part.digest
                && a.epoch == part.epoch
        });
        if fresh {
            self.assembly = Some(Assembly {
                leader: from,
                epoch: part.epoch,
                seq: part.seq,
                digest: part.digest,
                parts: vec![None; usize::from(part.parts)],
            });
        }
        let Some(a) = self.assembly.as_mut() else {
            return Ok(());
        };
        let slot = a
            .parts
            .get_mut(usize::from(part.part))
            .ok_or(E2eeError::Malformed("roster part"))?;
        *slot = Some(part.entries);
        if a.parts.iter().any(Option::is_none) {
            return Ok(());
        }
        let Some(a) = self.assembly.take() else {
            return Ok(());
        };
        let mut entries: Vec<_> = a.parts.into_iter().flatten().flatten().collect();
        entries.sort_unstable();
        if digest(a.epoch, &entries) != a.digest {
            return Err(E2eeError::Forged);
        }
        let old = self.roster.take();
        let roster = Roster {
            leader: from,
            epoch: a.epoch,
            seq: a.seq,
            digest: a.digest,
            entries: entries.into_iter().collect(),
        };
        // Newcomers (keyed since the last roster, same epoch) get this participant's info.
        if let Some(old) = &old {
            if old.epoch == roster.epoch && self.epoch() == Some(roster.epoch) {
                let new: Vec<ParticipantId> = roster
                    .entries
                    .keys()
                    .filter(|p| **p != self.me && !old.entries.contains_key(p))
                    .copied()
                    .collect();
                for p in new {
                    self.send_info(Recipient::One(p));
                }
            }
        }
        self.max_epoch = self.max_epoch.max(roster.epoch);
        self.roster = Some(roster);
        self.last_roster_at = now;
        self.stale_reported = false;
        self.check_roster();
        self.update_leadership(now);
        self.retry_pending_leader_msgs(now);
        Ok(())
    }

    /// Compares the signed roster with the meeting as shown: a listed participant never
    /// shown (and not just gone), or listed with another identity key, stops sending.
    fn check_roster(&mut self) {
        let Some(r) = &self.roster else { return };
        let mut mismatches = Vec::new();
        for (pid, key) in &r.entries {
            let ok = if *pid == self.me {
                *key == self.keys.identity.public()
            } else if let Some(m) = self.members.get(pid) {
                m.bundle.as_ref().is_some_and(|b| b.identity == *key)
            } else {
                self.recently_left.contains_key(pid)
            };
            if !ok {
                mismatches.push(*pid);
            }
        }
        self.blocked = !mismatches.is_empty();
        for p in mismatches {
            self.warn(Warning::RosterMismatch(p));
        }
    }

    pub(super) fn follower_timers(&mut self, now: Instant) {
        if self.leading.is_some() || !self.settled {
            return;
        }
        if !self.stale_reported && now >= self.last_roster_at + self.config.roster_interval * 5 / 2
        {
            self.stale_reported = true;
            self.warn(Warning::RosterStale);
        }
        let grace = self.config.roster_grace;
        let keyed: Vec<bool> = self
            .members
            .keys()
            .map(|p| {
                self.roster
                    .as_ref()
                    .is_some_and(|r| r.entries.contains_key(p))
            })
            .collect();
        let mut unkeyed = Vec::new();
        for ((p, m), keyed) in self.members.iter_mut().zip(keyed) {
            if !keyed && !m.unkeyed_reported && now >= m.since + grace {
                m.unkeyed_reported = true;
                unkeyed.push(*p);
            }
        }
        for p in unkeyed {
            self.warn(Warning::Unkeyed(p));
        }
    }

    /// Re-feeds signed messages that arrived before their sender led in this view.
    pub(super) fn retry_pending_leader_msgs(&mut self, now: Instant) {
        let Some(leader) = self.leader() else { return };
        if self.pending_leader_msgs.iter().all(|(f, _)| *f != leader) {
            return;
        }
        let pending = std::mem::take(&mut self.pending_leader_msgs);
        for (from, blob) in pending {
            if from == leader {
                self.handle(super::Input::KeyMessage { from, blob: &blob }, now);
            } else {
                self.pending_leader_msgs.push_back((from, blob));
            }
        }
    }
}
