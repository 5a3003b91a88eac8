//! Control messages: one bidirectional stream per connection, carrying frames of
//! `type (varint) | length (varint) | body (length bytes)`.
//!
//! The client sends [`ClientMessage`]s and the relay [`ServerMessage`]s. Both share
//! the framing and [`ControlDecoder`], which buffers at most one frame and rejects a
//! length prefix over [`MAX_CONTROL_MESSAGE`] or an unknown type as soon as the frame
//! header arrives, before buffering its body.
//!
//! Fields added after `orelay/1` first shipped (credentials, key bundles, roles) are
//! optional *trailing* fields: a sender omits them when they hold their default, and a
//! receiver reads them only if bytes remain, so older encodings stay valid.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::admission::Role;
use crate::codec::{put_bytes, Reader};
use crate::error::DecodeError;
use crate::limits::{MAX_CONTROL_MESSAGE, MAX_INFO_LEN, MAX_KEYS_LEN, MAX_LAYERS};
use crate::media::TrackKind;
use crate::{varint, ParticipantId, TrackId};

mod client;
mod server;

pub use client::ClientMessage;
pub use server::{JoinOutcome, ServerMessage};

/// A published track as described in `Publish` and `TrackPublished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    /// The publisher's identifier for the track.
    pub track: TrackId,
    /// Audio, video or screen.
    pub kind: TrackKind,
    /// Number of simulcast layers, 1 to [`MAX_LAYERS`]; layer 0 is the lowest quality.
    pub layers: u8,
    /// Send priority, higher first (audio is usually highest).
    pub priority: u8,
}

/// One participant as listed to others (`ParticipantJoined`, `WaitingJoined`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterParticipant {
    /// The participant.
    pub participant: ParticipantId,
    /// Opaque info blob the participant supplied at join.
    pub info: Bytes,
    /// Its role in the meeting.
    pub role: Role,
    /// Its opaque public-key bundle (identity and KEM keys), forwarded verbatim.
    pub keys: Bytes,
}

impl RosterParticipant {
    pub(crate) fn encode(&self, buf: &mut impl BufMut) {
        varint::encode(self.participant, buf);
        put_bytes(buf, &self.info);
        // Trailing optional fields: omitted when default, so `orelay/1` encodings hold.
        if self.role != Role::Participant || !self.keys.is_empty() {
            buf.put_u8(self.role.code());
            put_bytes(buf, &self.keys);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let participant = r.varint()?;
        let info = r.blob("info", MAX_INFO_LEN)?;
        let (role, keys) = if r.remaining() > 0 {
            (
                Role::from_code(u64::from(r.u8()?))?,
                r.blob("keys", MAX_KEYS_LEN)?,
            )
        } else {
            (Role::Participant, Bytes::new())
        };
        Ok(RosterParticipant {
            participant,
            info,
            role,
            keys,
        })
    }
}

/// A message type that can travel on the control stream.
pub trait ControlMessage: Sized {
    /// Whether this direction defines message type `ty`.
    fn known_type(ty: u64) -> bool;
    /// The message's type code.
    fn message_type(&self) -> u64;
    /// Appends the body (without framing).
    fn encode_body(&self, buf: &mut impl BufMut);
    /// Decodes a body of type `ty`; the whole body must be consumed.
    fn decode_body(ty: u64, body: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Appends the framed message: type, length, body.
    fn encode(&self, buf: &mut impl BufMut) {
        let mut body = Vec::with_capacity(64);
        self.encode_body(&mut body);
        varint::encode(self.message_type(), buf);
        varint::encode(body.len() as u64, buf);
        buf.put_slice(&body);
    }

    /// The framed message as bytes.
    fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        self.encode(&mut buf);
        buf.freeze()
    }

    /// Decodes one framed message from the front of `buf`, returning it and the bytes
    /// consumed. `Incomplete` means more bytes are needed.
    fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        if !Self::known_type(ty) {
            return Err(DecodeError::UnknownMessage(ty));
        }
        let body = r.bytes("message", MAX_CONTROL_MESSAGE)?;
        let mut body_reader = Reader::new(body);
        // The frame is complete, so running out of body bytes is a malformed
        // message, not a reason to wait for more.
        let msg = Self::decode_body(ty, &mut body_reader).map_err(|e| match e {
            DecodeError::Incomplete => DecodeError::Truncated,
            other => other,
        })?;
        body_reader.finish()?;
        Ok((msg, r.position()))
    }
}

