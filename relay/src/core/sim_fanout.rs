//! The glue the I/O shell runs between the core's pieces, driven by the simulator:
//! a group opens (route, publish grace, concurrent-group limit, one shared buffer, a
//! policy pass per target), chunks are pushed with the publisher's budget, policy
//! passes drop groups, writers read in stream-priority order, and a group ends
//! (finished, reset by its publisher, the group limit or the idle timeout).

use std::cmp::Reverse;
use std::task::Waker;

use orelay_proto::GroupHeader;

use super::super::{Grace, Lag, Opened, Read, Route, Transport};
use super::*;
use crate::error::PeerMisbehaved;

impl Sim {
    pub(super) fn emit_frame(&mut self, i: usize) {
        if self.sources[i].open.is_none() || self.sources[i].keyframe_wanted {
            self.end_group(i, None);
            self.open_group(i);
        }
        let src = &mut self.sources[i];
        let object = src.frame;
        let length = if object == 0 {
            src.video.keyframe_bytes
        } else {
            src.video.delta_bytes
        };
        let group = src.sent.len() as u64 - 1;
        let fill = (src.who.meeting as u64 * 131
            + src.who.id * 31
            + src.info.track * 7
            + u64::from(src.layer) * 3
            + group * 5
            + u64::from(object)) as u8;
        let mut frame = encode_frame(fill, object, length);
        let mut chunks = Vec::new();
        while !frame.is_empty() {
            chunks.push(frame.split_to(src.video.chunk_bytes.min(frame.len())));
        }
        src.frame += 1;
        src.next_frame_at += Duration::from_secs(1) / src.video.fps;
        let group_done = src.frame == src.video.group_frames;
        let finishes = src.video.finishes_groups;
        if let Some(sent) = src.sent.last_mut() {
            sent.chunks.extend(chunks.iter().cloned());
        }
        let Some(slot) = src.open else { return };
        if group_done {
            // The next frame opens a new group, whether or not this one is finished.
            self.sources[i].open = None;
        }
        for chunk in chunks {
            self.push_chunk(slot, chunk);
        }
        if group_done && finishes {
            self.finish_group(slot);
        }
    }

    /// A new group stream from source `i`: its header arrives, then it is routed.
    fn open_group(&mut self, i: usize) {
        let src = &mut self.sources[i];
        let seq = src.sent.len() as u64;
        src.frame = 0;
        src.keyframe_wanted = false;
        let mut header = bytes::BytesMut::new();
        GroupHeader {
            publisher: src.who.id,
            track: src.info.track,
            group: seq,
            layer: src.layer,
            priority: src.video.priority,
        }
        .encode(&mut header);
        let header = header.freeze();
        src.sent.push(Sent {
            group: seq,
            header: header.clone(),
            chunks: Vec::new(),
        });
        let slot = self.groups.len();
        src.open = Some(slot);
        self.groups.push(Group {
            source: i,
            seq,
            key: src.key(),
            publisher: src.who,
            header,
            buf: None,
            waiting: true,
            pending: Vec::new(),
            finished: false,
            ended: false,
            reset: None,
            targets: Vec::new(),
        });
        self.waiting.push(slot);
        self.route_group(slot);
    }

    /// Glue step 1: who receives the group, if anyone may.
    pub(super) fn route_group(&mut self, slot: usize) {
        let (who, key) = (self.groups[slot].publisher, self.groups[slot].key);
        let route = self.meetings[who.meeting].route(
            who.id,
            key.publisher,
            key.track,
            key.layer,
            Transport::Stream,
        );
        match route {
            Route::Invalid => self.close(who, PeerMisbehaved::TrackNotPublished.into()),
            Route::Unknown => match self
                .clients
                .get_mut(&who)
                .expect("client")
                .grace
                .unknown(self.now)
            {
                Grace::Wait { .. } => {}
                Grace::Expired => self.close(who, PeerMisbehaved::TrackNotPublished.into()),
            },
            Route::Deliver { targets, .. } => {
                self.client_mut(who).grace.routed();
                self.waiting.retain(|&s| s != slot);
                self.groups[slot].waiting = false;
                self.forward_group(slot, &targets);
            }
        }
    }

