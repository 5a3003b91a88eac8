//! Messages the relay sends on a client's control stream.

use bytes::{BufMut, Bytes};

use super::{put_track_info, read_track_info, types, ControlMessage, RosterParticipant, TrackInfo};
use crate::admission::{read_bool, Role, SharePolicy};
use crate::codec::{put_bytes, Reader};
use crate::error::{DecodeError, RefuseReason, RejectReason};
use crate::limits::{MAX_KEY_MESSAGE_LEN, MAX_REDIRECT_LEN};
use crate::{varint, ParticipantId, TrackId};

/// Outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Admitted with this participant ID.
    Admitted {
        /// The new participant's ID within the meeting.
        participant: ParticipantId,
        /// Its role (trailing on the wire, omitted for `Participant`).
        role: Role,
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
    /// This source or meeting made too many join attempts; wait this long (the wait
    /// grows with further attempts). The relay then closes with `JOIN_REJECTED`.
    Throttled {
        /// Back-off in milliseconds.
        retry_after_ms: u64,
    },
    /// Held in the meeting's waiting room until a host admits (a later
    /// `JoinResult(Admitted)`) or denies (`Rejected { DENIED }`) it. A waiting
    /// participant receives no media, roster or key messages.
    Waiting {
        /// The ID it will have once admitted (hosts see it in `WaitingJoined`).
        participant: ParticipantId,
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
    /// An opaque end-to-end key message from another participant.
    KeyMessage {
        /// The sender.
        from: ParticipantId,
        /// Whether it was sent to everyone (`Recipient::All`) rather than to you alone.
        to_all: bool,
        /// The blob, verbatim.
        blob: Bytes,
    },
    /// Hosts only: someone entered the waiting room.
    WaitingJoined(RosterParticipant),
    /// Hosts only: someone left the waiting room (admitted, denied or gone).
    WaitingLeft {
        /// Who.
        participant: ParticipantId,
    },
    /// A request was refused; the connection stays open.
    Refused {
        /// The type code of the refused client message (for example `Publish`).
        message_type: u64,
        /// What it was about: a track for `Publish`, a participant for a host action, else 0.
        subject: u64,
        /// Why.
        reason: RefuseReason,
    },
    /// The meeting's moderation state, sent on admission and whenever it changes.
    MeetingPolicy {
        /// Whether new joins (but hosts') are refused.
        locked: bool,
        /// Who may share a screen.
        share: SharePolicy,
    },
    /// A host stopped (or resumed) forwarding a participant's track.
    TrackStopped {
        /// The publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// `true` when stopped, `false` when resumed.
        stopped: bool,
    },
    /// Hosts only: the meeting is drawing many failed join attempts.
    AtRisk {
        /// Failed attempts on this meeting in the relay's current window.
        failed_attempts: u64,
    },
}

const JOIN_ADMITTED: u64 = 0;
const JOIN_REJECTED: u64 = 1;
const JOIN_OVERLOADED: u64 = 2;
const JOIN_THROTTLED: u64 = 3;
const JOIN_WAITING: u64 = 4;

impl ControlMessage for ServerMessage {
    fn known_type(ty: u64) -> bool {
        (types::JOIN_RESULT..=types::AT_RISK).contains(&ty)
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
            ServerMessage::KeyMessage { .. } => types::KEY_MESSAGE_FROM,
            ServerMessage::WaitingJoined(_) => types::WAITING_JOINED,
            ServerMessage::WaitingLeft { .. } => types::WAITING_LEFT,
            ServerMessage::Refused { .. } => types::REFUSED,
            ServerMessage::MeetingPolicy { .. } => types::MEETING_POLICY,
            ServerMessage::TrackStopped { .. } => types::TRACK_STOPPED,
            ServerMessage::AtRisk { .. } => types::AT_RISK,
        }
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        match self {
            ServerMessage::JoinResult(JoinOutcome::Admitted { participant, role }) => {
                varint::encode(JOIN_ADMITTED, buf);
                varint::encode(*participant, buf);
                if *role != Role::Participant {
                    buf.put_u8(role.code());
                }
            }
            ServerMessage::JoinResult(JoinOutcome::Rejected { reason }) => {
                varint::encode(JOIN_REJECTED, buf);
                varint::encode(u64::from(reason.0), buf);
            }
            ServerMessage::JoinResult(JoinOutcome::Overloaded { retry_after_ms }) => {
                varint::encode(JOIN_OVERLOADED, buf);
                varint::encode(*retry_after_ms, buf);
            }
            ServerMessage::JoinResult(JoinOutcome::Throttled { retry_after_ms }) => {
                varint::encode(JOIN_THROTTLED, buf);
                varint::encode(*retry_after_ms, buf);
            }
            ServerMessage::JoinResult(JoinOutcome::Waiting { participant }) => {
                varint::encode(JOIN_WAITING, buf);
                varint::encode(*participant, buf);
            }
            ServerMessage::ParticipantJoined(p) | ServerMessage::WaitingJoined(p) => p.encode(buf),
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
            ServerMessage::KeyMessage { from, to_all, blob } => {
                varint::encode(*from, buf);
                buf.put_u8(u8::from(*to_all));
                put_bytes(buf, blob);
            }
            ServerMessage::WaitingLeft { participant } => varint::encode(*participant, buf),
            ServerMessage::Refused {
                message_type,
                subject,
                reason,
            } => {
                varint::encode(*message_type, buf);
                varint::encode(*subject, buf);
                varint::encode(u64::from(reason.0), buf);
            }
            ServerMessage::MeetingPolicy { locked, share } => {
                buf.put_u8(u8::from(*locked));
                share.encode(buf);
            }
            ServerMessage::TrackStopped {
                participant,
                track,
                stopped,
            } => {
                varint::encode(*participant, buf);
                varint::encode(*track, buf);
                buf.put_u8(u8::from(*stopped));
            }
            ServerMessage::AtRisk { failed_attempts } => varint::encode(*failed_attempts, buf),
        }
    }

    fn decode_body(ty: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match ty {
            types::JOIN_RESULT => ServerMessage::JoinResult(match r.varint()? {
                JOIN_ADMITTED => JoinOutcome::Admitted {
                    participant: r.varint()?,
                    role: if r.remaining() > 0 {
                        Role::from_code(u64::from(r.u8()?))?
                    } else {
                        Role::Participant
                    },
                },
                JOIN_REJECTED => JoinOutcome::Rejected {
                    reason: RejectReason(read_u16(r, "reason")?),
                },
                JOIN_OVERLOADED => JoinOutcome::Overloaded {
                    retry_after_ms: r.varint()?,
                },
                JOIN_THROTTLED => JoinOutcome::Throttled {
                    retry_after_ms: r.varint()?,
                },
                JOIN_WAITING => JoinOutcome::Waiting {
                    participant: r.varint()?,
                },
                other => {
                    return Err(DecodeError::OutOfRange {
                        field: "join status",
                        value: other,
                    })
                }
            }),
            types::PARTICIPANT_JOINED => {
                ServerMessage::ParticipantJoined(RosterParticipant::decode(r)?)
            }
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
            types::KEY_MESSAGE_FROM => ServerMessage::KeyMessage {
                from: r.varint()?,
                to_all: read_bool(r, "to_all")?,
                blob: r.blob("key message", MAX_KEY_MESSAGE_LEN)?,
            },
            types::WAITING_JOINED => ServerMessage::WaitingJoined(RosterParticipant::decode(r)?),
            types::WAITING_LEFT => ServerMessage::WaitingLeft {
                participant: r.varint()?,
            },
            types::REFUSED => ServerMessage::Refused {
                message_type: r.varint()?,
                subject: r.varint()?,
                reason: RefuseReason(read_u16(r, "reason")?),
            },
            types::MEETING_POLICY => ServerMessage::MeetingPolicy {
                locked: read_bool(r, "locked")?,
                share: SharePolicy::decode(r)?,
            },
            types::TRACK_STOPPED => ServerMessage::TrackStopped {
                participant: r.varint()?,
                track: r.varint()?,
                stopped: read_bool(r, "stopped")?,
            },
            types::AT_RISK => ServerMessage::AtRisk {
                failed_attempts: r.varint()?,
            },
            other => return Err(DecodeError::UnknownMessage(other)),
        })
    }
}

/// Reads a varint that must fit in a `u16` (reason codes).
fn read_u16(r: &mut Reader<'_>, field: &'static str) -> Result<u16, DecodeError> {
    let value = r.varint()?;
    u16::try_from(value).map_err(|_| DecodeError::OutOfRange { field, value })
}
