//! Messages a client sends on its control stream.

use bytes::{BufMut, Bytes};

use super::{put_track_info, read_track_info, types, ControlMessage, TrackInfo};
use crate::admission::{Credential, HostAction, Recipient};
use crate::codec::{put_bytes, Reader};
use crate::error::DecodeError;
use crate::limits::{
    MAX_INFO_LEN, MAX_KEYS_LEN, MAX_KEY_MESSAGE_LEN, MAX_MEETING_ID_LEN, MAX_PASSCODE_LEN,
};
use crate::{varint, ParticipantId, TrackId};

/// Messages a client sends on its control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Join a meeting; must be the first message.
    Join {
        /// Must be [`crate::PROTOCOL_VERSION`].
        version: u64,
        /// At least [`crate::limits::MIN_MEETING_ID_LEN`] characters of `[0-9A-Za-z_-]`.
        meeting_id: String,
        /// The meeting passcode, if the meeting has one (empty otherwise).
        passcode: String,
        /// Opaque blob forwarded to other participants (for example a sealed display name).
        info: Bytes,
        /// A signed join token or, in open mode, the host secret (trailing, optional).
        credential: Credential,
        /// Opaque public-key bundle forwarded in `ParticipantJoined` (trailing, optional).
        keys: Bytes,
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
    /// A moderation request (hosts and co-hosts only).
    HostAction(HostAction),
    /// An opaque end-to-end key message (sealed meeting key, signed roster…) for one
    /// participant or for all; the relay forwards it verbatim.
    KeyMessage {
        /// Who receives it.
        to: Recipient,
        /// The blob, at most [`MAX_KEY_MESSAGE_LEN`] bytes.
        blob: Bytes,
    },
}

impl ControlMessage for ClientMessage {
    fn known_type(ty: u64) -> bool {
        (types::JOIN..=types::KEY_MESSAGE).contains(&ty)
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
            ClientMessage::HostAction(_) => types::HOST_ACTION,
            ClientMessage::KeyMessage { .. } => types::KEY_MESSAGE,
        }
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        match self {
            ClientMessage::Join {
                version,
                meeting_id,
                passcode,
                info,
                credential,
                keys,
            } => {
                varint::encode(*version, buf);
                put_bytes(buf, meeting_id.as_bytes());
                put_bytes(buf, passcode.as_bytes());
                put_bytes(buf, info);
                // Trailing optional fields: omitted when empty, so `orelay/1` joins hold.
                if *credential != Credential::None || !keys.is_empty() {
                    credential.encode(buf);
                    put_bytes(buf, keys);
                }
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
            ClientMessage::HostAction(action) => action.encode(buf),
            ClientMessage::KeyMessage { to, blob } => {
                to.encode(buf);
                put_bytes(buf, blob);
            }
        }
    }

    fn decode_body(ty: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            types::JOIN => {
                let version = r.varint()?;
                let meeting_id = r.string("meeting_id", MAX_MEETING_ID_LEN)?;
                let passcode = r.string("passcode", MAX_PASSCODE_LEN)?;
                let info = r.blob("info", MAX_INFO_LEN)?;
                let (credential, keys) = if r.remaining() > 0 {
                    (Credential::decode(r)?, r.blob("keys", MAX_KEYS_LEN)?)
                } else {
                    (Credential::None, Bytes::new())
                };
                ClientMessage::Join {
                    version,
                    meeting_id,
                    passcode,
                    info,
                    credential,
                    keys,
                }
            }
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
            types::HOST_ACTION => ClientMessage::HostAction(HostAction::decode(r)?),
            types::KEY_MESSAGE => ClientMessage::KeyMessage {
                to: Recipient::decode(r)?,
                blob: r.blob("key message", MAX_KEY_MESSAGE_LEN)?,
            },
            other => return Err(DecodeError::UnknownMessage(other)),
        })
    }
}
