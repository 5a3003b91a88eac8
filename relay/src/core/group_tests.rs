//! Unit tests of the shared group buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

/// A waker that counts how often it was woken.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter::default());
    (c.clone(), Waker::from(c))
}

fn chunk(n: usize) -> Bytes {
    Bytes::from(vec![7u8; n])
}

const BIG: usize = usize::MAX;

#[test]
fn every_reader_gets_the_same_bytes_in_order_then_finished() {
    let now = Instant::now();
    let header = Bytes::from_static(b"hdr");
    let mut g = GroupBuffer::new(header.clone(), 3, now);
    let chunks: Vec<Bytes> = (0..5).map(|i| chunk(100 + i)).collect();
    for c in &chunks {
        assert!(g.push(c.clone(), now, BIG).is_empty());
    }
    g.finish();
    let w = Waker::noop();
    for r in 0..3 {
        let id = ReaderId(r);
        let Read::Chunk(h) = g.read(id, w) else {
            panic!("header first")
        };
        assert_eq!(h.as_ptr(), header.as_ptr());
        for c in &chunks {
            let Read::Chunk(got) = g.read(id, w) else {
                panic!("chunk expected")
            };
            assert_eq!(got.as_ptr(), c.as_ptr(), "same allocation, no copy");
        }
        assert_eq!(g.read(id, w), Read::Finished);
    }
    assert_eq!(g.held_bytes(), 0, "everything read is released");
    assert_eq!(g.active_readers(), 0);
}

#[test]
fn a_push_wakes_only_the_readers_waiting_at_the_end() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 3, now);
    let (waiting, w0) = counting();
    let (behind, w1) = counting();
    // Reader 0 catches up and parks; reader 1 stays behind; reader 2 never reads.
    assert!(matches!(g.read(ReaderId(0), &w0), Read::Chunk(_)));
    assert_eq!(g.read(ReaderId(0), &w0), Read::Pending);
    assert_eq!(
        g.read(ReaderId(0), &w0),
        Read::Pending,
        "parking twice is one wake"
    );
    g.push(chunk(10), now, BIG);
    assert_eq!(waiting.0.load(Ordering::SeqCst), 1);
    g.push(chunk(10), now, BIG);
    assert_eq!(
        waiting.0.load(Ordering::SeqCst),
        1,
        "not re-parked: no wake"
    );
    assert!(matches!(g.read(ReaderId(1), &w1), Read::Chunk(_)));
    assert_eq!(behind.0.load(Ordering::SeqCst), 0);
}

#[test]
fn the_buffer_holds_only_what_the_slowest_reader_has_not_read() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(100), 2, now);
    let w = Waker::noop();
    for _ in 0..4 {
        g.push(chunk(100), now, BIG);
    }
    assert_eq!(g.held_bytes(), 5 * (100 + CHUNK_OVERHEAD));
    for _ in 0..5 {
        assert!(matches!(g.read(ReaderId(0), w), Read::Chunk(_)));
    }
    assert_eq!(
        g.held_bytes(),
        5 * (100 + CHUNK_OVERHEAD),
        "reader 1 still needs all"
    );
    for _ in 0..3 {
        assert!(matches!(g.read(ReaderId(1), w), Read::Chunk(_)));
    }
    assert_eq!(g.held_bytes(), 2 * (100 + CHUNK_OVERHEAD));
    assert_eq!(
        g.lag(ReaderId(1)).map(|l| l.bytes),
        Some(200),
        "lag counts payload bytes"
    );
}

#[test]
fn over_budget_the_slowest_readers_are_detached_and_the_rest_carry_on() {
    let now = Instant::now();
    let budget = 4 * (1000 + CHUNK_OVERHEAD);
    let mut g = GroupBuffer::new(chunk(1000), 3, now);
    let w = Waker::noop();
    let mut evicted = Vec::new();
    for i in 0..10 {
        evicted.extend(g.push(chunk(1000), now, budget));
        // Reader 0 keeps up; reader 1 reads every other chunk; reader 2 stalls.
        while let Read::Chunk(_) = g.read(ReaderId(0), w) {}
        if i % 2 == 0 {
            let _ = g.read(ReaderId(1), w);
        }
    }
    assert_eq!(
        evicted.first(),
        Some(&ReaderId(2)),
        "the stalled one goes first"
    );
    assert!(g.held_bytes() <= budget);
    assert_eq!(g.read(ReaderId(2), w), Read::Reset, "told once");
    g.finish();
    assert_eq!(
        g.read(ReaderId(0), w),
        Read::Finished,
        "reader 0 was caught up"
    );
}

