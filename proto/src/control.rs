//! Control messages: one bidirectional stream per connection, carrying frames of
//! `type (varint) | length (varint) | body (length bytes)`.
//!
//! The client sends [`ClientMessage`]s and the relay [`ServerMessage`]s. Both share
//! the framing and [`ControlDecoder`], which buffers at most one frame and rejects a
//! length prefix over [`MAX_CONTROL_MESSAGE`] or an unknown type as soon as the frame
//! header arrives, before buffering its body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{put_bytes, Reader};
use crate::error::{DecodeError, RejectReason};
use crate::limits::{
    MAX_CONTROL_MESSAGE, MAX_INFO_LEN, MAX_LAYERS, MAX_MEETING_ID_LEN, MAX_PASSCODE_LEN,
    MAX_REDIRECT_LEN,
};
use crate::media::TrackKind;
use crate::{varint, ParticipantId, TrackId};

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

/// One participant as listed to a newcomer (sent as `ParticipantJoined`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterParticipant {
    /// The participant.
    pub participant: ParticipantId,
    /// Opaque info blob the participant supplied at join.
    pub info: Bytes,
}

/// Messages a client sends on its control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Join a meeting; must be the first message.
    Join {
        /// Must be [`crate::PROTOCOL_VERSION`].
        version: u64,
        /// At least [`crate::limits::MIN_MEETING_ID_LEN`] characters of `[0-9A-Za-z_-]`.
        meeting_id: String,
        /// The meeting passcode (the first participant sets it).
        passcode: String,
        /// Opaque blob forwarded to other participants (for example a sealed display name).
        info: Bytes,
    },
    /// Start publishing a track.
    Publish(TrackInfo),
    /// Stop publishing a track.
    Unpublish {
        /// The track.
        track: TrackId,
    },
    /// Receive one layer of another participant's track.
    Subscribe {
        /// The publishing participant.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
        /// Simulcast layer to receive (ignored for audio).
        layer: u8,
    },
    /// Stop receiving a track.
    Unsubscribe {
        /// The publishing participant.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// Ask a publisher for a new group (keyframe) on a track layer.
    RequestKeyframe {
        /// The publishing participant.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
        /// The layer.
        layer: u8,
    },
    /// Leave the meeting; the relay then closes the connection with `NO_ERROR`.
    Leave,
}

/// Outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Admitted with this participant ID.
    Admitted {
        /// The new participant's ID within the meeting.
        participant: ParticipantId,
    },
    /// Rejected; the relay closes the connection with `JOIN_REJECTED`.
    Rejected {
        /// Why.
        reason: RejectReason,
    },
    /// The relay is overloaded; try again after this many milliseconds.
    Overloaded {
        /// Back-off in milliseconds.
        retry_after_ms: u64,
    },
}

