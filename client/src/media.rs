//! Media objects: group streams for video and screen, datagrams for audio.

use bytes::{Buf, Bytes, BytesMut};
use orelay_proto::limits::MAX_GROUP_HEADER;
use orelay_proto::{
    DatagramHeader, DecodeError, ErrorCode, GroupHeader, ObjectHeader, ParticipantId, TrackId,
};

use crate::ClientError;

/// A cloneable handle on a joined connection's media paths.
#[derive(Debug, Clone)]
pub struct Media {
    conn: quinn::Connection,
    participant: ParticipantId,
}

/// One received object: its header and opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object header.
    pub header: ObjectHeader,
    /// The payload, as sent by the publisher.
    pub payload: Bytes,
}

impl Media {
    pub(crate) fn new(conn: quinn::Connection, participant: ParticipantId) -> Self {
        Self { conn, participant }
    }

    /// This participant's ID.
    pub fn participant(&self) -> ParticipantId {
        self.participant
    }

    /// The underlying QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Opens the stream for a new group of one of our tracks and writes its header.
    pub async fn open_group(
        &self,
        track: TrackId,
        group: u64,
        layer: u8,
        priority: u8,
    ) -> Result<GroupWriter, ClientError> {
        let mut stream = self.conn.open_uni().await?;
        let header = GroupHeader {
            publisher: self.participant,
            track,
            group,
            layer,
            priority,
        };
        let mut buf = BytesMut::with_capacity(MAX_GROUP_HEADER);
        header.encode(&mut buf);
        stream.write_chunk(buf.freeze()).await?;
        Ok(GroupWriter {
            stream,
            header,
            next_object: 0,
        })
    }

    /// The datagram header for an audio object of one of our tracks.
    pub fn audio_header(
        &self,
        track: TrackId,
        group: u64,
        object: u64,
        priority: u8,
    ) -> DatagramHeader {
        DatagramHeader {
            publisher: self.participant,
            track,
            group,
            object,
            flags: 0,
            priority,
        }
    }

    /// Sends an audio object as one datagram: header, then payload.
    pub fn send_audio(&self, header: &DatagramHeader, payload: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(32 + payload.len());
        header.encode(&mut buf);
        buf.extend_from_slice(payload);
        self.conn.send_datagram(buf.freeze())?;
        Ok(())
    }

    /// Receives the next audio datagram, split into header and payload.
    pub async fn read_audio(&self) -> Result<(DatagramHeader, Bytes), ClientError> {
        let mut datagram = self.conn.read_datagram().await?;
        let (header, len) = DatagramHeader::decode(&datagram)?;
        datagram.advance(len);
        Ok((header, datagram))
    }

    /// Accepts the next group stream from the relay and reads its header.
    pub async fn accept_group(&self) -> Result<GroupReader, ClientError> {
        let mut stream = self.conn.accept_uni().await?;
        let mut buf = BytesMut::new();
        loop {
            match GroupHeader::decode(&buf) {
                Ok((header, len)) => {
                    buf.advance(len);
                    return Ok(GroupReader {
                        stream,
                        header,
                        buf,
                    });
                }
                Err(DecodeError::Incomplete) if buf.len() < MAX_GROUP_HEADER => {}
                Err(DecodeError::Incomplete) => return Err(DecodeError::Truncated.into()),
                Err(e) => return Err(e.into()),
            }
            match stream.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err(DecodeError::Truncated.into()),
                Err(e) => return Err(read_error(e)),
            }
        }
    }
}

fn read_error(e: quinn::ReadError) -> ClientError {
    match e {
        quinn::ReadError::Reset(code) => {
            ClientError::Reset(ErrorCode::from_quic(code.into_inner()))
        }
        other => ClientError::Read(other),
    }
}

/// Writes the objects of one group.
#[derive(Debug)]
pub struct GroupWriter {
    stream: quinn::SendStream,
    /// The group's header, already written.
    pub header: GroupHeader,
    next_object: u64,
}

impl GroupWriter {
    /// The header the next object will carry, for a payload of `len` bytes. Callers that
    /// encrypt bind this (with the group header) into their AEAD before sealing.
    pub fn next_header(&self, flags: u8, len: usize) -> ObjectHeader {
        ObjectHeader {
            object: self.next_object,
            flags,
            length: u32::try_from(len).unwrap_or(u32::MAX),
        }
    }

    /// Writes one object: its header, then the payload (whose length must match).
    pub async fn write(&mut self, header: ObjectHeader, payload: Bytes) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(16);
        header.encode(&mut buf);
        let mut chunks = [buf.freeze(), payload];
        self.stream.write_all_chunks(&mut chunks).await?;
        self.next_object = header.object + 1;
        Ok(())
    }

    /// Ends the group cleanly.
    pub fn finish(mut self) {
        let _ = self.stream.finish();
    }

    /// Abandons the group.
    pub fn reset(mut self) {
        let _ = self.stream.reset(ErrorCode::GROUP_CANCELLED.0.into());
    }
}

/// Reads the objects of one received group.
#[derive(Debug)]
pub struct GroupReader {
    stream: quinn::RecvStream,
    /// The group's header.
    pub header: GroupHeader,
    buf: BytesMut,
}

impl GroupReader {
    /// The next object, `Ok(None)` at the end of the group, or `Err(Reset(GROUP_DROPPED))`
    /// if the relay abandoned the group because this subscriber fell behind.
    pub async fn next_object(&mut self) -> Result<Option<Object>, ClientError> {
        loop {
            match ObjectHeader::decode(&self.buf) {
                Ok((header, len)) if self.buf.len() >= len + header.length as usize => {
                    self.buf.advance(len);
                    let payload = self.buf.split_to(header.length as usize).freeze();
                    return Ok(Some(Object { header, payload }));
                }
                Ok(_) | Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(e.into()),
            }
            match self.stream.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(DecodeError::Truncated.into()),
                Err(e) => return Err(read_error(e)),
            }
        }
    }

    /// Stops reading the group (tells the relay with `STOP_SENDING`).
    pub fn stop(mut self) {
        let _ = self.stream.stop(ErrorCode::NO_ERROR.0.into());
    }
}