#[test]
fn a_released_reader_pins_nothing_and_never_returns() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 2, now);
    let w = Waker::noop();
    for _ in 0..3 {
        g.push(chunk(10), now, BIG);
    }
    while let Read::Chunk(_) = g.read(ReaderId(0), w) {}
    // Reader 1's stream was stopped by its subscriber: its writer releases it.
    g.release(ReaderId(1));
    g.release(ReaderId(1));
    assert_eq!(g.held_bytes(), 0);
    assert_eq!(g.active_readers(), 1);
    assert!(g.lag(ReaderId(1)).is_none());
    assert_eq!(g.read(ReaderId(1), w), Read::Reset);
    g.release(ReaderId(0));
    g.push(chunk(10), now, BIG);
    assert_eq!(g.held_bytes(), 0, "no readers: nothing is kept");
}

#[test]
fn a_reset_ends_the_group_for_everyone_and_wakes_the_waiting() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 2, now);
    let (c, w) = counting();
    let _ = g.read(ReaderId(0), &w);
    assert_eq!(g.read(ReaderId(0), &w), Read::Pending);
    g.push(chunk(10), now, BIG);
    let _ = g.read(ReaderId(0), &w);
    assert_eq!(g.read(ReaderId(0), &w), Read::Pending);
    g.reset(ResetCause::Idle);
    assert_eq!(c.0.load(Ordering::SeqCst), 2);
    assert_eq!(g.held_bytes(), 0);
    assert_eq!(g.end(), Some(GroupEnd::Reset(ResetCause::Idle)));
    assert_eq!(g.read(ReaderId(0), &w), Read::Reset);
    assert_eq!(g.read(ReaderId(1), &w), Read::Reset);
    assert!(g.push(chunk(10), now, BIG).is_empty());
    assert_eq!(g.held_bytes(), 0, "chunks after the end are ignored");
    assert_eq!(g.active_readers(), 0);
}

#[test]
fn lag_reports_when_the_oldest_unread_bytes_arrived() {
    let t0 = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 1, t0);
    let t1 = t0 + Duration::from_millis(40);
    g.push(chunk(20), t1, BIG);
    let w = Waker::noop();
    assert_eq!(
        g.lag(ReaderId(0)),
        Some(Lag {
            bytes: 30,
            since: Some(t0)
        })
    );
    let _ = g.read(ReaderId(0), w);
    assert_eq!(
        g.lag(ReaderId(0)),
        Some(Lag {
            bytes: 20,
            since: Some(t1)
        })
    );
    let _ = g.read(ReaderId(0), w);
    assert_eq!(
        g.lag(ReaderId(0)),
        Some(Lag {
            bytes: 0,
            since: None
        })
    );
    assert_eq!(g.drop_reader(ReaderId(0)), Some(0));
    assert_eq!(g.drop_reader(ReaderId(0)), None);
}

#[test]
fn unknown_reader_ids_are_harmless() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 1, now);
    assert_eq!(g.read(ReaderId(9), Waker::noop()), Read::Reset);
    g.release(ReaderId(9));
    assert_eq!(g.drop_reader(ReaderId(9)), None);
    assert!(g.lag(ReaderId(9)).is_none());
}

#[test]
fn a_blocked_writer_is_told_when_its_reader_is_dropped() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 2, now);
    let (c, w) = counting();
    assert!(g.watch(ReaderId(0), &w));
    g.push(chunk(10), now, BIG);
    assert_eq!(c.0.load(Ordering::SeqCst), 0, "a push is not a drop");
    g.drop_reader(ReaderId(0));
    assert_eq!(c.0.load(Ordering::SeqCst), 1);
    assert!(!g.watch(ReaderId(0), &w));
    assert!(g.watch(ReaderId(1), &w));
    g.reset(ResetCause::Publisher);
    assert_eq!(c.0.load(Ordering::SeqCst), 2);
    assert!(!g.watch(ReaderId(1), &w));
}

#[test]
fn a_reset_group_is_nobodys_backlog() {
    let now = Instant::now();
    let mut g = GroupBuffer::new(chunk(10), 2, now);
    g.push(chunk(10), now, BIG);
    assert!(g.lag(ReaderId(0)).is_some());
    g.reset(ResetCause::Idle);
    // Until its writer reads `Reset`, the policy must not count (or drop) it.
    assert_eq!(g.lag(ReaderId(0)), None);
    assert_eq!(g.drop_reader(ReaderId(1)), None);
    assert_eq!(g.read(ReaderId(0), Waker::noop()), Read::Reset);
}
