//! QUIC variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, values below 2^62.

use bytes::BufMut;

use crate::error::DecodeError;

/// The largest value a varint can carry (2^62 - 1).
pub const MAX: u64 = (1 << 62) - 1;

/// How many bytes `value` takes on the wire.
pub fn size(value: u64) -> usize {
    if value < 1 << 6 {
        1
    } else if value < 1 << 14 {
        2
    } else if value < 1 << 30 {
        4
    } else {
        8
    }
}

/// Appends `value` to `buf`. Values above [`MAX`] are clamped to it: callers only
/// encode values that came from this crate's types, whose ranges are far smaller.
pub fn encode(value: u64, buf: &mut impl BufMut) {
    let value = value.min(MAX);
    match size(value) {
        1 => buf.put_u8(value as u8),
        2 => buf.put_u16(0x4000 | value as u16),
        4 => buf.put_u32(0x8000_0000 | value as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | value),
    }
}

/// Reads one varint from the front of `buf`, returning it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let first = *buf.first().ok_or(DecodeError::Incomplete)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(DecodeError::Incomplete)?;
    let mut value = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        value = (value << 8) | u64::from(*b);
    }
    Ok((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_examples_round_trip() {
        // RFC 9000 appendix A.1 sample encodings.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes).unwrap(), (value, bytes.len()));
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn truncated_is_incomplete() {
        assert_eq!(decode(&[]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&[0x7b]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&[0xc2, 0, 0]), Err(DecodeError::Incomplete));
    }
}
