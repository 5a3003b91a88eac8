//! Checks for every decoder in `orelay_proto` (and the relay's group-header splitter):
//! hostile bytes decode to a value or an error, never a panic, and whatever decodes
//! survives a round trip: `decode(encode(decode(x))) == decode(x)`, and the second
//! encoding is the canonical one (encoding again gives the same bytes).
//!
//! Each function takes the raw fuzz input and panics on a broken property.

use std::fmt::Debug;

use bytes::Bytes;
use orelay_proto::control::{ControlMessage, MAX_DECODER_BUFFER};
use orelay_proto::limits::{MAX_GROUP_HEADER, MAX_OBJECT_SIZE};
use orelay_proto::{
    ClientMessage, ControlDecoder, DatagramHeader, DecodeError, GroupHeader, ObjectHeader,
    ServerMessage,
};
use orelay_relay::core::group_header::GroupHeaderReader;

/// `ClientMessage::decode` on one frame.
pub fn client_message(data: &[u8]) {
    control_frame::<ClientMessage>(data);
}

/// `ServerMessage::decode` on one frame.
pub fn server_message(data: &[u8]) {
    control_frame::<ServerMessage>(data);
}

/// Properties of one framed control message at the front of `data`.
fn control_frame<M: ControlMessage + PartialEq + Debug + Clone>(data: &[u8]) {
    match M::decode(data) {
        Ok((msg, used)) => {
            assert!(used > 0 && used <= data.len());
            // Decoding looks at nothing past the frame, and needs all of it.
            assert_eq!(M::decode(&data[..used]), Ok((msg.clone(), used)));
            assert_eq!(M::decode(&data[..used - 1]), Err(DecodeError::Incomplete));
            round_trip(&msg, |b| M::decode(b), |m| m.to_bytes());
        }
        Err(e) => {
            // A frame is at most MAX_DECODER_BUFFER bytes: past that, never "wait for more".
            if data.len() >= MAX_DECODER_BUFFER {
                assert_ne!(e, DecodeError::Incomplete, "{} bytes", data.len());
            }
            error_is_printable(&e);
        }
    }
}

/// The shared round-trip property: the value re-encodes to bytes that decode, exactly
/// and completely, to the same value, and re-encoding that gives the same bytes.
fn round_trip<T: PartialEq + Debug>(
    value: &T,
    decode: impl Fn(&[u8]) -> Result<(T, usize), DecodeError>,
    encode: impl Fn(&T) -> Bytes,
) {
    let bytes = encode(value);
    let (again, used) = decode(&bytes).unwrap_or_else(|e| panic!("{value:?} re-encoded: {e}"));
    assert_eq!(&again, value, "round trip changed the value");
    assert_eq!(used, bytes.len(), "the encoding was not consumed exactly");
    assert_eq!(encode(&again), bytes, "encoding is not canonical");
}

fn error_is_printable(e: &DecodeError) {
    let _ = e.close_code();
    assert!(!e.to_string().is_empty());
}

/// Cuts `data` into chunks whose sizes follow `seed`: 0 delivers it whole; otherwise
/// sizes are pseudo-random in `1..=2^(seed % 8)` (so one byte at a time is covered).
pub fn chunks(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![data];
    }
    let max = 1usize << (seed % 8);
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift32: cheap, deterministic, and a different split per seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % max).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// `ControlDecoder` fed `data[1..]` in chunks chosen by `data[0]`: bit 7 picks the
/// direction (server messages when set), the rest the split. It must yield exactly the
/// messages (and the error) that decoding the whole input frame by frame yields, and
/// never buffer more than one frame.
pub fn control_decoder(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    if seed & 0x80 == 0 {
        chunked::<ClientMessage>(seed & 0x7f, stream);
    } else {
        chunked::<ServerMessage>(seed & 0x7f, stream);
    }
}

fn chunked<M: ControlMessage + PartialEq + Debug>(seed: u8, stream: &[u8]) {
    // Reference: frame after frame over the whole input.
    let mut want = Vec::new();
    let mut rest = stream;
    let want_end = loop {
        match M::decode(rest) {
            Ok((m, used)) => {
                want.push(m);
                rest = &rest[used..];
            }
            Err(DecodeError::Incomplete) => break None,
            Err(e) => break Some(e),
        }
    };
    let mut decoder = ControlDecoder::<M>::new();
    let mut got = Vec::new();
    let mut got_end = None;
    'feed: for chunk in chunks(seed, stream) {
        decoder.push(chunk);
        loop {
            match decoder.next() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    got_end = Some(e);
                    break 'feed;
                }
            }
        }
        assert!(
            decoder.buffered() <= MAX_DECODER_BUFFER,
            "buffered past one frame"
        );
    }
    assert_eq!(got, want, "chunked decoding differs from whole decoding");
    assert_eq!(got_end, want_end, "chunked decoding ends differently");
    if let Some(e) = &got_end {
        error_is_printable(e);
    }
    for m in &got {
        round_trip(m, |b| M::decode(b), |m| m.to_bytes());
    }
}

