//! Splits a group stream's header from the chunks that carry it, sans-IO.
//!
//! The header nearly always arrives inside the first chunk, and is then split off
//! with `Bytes::split_to`: no copy. Only a header that straddles chunks is copied,
//! and then only its own bytes (at most [`MAX_GROUP_HEADER`]); the payload after it is
//! always a slice of the chunk it arrived in.

use bytes::{Bytes, BytesMut};
use orelay_proto::limits::MAX_GROUP_HEADER;
use orelay_proto::{DecodeError, GroupHeader};

/// A decoded group header, its original bytes, and what followed it in the same chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitHeader {
    /// The header.
    pub header: GroupHeader,
    /// Its bytes as received, forwarded unchanged to subscribers.
    pub bytes: Bytes,
    /// The rest of the chunk that completed the header (possibly empty).
    pub rest: Bytes,
}

/// Accumulates the first chunks of a group stream until the header decodes.
#[derive(Debug, Default)]
pub struct GroupHeaderReader {
    pending: BytesMut,
}

impl GroupHeaderReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk. `Ok(None)` asks for another chunk; an error is final.
    pub fn push(&mut self, mut chunk: Bytes) -> Result<Option<SplitHeader>, DecodeError> {
        let before = self.pending.len();
        let decoded = if before == 0 {
            GroupHeader::decode(&chunk)
        } else {
            let take = (MAX_GROUP_HEADER - before).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..take]);
            GroupHeader::decode(&self.pending)
        };
        match decoded {
            Ok((header, len)) if before == 0 => {
                let bytes = chunk.split_to(len);
                Ok(Some(SplitHeader {
                    header,
                    bytes,
                    rest: chunk,
                }))
            }
            Ok((header, len)) => {
                let bytes = self.pending.split_to(len).freeze();
                let rest = chunk.split_off(len - before);
                Ok(Some(SplitHeader {
                    header,
                    bytes,
                    rest,
                }))
            }
            Err(DecodeError::Incomplete) if before + chunk.len() < MAX_GROUP_HEADER => {
                if before == 0 {
                    self.pending.extend_from_slice(&chunk);
                }
                Ok(None)
            }
            // The widest header fits in MAX_GROUP_HEADER bytes; more and it is garbage.
            Err(DecodeError::Incomplete) => Err(DecodeError::Truncated),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> GroupHeader {
        GroupHeader {
            publisher: 300,
            track: 2,
            group: 70_000,
            layer: 1,
            priority: 9,
        }
    }

    fn stream(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header().encode(&mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn header_in_first_chunk_is_split_without_copying() {
        let chunk = Bytes::from(stream(b"payload bytes"));
        let split = GroupHeaderReader::new()
            .push(chunk.clone())
            .unwrap()
            .unwrap();
        assert_eq!(split.header, header());
        assert_eq!(split.bytes.as_ptr(), chunk.as_ptr());
        assert_eq!(&split.rest[..], b"payload bytes");
        assert_eq!(split.rest.as_ptr(), chunk[split.bytes.len()..].as_ptr());
    }

    #[test]
    fn header_split_at_every_point_decodes_and_payload_is_not_copied() {
        let whole = stream(&[0xab; 100]);
        let header_len = whole.len() - 100;
        for cut in 1..header_len {
            let first = Bytes::copy_from_slice(&whole[..cut]);
            let second = Bytes::copy_from_slice(&whole[cut..]);
            let mut reader = GroupHeaderReader::new();
            assert_eq!(reader.push(first).unwrap(), None, "cut {cut}");
            let split = reader.push(second.clone()).unwrap().unwrap();
            assert_eq!(split.header, header(), "cut {cut}");
            let mut rebuilt = split.bytes.to_vec();
            rebuilt.extend_from_slice(&split.rest);
            assert_eq!(rebuilt, whole, "cut {cut}");
            // The payload is a slice of the second chunk, not a copy.
            assert_eq!(
                split.rest.as_ptr(),
                second[second.len() - 100..].as_ptr(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut reader = GroupHeaderReader::new();
        assert_eq!(
            reader.push(Bytes::from_static(&[0x3e, 1, 2])),
            Err(DecodeError::UnknownStream(0x3e))
        );
        // A right stream type, then widest varints and an impossible layer.
        let mut reader = GroupHeaderReader::new();
        assert_eq!(reader.push(Bytes::from_static(&[0x10])), Ok(None));
        assert!(matches!(
            reader.push(Bytes::from(vec![0xc0; 200])),
            Err(DecodeError::OutOfRange { field: "layer", .. })
        ));
    }

    #[test]
    fn header_fed_a_byte_at_a_time_completes_exactly_once() {
        let whole = stream(b"xy");
        let mut reader = GroupHeaderReader::new();
        let mut done = None;
        for (i, b) in whole.iter().enumerate() {
            if let Some(split) = reader.push(Bytes::copy_from_slice(&[*b])).unwrap() {
                done = Some((i, split));
                break;
            }
        }
        let (i, split) = done.unwrap();
        assert_eq!(i + 1, split.bytes.len());
        assert_eq!(split.header, header());
        assert!(split.rest.is_empty());
    }
}
