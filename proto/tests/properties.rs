//! Property tests: every message and header survives encode → decode unchanged,
//! decoders are total on arbitrary bytes (no panic, bounded buffering), and
//! `ControlDecoder` gives the same messages however the stream is chunked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use orelay_proto::control::{ControlMessage, JoinOutcome, MAX_DECODER_BUFFER};
use orelay_proto::limits::{
    MAX_CONTROL_MESSAGE, MAX_INFO_LEN, MAX_KEYS_LEN, MAX_KEY_MESSAGE_LEN, MAX_LAYERS,
    MAX_MEETING_ID_LEN, MAX_OBJECT_SIZE, MAX_PASSCODE_LEN, MAX_REDIRECT_LEN, MAX_TOKEN_LEN,
};
use orelay_proto::{
    varint, ClientMessage, ControlDecoder, Credential, DatagramHeader, DecodeError, GroupHeader,
    HostAction, ObjectHeader, Recipient, RefuseReason, RejectReason, Role, RosterParticipant,
    ServerMessage, SharePolicy, TrackInfo, TrackKind,
};

// ---------------------------------------------------------------------------
// Strategies for valid values (within every limit).

/// Any varint value, with each of the four encoded widths equally likely.
fn vint() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..(1u64 << 6),
        (1u64 << 6)..(1 << 14),
        (1u64 << 14)..(1 << 30),
        (1u64 << 30)..=varint::MAX,
    ]
}

/// A UTF-8 string of at most `max` bytes, from any Unicode scalar values.
fn utf8(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..=max).prop_map(move |chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > max {
                    break;
                }
                s.push(c);
            }
            s
        }),
        // Plain ASCII up to the full limit, as real meeting IDs and passcodes are.
        vec(0x20u8..0x7f, 0..=max).prop_map(|b| String::from_utf8(b).unwrap()),
    ]
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn kind() -> impl Strategy<Value = TrackKind> {
    prop_oneof![
        Just(TrackKind::AUDIO),
        Just(TrackKind::VIDEO),
        Just(TrackKind::SCREEN),
        any::<u8>().prop_map(TrackKind),
    ]
}

fn track_info() -> impl Strategy<Value = TrackInfo> {
    (vint(), kind(), 1..=MAX_LAYERS, any::<u8>()).prop_map(|(track, kind, layers, priority)| {
        TrackInfo {
            track,
            kind,
            layers,
            priority,
        }
    })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            vint(),
            utf8(MAX_MEETING_ID_LEN),
            utf8(MAX_PASSCODE_LEN),
            blob(MAX_INFO_LEN),
            credential(),
            blob(MAX_KEYS_LEN),
        )
            .prop_map(|(version, meeting_id, passcode, info, credential, keys)| {
                ClientMessage::Join {
                    version,
                    meeting_id,
                    passcode,
                    info,
                    credential,
                    keys,
                }
            }),
        track_info().prop_map(ClientMessage::Publish),
        vint().prop_map(|track| ClientMessage::Unpublish { track }),
        (vint(), vint(), any::<u8>()).prop_map(|(publisher, track, layer)| {
            ClientMessage::Subscribe {
                publisher,
                track,
                layer,
            }
        }),
        (vint(), vint())
            .prop_map(|(publisher, track)| ClientMessage::Unsubscribe { publisher, track }),
        (vint(), vint(), any::<u8>()).prop_map(|(publisher, track, layer)| {
            ClientMessage::RequestKeyframe {
                publisher,
                track,
                layer,
            }
        }),
        Just(ClientMessage::Leave),
        host_action().prop_map(ClientMessage::HostAction),
        (recipient(), blob(MAX_KEY_MESSAGE_LEN))
            .prop_map(|(to, blob)| ClientMessage::KeyMessage { to, blob }),
    ]
}

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        Just(Credential::None),
        utf8(MAX_TOKEN_LEN).prop_map(Credential::Token),
        utf8(MAX_TOKEN_LEN).prop_map(Credential::HostSecret),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Host),
        Just(Role::CoHost),
        Just(Role::Participant),
        Just(Role::Viewer),
    ]
}

