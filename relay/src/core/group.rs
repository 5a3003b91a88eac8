//! One group's shared fan-out buffer, sans-IO: the publisher appends, every subscriber
//! reads at its own cursor.
//!
//! A group stream is received once and its chunks (`Bytes` handles straight from quinn,
//! the group header first) are appended here once, however many subscribers there are.
//! Each subscriber has a [`ReaderId`] with a cursor into the chunk list, so a push is
//! O(1) for the publisher plus one wake per reader that is actually waiting at the end
//! of the buffer; readers that are behind are not touched at all.
//!
//! Memory: a chunk is kept only while some reader still needs it (each entry counts the
//! readers that have not passed it; the front is trimmed when that reaches zero), so
//! the buffer holds exactly the bytes between the slowest reader and the newest chunk.
//! That span is bounded by the `budget` passed to [`GroupBuffer::push`]: past it the
//! slowest readers are detached ([`DropCause::GroupBudget`]) and lose this group, never
//! the faster ones.
//!
//! This module never reads payload bytes; it only counts their lengths.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

/// Bookkeeping charged per queued chunk on top of its length: the entry itself and the
/// `Bytes` handle. Keeps a flood of tiny chunks from looking free.
pub const CHUNK_OVERHEAD: usize = 64;

/// One subscriber's position in a group; valid for the group it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReaderId(pub u32);

/// Why a whole group ended before its publisher finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The publisher reset the stream or its connection went away.
    Publisher,
    /// A newer group of the same track layer exceeded the concurrent-group limit.
    GroupLimit,
    /// No bytes arrived for longer than the group idle timeout.
    Idle,
}

/// Why one reader was detached from a group that goes on for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The group's buffer exceeded its budget and this reader was the furthest behind.
    GroupBudget,
    /// A newer group of the same track had started and this one was late.
    Superseded,
    /// The subscriber's own byte budget across its groups was exceeded.
    SubscriberBudget,
    /// The subscriber had too many groups open at once.
    GroupCount,
}

impl DropCause {
    /// A stable, low-cardinality label for counters.
    pub fn label(self) -> &'static str {
        match self {
            DropCause::GroupBudget => "group_budget",
            DropCause::Superseded => "superseded",
            DropCause::SubscriberBudget => "subscriber_budget",
            DropCause::GroupCount => "group_count",
        }
    }
}

/// What a reader should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Write this chunk to the subscriber's stream.
    Chunk(Bytes),
    /// Nothing new yet; the waker passed in will be woken when there is.
    Pending,
    /// Everything was read and the publisher finished the group: finish the stream.
    Finished,
    /// The group was reset, or dropped for this reader: reset the stream.
    Reset,
}

/// How far behind one reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Bytes pushed that the reader has not taken yet.
    pub bytes: usize,
    /// When the oldest of those bytes arrived (`None` when caught up).
    pub since: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    /// Readers that have not passed this entry yet.
    pending: u32,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Reading,
    /// Detached by the policy; the reader has not been told yet.
    Dropped,
    /// Told (or gone): nothing more to do for it.
    Done,
}

#[derive(Debug)]
struct Reader {
    cursor: u64,
    state: ReaderState,
    /// Woken by a push or the end, when parked in [`GroupBuffer::read`].
    waker: Option<Waker>,
    /// Woken only when this reader is dropped or the group reset: its writer, blocked
    /// on a slow subscriber's stream, must give up at once.
    watch: Option<Waker>,
}

/// How a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEnd {
    /// The publisher finished the stream.
    Finished,
    /// The group was reset.
    Reset(ResetCause),
}

/// One group's shared buffer. See the module docs.
#[derive(Debug)]
pub struct GroupBuffer {
    entries: VecDeque<Entry>,
    /// Absolute index of `entries[0]`.
    base: u64,
    /// Bytes held, each chunk charged its length plus [`CHUNK_OVERHEAD`].
    held: usize,
    end: Option<GroupEnd>,
    readers: Vec<Reader>,
    /// Readers in `Reading` state.
    active: u32,
    /// Readers parked at the end of the buffer, to wake on the next push or end.
    waiting: Vec<u32>,
    /// Unread payload bytes of the readers [`GroupBuffer::shed`] detached, ever.
    shed_bytes: u64,
    last_push: Instant,
}

fn charge(chunk: &Bytes) -> usize {
    chunk.len() + CHUNK_OVERHEAD
}