mod types {
    pub const JOIN: u64 = 0x01;
    pub const PUBLISH: u64 = 0x02;
    pub const UNPUBLISH: u64 = 0x03;
    pub const SUBSCRIBE: u64 = 0x04;
    pub const UNSUBSCRIBE: u64 = 0x05;
    pub const REQUEST_KEYFRAME: u64 = 0x06;
    pub const LEAVE: u64 = 0x07;
    pub const HOST_ACTION: u64 = 0x08;
    pub const KEY_MESSAGE: u64 = 0x09;
    pub const JOIN_RESULT: u64 = 0x41;
    pub const PARTICIPANT_JOINED: u64 = 0x42;
    pub const PARTICIPANT_LEFT: u64 = 0x43;
    pub const TRACK_PUBLISHED: u64 = 0x44;
    pub const TRACK_UNPUBLISHED: u64 = 0x45;
    pub const KEYFRAME_REQUEST: u64 = 0x46;
    pub const SUBSCRIPTION_ENDED: u64 = 0x47;
    pub const GO_AWAY: u64 = 0x48;
    pub const KEY_MESSAGE_FROM: u64 = 0x49;
    pub const WAITING_JOINED: u64 = 0x4a;
    pub const WAITING_LEFT: u64 = 0x4b;
    pub const REFUSED: u64 = 0x4c;
    pub const MEETING_POLICY: u64 = 0x4d;
    pub const TRACK_STOPPED: u64 = 0x4e;
    pub const AT_RISK: u64 = 0x4f;
}

pub(crate) fn put_track_info(buf: &mut impl BufMut, info: &TrackInfo) {
    varint::encode(info.track, buf);
    buf.put_u8(info.kind.0);
    buf.put_u8(info.layers);
    buf.put_u8(info.priority);
}

pub(crate) fn read_track_info(r: &mut Reader<'_>) -> Result<TrackInfo, DecodeError> {
    let track = r.varint()?;
    let kind = TrackKind(r.u8()?);
    let layers = r.u8()?;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(DecodeError::OutOfRange {
            field: "layers",
            value: u64::from(layers),
        });
    }
    let priority = r.u8()?;
    Ok(TrackInfo {
        track,
        kind,
        layers,
        priority,
    })
}

/// Reassembles control messages from stream chunks, holding at most one frame.
///
/// Feed it with [`ControlDecoder::push`] and drain it with [`ControlDecoder::next`]
/// until that returns `Ok(None)`. An error is final: the peer misbehaved, close the
/// connection with [`DecodeError::close_code`].
#[derive(Debug)]
pub struct ControlDecoder<M> {
    buf: BytesMut,
    _message: std::marker::PhantomData<fn() -> M>,
}

impl<M: ControlMessage> Default for ControlDecoder<M> {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            _message: std::marker::PhantomData,
        }
    }
}

/// The most bytes a [`ControlDecoder`] ever buffers: one maximal frame.
pub const MAX_DECODER_BUFFER: usize = MAX_CONTROL_MESSAGE + 16;

impl<M: ControlMessage> ControlDecoder<M> {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or the error
    /// that makes the stream unusable.
    // Not an `Iterator`: it returns a `Result` and `Ok(None)` means "not yet", not "done".
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<M>, DecodeError> {
        match M::decode(&self.buf) {
            Ok((msg, used)) => {
                self.buf.advance(used);
                Ok(Some(msg))
            }
            Err(DecodeError::Incomplete) => {
                // The frame header was valid (type known, length within limit) or is
                // still arriving, so the buffer is bounded by one frame.
                if self.buf.len() > MAX_DECODER_BUFFER {
                    return Err(DecodeError::TooLong {
                        field: "message",
                        len: self.buf.len() as u64,
                        max: MAX_CONTROL_MESSAGE,
                    });
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
