//! Admission and moderation vocabulary: roles, join credentials, host actions and the
//! recipients of opaque key messages.
//!
//! The relay enforces all of this at admission and in routing, because it never sees
//! media: a role decides what a participant may publish and whether it may moderate,
//! a host action changes who is admitted and what is forwarded.

use bytes::BufMut;

use crate::codec::{put_bytes, Reader};
use crate::error::DecodeError;
use crate::limits::MAX_TOKEN_LEN;
use crate::{varint, ParticipantId, TrackId};

/// A participant's role in a meeting, granted by its join token (or, in open mode, by
/// whether it presented the host secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Role {
    /// Runs the meeting: admits, locks, removes, stops tracks; never waits.
    Host,
    /// Same powers as the host.
    CoHost,
    /// Publishes what its token allows.
    #[default]
    Participant,
    /// Receives only; can never publish.
    Viewer,
}

impl Role {
    /// Whether this role may send host actions (admit, lock, remove, stop tracks).
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Host | Role::CoHost)
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Role::Host => 0,
            Role::CoHost => 1,
            Role::Participant => 2,
            Role::Viewer => 3,
        }
    }

    /// Decodes a wire code.
    pub fn from_code(code: u64) -> Result<Role, DecodeError> {
        Ok(match code {
            0 => Role::Host,
            1 => Role::CoHost,
            2 => Role::Participant,
            3 => Role::Viewer,
            value => {
                return Err(DecodeError::OutOfRange {
                    field: "role",
                    value,
                })
            }
        })
    }

    /// Lower-case name, as in tokens and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::CoHost => "cohost",
            Role::Participant => "participant",
            Role::Viewer => "viewer",
        }
    }
}

/// What a joiner presents besides the meeting ID and passcode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// Nothing: enough only to join an existing meeting in open mode.
    #[default]
    None,
    /// A signed join token (a JWT signed with EdDSA by the operator's meeting service).
    Token(String),
    /// Open mode only: the relay's configured host secret, which may create a meeting
    /// and makes its bearer the host.
    HostSecret(String),
}

const CREDENTIAL_NONE: u8 = 0;
const CREDENTIAL_TOKEN: u8 = 1;
const CREDENTIAL_HOST_SECRET: u8 = 2;

impl Credential {
    /// Appends `kind (u8) | value (length-prefixed)`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Credential::None => {
                buf.put_u8(CREDENTIAL_NONE);
                put_bytes(buf, &[]);
            }
            Credential::Token(t) => {
                buf.put_u8(CREDENTIAL_TOKEN);
                put_bytes(buf, t.as_bytes());
            }
            Credential::HostSecret(s) => {
                buf.put_u8(CREDENTIAL_HOST_SECRET);
                put_bytes(buf, s.as_bytes());
            }
        }
    }

    /// Decodes what [`Credential::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Credential, DecodeError> {
        let kind = r.u8()?;
        let value = r.string("credential", MAX_TOKEN_LEN)?;
        Ok(match kind {
            CREDENTIAL_NONE if value.is_empty() => Credential::None,
            CREDENTIAL_TOKEN => Credential::Token(value),
            CREDENTIAL_HOST_SECRET => Credential::HostSecret(value),
            other => {
                return Err(DecodeError::OutOfRange {
                    field: "credential",
                    value: u64::from(other),
                })
            }
        })
    }
}

/// Who may start a screen share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharePolicy {
    /// Any participant whose token allows screen share.
    #[default]
    Anyone,
    /// Hosts and co-hosts only.
    HostOnly,
}

impl SharePolicy {
    fn code(self) -> u8 {
        match self {
            SharePolicy::Anyone => 0,
            SharePolicy::HostOnly => 1,
        }
    }

    /// Decodes a wire code.
    pub fn decode(r: &mut Reader<'_>) -> Result<SharePolicy, DecodeError> {
        match r.u8()? {
            0 => Ok(SharePolicy::Anyone),
            1 => Ok(SharePolicy::HostOnly),
            other => Err(DecodeError::OutOfRange {
                field: "share policy",
                value: u64::from(other),
            }),
        }
    }

    /// Appends the wire code.
    pub fn encode(self, buf: &mut impl BufMut) {
        buf.put_u8(self.code());
    }
}

/// The recipients of an opaque key message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// Every admitted participant of the meeting but the sender.
    All,
    /// One admitted participant.
    One(ParticipantId),
}

impl Recipient {
    /// Appends `0` for all, or `1 | participant`.
    pub fn encode(self, buf: &mut impl BufMut) {
        match self {
            Recipient::All => buf.put_u8(0),
            Recipient::One(p) => {
                buf.put_u8(1);
                varint::encode(p, buf);
            }
        }
    }

