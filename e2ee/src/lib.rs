//! Client-side end-to-end encryption for Oblivious Relay meetings.
//!
//! Sans-IO: no sockets, no clock, no runtime. The client feeds roster events and key
//! messages into [`MeetingSecurity`] with the current `now`, sends the key messages it
//! produces, and uses it to encrypt and decrypt media. The relay never links this crate
//! (`scripts/test.sh` checks), so it holds no code that could derive a media key.
//!
//! Pieces, and why these crates:
//! - **Identity** ([`identity`]): a long-term Ed25519 signing key (`ring`, already the
//!   project's one crypto provider) signs the participant's key bundle, the leader's
//!   key deliveries and rosters.
//! - **KEM / HPKE** ([`kem`]): RFC 9180 HPKE from the `hpke` crate (RustCrypto
//!   maintainers, pure Rust), with the X-Wing hybrid KEM (X25519 + ML-KEM-768) by
//!   default and DHKEM(X25519) behind [`KemSuite::X25519`] only to measure the hybrid's
//!   cost. `hpke` is the maintained crate that implements both X-Wing and the classic
//!   KEMs behind one API; `hpke-rs` would bring a second crypto provider (libcrux).
//! - **Media** ([`frame`]): SFrame (RFC 9605) from the `sframe` crate on its `ring`
//!   backend (AES-GCM suites), with the relay's cleartext routing header as SFrame
//!   metadata (authenticated, not encrypted). Checked against the RFC's test vectors.
//! - **Key messages** ([`envelope`]): a versioned, bounded envelope
//!   (≤ [`MAX_KEY_MESSAGE_LEN`]); rosters of any size are split into signed parts.
//! - **State machine** ([`session`]): leader election, key distribution, rekey on leave
//!   and every 5 minutes, signed roster heartbeats, roster checks, security code.

pub mod envelope;
pub mod frame;
pub mod identity;
pub mod info;
pub mod kem;
pub mod roster;
pub mod session;
mod wire;

pub use frame::{EpochKeys, FrameError};
pub use identity::{IdentityKey, KeyBundle, LocalKeys};
pub use kem::{KemKeyPair, KemSuite};
pub use session::{Config, Input, MeetingSecurity, Outbound, SecurityEvent, Warning};

/// A participant's ID as the relay assigns it (increasing from 1 within a meeting, so
/// the smallest ID present is the oldest participant).
pub type ParticipantId = u64;

/// Largest key message the relay forwards (mirrors `orelay_proto`'s limit).
pub const MAX_KEY_MESSAGE_LEN: usize = 12 * 1024;

/// Largest public-key bundle a participant may present at join (mirrors `orelay_proto`).
pub const MAX_KEYS_LEN: usize = 2048;

/// Who a key message goes to (mapped onto `orelay_proto::Recipient` by the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// Every admitted participant but the sender.
    All,
    /// One participant.
    One(ParticipantId),
}

/// Why an E2EE operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eeError {
    /// Bytes from the network did not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A signature did not verify.
    #[error("bad signature")]
    BadSignature,
    /// HPKE sealing or opening failed (wrong key, or altered).
    #[error("HPKE failure")]
    Hpke,
    /// Authentication of sealed data failed.
    #[error("authentication failed")]
    Forged,
    /// No key (yet) for this operation.
    #[error("no key")]
    NoKey,
    /// The operating system gave no randomness.
    #[error("no system randomness")]
    Random,
    /// Something would exceed a size bound.
    #[error("too large: {0}")]
    TooLarge(&'static str),
}