/// Messages the relay sends on a client's control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// The answer to `Join`.
    JoinResult(JoinOutcome),
    /// A participant is in the meeting (sent for everyone present on admission, then for each newcomer).
    ParticipantJoined(RosterParticipant),
    /// A participant left.
    ParticipantLeft {
        /// Who left.
        participant: ParticipantId,
    },
    /// A participant publishes a track.
    TrackPublished {
        /// The publisher.
        participant: ParticipantId,
        /// The track.
        info: TrackInfo,
    },
    /// A participant stopped publishing a track.
    TrackUnpublished {
        /// The publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// Someone needs a new group on one of your tracks: start one with a keyframe.
    KeyframeRequest {
        /// Your track.
        track: TrackId,
        /// The layer.
        layer: u8,
    },
    /// A subscription ended because the track or its publisher went away or never existed.
    SubscriptionEnded {
        /// The publisher.
        publisher: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// The relay is draining: reconnect elsewhere (or anywhere, if `redirect` is empty).
    GoAway {
        /// Where to reconnect, as `host:port`, or empty.
        redirect: String,
    },
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
    pub const JOIN_RESULT: u64 = 0x41;
    pub const PARTICIPANT_JOINED: u64 = 0x42;
    pub const PARTICIPANT_LEFT: u64 = 0x43;
    pub const TRACK_PUBLISHED: u64 = 0x44;
    pub const TRACK_UNPUBLISHED: u64 = 0x45;
    pub const KEYFRAME_REQUEST: u64 = 0x46;
    pub const SUBSCRIPTION_ENDED: u64 = 0x47;
    pub const GO_AWAY: u64 = 0x48;
}

fn put_track_info(buf: &mut impl BufMut, info: &TrackInfo) {
    varint::encode(info.track, buf);
    buf.put_u8(info.kind.0);
    buf.put_u8(info.layers);
    buf.put_u8(info.priority);
}

fn read_track_info(r: &mut Reader<'_>) -> Result<TrackInfo, DecodeError> {
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

impl ControlMessage for ClientMessage {
    fn known_type(ty: u64) -> bool {
        (types::JOIN..=types::LEAVE).contains(&ty)
    }

    fn message_type(&self) -> u64 {
        match self {
            ClientMessage::Join { .. } => types::JOIN,
            ClientMessage::Publish(_) => types::PUBLISH,
            ClientMessage::Unpublish { .. } => types::UNPUBLISH,
            ClientMessage::Subscribe { .. } => types::SUBSCRIBE,
            ClientMessage::Unsubscribe { .. } => types::UNSUBSCRIBE,
            ClientMessage::RequestKeyframe { .. } => types::REQUEST_KEYFRAME,
            ClientMessage::Leave => types::LEAVE,
        }
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        match self {
            ClientMessage::Join {
                version,
                meeting_id,
                passcode,
                info,
            } => {
                varint::encode(*version, buf);
                put_bytes(buf, meeting_id.as_bytes());
                put_bytes(buf, passcode.as_bytes());
                put_bytes(buf, info);
            }
            ClientMessage::Publish(info) => put_track_info(buf, info),
            ClientMessage::Unpublish { track } => varint::encode(*track, buf),
            ClientMessage::Subscribe {
                publisher,
                track,
                layer,
            }
            | ClientMessage::RequestKeyframe {
                publisher,
                track,
                layer,
            } => {
                varint::encode(*publisher, buf);
                varint::encode(*track, buf);
                buf.put_u8(*layer);
            }
            ClientMessage::Unsubscribe { publisher, track } => {
                varint::encode(*publisher, buf);
                varint::encode(*track, buf);
            }
            ClientMessage::Leave => {}
        }
    }

    fn decode_body(ty: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            types::JOIN => ClientMessage::Join {
                version: r.varint()?,
                meeting_id: r.string("meeting_id", MAX_MEETING_ID_LEN)?,
                passcode: r.string("passcode", MAX_PASSCODE_LEN)?,
                info: r.blob("info", MAX_INFO_LEN)?,
            },
            types::PUBLISH => ClientMessage::Publish(read_track_info(r)?),
            types::UNPUBLISH => ClientMessage::Unpublish { track: r.varint()? },
            types::SUBSCRIBE => ClientMessage::Subscribe {
                publisher: r.varint()?,
                track: r.varint()?,
                layer: r.u8()?,
            },
            types::UNSUBSCRIBE => ClientMessage::Unsubscribe {
                publisher: r.varint()?,
                track: r.varint()?,
            },
            types::REQUEST_KEYFRAME => ClientMessage::RequestKeyframe {
                publisher: r.varint()?,
                track: r.varint()?,
                layer: r.u8()?,
            },
            types::LEAVE => ClientMessage::Leave,
            other => return Err(DecodeError::UnknownMessage(other)),
        })
    }
}

const JOIN_ADMITTED: u64 = 0;
const JOIN_REJECTED: u64 = 1;
const JOIN_OVERLOADED: u64 = 2;

impl ControlMessage for ServerMessage {
    fn known_type(ty: u64) -> bool {
        (types::JOIN_RESULT..=types::GO_AWAY).contains(&ty)
    }

