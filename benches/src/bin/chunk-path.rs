//! The relay's per-chunk fan-out path, sans-IO, sized for `valgrind --tool=callgrind`
//! (instruction counts repeat exactly on a noisy machine, unlike time): one group
//! buffer with N readers; each of K chunks is pushed once and read by every reader, as
//! the publisher's ingest task and the subscribers' writers do. Only [`run_path`] is
//! counted (`--toggle-collect`), so set-up and printing are left out.
//!
//! `chunk-path N K` prints the deliveries made; `scripts/callgrind-chunk.sh` divides
//! the instructions by them.

use std::hint::black_box;
use std::task::Waker;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use orelay_relay::core::{GroupBuffer, Read, ReaderId};

/// Pushes `chunks` chunks into `group` and lets each of `readers` readers take each
/// one; returns the deliveries.
#[inline(never)]
fn run_path(group: &mut GroupBuffer, readers: u32, chunks: u32, chunk: &Bytes) -> u64 {
    let now = Instant::now();
    let waker = Waker::noop();
    let mut delivered = 0;
    for _ in 0..chunks {
        let _ = group.push(chunk.clone(), now, usize::MAX);
        for r in 0..readers {
            if let Read::Chunk(c) = group.read(ReaderId(r), waker) {
                black_box(c);
                delivered += 1;
            }
        }
    }
    delivered
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let readers: u32 = args
        .next()
        .unwrap_or_else(|| "100".into())
        .parse()
        .context("N (readers) must be a number")?;
    let chunks: u32 = args
        .next()
        .unwrap_or_else(|| "1000".into())
        .parse()
        .context("K (chunks) must be a number")?;
    let chunk = Bytes::from(vec![7u8; 1200]);
    let mut group = GroupBuffer::new(Bytes::from_static(b"hdr"), readers as usize, Instant::now());
    for r in 0..readers {
        let _ = group.read(ReaderId(r), Waker::noop());
    }
    let delivered = run_path(&mut group, readers, chunks, &chunk);
    println!("readers={readers} chunks={chunks} delivered={delivered}");
    Ok(())
}