fn share() -> impl Strategy<Value = SharePolicy> {
    prop_oneof![Just(SharePolicy::Anyone), Just(SharePolicy::HostOnly)]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    prop_oneof![Just(Recipient::All), vint().prop_map(Recipient::One)]
}

fn host_action() -> impl Strategy<Value = HostAction> {
    prop_oneof![
        vint().prop_map(HostAction::Admit),
        Just(HostAction::AdmitAll),
        vint().prop_map(HostAction::Deny),
        any::<bool>().prop_map(HostAction::Lock),
        vint().prop_map(HostAction::Remove),
        (vint(), vint())
            .prop_map(|(participant, track)| HostAction::StopTrack { participant, track }),
        (vint(), vint())
            .prop_map(|(participant, track)| HostAction::ResumeTrack { participant, track }),
        share().prop_map(HostAction::SetSharePolicy),
    ]
}

fn roster_participant() -> impl Strategy<Value = RosterParticipant> {
    (vint(), blob(MAX_INFO_LEN), role(), blob(MAX_KEYS_LEN)).prop_map(
        |(participant, info, role, keys)| RosterParticipant {
            participant,
            info,
            role,
            keys,
        },
    )
}

fn join_outcome() -> impl Strategy<Value = JoinOutcome> {
    prop_oneof![
        (vint(), role())
            .prop_map(|(participant, role)| JoinOutcome::Admitted { participant, role }),
        vint().prop_map(|retry_after_ms| JoinOutcome::Throttled { retry_after_ms }),
        vint().prop_map(|participant| JoinOutcome::Waiting { participant }),
        any::<u16>().prop_map(|r| JoinOutcome::Rejected {
            reason: RejectReason(r)
        }),
        vint().prop_map(|retry_after_ms| JoinOutcome::Overloaded { retry_after_ms }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        join_outcome().prop_map(ServerMessage::JoinResult),
        roster_participant().prop_map(ServerMessage::ParticipantJoined),
        roster_participant().prop_map(ServerMessage::WaitingJoined),
        vint().prop_map(|participant| ServerMessage::WaitingLeft { participant }),
        (vint(), any::<bool>(), blob(MAX_KEY_MESSAGE_LEN))
            .prop_map(|(from, to_all, blob)| ServerMessage::KeyMessage { from, to_all, blob }),
        (vint(), vint(), any::<u16>()).prop_map(|(message_type, subject, r)| {
            ServerMessage::Refused {
                message_type,
                subject,
                reason: RefuseReason(r),
            }
        }),
        (any::<bool>(), share())
            .prop_map(|(locked, share)| ServerMessage::MeetingPolicy { locked, share }),
        (vint(), vint(), any::<bool>()).prop_map(|(participant, track, stopped)| {
            ServerMessage::TrackStopped {
                participant,
                track,
                stopped,
            }
        }),
        vint().prop_map(|failed_attempts| ServerMessage::AtRisk { failed_attempts }),
        vint().prop_map(|participant| ServerMessage::ParticipantLeft { participant }),
        (vint(), track_info())
            .prop_map(|(participant, info)| ServerMessage::TrackPublished { participant, info }),
        (vint(), vint()).prop_map(|(participant, track)| ServerMessage::TrackUnpublished {
            participant,
            track
        }),
        (vint(), any::<u8>())
            .prop_map(|(track, layer)| ServerMessage::KeyframeRequest { track, layer }),
        (vint(), vint())
            .prop_map(|(publisher, track)| ServerMessage::SubscriptionEnded { publisher, track }),
        utf8(MAX_REDIRECT_LEN).prop_map(|redirect| ServerMessage::GoAway { redirect }),
    ]
}

fn group_header() -> impl Strategy<Value = GroupHeader> {
    (vint(), vint(), vint(), 0..MAX_LAYERS, any::<u8>()).prop_map(
        |(publisher, track, group, layer, priority)| GroupHeader {
            publisher,
            track,
            group,
            layer,
            priority,
        },
    )
}

fn object_header() -> impl Strategy<Value = ObjectHeader> {
    let max = u32::try_from(MAX_OBJECT_SIZE).unwrap();
    (
        vint(),
        any::<u8>(),
        prop_oneof![0..=max, Just(max), Just(0)],
    )
        .prop_map(|(object, flags, length)| ObjectHeader {
            object,
            flags,
            length,
        })
}

fn datagram_header() -> impl Strategy<Value = DatagramHeader> {
    (vint(), vint(), vint(), vint(), any::<u8>(), any::<u8>()).prop_map(
        |(publisher, track, group, object, flags, priority)| DatagramHeader {
            publisher,
            track,
            group,
            object,
            flags,
            priority,
        },
    )
}

// ---------------------------------------------------------------------------
// Strategies for hostile input.

fn encode_all<M: ControlMessage>(messages: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        m.encode(&mut out);
    }
    out
}

