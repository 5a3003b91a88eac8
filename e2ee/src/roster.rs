//! The keyed roster (who the leader gave the meeting key, with which identity key), its
//! digest, and the meeting security code derived from it.

use ring::digest::{Context, SHA256};

use crate::ParticipantId;

/// One keyed participant: ID and Ed25519 identity key.
pub type RosterEntry = (ParticipantId, [u8; 32]);

/// Digest of a roster for `epoch`: SHA-256 over a label, the epoch and the entries
/// sorted by participant ID (callers pass them sorted).
pub fn digest(epoch: u64, entries: &[RosterEntry]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"orelay/e2ee/v1 roster");
    ctx.update(&epoch.to_be_bytes());
    ctx.update(&(entries.len() as u64).to_be_bytes());
    for (pid, key) in entries {
        ctx.update(&pid.to_be_bytes());
        ctx.update(key);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The meeting security code for a roster digest: 20 decimal digits in groups of five,
/// identical for everyone holding the same keyed roster and epoch, for people to compare
/// out of band (a relay that added a listener or swapped a key changes it).
pub fn security_code(roster_digest: &[u8; 32]) -> String {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"orelay/e2ee/v1 security code");
    ctx.update(roster_digest);
    let d = ctx.finish();
    let mut n = [0u8; 8];
    n.copy_from_slice(&d.as_ref()[..8]);
    let digits = format!("{:020}", u64::from_be_bytes(n));
    let groups: Vec<&str> = (0..4).map(|i| &digits[i * 5..i * 5 + 5]).collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_depends_on_epoch_members_and_keys() {
        let a = vec![(1, [1u8; 32]), (2, [2u8; 32])];
        let code = security_code(&digest(5, &a));
        assert_eq!(code.len(), 23);
        assert_eq!(code, security_code(&digest(5, &a)));
        assert_ne!(code, security_code(&digest(6, &a)));
        let mut b = a.clone();
        b.push((3, [3u8; 32]));
        assert_ne!(code, security_code(&digest(5, &b)));
        let mut c = a.clone();
        c[1].1[0] ^= 1;
        assert_ne!(code, security_code(&digest(5, &c)));
    }
}
