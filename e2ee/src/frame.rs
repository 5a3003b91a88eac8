//! Media frame encryption in SFrame format (RFC 9605), via the `sframe` crate.
//!
//! Cipher suite `AES_128_GCM_SHA256_128` (0x0004): the `sframe` crate's `ring` backend
//! supports the GCM suites, and `ring` is the project's one crypto provider.
//!
//! Keys: each epoch has a 32-byte meeting key. Sender `p`'s SFrame base key is
//! `HKDF-SHA256(meeting key, "sframe sender", epoch || p)` (16 bytes), and its SFrame
//! key ID is `p << 8 | (epoch mod 256)`: the low byte tells a receiver's two live epochs
//! (current and previous) apart, and each sender has its own key and counter space, so
//! nonces never collide across senders. The relay's cleartext routing header is the
//! SFrame *metadata*: authenticated (as `SFrame header || metadata`, RFC 9605 §4.4.3) but
//! not encrypted, so a relay that alters either is detected.
//!
//! Wire layout of an encrypted payload: `SFrame header (KID, CTR) || ciphertext || tag`.

use std::collections::HashMap;

use sframe::frame::{EncryptedFrameView, MediaFrameView, MonotonicCounter};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};
use sframe::CipherSuite;

use crate::wire::hkdf;
use crate::ParticipantId;

/// The SFrame cipher suite every participant uses.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

/// AEAD tag length of [`CIPHER_SUITE`].
pub const TAG_LEN: usize = 16;

/// Most senders whose receive keys one epoch caches (a meeting's size bound).
pub const MAX_SENDERS: usize = 4096;

/// Why a frame did not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a well-formed SFrame payload.
    #[error("malformed SFrame payload")]
    Malformed,
    /// The key ID names another sender than the one the frame came from.
    #[error("key ID of another sender")]
    WrongSender,
    /// No key for the frame's epoch (too old, or not yet received, or never keyed).
    #[error("no key for this epoch")]
    NoKey,
    /// Authentication failed: wrong key, or the header or payload was altered.
    #[error("authentication failed")]
    Forged,
    /// Encryption failed (counter exhausted).
    #[error("encryption failed")]
    Encrypt,
    /// A frame already received (or older than the replay window) from this sender.
    #[error("replayed frame")]
    Replayed,
    /// Sending is stopped: the signed roster does not match the meeting as seen.
    #[error("sending stopped: roster mismatch")]
    Blocked,
}

/// The SFrame key ID of `sender` in `epoch`.
pub fn key_id(sender: ParticipantId, epoch: u64) -> u64 {
    (sender << 8) | (epoch & 0xff)
}

/// One epoch's media keys: the sender's own encryption key and counter, and receive
/// keys derived per sender on first use.
pub struct EpochKeys {
    epoch: u64,
    secret: [u8; 32],
    receive: HashMap<ParticipantId, (DecryptionKey, ReplayWindow)>,
    send: Option<(EncryptionKey, MonotonicCounter)>,
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKeys(epoch {})", self.epoch)
    }
}

impl EpochKeys {
    /// Keys of `epoch` from its 32-byte meeting key; `me` is the local sender.
    pub fn new(epoch: u64, secret: [u8; 32], me: ParticipantId) -> EpochKeys {
        let send = EncryptionKey::derive_from(
            CIPHER_SUITE,
            key_id(me, epoch),
            sender_base_key(&secret, epoch, me),
        )
        .ok()
        .map(|k| (k, MonotonicCounter::default()));
        EpochKeys {
            epoch,
            secret,
            receive: HashMap::new(),
            send,
        }
    }

    /// The epoch number.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The meeting key (for sealing to a new participant).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Length of the payload [`encrypt`](Self::encrypt) will produce for `plain_len`
    /// bytes (the routing header carries it, so it is needed before encrypting).
    pub fn sealed_len(&self, plain_len: usize) -> usize {
        let (kid, ctr) = match &self.send {
            Some((k, c)) => (k.key_id(), c.current()),
            None => (0, 0),
        };
        SframeHeader::new(kid, ctr).len() + plain_len + TAG_LEN
    }