    fn message_type(&self) -> u64 {
        match self {
            ServerMessage::JoinResult(_) => types::JOIN_RESULT,
            ServerMessage::ParticipantJoined(_) => types::PARTICIPANT_JOINED,
            ServerMessage::ParticipantLeft { .. } => types::PARTICIPANT_LEFT,
            ServerMessage::TrackPublished { .. } => types::TRACK_PUBLISHED,
            ServerMessage::TrackUnpublished { .. } => types::TRACK_UNPUBLISHED,
            ServerMessage::KeyframeRequest { .. } => types::KEYFRAME_REQUEST,
            ServerMessage::SubscriptionEnded { .. } => types::SUBSCRIPTION_ENDED,
            ServerMessage::GoAway { .. } => types::GO_AWAY,
        }
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        match self {
            ServerMessage::JoinResult(JoinOutcome::Admitted { participant }) => {
                varint::encode(JOIN_ADMITTED, buf);
                varint::encode(*participant, buf);
            }
            ServerMessage::JoinResult(JoinOutcome::Rejected { reason }) => {
                varint::encode(JOIN_REJECTED, buf);
                varint::encode(u64::from(reason.0), buf);
            }
            ServerMessage::JoinResult(JoinOutcome::Overloaded { retry_after_ms }) => {
                varint::encode(JOIN_OVERLOADED, buf);
                varint::encode(*retry_after_ms, buf);
            }
            ServerMessage::ParticipantJoined(p) => {
                varint::encode(p.participant, buf);
                put_bytes(buf, &p.info);
            }
            ServerMessage::ParticipantLeft { participant } => varint::encode(*participant, buf),
            ServerMessage::TrackPublished { participant, info } => {
                varint::encode(*participant, buf);
                put_track_info(buf, info);
            }
            ServerMessage::TrackUnpublished { participant, track }
            | ServerMessage::SubscriptionEnded {
                publisher: participant,
                track,
            } => {
                varint::encode(*participant, buf);
                varint::encode(*track, buf);
            }
            ServerMessage::KeyframeRequest { track, layer } => {
                varint::encode(*track, buf);
                buf.put_u8(*layer);
            }
            ServerMessage::GoAway { redirect } => put_bytes(buf, redirect.as_bytes()),
        }
    }

    fn decode_body(ty: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            types::JOIN_RESULT => ServerMessage::JoinResult(match r.varint()? {
                JOIN_ADMITTED => JoinOutcome::Admitted {
                    participant: r.varint()?,
                },
                JOIN_REJECTED => {
                    let reason = r.varint()?;
                    let reason = u16::try_from(reason).map_err(|_| DecodeError::OutOfRange {
                        field: "reason",
                        value: reason,
                    })?;
                    JoinOutcome::Rejected {
                        reason: RejectReason(reason),
                    }
                }
                JOIN_OVERLOADED => JoinOutcome::Overloaded {
                    retry_after_ms: r.varint()?,
                },
                other => {
                    return Err(DecodeError::OutOfRange {
                        field: "join status",
                        value: other,
                    })
                }
            }),
            types::PARTICIPANT_JOINED => ServerMessage::ParticipantJoined(RosterParticipant {
                participant: r.varint()?,
                info: r.blob("info", MAX_INFO_LEN)?,
            }),
            types::PARTICIPANT_LEFT => ServerMessage::ParticipantLeft {
                participant: r.varint()?,
            },
            types::TRACK_PUBLISHED => ServerMessage::TrackPublished {
                participant: r.varint()?,
                info: read_track_info(r)?,
            },
            types::TRACK_UNPUBLISHED => ServerMessage::TrackUnpublished {
                participant: r.varint()?,
                track: r.varint()?,
            },
            types::KEYFRAME_REQUEST => ServerMessage::KeyframeRequest {
                track: r.varint()?,
                layer: r.u8()?,
            },
            types::SUBSCRIPTION_ENDED => ServerMessage::SubscriptionEnded {
                publisher: r.varint()?,
                track: r.varint()?,
            },
            types::GO_AWAY => ServerMessage::GoAway {
                redirect: r.string("redirect", MAX_REDIRECT_LEN)?,
            },
            other => return Err(DecodeError::UnknownMessage(other)),
        })
    }
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
