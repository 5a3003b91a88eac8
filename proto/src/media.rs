//! Cleartext routing headers of media objects.
//!
//! Video and screen travel as one unidirectional stream per group: a [`GroupHeader`],
//! then objects, each an [`ObjectHeader`] followed by its opaque payload. Audio travels
//! as QUIC datagrams: a [`DatagramHeader`] followed by the opaque payload.
//!
//! Clients bind these headers into their AEAD as associated data, so a relay can read
//! them but not alter them undetected. A relay reads only the group and datagram
//! headers; object headers and payloads pass through it untouched.

use bytes::BufMut;

use crate::codec::Reader;
use crate::error::DecodeError;
use crate::limits::{MAX_LAYERS, MAX_OBJECT_SIZE};
use crate::{varint, ParticipantId, TrackId};

/// The first varint of every unidirectional stream: what the stream carries.
pub const GROUP_STREAM: u64 = 0x10;

/// Object flag: the object is a keyframe (the first object of a group always is).
pub const FLAG_KEYFRAME: u8 = 0x01;

/// The kind of a track. An open newtype: unknown kinds decode, and a relay rejects
/// them where it must know the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKind(pub u8);

impl TrackKind {
    /// Audio: objects travel as datagrams.
    pub const AUDIO: TrackKind = TrackKind(0);
    /// Camera video: one stream per group.
    pub const VIDEO: TrackKind = TrackKind(1);
    /// Screen share: one stream per group.
    pub const SCREEN: TrackKind = TrackKind(2);

    /// Whether this version knows the kind.
    pub fn is_known(self) -> bool {
        self.0 <= 2
    }

    /// Whether objects of this kind travel in group streams (video, screen).
    pub fn uses_streams(self) -> bool {
        self == TrackKind::VIDEO || self == TrackKind::SCREEN
    }

    /// A short lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::AUDIO => "audio",
            TrackKind::VIDEO => "video",
            TrackKind::SCREEN => "screen",
            _ => "unknown",
        }
    }
}

/// The header that opens a group stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// The publishing participant (the sender's own ID).
    pub publisher: ParticipantId,
    /// The publisher's track.
    pub track: TrackId,
    /// Group sequence number, increasing per track and layer.
    pub group: u64,
    /// Simulcast layer.
    pub layer: u8,
    /// Send priority, higher first.
    pub priority: u8,
}

impl GroupHeader {
    /// Appends the header, including the stream type.
    pub fn encode(&self, buf: &mut impl BufMut) {
        varint::encode(GROUP_STREAM, buf);
        varint::encode(self.publisher, buf);
        varint::encode(self.track, buf);
        varint::encode(self.group, buf);
        buf.put_u8(self.layer);
        buf.put_u8(self.priority);
    }

    /// Decodes the header from the front of a stream, returning it and its length.
    /// `Incomplete` means more bytes are needed; it never needs more than
    /// [`crate::limits::MAX_GROUP_HEADER`].
    pub fn decode(buf: &[u8]) -> Result<(GroupHeader, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        if ty != GROUP_STREAM {
            return Err(DecodeError::UnknownStream(ty));
        }
        let header = GroupHeader {
            publisher: r.varint()?,
            track: r.varint()?,
            group: r.varint()?,
            layer: read_layer(&mut r)?,
            priority: r.u8()?,
        };
        Ok((header, r.position()))
    }
}

/// The header in front of each object inside a group stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    /// Object sequence number within the group, from 0.
    pub object: u64,
    /// [`FLAG_KEYFRAME`] and reserved bits.
    pub flags: u8,
    /// Payload length in bytes, at most [`MAX_OBJECT_SIZE`].
    pub length: u32,
}

impl ObjectHeader {
    /// Appends the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        varint::encode(self.object, buf);
        buf.put_u8(self.flags);
        varint::encode(u64::from(self.length), buf);
    }

    /// Decodes the header from the front of `buf`, returning it and its length.
    pub fn decode(buf: &[u8]) -> Result<(ObjectHeader, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let object = r.varint()?;
        let flags = r.u8()?;
        let length = r.varint()?;
        if length > MAX_OBJECT_SIZE as u64 {
            return Err(DecodeError::TooLong {
                field: "object",
                len: length,
                max: MAX_OBJECT_SIZE,
            });
        }
        let header = ObjectHeader {
            object,
            flags,
            length: length as u32,
        };
        Ok((header, r.position()))
    }

    /// Whether the object is a keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }
}

/// The header in front of an audio object sent as a QUIC datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    /// The publishing participant (the sender's own ID).
    pub publisher: ParticipantId,
    /// The publisher's track.
    pub track: TrackId,
    /// Group sequence number.
    pub group: u64,
    /// Object sequence number within the group.
    pub object: u64,
    /// [`FLAG_KEYFRAME`] and reserved bits.
    pub flags: u8,
    /// Send priority, higher first.
    pub priority: u8,
}

impl DatagramHeader {
    /// Appends the header; the payload follows it to the end of the datagram.
    pub fn encode(&self, buf: &mut impl BufMut) {
        varint::encode(self.publisher, buf);
        varint::encode(self.track, buf);
        varint::encode(self.group, buf);
        varint::encode(self.object, buf);
        buf.put_u8(self.flags);
        buf.put_u8(self.priority);
    }

    /// Decodes the header at the front of a datagram, returning it and its length;
    /// the rest of the datagram is the payload. A datagram is complete, so a short one
    /// is `Truncated`.
    pub fn decode(buf: &[u8]) -> Result<(DatagramHeader, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let parse = |r: &mut Reader<'_>| -> Result<DatagramHeader, DecodeError> {
            Ok(DatagramHeader {
                publisher: r.varint()?,
                track: r.varint()?,
                group: r.varint()?,
                object: r.varint()?,
                flags: r.u8()?,
                priority: r.u8()?,
            })
        };
        match parse(&mut r) {
            Ok(h) => Ok((h, r.position())),
            Err(DecodeError::Incomplete) => Err(DecodeError::Truncated),
            Err(e) => Err(e),
        }
    }
}

fn read_layer(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let layer = r.u8()?;
    if layer >= MAX_LAYERS {
        return Err(DecodeError::OutOfRange {
            field: "layer",
            value: u64::from(layer),
        });
    }
    Ok(layer)
}