/// `GroupHeader::decode` on `data[1..]`, and the relay's `GroupHeaderReader` fed the
/// same bytes in chunks chosen by `data[0]`: both agree, the reader's header bytes and
/// rest are the input unchanged, and a header inside the first chunk is not copied.
pub fn group_header(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = GroupHeader::decode(stream);
    match &whole {
        Ok((h, used)) => {
            assert!(*used <= MAX_GROUP_HEADER && *used <= stream.len());
            assert_eq!(
                GroupHeader::decode(&stream[..used - 1]),
                Err(DecodeError::Incomplete)
            );
            round_trip(h, GroupHeader::decode, |h| encoded(|b| h.encode(b)));
        }
        Err(e) => error_is_printable(e),
    }
    let mut reader = GroupHeaderReader::new();
    let mut fed = 0;
    for chunk in chunks(seed, stream) {
        let chunk = Bytes::copy_from_slice(chunk);
        fed += chunk.len();
        // What the reader has seen: it keeps at most the widest header's bytes.
        let seen = GroupHeader::decode(&stream[..fed.min(MAX_GROUP_HEADER)]);
        match reader.push(chunk.clone()) {
            Ok(None) => {
                assert_eq!(seen, Err(DecodeError::Incomplete));
                assert!(fed < MAX_GROUP_HEADER, "buffered {fed} bytes of header");
            }
            Ok(Some(split)) => {
                let (h, used) = seen.expect("the reader decoded what decode refused");
                assert_eq!(whole, Ok((h, used)));
                assert_eq!(split.header, h);
                assert_eq!(&split.bytes[..], &stream[..used]);
                assert_eq!(&split.rest[..], &stream[used..fed]);
                if fed == chunk.len() {
                    assert_eq!(split.bytes.as_ptr(), chunk.as_ptr(), "header copied");
                }
                if !split.rest.is_empty() {
                    let start = chunk.len() - split.rest.len();
                    let tail = chunk[start..].as_ptr();
                    assert_eq!(split.rest.as_ptr(), tail, "payload copied");
                }
                return;
            }
            Err(e) => {
                match seen {
                    // Past the widest header and still incomplete: garbage.
                    Err(DecodeError::Incomplete) => {
                        assert_eq!(e, DecodeError::Truncated);
                        assert!(fed >= MAX_GROUP_HEADER);
                    }
                    Err(w) => assert_eq!(e, w),
                    Ok(_) => panic!("decode accepted what the reader refused: {e}"),
                }
                return;
            }
        }
    }
}

/// `ObjectHeader::decode`: lengths within [`MAX_OBJECT_SIZE`], and the round trip.
pub fn object_header(data: &[u8]) {
    match ObjectHeader::decode(data) {
        Ok((h, used)) => {
            assert!(used <= data.len());
            assert!(h.length as usize <= MAX_OBJECT_SIZE);
            assert_eq!(
                ObjectHeader::decode(&data[..used - 1]),
                Err(DecodeError::Incomplete)
            );
            round_trip(&h, ObjectHeader::decode, |h| encoded(|b| h.encode(b)));
        }
        Err(e) => error_is_printable(&e),
    }
}

/// `DatagramHeader::decode`: a datagram is complete, so it is never `Incomplete`.
pub fn datagram_header(data: &[u8]) {
    match DatagramHeader::decode(data) {
        Ok((h, used)) => {
            assert!(used <= data.len());
            assert_eq!(
                DatagramHeader::decode(&data[..used - 1]),
                Err(DecodeError::Truncated)
            );
            round_trip(&h, DatagramHeader::decode, |h| encoded(|b| h.encode(b)));
        }
        Err(e) => {
            assert_ne!(e, DecodeError::Incomplete);
            error_is_printable(&e);
        }
    }
}

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::new();
    f(&mut buf);
    Bytes::from(buf)
}
