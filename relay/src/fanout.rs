//! The shell's handle on one group in flight: the core's [`GroupBuffer`] behind a
//! short mutex, shared by the publisher's ingest task and each subscriber's writer.
//!
//! Owns the byte accounting: every operation on a group moves its publisher's held
//! bytes (the per-publisher budget) and the relay-wide `queued_bytes` gauge by exactly
//! what the buffer grew or shrank, so both return to zero when the group is gone.
//! Never reads payload bytes.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use tokio::sync::Notify;

use crate::core::{GroupBuffer, Read, ReaderId, ResetCause, TrackKey};
use crate::stats::RelayStats;
use crate::telemetry::MediaKind;

/// Bytes held by one publisher's open groups, against its budget.
#[derive(Debug, Default)]
pub(crate) struct PublisherHeld(AtomicUsize);

impl PublisherHeld {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Relaxed)
    }
}

/// One group being forwarded.
pub(crate) struct GroupCell {
    buffer: Mutex<GroupBuffer>,
    /// Track layer and group sequence, for the subscriber's drop policy.
    pub(crate) key: TrackKey,
    pub(crate) group: u64,
    /// The track's media kind, for the metrics.
    pub(crate) kind: MediaKind,
    publisher: Arc<PublisherHeld>,
    stats: Arc<RelayStats>,
    /// Tells the ingest task the relay reset this group, so it stops reading.
    ingest_stop: Notify,
}

impl GroupCell {
    pub(crate) fn new(
        buffer: GroupBuffer,
        key: TrackKey,
        group: u64,
        kind: MediaKind,
        publisher: Arc<PublisherHeld>,
        stats: Arc<RelayStats>,
    ) -> Self {
        let held = buffer.held_bytes();
        publisher.0.fetch_add(held, Relaxed);
        stats.queued_bytes.fetch_add(held as i64, Relaxed);
        Self {
            buffer: Mutex::new(buffer),
            key,
            group,
            kind,
            publisher,
            stats,
            ingest_stop: Notify::new(),
        }
    }

    /// Resets the group on the relay's own decision (a newer group past the limit, the
    /// publisher gone): readers reset their streams and the ingest task stops reading.
    pub(crate) fn reset(&self, cause: ResetCause) {
        self.with(|g| g.reset(cause));
        // Stores a permit if the ingest task is not waiting right now.
        self.ingest_stop.notify_one();
    }

    /// Resolves once [`GroupCell::reset`] was called.
    pub(crate) async fn stopped_ingest(&self) {
        self.ingest_stop.notified().await;
    }

    /// Runs `f` on the buffer and moves the byte accounting by what it changed: the one
    /// place that keeps publisher budgets and the gauge in step with the buffers.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut GroupBuffer) -> R) -> R {
        // A panic while holding the lock would be a relay bug; keep serving the data.
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let before = buffer.held_bytes();
        let out = f(&mut buffer);
        let after = buffer.held_bytes();
        drop(buffer);
        if after != before {
            if after > before {
                self.publisher.0.fetch_add(after - before, Relaxed);
            } else {
                self.publisher.0.fetch_sub(before - after, Relaxed);
            }
            self.stats
                .queued_bytes
                .fetch_add(after as i64 - before as i64, Relaxed);
        }
        out
    }

    /// The next step for `reader`, waiting until there is one, with when the chunk
    /// (if it is one) arrived from the publisher.
    pub(crate) async fn read(&self, reader: ReaderId) -> (Read, Option<Instant>) {
        poll_fn(|cx| {
            let (step, at) = self.with(|g| {
                let at = g.next_arrival(reader);
                (g.read(reader, cx.waker()), at)
            });
            match step {
                Read::Pending => Poll::Pending,
                step => Poll::Ready((step, at)),
            }
        })
        .await
    }

    /// Resolves when `reader` must stop: dropped by the policy or the group reset.
    pub(crate) async fn stopped(&self, reader: ReaderId) {
        poll_fn(|cx| {
            if self.with(|g| g.watch(reader, cx.waker())) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

impl Drop for GroupCell {
    fn drop(&mut self) {
        // Whatever the last handle still held is released with it.
        let held = self
            .buffer
            .get_mut()
            .map_or_else(|p| p.into_inner().held_bytes(), |b| b.held_bytes());
        self.publisher.0.fetch_sub(held, Relaxed);
        self.stats.queued_bytes.fetch_sub(held as i64, Relaxed);
    }
}
