//! What the metrics cost on the forwarding path.
//!
//! `metrics_cost`: one 1,200-byte chunk fanned out to N subscribers the way
//! `forward::push_all` and `write_group` do it (lock the subscriber's queue, push,
//! move the queued-bytes gauge, pop, count bytes out), with the telemetry hooks
//! (`count_media_in`, `count_media_out` and `record_stream_forward`, each once per
//! chunk) and without them, in the same run. (`record_queue_depth` runs once
//! per group and subscriber, not per chunk, so it is not in this loop.)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orelay_relay::core::{Pop, QueueLimits, SlotId, SubscriberQueue, TrackKey};
use orelay_relay::telemetry::MediaKind;
use orelay_relay::RelayStats;

fn forward_chunk(
    subscribers: &[(Mutex<SubscriberQueue>, SlotId)],
    chunk: &Bytes,
    stats: &RelayStats,
    gauge: &AtomicI64,
    bytes_in: &AtomicU64,
    bytes_out: &AtomicU64,
    metrics: bool,
) {
    let now = Instant::now();
    bytes_in.fetch_add(chunk.len() as u64, Relaxed);
    if metrics {
        stats.count_media_in(MediaKind::Video, chunk.len());
    }
    for (queue, slot) in subscribers {
        // Publisher side: `Peer::with_queue(|q| q.push(..))`.
        let mut q = queue.lock().unwrap();
        let before = q.queued_bytes();
        q.push(*slot, chunk.clone(), now);
        let after = q.queued_bytes();
        drop(q);
        gauge.fetch_add(after as i64 - before as i64, Relaxed);
        // Writer side: `Peer::with_queue(|q| q.pop(slot))`, then count what was written.
        let mut q = queue.lock().unwrap();
        let before = q.queued_bytes();
        let popped = q.pop(*slot);
        let after = q.queued_bytes();
        drop(q);
        gauge.fetch_add(after as i64 - before as i64, Relaxed);
        if let Pop::Chunk(out) = popped {
            bytes_out.fetch_add(out.len() as u64, Relaxed);
            criterion::black_box(out);
        }
    }
    if metrics {
        stats.count_media_out(MediaKind::Video, chunk.len() * subscribers.len());
        stats.record_stream_forward(now, subscribers.len());
    }
}

fn metrics_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_cost");
    let chunk = Bytes::from(vec![7u8; 1200]);
    let key = TrackKey {
        publisher: 1,
        track: 2,
        layer: 0,
    };
    for n in [1usize, 10, 100] {
        g.throughput(Throughput::Elements(n as u64));
        for (name, metrics) in [("off", false), ("on", true)] {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                let now = Instant::now();
                let subscribers: Vec<_> = (0..n)
                    .map(|_| {
                        let mut q = SubscriberQueue::new(QueueLimits::default());
                        let (slot, _) = q.open(key, 0, Bytes::from_static(b"hdr"), now);
                        let _ = q.pop(slot);
                        (Mutex::new(q), slot)
                    })
                    .collect();
                let stats = RelayStats::default();
                let gauge = AtomicI64::new(0);
                let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
                b.iter(|| {
                    forward_chunk(
                        &subscribers,
                        &chunk,
                        &stats,
                        &gauge,
                        &bytes_in,
                        &bytes_out,
                        metrics,
                    )
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, metrics_cost);
criterion_main!(benches);
