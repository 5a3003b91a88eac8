//! Why a session ends, grouped by who is at fault, each mapped to a close code.
//!
//! `PeerMisbehaved` and `PeerNotAllowed` are the client's doing; `RelayLimit` is this
//! relay protecting itself. Every variant maps to one documented QUIC application
//! close code ([`SessionError::close_code`]) and one low-cardinality counter label
//! ([`SessionError::label`]).

use orelay_proto::{DecodeError, ErrorCode, RefuseReason, RejectReason};

/// A peer sent something the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// Bytes that do not decode.
    #[error("malformed input: {0}")]
    Malformed(#[from] DecodeError),
    /// A message not valid in the session's state.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// Media for a track the sender has not published (or the wrong kind for the transport).
    #[error("media for a track it did not publish")]
    TrackNotPublished,
    /// A track kind this version does not know.
    #[error("unknown track kind {0}")]
    UnknownTrackKind(u8),
    /// The same track ID published twice.
    #[error("track published twice")]
    DuplicateTrack,
    /// The control stream ended without `Leave`.
    #[error("control stream closed")]
    ControlStreamClosed,
}

/// A peer asked for something it is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerNotAllowed {
    /// The join was rejected.
    #[error("join rejected: {0}")]
    JoinRejected(RejectReason),
    /// No join arrived in time.
    #[error("no join within the deadline")]
    JoinTimeout,
}

/// The relay reached one of its own limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayLimit {
    /// The peer does not read its control stream and the outgoing backlog is full.
    #[error("control backlog full")]
    ControlBacklog,
    /// Too many published tracks.
    #[error("too many tracks")]
    TooManyTracks,
    /// Too many subscriptions.
    #[error("too many subscriptions")]
    TooManySubscriptions,
    /// Over the relay's join rate; the client was told `Overloaded` with a retry time.
    #[error("overloaded")]
    Overloaded,
    /// A connection that had not joined, closed to make room for a newer one.
    #[error("evicted while not joined")]
    Evicted,
}

/// Why a session was closed by the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer misbehaved.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The peer is not allowed.
    #[error("peer not allowed: {0}")]
    PeerNotAllowed(#[from] PeerNotAllowed),
    /// A relay limit.
    #[error("relay limit: {0}")]
    RelayLimit(#[from] RelayLimit),
    /// A request the participant may not make (a viewer publishing, a non-host
    /// moderating…): answered with `Refused`, the connection stays open.
    #[error("refused: {0}")]
    Refused(RefuseReason),
}

impl From<DecodeError> for SessionError {
    fn from(e: DecodeError) -> Self {
        SessionError::PeerMisbehaved(PeerMisbehaved::Malformed(e))
    }
}

impl SessionError {
    /// The QUIC application close code this error closes the connection with.
    pub fn close_code(&self) -> ErrorCode {
        match self {
            SessionError::PeerMisbehaved(e) => match e {
                PeerMisbehaved::Malformed(d) => d.close_code(),
                PeerMisbehaved::UnexpectedMessage(_) | PeerMisbehaved::DuplicateTrack => {
                    ErrorCode::UNEXPECTED_MESSAGE
                }
                PeerMisbehaved::TrackNotPublished => ErrorCode::TRACK_NOT_PUBLISHED,
                PeerMisbehaved::UnknownTrackKind(_) => ErrorCode::PROTOCOL_VIOLATION,
                PeerMisbehaved::ControlStreamClosed => ErrorCode::CONTROL_STREAM_CLOSED,
            },
            SessionError::PeerNotAllowed(PeerNotAllowed::JoinRejected(_)) => {
                ErrorCode::JOIN_REJECTED
            }
            SessionError::PeerNotAllowed(PeerNotAllowed::JoinTimeout) => ErrorCode::JOIN_TIMEOUT,
            SessionError::RelayLimit(RelayLimit::ControlBacklog) => ErrorCode::CONTROL_BACKLOG,
            SessionError::RelayLimit(RelayLimit::Overloaded | RelayLimit::Evicted) => {
                ErrorCode::CONNECTION_LIMIT
            }
            SessionError::RelayLimit(_) => ErrorCode::LIMIT_EXCEEDED,
            // Never closes a connection; the code is only for completeness.
            SessionError::Refused(_) => ErrorCode::UNEXPECTED_MESSAGE,
        }
    }

    /// A stable, low-cardinality label for counters: the close code's name.
    pub fn label(&self) -> &'static str {
        self.close_code().name().unwrap_or("UNKNOWN")
    }
}