    fn forward_group(&mut self, slot: usize, targets: &[ParticipantId]) {
        let now = self.now;
        let (who, key, seq) = {
            let g = &self.groups[slot];
            (g.publisher, g.key, g.seq)
        };
        match self.client_mut(who).open_groups.open(key, seq, slot as u64) {
            Opened::TooOld => {
                self.groups[slot].ended = true;
                self.groups[slot].pending.clear();
                return;
            }
            Opened::Forward { reset } => {
                for old in reset {
                    self.reset_group(old as usize, ResetCause::GroupLimit);
                }
            }
        }
        let header = self.groups[slot].header.clone();
        let priority = stream_priority(false);
        let mut entries = Vec::with_capacity(targets.len());
        for (i, &id) in targets.iter().enumerate() {
            let target = Who {
                meeting: who.meeting,
                id,
            };
            let c = self.client_mut(target);
            assert!(c.present, "{target:?} left but is still subscribed");
            // Its older groups of this track layer yield to the new one.
            for &k in &c.open {
                let e = &mut c.received[k];
                if e.key == key && e.group < seq {
                    e.priority = stream_priority(true);
                }
            }
            let len = header.len() as u64;
            c.pushed += len;
            c.since_policy += len;
            c.open.push(c.received.len());
            c.received.push(Received {
                key,
                group: seq,
                slot,
                reader: ReaderId(i as u32),
                priority,
                chunks: Vec::new(),
                end: None,
                offered: len,
                written: 0,
                reading: true,
                finished_at: None,
            });
            entries.push((target, c.received.len() - 1));
        }
        let g = &mut self.groups[slot];
        g.targets = entries;
        g.buf = Some(GroupBuffer::new(header, targets.len(), now));
        self.client_mut(who).live.push(slot);
        // The header is charged to the publisher's budget like any chunk.
        let budget = self.group_budget(slot);
        let evicted = self.groups[slot].buf.as_mut().map(|b| b.shed(budget));
        self.evicted(slot, evicted.unwrap_or_default());
        for &id in targets {
            self.policy_pass(Who {
                meeting: who.meeting,
                id,
            });
        }
        for chunk in std::mem::take(&mut self.groups[slot].pending) {
            self.push_chunk(slot, chunk);
        }
        if self.groups[slot].finished {
            self.finish_group(slot);
        }
    }

    /// The budget a push to `slot` gets: the publisher's limit less what its other
    /// groups hold.
    fn group_budget(&self, slot: usize) -> usize {
        let who = self.groups[slot].publisher;
        let others: usize = self
            .client(who)
            .live
            .iter()
            .filter(|&&g| g != slot)
            .filter_map(|&g| self.groups[g].buf.as_ref())
            .map(GroupBuffer::held_bytes)
            .sum();
        self.fanout.group_budget(others)
    }

    /// Glue step 3: a chunk of the group's stream arrived.
    fn push_chunk(&mut self, slot: usize, chunk: Bytes) {
        let g = &mut self.groups[slot];
        if g.waiting {
            g.pending.push(chunk);
            return;
        }
        if g.ended || g.buf.is_none() {
            return;
        }
        let len = chunk.len() as u64;
        for &(who, k) in &g.targets {
            let c = self.clients.get_mut(&who).expect("target is a client");
            if c.received[k].reading {
                c.received[k].offered += len;
                c.pushed += len;
                c.since_policy += len;
            }
        }
        let budget = self.group_budget(slot);
        let now = self.now;
        let evicted = self.groups[slot]
            .buf
            .as_mut()
            .map(|b| b.push(chunk, now, budget));
        self.evicted(slot, evicted.unwrap_or_default());
    }

