//! End-to-end encryption costs: SFrame per frame, HPKE sealing (hybrid vs classic), and
//! a leader's rekey of a 1,000-participant meeting.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use orelay_e2ee::{
    kem, Config, EpochKeys, Input, KemKeyPair, KemSuite, LocalKeys, MeetingSecurity,
};

fn sframe(c: &mut Criterion) {
    let mut g = c.benchmark_group("sframe");
    let header = [0x11u8; 12];
    for (name, len) in [("100B", 100usize), ("10KB", 10_000)] {
        let payload = vec![0x5au8; len];
        let mut sender = EpochKeys::new(3, [7u8; 32], 1);
        let mut receiver = EpochKeys::new(3, [7u8; 32], 2);
        let sealed = sender.encrypt(&header, &payload).unwrap();
        receiver.decrypt(1, &header, &sealed).unwrap();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("encrypt_{name}"), |b| {
            b.iter(|| {
                sender
                    .encrypt(black_box(&header), black_box(&payload))
                    .unwrap()
            })
        });
        // Each frame decrypts once (the replay window rejects repeats): encrypt in setup.
        g.bench_function(format!("decrypt_{name}"), |b| {
            b.iter_batched(
                || sender.encrypt(&header, &payload).unwrap(),
                |f| {
                    receiver
                        .decrypt(1, black_box(&header), black_box(&f))
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn hpke(c: &mut Criterion) {
    let mut g = c.benchmark_group("hpke");
    g.throughput(Throughput::Elements(1));
    for (name, suite) in [("xwing", KemSuite::XWing), ("x25519", KemSuite::X25519)] {
        let pair = KemKeyPair::generate(suite);
        let public = pair.public_bytes();
        let sealed = kem::seal(suite, &public, b"info", b"aad", &[9u8; 32]).unwrap();
        g.bench_function(format!("keygen_{name}"), |b| {
            b.iter(|| KemKeyPair::generate(black_box(suite)))
        });
        g.bench_function(format!("seal_{name}"), |b| {
            b.iter(|| kem::seal(suite, black_box(&public), b"info", b"aad", &[9u8; 32]).unwrap())
        });
        g.bench_function(format!("open_{name}"), |b| {
            b.iter(|| pair.open(b"info", b"aad", black_box(&sealed)).unwrap())
        });
    }
    g.finish();
}

/// A leader with 999 others: one rekey = a fresh key sealed (HPKE) and signed for each of
/// the 998 remaining participants, plus the signed roster parts.
fn rekey(c: &mut Criterion) {
    let mut g = c.benchmark_group("rekey_1000");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    for (name, suite) in [("xwing", KemSuite::XWing), ("x25519", KemSuite::X25519)] {
        let mut t = Instant::now();
        let leader_keys = LocalKeys::generate(suite).unwrap();
        let mut leader = MeetingSecurity::new(leader_keys, 1, true, Config::default(), t);
        t += Duration::from_secs(1);
        leader.handle_timeout(t);
        let bundles: Vec<Vec<u8>> = (0..999)
            .map(|_| LocalKeys::generate(suite).unwrap().bundle().unwrap())
            .collect();
        for (i, b) in bundles.iter().enumerate() {
            let participant = i as u64 + 2;
            leader.handle(
                Input::Joined {
                    participant,
                    host: false,
                    keys: b,
                },
                t,
            );
        }
        while leader.poll_transmit().is_some() {}
        g.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| {
                    // Participant 2 leaves (rekey to 998) and comes back (one delivery).
                    leader.handle(Input::Left { participant: 2 }, t);
                    let mut sent = 0;
                    while leader.poll_transmit().is_some() {
                        sent += 1;
                    }
                    leader.handle(
                        Input::Joined {
                            participant: 2,
                            host: false,
                            keys: &bundles[0],
                        },
                        t,
                    );
                    while leader.poll_transmit().is_some() {}
                    sent
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, sframe, hpke, rekey);
criterion_main!(benches);
