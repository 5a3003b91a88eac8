//! Frame encryption for simulated participants: AES-128-GCM over each media payload,
//! with the cleartext routing header as associated data, in the spirit of SFrame
//! (RFC 9605): `payload = counter (8 bytes, clear) || ciphertext || tag (16 bytes)`.
//!
//! The nonce is the sender's participant ID (4 bytes) and its per-sender counter, so
//! a nonce never repeats under one meeting key. A relay that altered a header or
//! payload would make decryption fail, and receivers count that.
//!
//! Key distribution here is simulated (one random key per meeting, shared inside the
//! load generator); host-generated keys sealed with HPKE are their own piece of work.

use bytes::{BufMut, Bytes, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes a sealed payload adds to its plaintext: counter and tag.
pub const OVERHEAD: usize = 8 + 16;

/// Why a payload did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short to hold a counter and a tag.
    #[error("sealed payload too short")]
    TooShort,
    /// Authentication failed: wrong key, or header or payload altered.
    #[error("authentication failed")]
    Forged,
}

/// One meeting's media key.
#[derive(Debug)]
pub struct MeetingKey {
    key: LessSafeKey,
}

impl MeetingKey {
    /// A fresh random key.
    pub fn generate() -> anyhow::Result<MeetingKey> {
        let mut raw = [0u8; 16];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        Self::from_bytes(&raw)
    }

    /// A key from 16 raw bytes.
    pub fn from_bytes(raw: &[u8; 16]) -> anyhow::Result<MeetingKey> {
        let key =
            UnboundKey::new(&AES_128_GCM, raw).map_err(|_| anyhow::anyhow!("bad AES-128 key"))?;
        Ok(MeetingKey {
            key: LessSafeKey::new(key),
        })
    }

    /// Seals `plaintext` from `sender` with counter `ctr`, binding `header`.
    pub fn seal(&self, sender: u64, ctr: u64, header: &[u8], plaintext: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(OVERHEAD + plaintext.len());
        out.put_u64(ctr);
        out.extend_from_slice(plaintext);
        let (ctr_bytes, body) = out.split_at_mut(8);
        let aad = aad(header, ctr_bytes);
        let tag = self.key.seal_in_place_separate_tag(
            nonce(sender, ctr),
            Aad::from(aad.as_slice()),
            body,
        );
        // Sealing only fails for plaintexts over ~64 GiB; ours are frames.
        if let Ok(tag) = tag {
            out.extend_from_slice(tag.as_ref());
        }
        out.freeze()
    }

    /// Opens a payload sealed by `sender`, checking it against `header`.
    pub fn open(&self, sender: u64, header: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError::TooShort);
        }
        let (ctr_bytes, rest) = sealed.split_at(8);
        let mut ctr = [0u8; 8];
        ctr.copy_from_slice(ctr_bytes);
        let ctr = u64::from_be_bytes(ctr);
        let mut body = rest.to_vec();
        let aad = aad(header, ctr_bytes);
        let len = self
            .key
            .open_in_place(nonce(sender, ctr), Aad::from(aad.as_slice()), &mut body)
            .map_err(|_| OpenError::Forged)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

fn nonce(sender: u64, ctr: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&(sender as u32).to_be_bytes());
    n[4..].copy_from_slice(&ctr.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(header: &[u8], ctr: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + ctr.len());
    a.extend_from_slice(header);
    a.extend_from_slice(ctr);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = MeetingKey::from_bytes(&[7; 16]).unwrap();
        let sealed = key.seal(3, 42, b"header", b"hello media");
        assert_eq!(sealed.len(), 11 + OVERHEAD);
        assert_eq!(key.open(3, b"header", &sealed).unwrap(), b"hello media");
        // An altered header, sender, or byte is detected.
        assert_eq!(key.open(3, b"heades", &sealed), Err(OpenError::Forged));
        assert_eq!(key.open(4, b"header", &sealed), Err(OpenError::Forged));
        let mut bad = sealed.to_vec();
        bad[10] ^= 1;
        assert_eq!(key.open(3, b"header", &bad), Err(OpenError::Forged));
        assert_eq!(
            key.open(3, b"header", &sealed[..10]),
            Err(OpenError::TooShort)
        );
        let other = MeetingKey::from_bytes(&[8; 16]).unwrap();
        assert_eq!(other.open(3, b"header", &sealed), Err(OpenError::Forged));
    }
}