    /// Readers the publisher's budget detached from `slot`.
    fn evicted(&mut self, slot: usize, readers: Vec<ReaderId>) {
        let (who, key, seq) = {
            let g = &self.groups[slot];
            (g.publisher, g.key, g.seq)
        };
        let need_keyframe = self.client(who).open_groups.is_newest(key, seq);
        for r in readers {
            let (target, k) = self.groups[slot].targets[r.0 as usize];
            let e = &mut self.client_mut(target).received[k];
            assert!(e.reading, "evicted twice");
            e.reading = false;
            let bytes = (e.offered - e.written) as usize;
            self.record_drop(
                target,
                key,
                seq,
                DropCause::GroupBudget,
                bytes,
                need_keyframe,
            );
        }
    }

    /// How far behind a client is in one of its groups (`None`: no longer reading).
    /// Takes the groups alone, so callers may hold the clients mutably.
    pub(super) fn lag_in(groups: &[Group], e: &Received) -> Option<Lag> {
        groups[e.slot].buf.as_ref().and_then(|b| b.lag(e.reader))
    }

    /// Glue step 2: one subscriber's drop policy over its open groups.
    pub(super) fn policy_pass(&mut self, who: Who) {
        let c = &self.clients[&who];
        let mut backlog = Vec::new();
        let mut entries = Vec::new();
        for &k in &c.open {
            let e = &c.received[k];
            let lag = Self::lag_in(&self.groups, e);
            if let Some(lag) = lag {
                backlog.push(Backlog {
                    key: e.key,
                    group: e.group,
                    lag,
                });
                entries.push(k);
            }
        }
        let drops = plan_drops(&backlog, &c.limits, self.now);
        for d in drops {
            let k = entries[d.index];
            let (slot, reader, key, group) = {
                let e = &self.client(who).received[k];
                (e.slot, e.reader, e.key, e.group)
            };
            let unread = self.groups[slot]
                .buf
                .as_mut()
                .and_then(|b| b.drop_reader(reader));
            assert_eq!(unread, Some(d.bytes), "the policy saw another lag");
            let e = &mut self.client_mut(who).received[k];
            assert_eq!(e.offered - e.written, d.bytes as u64);
            e.reading = false;
            self.record_drop(who, key, group, d.cause, d.bytes, d.need_keyframe);
        }
        self.client_mut(who).since_policy = 0;
    }

    /// Counts a lost group and, if it was the newest, asks for a keyframe.
    fn record_drop(
        &mut self,
        who: Who,
        key: TrackKey,
        group: u64,
        cause: DropCause,
        bytes: usize,
        need_keyframe: bool,
    ) {
        let c = self.client_mut(who);
        c.dropped_groups += 1;
        c.dropped_bytes += bytes as u64;
        let newest = self
            .sources
            .iter()
            .find(|s| s.who.meeting == who.meeting && s.key() == key)
            .map_or(0, |s| s.sent.len() as u64 - 1);
        self.drops.push(DropEvent {
            at: self.now,
            who,
            key,
            group,
            cause,
            bytes,
            need_keyframe,
            newest,
        });
        if need_keyframe {
            let meeting = &mut self.meetings[who.meeting];
            let actions = meeting.request_keyframe(key.publisher, key.track, key.layer, self.now);
            for action in &actions {
                let Action::Send { to, msg } = action else {
                    panic!("a keyframe request closed a connection");
                };
                assert_eq!(
                    *to, key.publisher,
                    "a keyframe request went to someone else"
                );
                let wanted = ServerMessage::KeyframeRequest {
                    track: key.track,
                    layer: key.layer,
                };
                assert_eq!(*msg, wanted);
            }
            self.deliver(who.meeting, actions);
        }
    }

