//! Key-message envelopes: the opaque `KeyMessage.blob` the relay forwards.
//!
//! Every envelope starts `version (u8) = 1 | kind (u8)` and is at most
//! [`MAX_KEY_MESSAGE_LEN`] bytes; integers are big-endian.
//!
//! | kind | name | to | body | signed by |
//! |------|------|----|------|-----------|
//! | 1 | key delivery | one | `epoch u64, leader u64, recipient u64, suite u8, sealed (u16 len)` | leader |
//! | 2 | roster part | all | `epoch u64, leader u64, seq u64, digest [32], part u16, parts u16, count u16, count × (pid u64, identity [32])` | leader |
//! | 3 | info | all/one | `epoch u64, sender u64, nonce [12], sealed (u16 len)` | — (AEAD under the epoch key) |
//!
//! A signature is Ed25519 over `"orelay/e2ee/v1 envelope" || version || kind || body`,
//! appended after the body. A key delivery's `sealed` is HPKE (see [`crate::kem`]) of the
//! 32-byte meeting key, with info `"orelay/e2ee/v1 meeting key"` and AAD
//! `epoch || leader || recipient`, so a relay cannot redirect or replay it under other
//! numbers. Rosters of more than [`ROSTER_PART_ENTRIES`] entries are split into parts that
//! all carry the full roster's digest: 1,000 participants take 4 parts of ≤ 10.4 KB.

use crate::identity::{verify, IdentityKey, SIGNATURE_LEN, VERSION};
use crate::kem::KemSuite;
use crate::roster::RosterEntry;
use crate::wire::{put_vec16, Reader};
use crate::{E2eeError, ParticipantId, MAX_KEY_MESSAGE_LEN};

const SIGN_CONTEXT: &[u8] = b"orelay/e2ee/v1 envelope";

/// HPKE `info` of a sealed meeting key.
pub const DELIVERY_INFO: &[u8] = b"orelay/e2ee/v1 meeting key";

/// Roster entries per roster part (40 bytes each: a part stays under 10.4 KB).
pub const ROSTER_PART_ENTRIES: usize = 256;

/// Most roster parts (so most keyed participants: 64 × 256 = 16,384).
pub const MAX_ROSTER_PARTS: u16 = 64;

const KIND_DELIVERY: u8 = 1;
const KIND_ROSTER: u8 = 2;
const KIND_INFO: u8 = 3;

/// The leader's delivery of one epoch's meeting key to one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDelivery {
    /// Epoch the key is for.
    pub epoch: u64,
    /// The leader who sealed it.
    pub leader: ParticipantId,
    /// Who it is sealed to.
    pub recipient: ParticipantId,
    /// KEM suite of `sealed`.
    pub suite: KemSuite,
    /// HPKE `enc || ciphertext` of the 32-byte key.
    pub sealed: Vec<u8>,
}

impl KeyDelivery {
    /// The HPKE associated data binding the numbers.
    pub fn aad(epoch: u64, leader: ParticipantId, recipient: ParticipantId) -> [u8; 24] {
        let mut aad = [0u8; 24];
        aad[..8].copy_from_slice(&epoch.to_be_bytes());
        aad[8..16].copy_from_slice(&leader.to_be_bytes());
        aad[16..].copy_from_slice(&recipient.to_be_bytes());
        aad
    }
}

/// One part of the leader-signed roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterPart {
    /// Epoch of the keyed roster.
    pub epoch: u64,
    /// The leader who signed it.
    pub leader: ParticipantId,
    /// Increases with every roster the leader sends (orders heartbeats).
    pub seq: u64,
    /// [`crate::roster::digest`] of the whole roster.
    pub digest: [u8; 32],
    /// Index of this part.
    pub part: u16,
    /// Number of parts.
    pub parts: u16,
    /// This part's entries.
    pub entries: Vec<RosterEntry>,
}

/// A participant's info (display name…) sealed with the epoch's info key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoMessage {
    /// Epoch whose key sealed it.
    pub epoch: u64,
    /// Whose info it is (bound into the AEAD).
    pub sender: ParticipantId,
    /// AES-GCM nonce.
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub sealed: Vec<u8>,
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Kind 1.
    Delivery(KeyDelivery),
    /// Kind 2.
    Roster(RosterPart),
    /// Kind 3.
    Info(InfoMessage),
}

/// A decoded envelope with what its signature covers, to verify once the signer's key
/// is known.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The message.
    pub envelope: Envelope,
    signed: &'a [u8],
    signature: &'a [u8],
}

impl Parsed<'_> {
    /// Checks the signature against the signer's identity key (always fails for the
    /// unsigned info kind).
    pub fn verify(&self, signer: &[u8; 32]) -> Result<(), E2eeError> {
        if self.signature.is_empty() {
            return Err(E2eeError::BadSignature);
        }
        verify(signer, SIGN_CONTEXT, self.signed, self.signature)
    }
}

