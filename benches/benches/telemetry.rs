//! What the metrics cost on the forwarding path.
//!
//! `metrics_cost`: one 1,200-byte chunk fanned out to N subscribers the way
//! `media::push` and `media::write_group` do it (the group's buffer behind a mutex:
//! push once, moving the held-bytes gauge; each subscriber's writer reads under the
//! same lock and counts its bytes out), with the telemetry hooks (`count_media_in`
//! once per chunk; `count_media_out` and `record_stream_forward` once per delivery, as
//! the writers call them) and without them, in the same run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orelay_relay::core::{GroupBuffer, Read, ReaderId};
use orelay_relay::telemetry::MediaKind;
use orelay_relay::RelayStats;

struct Counters {
    gauge: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

fn forward_chunk(
    group: &Mutex<GroupBuffer>,
    readers: u32,
    chunk: &Bytes,
    stats: &RelayStats,
    c: &Counters,
    metrics: bool,
) {
    let now = Instant::now();
    c.bytes_in.fetch_add(chunk.len() as u64, Relaxed);
    if metrics {
        stats.count_media_in(MediaKind::Video, chunk.len());
    }
    // Publisher side: `GroupCell::with(|g| g.push(..))`.
    let mut g = group.lock().unwrap();
    let before = g.held_bytes();
    let _ = g.push(chunk.clone(), now, usize::MAX);
    let after = g.held_bytes();
    drop(g);
    c.gauge.fetch_add(after as i64 - before as i64, Relaxed);
    // Writer side: `GroupCell::read`, then count what was written.
    for r in 0..readers {
        let mut g = group.lock().unwrap();
        let before = g.held_bytes();
        let at = g.next_arrival(ReaderId(r));
        let step = g.read(ReaderId(r), Waker::noop());
        let after = g.held_bytes();
        drop(g);
        c.gauge.fetch_add(after as i64 - before as i64, Relaxed);
        if let Read::Chunk(out) = step {
            c.bytes_out.fetch_add(out.len() as u64, Relaxed);
            if metrics {
                stats.count_media_out(MediaKind::Video, out.len());
                if let Some(at) = at {
                    stats.record_stream_forward(at, 1);
                }
            }
            criterion::black_box(out);
        }
    }
}

fn metrics_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_cost");
    let chunk = Bytes::from(vec![7u8; 1200]);
    for n in [1u32, 10, 100] {
        g.throughput(Throughput::Elements(u64::from(n)));
        for (name, metrics) in [("off", false), ("on", true)] {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let mut group =
                    GroupBuffer::new(Bytes::from_static(b"hdr"), n as usize, Instant::now());
                for r in 0..n {
                    let _ = group.read(ReaderId(r), Waker::noop());
                }
                let group = Mutex::new(group);
                let stats = RelayStats::default();
                let counters = Counters {
                    gauge: AtomicI64::new(0),
                    bytes_in: AtomicU64::new(0),
                    bytes_out: AtomicU64::new(0),
                };
                b.iter(|| forward_chunk(&group, n, &chunk, &stats, &counters, metrics));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, metrics_cost);
criterion_main!(benches);
