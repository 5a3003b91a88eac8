//! Fan-out benchmarks.
//!
//! - `queue_fanout`: one 1,200-byte chunk pushed once into a group's shared buffer
//!   and read by N subscribers as `Bytes` handles (what the relay does) vs a copy per
//!   subscriber into a queue of its own (what it avoids).
//! - `loopback_group`: one video group (10 objects of 1 KiB) delivered over real QUIC on
//!   loopback, through the relay (publisher → relay → subscriber) vs raw quinn
//!   (client → server) on the same machine in the same run, so the ratio is the
//!   relay's cost.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orelay_client::{Client, Media, Session};
use orelay_proto::{ServerMessage, TrackInfo, TrackKind};
use orelay_relay::core::{GroupBuffer, Read, ReaderId};
use orelay_relay::{Config, RunningRelay};
use tokio::sync::mpsc;

const OBJECTS: u64 = 10;
const OBJECT_BYTES: usize = 1024;

fn queue_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_fanout");
    let chunk = Bytes::from(vec![7u8; 1200]);
    let waker = std::task::Waker::noop();
    for n in [10usize, 100, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        // What the relay does: one push into the group's shared buffer, then each
        // subscriber's reader takes the same `Bytes` handle.
        g.bench_with_input(BenchmarkId::new("shared_group", n), &n, |b, &n| {
            let now = Instant::now();
            let mut group = GroupBuffer::new(Bytes::from_static(b"hdr"), n, now);
            for r in 0..n {
                let _ = group.read(ReaderId(r as u32), waker);
            }
            b.iter(|| {
                group.push(chunk.clone(), now, usize::MAX);
                for r in 0..n {
                    if let Read::Chunk(out) = group.read(ReaderId(r as u32), waker) {
                        criterion::black_box(out);
                    }
                }
            });
        });
        // What it avoids: a copy per subscriber into a queue of its own.
        g.bench_with_input(BenchmarkId::new("copy_each", n), &n, |b, &n| {
            let mut queues: Vec<std::collections::VecDeque<Bytes>> =
                (0..n).map(|_| Default::default()).collect();
            b.iter(|| {
                for q in &mut queues {
                    q.push_back(Bytes::copy_from_slice(&chunk));
                    criterion::black_box(q.pop_front());
                }
            });
        });
    }
    g.finish();
}

fn video() -> TrackInfo {
    TrackInfo {
        track: 2,
        kind: TrackKind::VIDEO,
        layers: 1,
        priority: 100,
    }
}

/// Publisher and subscriber joined through an in-process relay.
struct ThroughRelay {
    _relay: RunningRelay,
    _publisher: Session,
    _subscriber: Session,
    media: Media,
    done: mpsc::Receiver<()>,
    group: u64,
}

impl ThroughRelay {
    async fn new() -> Self {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        let issuer = std::sync::Arc::new(orelay_relay::tools::LocalIssuer::generate().unwrap());
        issuer.configure(&mut config);
        let relay = orelay_relay::Relay::bind(config).unwrap().spawn().unwrap();
        let pin = orelay_client::parse_fingerprint(&relay.fingerprint).unwrap();
        let client = Client::new(SocketAddr::from(([127, 0, 0, 1], 0)), pin)
            .unwrap()
            .with_credentials(std::sync::Arc::new(move |m: &str| {
                issuer.host_credential(m)
            }));
        let mut publisher = client
            .join(relay.addr, "bench-meeting-1", "pw", b"p")
            .await
            .unwrap();
        let mut subscriber = client
            .join(relay.addr, "bench-meeting-1", "pw", b"s")
            .await
            .unwrap();
        publisher.publish(video()).await.unwrap();
        loop {
            if let Some(Ok(ServerMessage::TrackPublished { participant, info })) =
                subscriber.next_event().await
            {
                subscriber
                    .subscribe(participant, info.track, 0)
                    .await
                    .unwrap();
                break;
            }
        }
        let (tx, done) = mpsc::channel(16);
        let sub_media = subscriber.media();
        tokio::spawn(async move {
            while let Ok(mut group) = sub_media.accept_group().await {
                while let Ok(Some(_)) = group.next_object().await {}
                let _ = tx.send(()).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let media = publisher.media();
        Self {
            _relay: relay,
            _publisher: publisher,
            _subscriber: subscriber,
            media,
            done,
            group: 0,
        }
    }

    async fn run(&mut self, iters: u64) -> Duration {
        let payload = Bytes::from(vec![1u8; OBJECT_BYTES]);
        let start = Instant::now();
        for _ in 0..iters {
            self.group += 1;
            let mut w = self.media.open_group(2, self.group, 0, 100).await.unwrap();
            for o in 0..OBJECTS {
                let h = w.next_header(u8::from(o == 0), OBJECT_BYTES);
                w.write(h, payload.clone()).await.unwrap();
            }
            w.finish();
            self.done.recv().await.unwrap();
        }
        start.elapsed()
    }
}

/// A client and a plain quinn server that reads each stream to its end.
struct RawQuinn {
    _server: quinn::Endpoint,
    conn: quinn::Connection,
    done: mpsc::Receiver<()>,
}

impl RawQuinn {
    async fn new() -> Self {
        let config = Config::default();
        let identity = orelay_relay::tls::Identity::self_signed().unwrap();
        let pin = orelay_client::parse_fingerprint(&identity.fingerprint()).unwrap();
        let server_config = orelay_relay::tls::server_config(
            identity,
            orelay_relay::endpoint::transport_config(&config),
        )
        .unwrap();
        let server =
            quinn::Endpoint::server(server_config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, done) = mpsc::channel(16);
        let accept = server.clone();
        tokio::spawn(async move {
            let conn = accept.accept().await.unwrap().await.unwrap();
            while let Ok(mut stream) = conn.accept_uni().await {
                while let Ok(Some(_)) = stream.read_chunk(64 * 1024, true).await {}
                let _ = tx.send(()).await;
            }
        });
        let client = Client::new(SocketAddr::from(([127, 0, 0, 1], 0)), pin).unwrap();
        let conn = client.connect(addr).await.unwrap();
        Self {
            _server: server,
            conn,
            done,
        }
    }

    async fn run(&mut self, iters: u64) -> Duration {
        let payload = Bytes::from(vec![1u8; OBJECT_BYTES]);
        let header = Bytes::from_static(&[0u8; 12]);
        let start = Instant::now();
        for _ in 0..iters {
            let mut s = self.conn.open_uni().await.unwrap();
            s.write_chunk(header.clone()).await.unwrap();
            for _ in 0..OBJECTS {
                let mut chunks = [Bytes::from_static(&[0u8; 4]), payload.clone()];
                s.write_all_chunks(&mut chunks).await.unwrap();
            }
            s.finish().unwrap();
            self.done.recv().await.unwrap();
        }
        start.elapsed()
    }
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut relay = rt.block_on(ThroughRelay::new());
    let mut raw = rt.block_on(RawQuinn::new());
    let mut g = c.benchmark_group("loopback_group");
    g.throughput(Throughput::Bytes(OBJECTS * OBJECT_BYTES as u64));
    g.bench_function("raw_quinn", |b| {
        b.iter_custom(|iters| rt.block_on(raw.run(iters)))
    });
    g.bench_function("through_relay", |b| {
        b.iter_custom(|iters| rt.block_on(relay.run(iters)))
    });
    g.finish();
}

criterion_group!(benches, queue_fanout, loopback);
criterion_main!(benches);