    /// Encrypts one frame, binding `header` (the relay's routing header).
    pub fn encrypt(&mut self, header: &[u8], payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        let (key, counter) = self.send.as_mut().ok_or(FrameError::Encrypt)?;
        let frame = MediaFrameView::try_with_meta_data(counter, payload, header)
            .map_err(|_| FrameError::Encrypt)?;
        let mut buf = Vec::with_capacity(header.len() + payload.len() + 32);
        let view = frame
            .encrypt_into(key, &mut buf)
            .map_err(|_| FrameError::Encrypt)?;
        Ok(view.sframe_cipher_text().to_vec())
    }

    /// Decrypts a frame from `sender`, checking it against `header`.
    pub fn decrypt(
        &mut self,
        sender: ParticipantId,
        header: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, FrameError> {
        let view = EncryptedFrameView::try_with_meta_data(data, header)
            .map_err(|_| FrameError::Malformed)?;
        let kid = view.header().key_id();
        if kid >> 8 != sender {
            return Err(FrameError::WrongSender);
        }
        if kid & 0xff != self.epoch & 0xff {
            return Err(FrameError::NoKey);
        }
        if !self.receive.contains_key(&sender) {
            if self.receive.len() >= MAX_SENDERS {
                // Bounded: a meeting larger than this re-derives (costs CPU, not memory).
                self.receive.clear();
            }
            let key = DecryptionKey::derive_from(
                CIPHER_SUITE,
                kid,
                sender_base_key(&self.secret, self.epoch, sender),
            )
            .map_err(|_| FrameError::NoKey)?;
            self.receive.insert(sender, (key, ReplayWindow::default()));
        }
        let (key, window) = self.receive.get_mut(&sender).ok_or(FrameError::NoKey)?;
        let mut out = Vec::with_capacity(data.len());
        let frame = view
            .decrypt_into(&*key, &mut out)
            .map_err(|_| FrameError::Forged)?;
        // Only an authentic frame moves the window, so forged counters cannot poison it.
        window.accept(frame.counter())?;
        Ok(frame.payload().to_vec())
    }
}

/// Frames per sender that may arrive out of order; older ones are rejected.
pub const REPLAY_WINDOW: u64 = 128;

/// Per-sender replay window over SFrame counters (highest seen + a bitmap below it).
#[derive(Debug, Default)]
struct ReplayWindow {
    highest: Option<u64>,
    seen: u128,
}

impl ReplayWindow {
    fn accept(&mut self, ctr: u64) -> Result<(), FrameError> {
        let Some(high) = self.highest else {
            self.highest = Some(ctr);
            self.seen = 1;
            return Ok(());
        };
        if ctr > high {
            let shift = ctr - high;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = Some(ctr);
            return Ok(());
        }
        let back = high - ctr;
        if back >= REPLAY_WINDOW || self.seen & (1u128 << back) != 0 {
            return Err(FrameError::Replayed);
        }
        self.seen |= 1u128 << back;
        Ok(())
    }
}

/// Frame key ID's epoch byte, to pick current or previous keys before decrypting.
pub fn epoch_byte(data: &[u8]) -> Option<u8> {
    SframeHeader::deserialize(data)
        .ok()
        .map(|h| (h.key_id() & 0xff) as u8)
}

fn sender_base_key(secret: &[u8; 32], epoch: u64, sender: ParticipantId) -> [u8; 16] {
    let mut ctx = [0u8; 16];
    ctx[..8].copy_from_slice(&epoch.to_be_bytes());
    ctx[8..].copy_from_slice(&sender.to_be_bytes());
    hkdf(secret, b"sframe sender", &ctx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9605 Appendix C.4, cipher suite 0x0004 (AES_128_GCM_SHA256_128): the `sframe`
    /// crate, as we call it (key from base key + KID, metadata as AAD), must produce
    /// the RFC's ciphertext byte for byte, and decrypt it.
    #[test]
    fn rfc9605_test_vector_aes_128_gcm() {
        let kid: u64 = 0x123;
        let ctr: u64 = 0x4567;
        let base_key = hex("000102030405060708090a0b0c0d0e0f");
        let metadata = hex("4945544620534672616d65205747");
        let pt = hex("64726166742d696574662d736672616d652d656e63");
        let ct = hex(
            "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
        );
        let key = EncryptionKey::derive_from(CIPHER_SUITE, kid, &base_key).unwrap();
        let mut counter = MonotonicCounter::with_start_value(ctr, u64::MAX);
        let frame = MediaFrameView::try_with_meta_data(&mut counter, &pt, &metadata).unwrap();
        let mut buf = Vec::new();
        let out = frame.encrypt_into(&key, &mut buf).unwrap();
        assert_eq!(out.sframe_cipher_text(), &ct[..]);

        let dkey = DecryptionKey::derive_from(CIPHER_SUITE, kid, &base_key).unwrap();
        let view = EncryptedFrameView::try_with_meta_data(&ct, &metadata).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            view.decrypt_into(&dkey, &mut out).unwrap().payload(),
            &pt[..]
        );
        // Other metadata (a routing header altered in transit) fails.
        let view = EncryptedFrameView::try_with_meta_data(&ct, b"IETF SFrame WH").unwrap();
        assert!(view.decrypt_into(&dkey, &mut Vec::new()).is_err());
    }

    #[test]
    fn per_sender_round_trip_and_tampering() {
        let secret = [9u8; 32];
        let mut alice = EpochKeys::new(7, secret, 1);
        let mut bob = EpochKeys::new(7, secret, 2);
        for len in [0usize, 100, 10_000] {
            let payload = vec![0xabu8; len];
            let expect = alice.sealed_len(len);
            let sealed = alice.encrypt(b"route", &payload).unwrap();
            assert_eq!(sealed.len(), expect);
            assert_eq!(bob.decrypt(1, b"route", &sealed).unwrap(), payload);
            // Altered routing header, payload byte or claimed sender: rejected.
            assert_eq!(bob.decrypt(1, b"rouTe", &sealed), Err(FrameError::Forged));
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(bob.decrypt(1, b"route", &bad), Err(FrameError::Forged));
            assert_eq!(
                bob.decrypt(3, b"route", &sealed),
                Err(FrameError::WrongSender)
            );
        }
        // Another epoch's keys cannot read it.
        let sealed = alice.encrypt(b"h", b"x").unwrap();
        let mut other = EpochKeys::new(8, [1u8; 32], 2);
        assert_eq!(other.decrypt(1, b"h", &sealed), Err(FrameError::NoKey));
        let mut same_epoch_other_key = EpochKeys::new(7, [1u8; 32], 2);
        assert_eq!(
            same_epoch_other_key.decrypt(1, b"h", &sealed),
            Err(FrameError::Forged)
        );
        assert_eq!(bob.decrypt(1, b"h", &[]), Err(FrameError::Malformed));
        // A replayed frame is rejected; out-of-order ones within the window are not.
        assert_eq!(bob.decrypt(1, b"h", &sealed), Ok(b"x".to_vec()));
        assert_eq!(bob.decrypt(1, b"h", &sealed), Err(FrameError::Replayed));
        let f1 = alice.encrypt(b"h", b"1").unwrap();
        let f2 = alice.encrypt(b"h", b"2").unwrap();
        assert!(bob.decrypt(1, b"h", &f2).is_ok());
        assert!(bob.decrypt(1, b"h", &f1).is_ok());
        assert_eq!(bob.decrypt(1, b"h", &f1), Err(FrameError::Replayed));
        let old = alice.encrypt(b"h", b"old").unwrap();
        for _ in 0..REPLAY_WINDOW {
            let f = alice.encrypt(b"h", b"n").unwrap();
            bob.decrypt(1, b"h", &f).unwrap();
        }
        assert_eq!(bob.decrypt(1, b"h", &old), Err(FrameError::Replayed));
        assert_eq!(epoch_byte(&sealed), Some(7));
    }
}
