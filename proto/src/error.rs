//! Decode errors, QUIC application close codes and join rejection reasons.
//!
//! Close codes are grouped by who is at fault, as rustls groups its errors: the peer
//! misbehaved (`0x1xx`), the peer is not allowed (`0x2xx`), or the relay hit one of
//! its own limits (`0x3xx`). Codes and reasons are open newtypes: an unknown value
//! still decodes and round-trips, so a newer peer never crashes an older one.

use std::fmt;

/// Why a byte string did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed; on a stream, wait for them.
    #[error("incomplete input")]
    Incomplete,
    /// A length field exceeds its limit.
    #[error("{field} is {len} bytes, limit {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The length the peer claimed.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A numeric field is outside its allowed range.
    #[error("{field} value {value} out of range")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value the peer sent.
        value: u64,
    },
    /// A string field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A message type this version does not define.
    #[error("unknown message type {0:#x}")]
    UnknownMessage(u64),
    /// A media stream type this version does not define.
    #[error("unknown stream type {0:#x}")]
    UnknownStream(u64),
    /// A message body ended in the middle of a field.
    #[error("message body truncated")]
    Truncated,
    /// Bytes left over after a message body was fully decoded.
    #[error("{extra} trailing bytes after message")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

impl DecodeError {
    /// The close code a relay uses when a peer sends bytes that fail this way.
    pub fn close_code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLong { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            DecodeError::UnknownMessage(_) => ErrorCode::UNKNOWN_MESSAGE,
            _ => ErrorCode::PROTOCOL_VIOLATION,
        }
    }
}

macro_rules! open_code {
    ($(#[$doc:meta])* $name:ident($repr:ty) { $($(#[$cdoc:meta])* $const:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cdoc])* pub const $const: $name = $name($value);)*

            /// The code's documented name, or `None` for a value this version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($const)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

open_code! {
    /// A QUIC application close code (`CONNECTION_CLOSE` of type 0x1d) or stream reset code.
    ErrorCode(u32) {
        /// Normal close: the participant left.
        NO_ERROR = 0x0,
        /// The relay is shutting down.
        SHUTDOWN = 0x1,
        /// A media group was abandoned because the subscriber fell behind (stream reset code).
        GROUP_DROPPED = 0x2,
        /// The publisher stopped the group (stream reset code).
        GROUP_CANCELLED = 0x3,
        /// Peer misbehaved: a malformed control message or media header.
        PROTOCOL_VIOLATION = 0x100,
        /// Peer misbehaved: a length prefix or field over its limit.
        MESSAGE_TOO_LARGE = 0x101,
        /// Peer misbehaved: a control message type this version does not define.
        UNKNOWN_MESSAGE = 0x102,
        /// Peer misbehaved: a message not valid in the session's state (say, publish before join).
        UNEXPECTED_MESSAGE = 0x103,
        /// Peer misbehaved: media for a track the sender has not published.
        TRACK_NOT_PUBLISHED = 0x104,
        /// Peer misbehaved: the control stream was closed before leaving.
        CONTROL_STREAM_CLOSED = 0x105,
        /// Peer not allowed: the join was rejected (the reason was sent in `JoinResult`).
        JOIN_REJECTED = 0x200,
        /// Peer not allowed: no valid join arrived in time.
        JOIN_TIMEOUT = 0x201,
        /// Peer not allowed: a host removed this participant; it may not rejoin this meeting.
        REMOVED = 0x202,
        /// Peer not allowed: a host turned this participant away from the waiting room.
        DENIED = 0x203,
        /// Relay limit: too many connections; try another relay or later.
        CONNECTION_LIMIT = 0x300,
        /// Relay limit: the peer did not read its control stream and the backlog filled.
        CONTROL_BACKLOG = 0x301,
        /// Relay limit: a per-participant limit (tracks, subscriptions) was exceeded.
        LIMIT_EXCEEDED = 0x302,
    }
}

open_code! {
    /// Why a join was rejected, carried in `JoinResult`.
    RejectReason(u16) {
        /// No such meeting, or the passcode does not match: the relay answers both the
        /// same way, in the same time, so neither can be probed.
        BAD_PASSCODE = 1,
        /// The meeting ID is malformed (too short, bad characters).
        INVALID_MEETING_ID = 2,
        /// The client speaks a protocol version this relay does not.
        UNSUPPORTED_VERSION = 3,
        /// The meeting has reached its participant limit.
        MEETING_FULL = 4,
        /// The relay has reached its meeting limit.
        TOO_MANY_MEETINGS = 5,
        /// A host locked the meeting.
        LOCKED = 6,
        /// The token does not allow this relay's region.
        REGION = 7,
        /// A host turned the participant away from the waiting room.
        DENIED = 8,
        /// A host removed this token or identity from the meeting.
        REMOVED = 9,
        /// The token is malformed, unsigned, signed by an unknown key, or for another meeting.
        TOKEN_INVALID = 10,
        /// The token has expired or is not yet valid.
        TOKEN_EXPIRED = 11,
        /// The relay requires a credential this join did not carry (a token, or in open
        /// mode the host secret to create a meeting).
        NOT_ALLOWED = 12,
    }
}

open_code! {
    /// Why a request was refused, carried in `Refused`; the connection stays open.
    RefuseReason(u16) {
        /// Only hosts and co-hosts may do this.
        NOT_HOST = 1,
        /// Viewers never publish.
        ROLE_CANNOT_PUBLISH = 2,
        /// The join token does not grant this kind of track (audio, video or screen).
        KIND_NOT_GRANTED = 3,
        /// The meeting allows screen sharing by hosts only.
        SCREEN_SHARE_HOST_ONLY = 4,
        /// A host stopped this track.
        STOPPED_BY_HOST = 5,
        /// No such participant (or track) in the meeting or waiting room.
        NO_SUCH_PARTICIPANT = 6,
        /// The sender is still in the waiting room.
        NOT_ADMITTED = 7,
        /// The sender exceeded its rate for this message.
        RATE_LIMITED = 8,
    }
}

impl ErrorCode {
    /// Converts a QUIC varint error code; values above `u32::MAX` map to `PROTOCOL_VIOLATION`.
    pub fn from_quic(code: u64) -> ErrorCode {
        u32::try_from(code).map_or(ErrorCode::PROTOCOL_VIOLATION, ErrorCode)
    }
}
