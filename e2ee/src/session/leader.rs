//! The leader's side: rekeying, key deliveries, signed roster.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Leading, MeetingSecurity, Outbound};
use crate::envelope::{Envelope, KeyDelivery, RosterPart, DELIVERY_INFO, ROSTER_PART_ENTRIES};
use crate::roster::{digest, RosterEntry};
use crate::wire::random;
use crate::{kem, E2eeError, ParticipantId, Recipient};

impl Leading {
    pub(super) fn keyed_entries(&self) -> Vec<RosterEntry> {
        self.keyed.iter().map(|(p, k)| (*p, *k)).collect()
    }
}

impl MeetingSecurity {
    /// Re-evaluates who leads. Returns true when this participant just became leader
    /// (it has then rekeyed everyone).
    pub(super) fn update_leadership(&mut self, now: Instant) -> bool {
        let should = self.leader() == Some(self.me);
        match (should, self.leading.is_some()) {
            (true, false) => {
                self.leading = Some(Leading {
                    keyed: BTreeMap::new(),
                    epoch_started: now,
                    seq: 0,
                    roster_due: now,
                });
                self.rekey(now);
                self.retry_pending_leader_msgs(now);
                true
            }
            (false, true) => {
                // Hand over: the roster naming the new leader goes out first, so everyone
                // accepts the new leader's key.
                self.send_roster();
                self.leading = None;
                self.last_roster_at = now;
                self.retry_pending_leader_msgs(now);
                false
            }
            _ => false,
        }
    }

    /// A new epoch: fresh random key sealed to every member with a valid bundle.
    fn rekey(&mut self, now: Instant) {
        let Ok(secret) = random::<32>() else {
            return;
        };
        let epoch = self.max_epoch + 1;
        let mut keyed = BTreeMap::new();
        keyed.insert(self.me, self.keys.identity.public());
        let targets: Vec<ParticipantId> = self.members.keys().copied().collect();
        for p in targets {
            if let Some(identity) = self.deliver(p, epoch, &secret) {
                keyed.insert(p, identity);
            }
        }
        if let Some(l) = self.leading.as_mut() {
            l.keyed = keyed;
            l.epoch_started = now;
            l.roster_due = now;
        }
        self.install_epoch(epoch, secret, now);
        self.leader_timers(now);
    }

    /// Seals `secret` of `epoch` to `to`; returns its identity key if it was keyed.
    fn deliver(&mut self, to: ParticipantId, epoch: u64, secret: &[u8; 32]) -> Option<[u8; 32]> {
        let bundle = self.members.get(&to)?.bundle.as_ref()?;
        let (suite, identity) = (bundle.suite, bundle.identity);
        let aad = KeyDelivery::aad(epoch, self.me, to);
        let sealed = kem::seal(suite, &bundle.kem_public, DELIVERY_INFO, &aad, secret).ok()?;
        let env = Envelope::Delivery(KeyDelivery {
            epoch,
            leader: self.me,
            recipient: to,
            suite,
            sealed,
        });
        let blob = env.encode(&self.keys.identity).ok()?;
        self.out.push_back(Outbound {
            to: Recipient::One(to),
            blob,
        });
        Some(identity)
    }

    /// Keys a participant that joined while this one leads.
    pub(super) fn leader_key_newcomer(&mut self, p: ParticipantId, now: Instant) {
        if self.leading.is_none() {
            return;
        }
        let Some((epoch, secret)) = self.current.as_ref().map(|k| (k.epoch(), *k.secret())) else {
            return;
        };
        if let Some(identity) = self.deliver(p, epoch, &secret) {
            let coalesce = self.config.roster_coalesce;
            if let Some(l) = self.leading.as_mut() {
                l.keyed.insert(p, identity);
                l.roster_due = l.roster_due.min(now + coalesce);
            }
            self.send_info(Recipient::One(p));
        }
    }

    /// Rekeys when a keyed participant left (it must not read what follows).
    pub(super) fn leader_on_leave(&mut self, p: ParticipantId, now: Instant) {
        if self
            .leading
            .as_ref()
            .is_some_and(|l| l.keyed.contains_key(&p))
        {
            self.rekey(now);
        }
    }

    pub(super) fn leader_timers(&mut self, now: Instant) {
        let Some(l) = self.leading.as_ref() else {
            return;
        };
        if now >= l.epoch_started + self.config.rekey_interval {
            self.rekey(now);
            return;
        }
        if now >= l.roster_due {
            self.send_roster();
            let interval = self.config.roster_interval;
            if let Some(l) = self.leading.as_mut() {
                l.roster_due = now + interval;
            }
        }
    }

    /// Sends the signed keyed roster to everyone, split into parts.
    fn send_roster(&mut self) {
        let Some(epoch) = self.epoch() else { return };
        let Some(l) = self.leading.as_mut() else {
            return;
        };
        l.seq += 1;
        let seq = l.seq;
        let entries = l.keyed_entries();
        if let Ok(parts) = roster_parts(self.me, epoch, seq, &entries, &self.keys.identity) {
            for blob in parts {
                self.out.push_back(Outbound {
                    to: Recipient::All,
                    blob,
                });
            }
        }
    }
}

/// Encodes a roster as signed parts of at most [`ROSTER_PART_ENTRIES`] entries.
pub fn roster_parts(
    leader: ParticipantId,
    epoch: u64,
    seq: u64,
    entries: &[RosterEntry],
    signer: &crate::IdentityKey,
) -> Result<Vec<Vec<u8>>, E2eeError> {
    let d = digest(epoch, entries);
    let chunks: Vec<&[RosterEntry]> = if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(ROSTER_PART_ENTRIES).collect()
    };
    let parts = u16::try_from(chunks.len()).map_err(|_| E2eeError::TooLarge("roster"))?;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            Envelope::Roster(RosterPart {
                epoch,
                leader,
                seq,
                digest: d,
                part: i as u16,
                parts,
                entries: chunk.to_vec(),
            })
            .encode(signer)
        })
        .collect()
}
