//! HPKE (RFC 9180) sealing of meeting keys to a participant's per-meeting KEM key.
//!
//! Suite: KEM = X-Wing (X25519 + ML-KEM-768, draft-connolly-cfrg-xwing-kem) by default, so
//! a recording of today's key messages stays private against a future quantum computer;
//! KDF = HKDF-SHA256; AEAD = ChaCha20-Poly1305 (constant time without AES hardware).
//! [`KemSuite::X25519`] (DHKEM(X25519, HKDF-SHA256)) exists only to measure what the
//! hybrid costs; it is never chosen by default.
//!
//! Sizes (bytes): X-Wing public key 1,216, encapsulation 1,120; X25519 32 and 32.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};

use crate::E2eeError;

/// Which KEM a key pair and its sealed messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KemSuite {
    /// X-Wing: X25519 + ML-KEM-768 hybrid (post-quantum). The default.
    XWing,
    /// DHKEM(X25519, HKDF-SHA256): classic only, kept to measure the hybrid's cost.
    X25519,
}

impl KemSuite {
    /// Wire code of the suite (the HPKE KEM identifier's low byte is not unique, so ours).
    pub fn code(self) -> u8 {
        match self {
            KemSuite::XWing => 1,
            KemSuite::X25519 => 2,
        }
    }

    /// The suite for a wire code.
    pub fn from_code(code: u8) -> Result<KemSuite, E2eeError> {
        match code {
            1 => Ok(KemSuite::XWing),
            2 => Ok(KemSuite::X25519),
            _ => Err(E2eeError::Malformed("KEM suite")),
        }
    }

    /// Length of this suite's public key.
    pub fn public_key_len(self) -> usize {
        match self {
            KemSuite::XWing => <XWing as Kem>::PublicKey::size(),
            KemSuite::X25519 => <X25519HkdfSha256 as Kem>::PublicKey::size(),
        }
    }

    /// Length of this suite's encapsulated key.
    pub fn encapped_len(self) -> usize {
        match self {
            KemSuite::XWing => <XWing as Kem>::EncappedKey::size(),
            KemSuite::X25519 => <X25519HkdfSha256 as Kem>::EncappedKey::size(),
        }
    }
}

/// A per-meeting KEM key pair (its private half never leaves the client).
pub enum KemKeyPair {
    /// X-Wing pair (boxed: 3.3 KB).
    XWing(Box<(<XWing as Kem>::PrivateKey, <XWing as Kem>::PublicKey)>),
    /// X25519 pair.
    X25519(
        <X25519HkdfSha256 as Kem>::PrivateKey,
        <X25519HkdfSha256 as Kem>::PublicKey,
    ),
}

impl std::fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemKeyPair({:?})", self.suite())
    }
}

impl KemKeyPair {
    /// A fresh random key pair of `suite`.
    pub fn generate(suite: KemSuite) -> KemKeyPair {
        match suite {
            KemSuite::XWing => KemKeyPair::XWing(Box::new(XWing::gen_keypair())),
            KemSuite::X25519 => {
                let (sk, pk) = X25519HkdfSha256::gen_keypair();
                KemKeyPair::X25519(sk, pk)
            }
        }
    }

    /// The pair's suite.
    pub fn suite(&self) -> KemSuite {
        match self {
            KemKeyPair::XWing(_) => KemSuite::XWing,
            KemKeyPair::X25519(..) => KemSuite::X25519,
        }
    }

    /// The public key's bytes, to publish in the key bundle.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            KemKeyPair::XWing(pair) => pair.1.to_bytes().to_vec(),
            KemKeyPair::X25519(_, pk) => pk.to_bytes().to_vec(),
        }
    }

    /// Opens a [`seal`]ed message: `sealed = enc || ciphertext`.
    pub fn open(&self, info: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let enc_len = self.suite().encapped_len();
        if sealed.len() < enc_len {
            return Err(E2eeError::Malformed("HPKE message"));
        }
        let (enc, ct) = sealed.split_at(enc_len);
        match self {
            KemKeyPair::XWing(pair) => open_with::<XWing>(&pair.0, enc, info, aad, ct),
            KemKeyPair::X25519(sk, _) => open_with::<X25519HkdfSha256>(sk, enc, info, aad, ct),
        }
    }
}

/// Seals `plaintext` to the public key `public` of `suite` (HPKE base mode, single
/// shot). Returns `enc || ciphertext`.
pub fn seal(
    suite: KemSuite,
    public: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eeError> {
    match suite {
        KemSuite::XWing => seal_with::<XWing>(public, info, aad, plaintext),
        KemSuite::X25519 => seal_with::<X25519HkdfSha256>(public, info, aad, plaintext),
    }
}

fn seal_with<K: Kem>(
    public: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eeError> {
    let pk = K::PublicKey::from_bytes(public).map_err(|_| E2eeError::Malformed("KEM key"))?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, K>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
    )
    .map_err(|_| E2eeError::Hpke)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with<K: Kem>(
    sk: &K::PrivateKey,
    enc: &[u8],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>, E2eeError> {
    let enc = K::EncappedKey::from_bytes(enc).map_err(|_| E2eeError::Hpke)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, K>(
        &OpModeR::Base,
        sk,
        &enc,
        info,
        ct,
        aad,
    )
    .map_err(|_| E2eeError::Hpke)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hybrid_and_classic_round_trip_and_reject_tampering() {
        for suite in [KemSuite::XWing, KemSuite::X25519] {
            let pair = KemKeyPair::generate(suite);
            let public = pair.public_bytes();
            assert_eq!(public.len(), suite.public_key_len());
            let sealed = seal(suite, &public, b"info", b"aad", b"meeting key").unwrap();
            assert_eq!(sealed.len(), suite.encapped_len() + 11 + 16);
            assert_eq!(pair.open(b"info", b"aad", &sealed).unwrap(), b"meeting key");
            // Altered aad, info, ciphertext or encapsulation: all rejected.
            assert!(pair.open(b"info", b"aaX", &sealed).is_err());
            assert!(pair.open(b"infX", b"aad", &sealed).is_err());
            for i in [0, suite.encapped_len() - 1, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert!(
                    pair.open(b"info", b"aad", &bad).is_err(),
                    "{suite:?} byte {i}"
                );
            }
            // Another recipient's key cannot open it.
            let other = KemKeyPair::generate(suite);
            assert!(other.open(b"info", b"aad", &sealed).is_err());
            assert!(pair.open(b"info", b"aad", &sealed[..10]).is_err());
        }
        assert_eq!(KemSuite::XWing.public_key_len(), 1216);
        assert_eq!(KemSuite::XWing.encapped_len(), 1120);
    }
}
