//! Long-term identity keys (Ed25519, via `ring`) and the public key bundle a
//! participant presents at join.
//!
//! Bundle (≤ [`MAX_KEYS_LEN`](crate::MAX_KEYS_LEN)), big-endian:
//! `version=1 (u8) | kem suite (u8) | identity key (32) | kem public (u16 len + bytes) |
//! signature (64)`, the signature by the identity key over
//! `"orelay/e2ee/v1 bundle" || everything before it`, so the relay cannot pair someone's
//! identity with a KEM key of its own.

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::kem::{KemKeyPair, KemSuite};
use crate::wire::{put_vec16, Reader};
use crate::{E2eeError, MAX_KEYS_LEN};

/// Version byte of bundles and envelopes this build writes.
pub const VERSION: u8 = 1;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

const BUNDLE_CONTEXT: &[u8] = b"orelay/e2ee/v1 bundle";

/// A participant's long-term Ed25519 signing key.
pub struct IdentityKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({:02x?})", &self.public()[..4])
    }
}

impl IdentityKey {
    /// A fresh random identity.
    pub fn generate() -> Result<IdentityKey, E2eeError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| E2eeError::Random)?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// An identity from its PKCS#8 v2 document (as stored by a client).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<IdentityKey, E2eeError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| E2eeError::Malformed("identity key"))?;
        Ok(IdentityKey { pair })
    }

    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs `context || message`.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut data = Vec::with_capacity(context.len() + message.len());
        data.extend_from_slice(context);
        data.extend_from_slice(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(&data).as_ref());
        out
    }
}

/// Verifies `signature` by `public` over `context || message`.
pub fn verify(
    public: &[u8; 32],
    context: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), E2eeError> {
    let mut data = Vec::with_capacity(context.len() + message.len());
    data.extend_from_slice(context);
    data.extend_from_slice(message);
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&data, signature)
        .map_err(|_| E2eeError::BadSignature)
}

/// A participant's own keys: long-term identity and this meeting's KEM pair.
#[derive(Debug)]
pub struct LocalKeys {
    /// Identity signing key.
    pub identity: IdentityKey,
    /// Per-meeting KEM key pair.
    pub kem: KemKeyPair,
}

impl LocalKeys {
    /// Fresh identity and KEM keys (a real client keeps its identity across meetings).
    pub fn generate(suite: KemSuite) -> Result<LocalKeys, E2eeError> {
        Ok(LocalKeys {
            identity: IdentityKey::generate()?,
            kem: KemKeyPair::generate(suite),
        })
    }

    /// The signed bundle to send as `Join.keys`.
    pub fn bundle(&self) -> Result<Vec<u8>, E2eeError> {
        let mut out = Vec::with_capacity(2 + 32 + 2 + 1216 + SIGNATURE_LEN);
        out.push(VERSION);
        out.push(self.kem.suite().code());
        out.extend_from_slice(&self.identity.public());
        put_vec16(&mut out, &self.kem.public_bytes())?;
        let sig = self.identity.sign(BUNDLE_CONTEXT, &out);
        out.extend_from_slice(&sig);
        if out.len() > MAX_KEYS_LEN {
            return Err(E2eeError::TooLarge("key bundle"));
        }
        Ok(out)
    }
}

/// Another participant's verified public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBundle {
    /// KEM suite of `kem_public`.
    pub suite: KemSuite,
    /// Ed25519 identity key.
    pub identity: [u8; 32],
    /// KEM public key.
    pub kem_public: Vec<u8>,
}

impl KeyBundle {
    /// Parses and verifies a bundle (its self-signature and key length).
    pub fn decode(bytes: &[u8]) -> Result<KeyBundle, E2eeError> {
        if bytes.len() > MAX_KEYS_LEN {
            return Err(E2eeError::TooLarge("key bundle"));
        }
        let mut r = Reader::new(bytes, "key bundle");
        let version = r.u8()?;
        if version != VERSION {
            return Err(E2eeError::Version(version));
        }
        let suite = KemSuite::from_code(r.u8()?)?;
        let identity = r.array::<32>()?;
        let kem_public = r.vec16()?.to_vec();
        if kem_public.len() != suite.public_key_len() {
            return Err(E2eeError::Malformed("KEM key length"));
        }
        let signed = r.consumed(bytes);
        let sig = r.bytes(SIGNATURE_LEN)?;
        r.end()?;
        verify(&identity, BUNDLE_CONTEXT, &bytes[..signed], sig)?;
        Ok(KeyBundle {
            suite,
            identity,
            kem_public,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn bundle_round_trips_and_rejects_any_altered_byte() {
        let keys = LocalKeys::generate(KemSuite::XWing).unwrap();
        let bytes = keys.bundle().unwrap();
        assert!(bytes.len() <= MAX_KEYS_LEN);
        let b = KeyBundle::decode(&bytes).unwrap();
        assert_eq!(b.identity, keys.identity.public());
        assert_eq!(b.kem_public, keys.kem.public_bytes());
        for i in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(KeyBundle::decode(&bad).is_err(), "byte {i}");
        }
        assert!(KeyBundle::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(KeyBundle::decode(&[]).is_err());
    }

    #[test]
    fn signatures_bind_their_context() {
        let id = IdentityKey::generate().unwrap();
        let sig = id.sign(b"ctx-a", b"msg");
        assert!(verify(&id.public(), b"ctx-a", b"msg", &sig).is_ok());
        assert!(verify(&id.public(), b"ctx-b", b"msg", &sig).is_err());
        assert!(verify(&id.public(), b"ctx-a", b"msh", &sig).is_err());
    }
}
