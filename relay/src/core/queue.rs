//! A subscriber's bounded queue of group streams and its drop policy, sans-IO.
//!
//! Each group a subscriber receives is a *slot*: the group header and the chunks of
//! the publisher's stream, as `Bytes` handles (never copies), waiting for the
//! subscriber's stream to accept them. The queue never grows past its byte budget:
//!
//! 1. When the budget is exceeded, whole groups are dropped, oldest first, preferring
//!    groups already *superseded* by a newer group of the same track (the subscriber
//!    jumps to the newer group, which starts with a keyframe).
//! 2. A superseded group whose oldest queued bytes have waited longer than
//!    `max_group_delay` is dropped even under budget: it is late media nobody wants.
//! 3. Dropping the newest group of a track leaves the subscriber with nothing current,
//!    so the drop says `need_keyframe` and the I/O layer asks the publisher for one.
//!
//! A dropped group's stream is reset with `GROUP_DROPPED`. Audio never enters this
//! queue: it travels as datagrams, so video backlog cannot delay it.
//!
//! This module never reads payload bytes; it only counts their lengths.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orelay_proto::{ParticipantId, TrackId};

/// Identifies a slot within one subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u64);

/// A track layer as seen by a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackKey {
    /// The publisher.
    pub publisher: ParticipantId,
    /// The track.
    pub track: TrackId,
    /// The layer.
    pub layer: u8,
}

/// Limits of one subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most payload bytes queued across all groups.
    pub max_bytes: usize,
    /// Most groups open at once (including tombstones of dropped groups).
    pub max_groups: usize,
    /// How long a superseded group may wait before it is dropped.
    pub max_group_delay: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            // Two per possible subscription: one being written, one superseding it.
            max_groups: 2 * orelay_proto::limits::MAX_SUBSCRIPTIONS_PER_PARTICIPANT,
            max_group_delay: Duration::from_millis(500),
        }
    }
}

/// A group the policy dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The slot, whose stream must be reset.
    pub slot: SlotId,
    /// Its track layer.
    pub key: TrackKey,
    /// The group sequence number.
    pub group: u64,
    /// Bytes discarded from the queue.
    pub bytes: usize,
    /// Whether it was the newest group of its track, so the publisher should send a keyframe.
    pub need_keyframe: bool,
}

/// What the writer of a slot should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop {
    /// Write this chunk.
    Chunk(Bytes),
    /// Nothing queued yet: wait for a push.
    Empty,
    /// The publisher finished the group and everything was written: finish the stream.
    Finished,
    /// The group was dropped (or never existed): reset the stream.
    Dropped,
}

#[derive(Debug)]
struct Slot {
    id: SlotId,
    key: TrackKey,
    group: u64,
    chunks: VecDeque<(Bytes, Instant)>,
    bytes: usize,
    ingest_done: bool,
    dropped: bool,
}

/// Counters a queue keeps about itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounters {
    /// Groups dropped by the policy.
    pub dropped_groups: u64,
    /// Bytes dropped by the policy, including chunks that arrived for dropped groups.
    pub dropped_bytes: u64,
}

/// One subscriber's queue. See the module docs.
#[derive(Debug)]
pub struct SubscriberQueue {
    limits: QueueLimits,
    slots: VecDeque<Slot>,
    queued_bytes: usize,
    next_slot: u64,
    counters: QueueCounters,
}

