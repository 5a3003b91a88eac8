//! Wire format of Oblivious Relay (`orelay/1`), sans-IO.
//!
//! This crate owns every byte that crosses the wire: the control messages on the
//! bidirectional control stream ([`control`]), the cleartext routing headers of media
//! objects ([`media`]), the close codes and rejection reasons ([`error`]) and the limits
//! that bound every field ([`limits`]). It performs no I/O and has no clock.
//!
//! Decoders are total: any byte string decodes to a value or a [`DecodeError`], never a
//! panic, an allocation larger than the stated limits, or a loop that depends on
//! attacker-controlled counts. `docs/PROTOCOL.md` specifies the same format in prose,
//! and `tests/vectors/` pins it with hex test vectors.
//!
//! The crate never touches media keys or payloads: a media payload is opaque
//! ciphertext to everything here.
#![forbid(unsafe_code)]

pub mod admission;
pub mod codec;
pub mod control;
pub mod error;
pub mod limits;
pub mod media;
pub mod varint;

pub use admission::{Credential, HostAction, Recipient, Role, SharePolicy};
pub use control::{
    ClientMessage, ControlDecoder, JoinOutcome, RosterParticipant, ServerMessage, TrackInfo,
};
pub use error::{DecodeError, ErrorCode, RefuseReason, RejectReason};
pub use media::{DatagramHeader, GroupHeader, ObjectHeader, TrackKind};

/// The ALPN protocol identifier negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"orelay/1";

/// The protocol version carried in [`ClientMessage::Join`]; a relay rejects any other
/// version with [`RejectReason::UNSUPPORTED_VERSION`].
pub const PROTOCOL_VERSION: u64 = 1;

/// A participant's identifier within one meeting, assigned by the relay on admission.
pub type ParticipantId = u64;

/// A track's identifier, chosen by its publisher and unique among that publisher's tracks.
pub type TrackId = u64;