/// Byte strings up to ~20 KiB that a hostile peer might send: pure noise; valid
/// messages with bytes overwritten and the end cut off; and frame headers with a
/// known type and a length near the limit followed by noise.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..=20 * 1024),
        (
            vec(
                prop_oneof![
                    client_message().prop_map(|m| m.to_bytes()),
                    server_message().prop_map(|m| m.to_bytes())
                ],
                1..8
            ),
            vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(frames, flips, cut)| {
                let mut out: Vec<u8> = frames.concat();
                for (at, b) in flips {
                    let i = at.index(out.len());
                    out[i] = b;
                }
                out.truncate(cut.index(out.len() + 1));
                out
            }),
        (
            prop_oneof![1u64..=7, 0x41u64..=0x48],
            prop_oneof![
                MAX_CONTROL_MESSAGE as u64 - 8..=MAX_CONTROL_MESSAGE as u64 + 8,
                0u64..=64
            ],
            vec(any::<u8>(), 0..=MAX_CONTROL_MESSAGE + 64),
        )
            .prop_map(|(ty, len, noise)| {
                let mut out = Vec::new();
                varint::encode(ty, &mut out);
                varint::encode(len, &mut out);
                out.extend_from_slice(&noise);
                out
            }),
    ]
}

/// Splits `data` into chunks whose sizes cycle through `sizes`.
fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// What decoding a whole buffer frame by frame gives: the messages, then the error
/// that stopped it (`None` if it ended cleanly or on an incomplete frame).
fn decode_whole<M: ControlMessage>(mut buf: &[u8]) -> (Vec<M>, Option<DecodeError>) {
    let mut out = Vec::new();
    loop {
        match M::decode(buf) {
            Ok((m, used)) => {
                assert!(used > 0 && used <= buf.len());
                out.push(m);
                buf = &buf[used..];
            }
            Err(DecodeError::Incomplete) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Splits `data` at the given points (taken modulo its length, in any order).
fn split_at_points<'a>(data: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// What a `ControlDecoder` gives: the messages, the error that stopped it (if any),
/// and the bytes it still buffers at the end.
type Outcome<M> = (Vec<M>, Option<DecodeError>, usize);

/// Feeds chunks to a `ControlDecoder`, draining it after each and checking its
/// buffer bound.
fn decode_chunked<M: ControlMessage>(chunks: &[&[u8]]) -> Outcome<M> {
    let mut decoder = ControlDecoder::<M>::new();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        assert!(
            decoder.buffered() <= MAX_DECODER_BUFFER + chunk.len(),
            "buffered {} after a {}-byte chunk",
            decoder.buffered(),
            chunk.len()
        );
        loop {
            match decoder.next() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e), decoder.buffered()),
            }
        }
        assert!(decoder.buffered() <= MAX_DECODER_BUFFER);
    }
    let left = decoder.buffered();
    (out, None, left)
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![1usize..=16, 1usize..=4096, 1usize..=24 * 1024],
        1..16,
    )
}

// ---------------------------------------------------------------------------
// Properties.

