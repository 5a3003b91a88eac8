//! Participant info (display name and the like) sealed with the current epoch's info
//! key, `HKDF(meeting key, "info", epoch)`, with AES-128-GCM and the sender and epoch as
//! associated data, so only keyed participants read names and the relay cannot move one
//! participant's name onto another.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

use crate::envelope::InfoMessage;
use crate::wire::{hkdf, random};
use crate::{E2eeError, ParticipantId};

/// Largest info plaintext (leaves room in a key message).
pub const MAX_INFO_LEN: usize = 4096;

fn key(secret: &[u8; 32], epoch: u64) -> Result<LessSafeKey, E2eeError> {
    let raw: [u8; 16] = hkdf(secret, b"info", &epoch.to_be_bytes());
    let k = UnboundKey::new(&AES_128_GCM, &raw).map_err(|_| E2eeError::NoKey)?;
    Ok(LessSafeKey::new(k))
}

fn aad(sender: ParticipantId, epoch: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&sender.to_be_bytes());
    a[8..].copy_from_slice(&epoch.to_be_bytes());
    a
}

/// Seals `info` from `sender` under the epoch key `secret`.
pub fn seal(
    secret: &[u8; 32],
    epoch: u64,
    sender: ParticipantId,
    info: &[u8],
) -> Result<InfoMessage, E2eeError> {
    if info.len() > MAX_INFO_LEN {
        return Err(E2eeError::TooLarge("info"));
    }
    let nonce: [u8; 12] = random()?;
    let mut sealed = info.to_vec();
    key(secret, epoch)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(sender, epoch)),
            &mut sealed,
        )
        .map_err(|_| E2eeError::TooLarge("info"))?;
    Ok(InfoMessage {
        epoch,
        sender,
        nonce,
        sealed,
    })
}

/// Opens an info message claimed to come from `from` with the epoch key `secret`.
pub fn open(
    secret: &[u8; 32],
    from: ParticipantId,
    msg: &InfoMessage,
) -> Result<Vec<u8>, E2eeError> {
    if msg.sender != from {
        return Err(E2eeError::Forged);
    }
    let mut buf = msg.sealed.clone();
    let n = key(secret, msg.epoch)?
        .open_in_place(
            Nonce::assume_unique_for_key(msg.nonce),
            Aad::from(aad(from, msg.epoch)),
            &mut buf,
        )
        .map_err(|_| E2eeError::Forged)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn info_round_trip_and_binding() {
        let s = [3u8; 32];
        let m = seal(&s, 4, 7, b"Ada").unwrap();
        assert_eq!(open(&s, 7, &m).unwrap(), b"Ada");
        assert_eq!(open(&s, 8, &m), Err(E2eeError::Forged));
        let mut moved = m.clone();
        moved.sender = 8;
        assert_eq!(open(&s, 8, &moved), Err(E2eeError::Forged));
        assert_eq!(open(&[4u8; 32], 7, &m), Err(E2eeError::Forged));
        let mut bad = m.clone();
        bad.sealed[0] ^= 1;
        assert_eq!(open(&s, 7, &bad), Err(E2eeError::Forged));
    }
}