impl SubscriberQueue {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            slots: VecDeque::new(),
            queued_bytes: 0,
            next_slot: 0,
            counters: QueueCounters::default(),
        }
    }

    /// Bytes queued and not yet handed to a writer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Slots open, including tombstones of dropped groups still being received.
    pub fn open_groups(&self) -> usize {
        self.slots.len()
    }

    /// What the policy has dropped so far.
    pub fn counters(&self) -> QueueCounters {
        self.counters
    }

    /// Opens a slot for a new group whose stream starts with `header`. Older groups
    /// that this one supersedes and that are already late are dropped.
    pub fn open(
        &mut self,
        key: TrackKey,
        group: u64,
        header: Bytes,
        now: Instant,
    ) -> (SlotId, Vec<Dropped>) {
        let id = SlotId(self.next_slot);
        self.next_slot += 1;
        let mut dropped = Vec::new();
        // The new slot goes in first, so a group it supersedes is dropped as superseded
        // (no keyframe needed). A dropped slot stays as a tombstone until its writer is
        // told, so drop as many of the oldest live groups as are over the limit, not
        // "until the count falls", which would drop them all.
        let excess = (self.slots.len() + 1).saturating_sub(self.limits.max_groups);
        self.slots.push_back(Slot {
            id,
            key,
            group,
            chunks: VecDeque::new(),
            bytes: 0,
            ingest_done: false,
            dropped: false,
        });
        for _ in 0..excess {
            match self.slots.iter().position(|s| !s.dropped && s.id != id) {
                Some(i) => dropped.push(self.drop_at(i)),
                None => break,
            }
        }
        dropped.extend(self.push(id, header, now));
        (id, dropped)
    }

    /// Queues a chunk of a group. Chunks for a dropped group are discarded (and
    /// counted). Returns the groups the policy dropped to stay within limits.
    pub fn push(&mut self, id: SlotId, chunk: Bytes, now: Instant) -> Vec<Dropped> {
        let Some(slot) = self.slots.iter_mut().find(|s| s.id == id) else {
            self.counters.dropped_bytes += chunk.len() as u64;
            return Vec::new();
        };
        if slot.dropped {
            self.counters.dropped_bytes += chunk.len() as u64;
            return Vec::new();
        }
        slot.bytes += chunk.len();
        self.queued_bytes += chunk.len();
        slot.chunks.push_back((chunk, now));
        self.enforce(now)
    }

    /// The publisher finished (or abandoned) a group: no more chunks will come.
    pub fn finish(&mut self, id: SlotId) {
        if let Some(i) = self.slots.iter().position(|s| s.id == id) {
            self.slots[i].ingest_done = true;
            if self.slots[i].dropped {
                self.slots.remove(i);
            }
        }
    }

    /// The publisher reset the group: drop it as if the policy had (without counting it
    /// as a policy drop), so the writer resets the subscriber's stream too.
    pub fn cancel(&mut self, id: SlotId) {
        if let Some(i) = self.slots.iter().position(|s| s.id == id) {
            let slot = &mut self.slots[i];
            self.queued_bytes -= slot.bytes;
            slot.chunks.clear();
            slot.bytes = 0;
            slot.dropped = true;
            slot.ingest_done = true;
        }
    }

    /// The next step for the writer of slot `id`. A finished or dropped slot is
    /// forgotten once its writer has been told.
    pub fn pop(&mut self, id: SlotId) -> Pop {
        let Some(i) = self.slots.iter().position(|s| s.id == id) else {
            return Pop::Dropped;
        };
        let slot = &mut self.slots[i];
        if slot.dropped {
            if slot.ingest_done {
                self.slots.remove(i);
            }
            return Pop::Dropped;
        }
        match slot.chunks.pop_front() {
            Some((chunk, _)) => {
                slot.bytes -= chunk.len();
                self.queued_bytes -= chunk.len();
                Pop::Chunk(chunk)
            }
            None if slot.ingest_done => {
                self.slots.remove(i);
                Pop::Finished
            }
            None => Pop::Empty,
        }
    }

    /// Whether a slot has been dropped (or forgotten), so its writer should reset.
    pub fn is_dropped(&self, id: SlotId) -> bool {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .is_none_or(|s| s.dropped)
    }

    fn is_superseded(&self, i: usize) -> bool {
        let s = &self.slots[i];
        self.slots
            .iter()
            .skip(i + 1)
            .any(|later| !later.dropped && later.key == s.key && later.group > s.group)
    }

    fn enforce(&mut self, now: Instant) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        // Late superseded groups go first, whatever the budget.
        let mut i = 0;
        while i < self.slots.len() {
            let late = self.slots[i].chunks.front().is_some_and(|(_, at)| {
                now.saturating_duration_since(*at) > self.limits.max_group_delay
            });
            if late && !self.slots[i].dropped && self.is_superseded(i) {
                dropped.push(self.drop_at(i));
            }
            i += 1;
        }
        while self.queued_bytes > self.limits.max_bytes {
            let victim = (0..self.slots.len())
                .filter(|&i| !self.slots[i].dropped && self.slots[i].bytes > 0)
                .find(|&i| self.is_superseded(i))
                .or_else(|| {
                    (0..self.slots.len())
                        .find(|&i| !self.slots[i].dropped && self.slots[i].bytes > 0)
                });
            match victim {
                Some(i) => dropped.push(self.drop_at(i)),
                None => break,
            }
        }
        dropped
    }

    fn drop_at(&mut self, i: usize) -> Dropped {
        let need_keyframe = !self.is_superseded(i);
        let slot = &mut self.slots[i];
        let bytes = slot.bytes;
        self.queued_bytes -= bytes;
        slot.chunks.clear();
        slot.bytes = 0;
        slot.dropped = true;
        self.counters.dropped_groups += 1;
        self.counters.dropped_bytes += bytes as u64;
        Dropped {
            slot: slot.id,
            key: slot.key,
            group: slot.group,
            bytes,
            need_keyframe,
        }
    }
}