proptest! {
    #[test]
    fn client_message_round_trips(m in client_message()) {
        let bytes = m.to_bytes();
        prop_assert!(bytes.len() <= MAX_CONTROL_MESSAGE + 16);
        prop_assert_eq!(ClientMessage::decode(&bytes), Ok((m.clone(), bytes.len())));
        let mut out = Vec::new();
        m.encode(&mut out);
        prop_assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn server_message_round_trips(m in server_message()) {
        let bytes = m.to_bytes();
        prop_assert!(bytes.len() <= MAX_CONTROL_MESSAGE + 16);
        prop_assert_eq!(ServerMessage::decode(&bytes), Ok((m.clone(), bytes.len())));
    }

    #[test]
    fn group_header_round_trips(h in group_header(), payload in vec(any::<u8>(), 0..32)) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        let len = buf.len();
        prop_assert!(len <= orelay_proto::limits::MAX_GROUP_HEADER);
        buf.extend_from_slice(&payload);
        prop_assert_eq!(GroupHeader::decode(&buf), Ok((h, len)));
    }

    #[test]
    fn object_header_round_trips(h in object_header(), payload in vec(any::<u8>(), 0..32)) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        let len = buf.len();
        buf.extend_from_slice(&payload);
        prop_assert_eq!(ObjectHeader::decode(&buf), Ok((h, len)));
        prop_assert_eq!(h.is_keyframe(), h.flags & 1 == 1);
    }

    #[test]
    fn datagram_header_round_trips(h in datagram_header(), payload in vec(any::<u8>(), 0..32)) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        let len = buf.len();
        buf.extend_from_slice(&payload);
        prop_assert_eq!(DatagramHeader::decode(&buf), Ok((h, len)));
    }

    /// Every decoder is total: any bytes give a value or an error, and a value
    /// never claims more bytes than were given.
    #[test]
    fn decoders_never_panic(data in hostile_bytes()) {
        if let Ok((_, used)) = ClientMessage::decode(&data) {
            prop_assert!(used <= data.len());
        }
        if let Ok((_, used)) = ServerMessage::decode(&data) {
            prop_assert!(used <= data.len());
        }
        if let Ok((_, used)) = GroupHeader::decode(&data) {
            prop_assert!(used <= data.len());
        }
        if let Ok((_, used)) = ObjectHeader::decode(&data) {
            prop_assert!(used <= data.len());
        }
        if let Ok((_, used)) = DatagramHeader::decode(&data) {
            prop_assert!(used <= data.len());
        }
        for prefix in [0, 1, 2, 7, 48] {
            let cut = &data[..prefix.min(data.len())];
            let _ = GroupHeader::decode(cut);
            let _ = ObjectHeader::decode(cut);
            let _ = DatagramHeader::decode(cut);
        }
    }

    /// A `ControlDecoder` fed hostile bytes in random-sized chunks never panics,
    /// never buffers more than one maximal frame plus the chunk just pushed, and
    /// gives exactly what decoding the whole buffer at once gives.
    #[test]
    fn control_decoder_is_bounded_and_chunking_invariant(
        data in hostile_bytes(),
        sizes in chunk_sizes(),
    ) {
        let pieces = chunks(&data, &sizes);
        let (got, err, _) = decode_chunked::<ClientMessage>(&pieces);
        prop_assert_eq!((got, err), decode_whole::<ClientMessage>(&data));
        let (got, err, _) = decode_chunked::<ServerMessage>(&pieces);
        prop_assert_eq!((got, err), decode_whole::<ServerMessage>(&data));
    }

    /// Valid messages back to back, split at arbitrary points, come out of a
    /// `ControlDecoder` exactly as they went in, with nothing left buffered.
    #[test]
    fn client_stream_split_anywhere(
        messages in vec(client_message(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 0..32),
    ) {
        let data = encode_all(&messages);
        let (got, err, left) = decode_chunked::<ClientMessage>(&split_at_points(&data, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn server_stream_split_anywhere(
        messages in vec(server_message(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 0..32),
    ) {
        let data = encode_all(&messages);
        let (got, err, left) = decode_chunked::<ServerMessage>(&split_at_points(&data, &cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, messages);
    }

    /// Byte-at-a-time delivery, the worst case for reassembly.
    #[test]
    fn client_stream_byte_by_byte(messages in vec(client_message(), 1..8)) {
        let data = encode_all(&messages);
        let (got, err, left) = decode_chunked::<ClientMessage>(&chunks(&data, &[1]));
        prop_assert_eq!(err, None);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(got, messages);
    }
}