    /// Glue step 5: the publisher finished the group's stream.
    fn finish_group(&mut self, slot: usize) {
        let g = &mut self.groups[slot];
        g.finished = true;
        if g.waiting || g.ended {
            return;
        }
        g.ended = true;
        if let Some(b) = g.buf.as_mut() {
            b.finish();
        }
        let (who, key) = (g.publisher, g.key);
        self.client_mut(who).open_groups.close(key, slot as u64);
    }

    /// Glue step 5: the group ends for every reader; what they had not read is lost.
    fn reset_group(&mut self, slot: usize, cause: ResetCause) {
        let g = &mut self.groups[slot];
        if g.reset.is_some() || g.ended && g.finished {
            return;
        }
        g.ended = true;
        g.reset = Some(cause);
        g.pending.clear();
        if g.waiting {
            g.waiting = false;
            self.waiting.retain(|&s| s != slot);
            return;
        }
        if let Some(b) = g.buf.as_mut() {
            b.reset(cause);
        }
        for &(who, k) in &g.targets {
            let c = self.clients.get_mut(&who).expect("target is a client");
            let e = &mut c.received[k];
            if e.reading {
                e.reading = false;
                c.reset_bytes += e.offered - e.written;
            }
        }
        let (who, key) = (g.publisher, g.key);
        self.client_mut(who).open_groups.close(key, slot as u64);
        for s in &mut self.sources {
            if s.open == Some(slot) {
                s.open = None;
            }
        }
    }

    /// Ends the open group of source `i`: finished, or reset with `cause`.
    pub(super) fn end_group(&mut self, i: usize, cause: Option<ResetCause>) {
        let Some(slot) = self.sources[i].open.take() else {
            return;
        };
        match cause {
            None => self.finish_group(slot),
            Some(cause) => self.reset_group(slot, cause),
        }
    }

    /// Glue step 5: groups that received nothing for the idle timeout are reset.
    pub(super) fn reclaim_idle(&mut self) {
        for slot in 0..self.groups.len() {
            let g = &self.groups[slot];
            let idle = !g.ended
                && g.buf
                    .as_ref()
                    .is_some_and(|b| self.fanout.is_idle(b.last_push(), self.now));
            if idle {
                self.reset_group(slot, ResetCause::Idle);
            }
        }
    }