impl GroupBuffer {
    /// A group whose stream starts with `header`, read by `readers` subscribers whose
    /// ids are `ReaderId(0)..ReaderId(readers)`.
    pub fn new(header: Bytes, readers: usize, now: Instant) -> Self {
        let n = u32::try_from(readers).unwrap_or(u32::MAX);
        let mut group = Self {
            entries: VecDeque::new(),
            base: 0,
            held: 0,
            end: None,
            readers: (0..n)
                .map(|_| Reader {
                    cursor: 0,
                    state: ReaderState::Reading,
                    waker: None,
                    watch: None,
                })
                .collect(),
            active: n,
            waiting: Vec::new(),
            shed_bytes: 0,
            last_push: now,
        };
        group.append(header, now);
        group
    }

    /// Bytes held now (lengths plus per-chunk overhead).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Unread payload bytes of every reader the budget detached so far (for counting
    /// what those drops discarded).
    pub fn shed_bytes(&self) -> u64 {
        self.shed_bytes
    }

    /// Readers still reading (not dropped, not finished).
    pub fn active_readers(&self) -> usize {
        self.active as usize
    }

    /// How the group ended, if it has.
    pub fn end(&self) -> Option<GroupEnd> {
        self.end
    }

    /// When the last chunk arrived (or the group started).
    pub fn last_push(&self) -> Instant {
        self.last_push
    }

