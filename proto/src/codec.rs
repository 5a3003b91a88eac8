//! Small, exact readers and writers shared by the control and media codecs.
//!
//! [`Reader`] reads from a borrowed slice and checks every length against a limit
//! before it copies anything, so decoding allocates at most what the limits allow.

use bytes::{BufMut, Bytes};

use crate::error::DecodeError;
use crate::varint;

/// A cursor over a borrowed byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the front of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads a varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let (value, len) = varint::decode(&self.buf[self.pos..])?;
        self.pos += len;
        Ok(value)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a varint that must fit in a `u8`.
    pub fn small(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let v = self.varint()?;
        u8::try_from(v).map_err(|_| DecodeError::OutOfRange { field, value: v })
    }

    /// Reads a varint length followed by that many bytes, refusing lengths over `max`.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let len = len as usize;
        let out = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or(DecodeError::Incomplete)?;
        self.pos += len;
        Ok(out)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let raw = self.bytes(field, max)?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        Ok(s.to_owned())
    }

    /// Reads a length-prefixed opaque blob of at most `max` bytes.
    pub fn blob(&mut self, field: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.bytes(field, max)?))
    }

    /// Fails unless every byte was consumed: decoding is exact.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

/// Appends a varint length and then `data`.
pub fn put_bytes(buf: &mut impl BufMut, data: &[u8]) {
    varint::encode(data.len() as u64, buf);
    buf.put_slice(data);
}