    /// Glue step 4: one step of a client's writers. Writers whose reader was dropped or
    /// whose group was reset are woken (`watch`) and reset at once; scripted
    /// STOP_SENDING releases; then up to the client's rate is written, highest stream
    /// priority first.
    pub(super) fn drain(&mut self, who: Who) {
        let noop = Waker::noop();
        let c = self.clients.get_mut(&who).expect("unknown client");
        for &k in &c.open {
            let e = &mut c.received[k];
            let Some(buf) = self.groups[e.slot].buf.as_mut() else {
                continue;
            };
            if !buf.watch(e.reader, noop) {
                assert!(!e.reading, "{who:?}: the buffer gave up on {e:?} unseen");
                assert_eq!(buf.read(e.reader, noop), Read::Reset);
                e.end = Some(End::Reset);
            } else if c.stop_after.is_some_and(|n| e.chunks.len() >= n) {
                buf.release(e.reader);
                e.reading = false;
                e.end = Some(End::Stopped);
                c.released_bytes += e.offered - e.written;
                c.stopped_groups += 1;
            }
        }
        c.open.retain(|&k| c.received[k].end.is_none());
        let rate = c.rate as i64;
        c.credit = (c.credit + rate).min(rate);
        let mut writers = c.open.clone();
        writers.sort_by_key(|&k| (Reverse(c.received[k].priority), c.received[k].slot));
        // quinn serves streams of equal priority in turn: so do these writers, a chunk
        // each per round, highest priority level first.
        let mut level_start = 0;
        while level_start < writers.len() {
            let level = c.received[writers[level_start]].priority;
            let level_end = writers[level_start..]
                .iter()
                .position(|&k| c.received[k].priority != level)
                .map_or(writers.len(), |n| level_start + n);
            let mut blocked = vec![false; level_end - level_start];
            loop {
                let mut progressed = false;
                for (i, &k) in writers[level_start..level_end].iter().enumerate() {
                    if c.credit <= 0 || blocked[i] || c.received[k].end.is_some() {
                        continue;
                    }
                    let e = &mut c.received[k];
                    let g = &mut self.groups[e.slot];
                    let Some(buf) = g.buf.as_mut() else {
                        blocked[i] = true;
                        continue;
                    };
                    progressed = true;
                    match buf.read(e.reader, noop) {
                        Read::Chunk(chunk) => {
                            let sent = &self.sources[g.source].sent[g.seq as usize];
                            let n = e.chunks.len();
                            let want = if n == 0 {
                                &sent.header
                            } else {
                                &sent.chunks[n - 1]
                            };
                            assert_eq!(
                                chunk.as_ptr(),
                                want.as_ptr(),
                                "{who:?}: a copy or another chunk"
                            );
                            assert_eq!(chunk.len(), want.len());
                            c.credit -= chunk.len() as i64;
                            c.written += chunk.len() as u64;
                            e.written += chunk.len() as u64;
                            e.chunks.push(chunk);
                            if c.stop_after.is_some_and(|n| e.chunks.len() >= n) {
                                buf.release(e.reader);
                                e.reading = false;
                                e.end = Some(End::Stopped);
                                c.released_bytes += e.offered - e.written;
                                c.stopped_groups += 1;
                            }
                        }
                        Read::Pending => blocked[i] = true,
                        Read::Finished => {
                            assert_eq!(e.offered, e.written);
                            e.reading = false;
                            e.end = Some(End::Finished);
                            e.finished_at = Some(self.now);
                        }
                        Read::Reset => panic!("{who:?}: a reset nobody accounted for: {e:?}"),
                    }
                }
                if !progressed || c.credit <= 0 {
                    break;
                }
            }
            level_start = level_end;
        }
        c.open.retain(|&k| c.received[k].end.is_none());
    }

    /// A participant leaves (or is closed): its groups are reset for their subscribers,
    /// and its own writers fail, releasing their readers.
    pub(super) fn leave(&mut self, who: Who) {
        for s in self.sources.iter_mut().filter(|s| s.who == who) {
            s.running = false;
        }
        for slot in 0..self.groups.len() {
            if self.groups[slot].publisher == who && !self.groups[slot].ended {
                self.reset_group(slot, ResetCause::Publisher);
            }
        }
        for a in self.audio.iter_mut().filter(|a| a.who == who) {
            a.running = false;
        }
        let c = self.clients.get_mut(&who).expect("unknown client");
        for k in std::mem::take(&mut c.open) {
            let e = &mut c.received[k];
            if let Some(buf) = self.groups[e.slot].buf.as_mut() {
                buf.release(e.reader);
            }
            if e.reading {
                c.released_bytes += e.offered - e.written;
            }
            e.reading = false;
            e.end = Some(End::Stopped);
        }
        c.present = false;
        let actions = self.meetings[who.meeting].leave(who.id);
        self.deliver(who.meeting, actions);
    }

    /// The relay closes a session that broke the protocol.
    pub(super) fn close(&mut self, who: Who, error: SessionError) {
        if self.client(who).present {
            self.client_mut(who).closed = Some(error);
            self.leave(who);
        }
    }
}

/// The `n`th object of a frame as a publisher would send it.
fn encode_frame(fill: u8, object: u32, length: usize) -> Bytes {
    use bytes::{BufMut, BytesMut};
    let mut frame = BytesMut::with_capacity(length + 16);
    let header = ObjectHeader {
        object: u64::from(object),
        flags: if object == 0 { FLAG_KEYFRAME } else { 0 },
        length: length as u32,
    };
    header.encode(&mut frame);
    frame.put_bytes(fill, length);
    frame.freeze()
}