    /// Decodes what [`Recipient::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Recipient, DecodeError> {
        match r.u8()? {
            0 => Ok(Recipient::All),
            1 => Ok(Recipient::One(r.varint()?)),
            other => Err(DecodeError::OutOfRange {
                field: "recipient",
                value: u64::from(other),
            }),
        }
    }
}

/// A moderation request; only hosts and co-hosts may send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// Let one waiting participant in.
    Admit(ParticipantId),
    /// Let every waiting participant in.
    AdmitAll,
    /// Turn one waiting participant away (its connection closes with `DENIED`).
    Deny(ParticipantId),
    /// Lock (`true`) or unlock the meeting; a locked meeting refuses new joins but hosts'.
    Lock(bool),
    /// Remove a participant for good: it is closed with `REMOVED` and neither its token
    /// nor its identity may rejoin while the meeting lives.
    Remove(ParticipantId),
    /// Stop forwarding a participant's track (the one mute an oblivious relay can enforce).
    StopTrack {
        /// The publisher.
        participant: ParticipantId,
        /// Its track.
        track: TrackId,
    },
    /// Resume forwarding a stopped track.
    ResumeTrack {
        /// The publisher.
        participant: ParticipantId,
        /// Its track.
        track: TrackId,
    },
    /// Who may share a screen from now on (existing shares that break it are stopped).
    SetSharePolicy(SharePolicy),
}

mod action {
    pub const ADMIT: u8 = 0;
    pub const ADMIT_ALL: u8 = 1;
    pub const DENY: u8 = 2;
    pub const LOCK: u8 = 3;
    pub const REMOVE: u8 = 4;
    pub const STOP_TRACK: u8 = 5;
    pub const RESUME_TRACK: u8 = 6;
    pub const SHARE_POLICY: u8 = 7;
}

impl HostAction {
    /// The participant the action is about, if any (echoed in a refusal's `subject`).
    pub fn subject(&self) -> u64 {
        match *self {
            HostAction::Admit(p)
            | HostAction::Deny(p)
            | HostAction::Remove(p)
            | HostAction::StopTrack { participant: p, .. }
            | HostAction::ResumeTrack { participant: p, .. } => p,
            HostAction::AdmitAll | HostAction::Lock(_) | HostAction::SetSharePolicy(_) => 0,
        }
    }

    /// Appends `action (u8) | arguments`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match *self {
            HostAction::Admit(p) => {
                buf.put_u8(action::ADMIT);
                varint::encode(p, buf);
            }
            HostAction::AdmitAll => buf.put_u8(action::ADMIT_ALL),
            HostAction::Deny(p) => {
                buf.put_u8(action::DENY);
                varint::encode(p, buf);
            }
            HostAction::Lock(locked) => {
                buf.put_u8(action::LOCK);
                buf.put_u8(u8::from(locked));
            }
            HostAction::Remove(p) => {
                buf.put_u8(action::REMOVE);
                varint::encode(p, buf);
            }
            HostAction::StopTrack { participant, track } => {
                buf.put_u8(action::STOP_TRACK);
                varint::encode(participant, buf);
                varint::encode(track, buf);
            }
            HostAction::ResumeTrack { participant, track } => {
                buf.put_u8(action::RESUME_TRACK);
                varint::encode(participant, buf);
                varint::encode(track, buf);
            }
            HostAction::SetSharePolicy(policy) => {
                buf.put_u8(action::SHARE_POLICY);
                policy.encode(buf);
            }
        }
    }

    /// Decodes what [`HostAction::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<HostAction, DecodeError> {
        Ok(match r.u8()? {
            action::ADMIT => HostAction::Admit(r.varint()?),
            action::ADMIT_ALL => HostAction::AdmitAll,
            action::DENY => HostAction::Deny(r.varint()?),
            action::LOCK => HostAction::Lock(read_bool(r, "locked")?),
            action::REMOVE => HostAction::Remove(r.varint()?),
            action::STOP_TRACK => HostAction::StopTrack {
                participant: r.varint()?,
                track: r.varint()?,
            },
            action::RESUME_TRACK => HostAction::ResumeTrack {
                participant: r.varint()?,
                track: r.varint()?,
            },
            action::SHARE_POLICY => HostAction::SetSharePolicy(SharePolicy::decode(r)?),
            other => {
                return Err(DecodeError::OutOfRange {
                    field: "host action",
                    value: u64::from(other),
                })
            }
        })
    }
}

/// Reads a byte that must be 0 or 1.
pub(crate) fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError::OutOfRange {
            field,
            value: u64::from(other),
        }),
    }
}
