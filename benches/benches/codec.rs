//! Codec benchmarks: what decoding costs per control message and per media header.
#![allow(missing_docs, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use orelay_proto::control::ControlMessage;
use orelay_proto::{
    ClientMessage, DatagramHeader, GroupHeader, ServerMessage, TrackInfo, TrackKind,
};

fn control(c: &mut Criterion) {
    let join = ClientMessage::Join {
        version: 1,
        meeting_id: "84512937711".into(),
        passcode: "correct horse battery".into(),
        info: Bytes::from_static(&[0x5a; 64]),
        credential: orelay_proto::Credential::None,
        keys: Bytes::new(),
    };
    let published = ServerMessage::TrackPublished {
        participant: 42,
        info: TrackInfo {
            track: 2,
            kind: TrackKind::VIDEO,
            layers: 3,
            priority: 100,
        },
    };
    let join_bytes = join.to_bytes();
    let published_bytes = published.to_bytes();
    let mut g = c.benchmark_group("control");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_join", |b| b.iter(|| black_box(&join).to_bytes()));
    g.bench_function("decode_join", |b| {
        b.iter(|| ClientMessage::decode(black_box(&join_bytes)).unwrap())
    });
    g.bench_function("decode_track_published", |b| {
        b.iter(|| ServerMessage::decode(black_box(&published_bytes)).unwrap())
    });
    g.finish();
}

fn media(c: &mut Criterion) {
    let group = GroupHeader {
        publisher: 17,
        track: 2,
        group: 123_456,
        layer: 1,
        priority: 100,
    };
    let datagram = DatagramHeader {
        publisher: 17,
        track: 1,
        group: 0,
        object: 9_876_543,
        flags: 0,
        priority: 200,
    };
    let mut gb = BytesMut::new();
    group.encode(&mut gb);
    let mut db = BytesMut::new();
    datagram.encode(&mut db);
    db.extend_from_slice(&[0u8; 104]);
    let mut g = c.benchmark_group("media_header");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_group_header", |b| {
        b.iter(|| GroupHeader::decode(black_box(&gb)).unwrap())
    });
    g.bench_function("decode_datagram_header", |b| {
        b.iter(|| DatagramHeader::decode(black_box(&db)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, control, media);
criterion_main!(benches);