impl Envelope {
    /// Encodes, signing kinds 1 and 2 with `signer`.
    pub fn encode(&self, signer: &IdentityKey) -> Result<Vec<u8>, E2eeError> {
        let mut out = Vec::with_capacity(256);
        out.push(VERSION);
        let signed = match self {
            Envelope::Delivery(d) => {
                out.push(KIND_DELIVERY);
                for n in [d.epoch, d.leader, d.recipient] {
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out.push(d.suite.code());
                put_vec16(&mut out, &d.sealed)?;
                true
            }
            Envelope::Roster(r) => {
                out.push(KIND_ROSTER);
                if r.entries.len() > ROSTER_PART_ENTRIES || r.parts > MAX_ROSTER_PARTS {
                    return Err(E2eeError::TooLarge("roster part"));
                }
                for n in [r.epoch, r.leader, r.seq] {
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out.extend_from_slice(&r.digest);
                out.extend_from_slice(&r.part.to_be_bytes());
                out.extend_from_slice(&r.parts.to_be_bytes());
                out.extend_from_slice(&(r.entries.len() as u16).to_be_bytes());
                for (pid, key) in &r.entries {
                    out.extend_from_slice(&pid.to_be_bytes());
                    out.extend_from_slice(key);
                }
                true
            }
            Envelope::Info(i) => {
                out.push(KIND_INFO);
                out.extend_from_slice(&i.epoch.to_be_bytes());
                out.extend_from_slice(&i.sender.to_be_bytes());
                out.extend_from_slice(&i.nonce);
                put_vec16(&mut out, &i.sealed)?;
                false
            }
        };
        if signed {
            let sig = signer.sign(SIGN_CONTEXT, &out);
            out.extend_from_slice(&sig);
        }
        if out.len() > MAX_KEY_MESSAGE_LEN {
            return Err(E2eeError::TooLarge("key message"));
        }
        Ok(out)
    }

    /// Decodes any byte string into an envelope or an error (total: no panic).
    pub fn decode(bytes: &[u8]) -> Result<Parsed<'_>, E2eeError> {
        if bytes.len() > MAX_KEY_MESSAGE_LEN {
            return Err(E2eeError::TooLarge("key message"));
        }
        let mut r = Reader::new(bytes, "key message");
        let version = r.u8()?;
        if version != VERSION {
            return Err(E2eeError::Version(version));
        }
        let envelope = match r.u8()? {
            KIND_DELIVERY => Envelope::Delivery(KeyDelivery {
                epoch: r.u64()?,
                leader: r.u64()?,
                recipient: r.u64()?,
                suite: KemSuite::from_code(r.u8()?)?,
                sealed: r.vec16()?.to_vec(),
            }),
            KIND_ROSTER => {
                let (epoch, leader, seq) = (r.u64()?, r.u64()?, r.u64()?);
                let digest = r.array::<32>()?;
                let (part, parts, count) = (r.u16()?, r.u16()?, r.u16()? as usize);
                if part >= parts || parts > MAX_ROSTER_PARTS || count > ROSTER_PART_ENTRIES {
                    return Err(E2eeError::Malformed("roster part"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push((r.u64()?, r.array::<32>()?));
                }
                Envelope::Roster(RosterPart {
                    epoch,
                    leader,
                    seq,
                    digest,
                    part,
                    parts,
                    entries,
                })
            }
            KIND_INFO => {
                let i = InfoMessage {
                    epoch: r.u64()?,
                    sender: r.u64()?,
                    nonce: r.array::<12>()?,
                    sealed: r.vec16()?.to_vec(),
                };
                r.end()?;
                return Ok(Parsed {
                    envelope: Envelope::Info(i),
                    signed: bytes,
                    signature: &[],
                });
            }
            _ => return Err(E2eeError::Malformed("key message kind")),
        };
        let signed_len = r.consumed(bytes);
        let signature = r.bytes(SIGNATURE_LEN)?;
        r.end()?;
        Ok(Parsed {
            envelope,
            signed: &bytes[..signed_len],
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn envelopes_round_trip_verify_and_fit() {
        let id = IdentityKey::generate().unwrap();
        let other = IdentityKey::generate().unwrap();
        let full_part = RosterPart {
            epoch: 3,
            leader: 1,
            seq: 9,
            digest: [7; 32],
            part: 3,
            parts: 4,
            entries: (0..ROSTER_PART_ENTRIES as u64)
                .map(|p| (p, [p as u8; 32]))
                .collect(),
        };
        let delivery = KeyDelivery {
            epoch: 3,
            leader: 1,
            recipient: 2,
            suite: KemSuite::XWing,
            sealed: vec![5; KemSuite::XWing.encapped_len() + 48],
        };
        let info = InfoMessage {
            epoch: 3,
            sender: 4,
            nonce: [1; 12],
            sealed: vec![2; 300],
        };
        for env in [
            Envelope::Roster(full_part),
            Envelope::Delivery(delivery),
            Envelope::Info(info),
        ] {
            let bytes = env.encode(&id).unwrap();
            assert!(bytes.len() <= MAX_KEY_MESSAGE_LEN, "{}", bytes.len());
            let parsed = Envelope::decode(&bytes).unwrap();
            assert_eq!(parsed.envelope, env);
            let signed = !matches!(env, Envelope::Info(_));
            assert_eq!(parsed.verify(&id.public()).is_ok(), signed);
            assert!(parsed.verify(&other.public()).is_err());
            // Every truncation is an error, never a panic.
            for n in 0..bytes.len() {
                assert!(Envelope::decode(&bytes[..n]).is_err());
            }
            if signed {
                let mut bad = bytes.clone();
                bad[20] ^= 1;
                let p = Envelope::decode(&bad).unwrap();
                assert!(p.verify(&id.public()).is_err());
            }
        }
        assert!(Envelope::decode(&[2, 1]).is_err());
        assert!(Envelope::decode(&[1, 9]).is_err());
    }
}