    fn next_index(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn append(&mut self, chunk: Bytes, now: Instant) {
        self.last_push = now;
        if self.active == 0 {
            // Nobody will read it: keep nothing.
            return;
        }
        self.held += charge(&chunk);
        self.entries.push_back(Entry {
            bytes: chunk,
            pending: self.active,
            at: now,
        });
        self.wake_waiting();
    }

    fn wake_waiting(&mut self) {
        for id in self.waiting.drain(..) {
            if let Some(waker) = self.readers[id as usize].waker.take() {
                waker.wake();
            }
        }
    }

    /// Appends a chunk the publisher sent. If the group then holds more than `budget`
    /// bytes, the readers furthest behind are detached until it fits; their ids are
    /// returned (the caller counts them and may ask for a keyframe). Chunks after the
    /// group ended are ignored.
    pub fn push(&mut self, chunk: Bytes, now: Instant, budget: usize) -> Vec<ReaderId> {
        if self.end.is_some() {
            return Vec::new();
        }
        self.append(chunk, now);
        self.shed(budget)
    }

    /// Detaches the slowest readers until the group holds at most `budget` bytes.
    pub fn shed(&mut self, budget: usize) -> Vec<ReaderId> {
        let mut evicted = Vec::new();
        while self.held > budget && self.active > 0 {
            let Some(slowest) = self
                .readers
                .iter()
                .filter(|r| r.state == ReaderState::Reading)
                .map(|r| r.cursor)
                .min()
            else {
                break;
            };
            for i in 0..self.readers.len() {
                let r = &self.readers[i];
                if r.state == ReaderState::Reading && r.cursor == slowest {
                    let lag = self.lag(ReaderId(i as u32)).map_or(0, |l| l.bytes);
                    self.shed_bytes += lag as u64;
                    self.detach(i, ReaderState::Dropped);
                    evicted.push(ReaderId(i as u32));
                }
            }
        }
        evicted
    }

    /// The publisher finished the group: readers drain what is left, then finish.
    pub fn finish(&mut self) {
        if self.end.is_none() {
            self.end = Some(GroupEnd::Finished);
            self.wake_waiting();
        }
    }

    /// Ends the group for every reader at once; what was queued is discarded.
    pub fn reset(&mut self, cause: ResetCause) {
        if self.end.is_some_and(|e| e != GroupEnd::Finished) {
            return;
        }
        self.end = Some(GroupEnd::Reset(cause));
        self.base = self.next_index();
        self.entries.clear();
        self.held = 0;
        // Waiting and blocked writers learn at once.
        for r in &mut self.readers {
            for waker in [r.waker.take(), r.watch.take()].into_iter().flatten() {
                waker.wake();
            }
        }
        self.waiting.clear();
    }

    /// Detaches one reader (the group goes on for the others). Returns the bytes it
    /// had not read yet, or `None` if it was not reading.
    pub fn drop_reader(&mut self, id: ReaderId) -> Option<usize> {
        let i = id.0 as usize;
        if self.readers.get(i)?.state != ReaderState::Reading || self.is_reset() {
            return None;
        }
        let lag = self.lag(id).map_or(0, |l| l.bytes);
        self.detach(i, ReaderState::Dropped);
        Some(lag)
    }

    /// The reader's writer is gone (its stream failed, was stopped, or completed):
    /// forget it so it pins nothing. Idempotent; safe on every exit path.
    pub fn release(&mut self, id: ReaderId) {
        let i = id.0 as usize;
        match self.readers.get(i).map(|r| r.state) {
            Some(ReaderState::Reading) => self.detach(i, ReaderState::Done),
            Some(ReaderState::Dropped) => self.readers[i].state = ReaderState::Done,
            _ => {}
        }
    }

    fn detach(&mut self, i: usize, state: ReaderState) {
        let from = self.readers[i].cursor.saturating_sub(self.base) as usize;
        for entry in self.entries.iter_mut().skip(from) {
            entry.pending -= 1;
        }
        self.active -= 1;
        let reader = &mut self.readers[i];
        reader.state = state;
        for waker in [reader.waker.take(), reader.watch.take()]
            .into_iter()
            .flatten()
        {
            waker.wake();
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.entries.front().is_some_and(|e| e.pending == 0) {
            if let Some(e) = self.entries.pop_front() {
                self.held -= charge(&e.bytes);
                self.base += 1;
            }
        }
    }

    /// The next step for reader `id`; on `Pending`, `waker` is woken when there is more.
    pub fn read(&mut self, id: ReaderId, waker: &Waker) -> Read {
        let i = id.0 as usize;
        let next = self.next_index();
        let Some(reader) = self.readers.get_mut(i) else {
            return Read::Reset;
        };
        match reader.state {
            ReaderState::Reading => {}
            ReaderState::Dropped | ReaderState::Done => {
                reader.state = ReaderState::Done;
                return Read::Reset;
            }
        }
        if let Some(GroupEnd::Reset(_)) = self.end {
            reader.state = ReaderState::Done;
            self.active -= 1;
            return Read::Reset;
        }
        let cursor = reader.cursor;
        if cursor < next {
            let entry = &mut self.entries[(cursor - self.base) as usize];
            let chunk = entry.bytes.clone();
            entry.pending -= 1;
            reader.cursor += 1;
            self.trim();
            return Read::Chunk(chunk);
        }
        if self.end == Some(GroupEnd::Finished) {
            reader.state = ReaderState::Done;
            self.active -= 1;
            return Read::Finished;
        }
        let parked = reader.waker.is_some();
        if !reader.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            reader.waker = Some(waker.clone());
        }
        if !parked {
            self.waiting.push(id.0);
        }
        Read::Pending
    }

    /// When the chunk reader `id` will read next arrived (`None`: nothing to read).
    pub fn next_arrival(&self, id: ReaderId) -> Option<Instant> {
        let reader = self.readers.get(id.0 as usize)?;
        let from = reader.cursor.checked_sub(self.base)? as usize;
        self.entries.get(from).map(|e| e.at)
    }

    /// Whether reader `id` may go on writing; if so, `waker` is woken when that ends
    /// (the reader dropped or the group reset). For a writer blocked on its stream.
    pub fn watch(&mut self, id: ReaderId, waker: &Waker) -> bool {
        let reset = self.is_reset();
        match self.readers.get_mut(id.0 as usize) {
            Some(r) if r.state == ReaderState::Reading && !reset => {
                if !r.watch.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    r.watch = Some(waker.clone());
                }
                true
            }
            _ => false,
        }
    }

    fn is_reset(&self) -> bool {
        matches!(self.end, Some(GroupEnd::Reset(_)))
    }

    /// How far behind reader `id` is, or `None` if it is no longer reading (detached,
    /// done, or the group was reset: a reset group is no subscriber's backlog).
    pub fn lag(&self, id: ReaderId) -> Option<Lag> {
        let reader = self.readers.get(id.0 as usize)?;
        if reader.state != ReaderState::Reading || self.is_reset() {
            return None;
        }
        let from = reader.cursor.saturating_sub(self.base) as usize;
        let mut lag = Lag {
            bytes: 0,
            since: self.entries.get(from).map(|e| e.at),
        };
        // Bounded by the group budget; called per subscriber per policy pass, not per chunk.
        for e in self.entries.iter().skip(from) {
            lag.bytes += e.bytes.len();
        }
        Some(lag)
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
