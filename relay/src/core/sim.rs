//! A deterministic simulator of the relay core, in the spirit of quinn-proto's test
//! `Pair`: a fake clock advanced by explicit steps (never a sleep), meetings whose
//! participants are driven through [`Meeting`], one [`SubscriberQueue`] per client,
//! publishers emitting groups of chunks on a script, and clients draining their queues
//! at a scripted byte rate per step.
//!
//! Media is routed the way `crate::forward` routes it: per group, one slot per
//! subscriber of the layer opened with the group header, every chunk pushed to every
//! slot as a clone of one `Bytes`, the slots finished at the group's end (cancelled if
//! the publisher goes away), and a keyframe asked of the publisher through
//! [`Meeting::request_keyframe`] when a client loses the newest group. A client's
//! writers drain its slots in stream-priority order (newest group first), and a dropped
//! slot is reset at once, whatever the client's speed, as the woken writer does.
//!
//! After every phase of every step the simulator checks that no queue holds more than
//! its byte budget and that every byte pushed is accounted for (written, queued,
//! dropped or cancelled). Payloads are generated and compared here; the core never
//! reads them.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{
    GroupHeader, ObjectHeader, ParticipantId, RejectReason, ServerMessage, TrackId, TrackInfo,
    TrackKind,
};

use super::{
    Action, Dropped, Meeting, MeetingLimits, Pop, QueueLimits, SlotId, SubscriberQueue, TrackKey,
};
use crate::error::SessionError;

#[path = "sim_media_tests.rs"]
mod media_tests;
#[path = "sim_roster_tests.rs"]
mod roster_tests;

/// One step of the simulated clock.
const TICK: Duration = Duration::from_millis(1);
/// Bytes per step no scripted publisher outpaces: a client that always keeps up.
const FAST: usize = 1 << 20;
/// A client that reads nothing.
const STALLED: usize = 0;

/// A participant of one of the simulated meetings (IDs repeat across meetings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Who {
    meeting: usize,
    id: ParticipantId,
}

/// How a publisher produces one video layer.
#[derive(Debug, Clone, Copy)]
struct Video {
    fps: u32,
    /// Frames per group: the keyframe interval.
    group_frames: u32,
    keyframe_bytes: usize,
    delta_bytes: usize,
    /// Largest chunk the relay reads from the publisher's stream at once.
    chunk_bytes: usize,
    /// Whether a keyframe request starts a new group at the next frame.
    answers_keyframe_requests: bool,
}

impl Video {
    /// A camera: 30 fps, a keyframe each second, about 94 KB a group in 1200-byte chunks.
    fn camera() -> Self {
        Self {
            fps: 30,
            group_frames: 30,
            keyframe_bytes: 24_000,
            delta_bytes: 2_400,
            chunk_bytes: 1_200,
            answers_keyframe_requests: false,
        }
    }
}

/// How a client's copy of a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finished,
    Dropped,
}

/// A group as its publisher sent it.
#[derive(Debug)]
struct Sent {
    group: u64,
    header: Bytes,
    chunks: Vec<Bytes>,
}

/// A group as one client's writer saw it.
#[derive(Debug)]
struct Received {
    key: TrackKey,
    group: u64,
    slot: SlotId,
    priority: i32,
    chunks: Vec<Bytes>,
    end: Option<End>,
}

/// A group the drop policy took from a client.
#[derive(Debug)]
struct DropEvent {
    at: Instant,
    who: Who,
    dropped: Dropped,
    /// The publisher's newest group of that layer at the time.
    newest: u64,
}

/// A simulated client: its queue at the relay, its read rate, what it was told and received.
#[derive(Debug)]
struct Client {
    info: Bytes,
    present: bool,
    limits: QueueLimits,
    queue: SubscriberQueue,
    /// Bytes its connection accepts per step.
    rate: usize,
    credit: i64,
    inbox: Vec<(Instant, ServerMessage)>,
    received: Vec<Received>,
    pushed: u64,
    written: u64,
    cancelled: u64,
    peak_queued: usize,
}

/// One layer of a published video track and its script.
#[derive(Debug)]
struct Source {
    who: Who,
    info: TrackInfo,
    layer: u8,
    video: Video,
    running: bool,
    next_frame_at: Instant,
    /// Frames sent in the open group.
    frame: u32,
    /// The open group's slots, if a group is open.
    open: Option<Vec<(Who, SlotId)>>,
    keyframe_wanted: bool,
    sent: Vec<Sent>,
}

impl Source {
    fn key(&self) -> TrackKey {
        TrackKey {
            publisher: self.who.id,
            track: self.info.track,
            layer: self.layer,
        }
    }
}

/// The simulator. See the module docs.
struct Sim {
    start: Instant,
    now: Instant,
    limits: QueueLimits,
    meetings: Vec<Meeting>,
    clients: BTreeMap<Who, Client>,
    sources: Vec<Source>,
    drops: Vec<DropEvent>,
}

/// Stream priority as `crate::forward` sets it: track priority, then newer groups first.
fn stream_priority(track_priority: u8, group: u64) -> i32 {
    (i32::from(track_priority) << 23) | (group & 0x7f_ffff) as i32
}

impl Sim {
    /// An empty simulation whose clients get queues with `limits`.
    fn new(limits: QueueLimits) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            limits,
            meetings: Vec::new(),
            clients: BTreeMap::new(),
            sources: Vec::new(),
            drops: Vec::new(),
        }
    }

    fn add_meeting(&mut self, passcode: &str, limits: MeetingLimits) -> usize {
        self.meetings.push(Meeting::new(passcode, limits));
        self.meetings.len() - 1
    }

    fn client(&self, who: Who) -> &Client {
        &self.clients[&who]
    }

    fn source(&self, who: Who, track: TrackId, layer: u8) -> &Source {
        self.sources
            .iter()
            .find(|s| s.who == who && s.info.track == track && s.layer == layer)
            .expect("no such source")
    }

    /// Joins a meeting; the meeting's actions are delivered to the clients' inboxes.
    fn join(&mut self, meeting: usize, passcode: &str) -> Result<Who, RejectReason> {
        let info = Bytes::from(format!("client {}", self.clients.len()));
        let (id, actions) = self.meetings[meeting].join(passcode, info.clone())?;
        let who = Who { meeting, id };
        let client = Client {
            info,
            present: true,
            limits: self.limits,
            queue: SubscriberQueue::new(self.limits),
            rate: FAST,
            credit: 0,
            inbox: Vec::new(),
            received: Vec::new(),
            pushed: 0,
            written: 0,
            cancelled: 0,
            peak_queued: 0,
        };
        assert!(
            self.clients.insert(who, client).is_none(),
            "{who:?} joined twice"
        );
        self.deliver(meeting, actions);
        Ok(who)
    }

    /// Leaves; the groups it was publishing are reset for their subscribers.
    fn leave(&mut self, who: Who) {
        for i in 0..self.sources.len() {
            if self.sources[i].who == who {
                self.end_group(i, true);
                self.sources[i].running = false;
            }
        }
        let actions = self.meetings[who.meeting].leave(who.id);
        self.clients.get_mut(&who).expect("unknown client").present = false;
        self.deliver(who.meeting, actions);
    }

    fn publish(&mut self, who: Who, info: TrackInfo) -> Result<(), SessionError> {
        let actions = self.meetings[who.meeting].publish(who.id, info)?;
        self.deliver(who.meeting, actions);
        Ok(())
    }

    /// Publishes a video track and starts producing every layer of it at the next step.
    fn publish_video(
        &mut self,
        who: Who,
        track: TrackId,
        layers: u8,
        video: Video,
    ) -> Result<(), SessionError> {
        let info = TrackInfo {
            track,
            kind: TrackKind::VIDEO,
            layers,
            priority: 1,
        };
        self.publish(who, info)?;
        for layer in 0..layers {
            self.sources.push(Source {
                who,
                info,
                layer,
                video,
                running: true,
                next_frame_at: self.now,
                frame: 0,
                open: None,
                keyframe_wanted: false,
                sent: Vec::new(),
            });
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        who: Who,
        publisher: Who,
        track: TrackId,
        layer: u8,
    ) -> Result<(), SessionError> {
        let actions =
            self.meetings[who.meeting].subscribe(who.id, publisher.id, track, layer, self.now)?;
        self.deliver(who.meeting, actions);
        Ok(())
    }

    fn set_rate(&mut self, who: Who, rate: usize) {
        self.clients.get_mut(&who).expect("unknown client").rate = rate;
    }

    /// Gives a client a queue with other limits; only before anything reached it.
    fn set_queue_limits(&mut self, who: Who, limits: QueueLimits) {
        let client = self.clients.get_mut(&who).expect("unknown client");
        assert_eq!(client.pushed, 0, "the queue is already in use");
        client.limits = limits;
        client.queue = SubscriberQueue::new(limits);
    }

    /// The control messages a client received, in order.
    fn inbox(&self, who: Who) -> Vec<ServerMessage> {
        self.client(who)
            .inbox
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// When a publisher was asked for a keyframe on `layer`.
    fn keyframe_requests(&self, publisher: Who, layer: u8) -> Vec<Instant> {
        let asked = |m: &ServerMessage| matches!(m, ServerMessage::KeyframeRequest { layer: l, .. } if *l == layer);
        let inbox = &self.client(publisher).inbox;
        inbox
            .iter()
            .filter(|(_, m)| asked(m))
            .map(|(at, _)| *at)
            .collect()
    }

    fn drops_of(&self, who: Who) -> impl Iterator<Item = &DropEvent> + '_ {
        self.drops.iter().filter(move |d| d.who == who)
    }

    /// Stops every publisher, finishing the groups in flight.
    fn stop_publishing(&mut self) {
        for i in 0..self.sources.len() {
            self.end_group(i, false);
            self.sources[i].running = false;
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Advances the clock one tick: publishers emit the frames now due, then clients read.
    fn step(&mut self) {
        self.now += TICK;
        for i in 0..self.sources.len() {
            while self.sources[i].running && self.sources[i].next_frame_at <= self.now {
                self.emit_frame(i);
            }
        }
        self.check();
        for client in self.clients.values_mut().filter(|c| c.present) {
            client.drain();
        }
        self.check();
    }

    fn check(&mut self) {
        let at = self.now - self.start;
        for (who, c) in self.clients.iter_mut().filter(|(_, c)| c.present) {
            let queued = c.queue.queued_bytes();
            assert!(
                queued <= c.limits.max_bytes,
                "{who:?} holds {queued} bytes at {at:?}"
            );
            let dropped = c.queue.counters().dropped_bytes;
            let accounted = c.written + queued as u64 + dropped + c.cancelled;
            assert_eq!(c.pushed, accounted, "{who:?} lost track of bytes at {at:?}");
            c.peak_queued = c.peak_queued.max(queued);
        }
    }

    fn emit_frame(&mut self, i: usize) {
        if self.sources[i].open.is_none() || self.sources[i].keyframe_wanted {
            self.end_group(i, false);
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
        let mut frame = BytesMut::with_capacity(length + 16);
        let header = ObjectHeader {
            object: u64::from(object),
            flags: if object == 0 { FLAG_KEYFRAME } else { 0 },
            length: length as u32,
        };
        header.encode(&mut frame);
        frame.put_bytes(fill, length);
        let mut frame = frame.freeze();
        let mut chunks = Vec::new();
        while !frame.is_empty() {
            chunks.push(frame.split_to(src.video.chunk_bytes.min(frame.len())));
        }
        src.frame += 1;
        src.next_frame_at += Duration::from_secs(1) / src.video.fps;
        let group_done = src.frame == src.video.group_frames;
        let slots = src.open.clone().unwrap_or_default();
        if let Some(sent) = src.sent.last_mut() {
            sent.chunks.extend(chunks.iter().cloned());
        }
        for chunk in chunks {
            for &(who, slot) in &slots {
                self.push(who, slot, chunk.clone());
            }
        }
        if group_done {
            self.end_group(i, false);
        }
    }

    /// Opens a group: a slot per subscriber of the layer, starting with the header.
    fn open_group(&mut self, i: usize) {
        let now = self.now;
        let src = &mut self.sources[i];
        let group = src.sent.len() as u64;
        src.frame = 0;
        src.keyframe_wanted = false;
        let mut header = BytesMut::new();
        GroupHeader {
            publisher: src.who.id,
            track: src.info.track,
            group,
            layer: src.layer,
            priority: src.info.priority,
        }
        .encode(&mut header);
        let header = header.freeze();
        src.sent.push(Sent {
            group,
            header: header.clone(),
            chunks: Vec::new(),
        });
        let (key, meeting) = (src.key(), src.who.meeting);
        let priority = stream_priority(src.info.priority, group);
        let targets: Vec<ParticipantId> = self.meetings[meeting]
            .subscribers(key.publisher, key.track, key.layer)
            .collect();
        let mut slots = Vec::with_capacity(targets.len());
        for id in targets {
            let who = Who { meeting, id };
            let client = self
                .clients
                .get_mut(&who)
                .expect("subscriber is not a client");
            assert!(client.present, "{who:?} left but is still subscribed");
            let (slot, dropped) = client.queue.open(key, group, header.clone(), now);
            client.pushed += header.len() as u64;
            client.received.push(Received {
                key,
                group,
                slot,
                priority,
                chunks: Vec::new(),
                end: None,
            });
            self.after_drops(who, dropped);
            slots.push((who, slot));
        }
        self.sources[i].open = Some(slots);
    }

    fn push(&mut self, who: Who, slot: SlotId, chunk: Bytes) {
        let Some(client) = self.clients.get_mut(&who).filter(|c| c.present) else {
            return;
        };
        client.pushed += chunk.len() as u64;
        let dropped = client.queue.push(slot, chunk, self.now);
        self.after_drops(who, dropped);
    }

    /// Ends the open group of source `i`: finished, or cancelled when the publisher failed.
    fn end_group(&mut self, i: usize, cancel: bool) {
        let Some(slots) = self.sources[i].open.take() else {
            return;
        };
        for (who, slot) in slots {
            let Some(client) = self.clients.get_mut(&who).filter(|c| c.present) else {
                continue;
            };
            if cancel {
                let before = client.queue.queued_bytes();
                client.queue.cancel(slot);
                client.cancelled += (before - client.queue.queued_bytes()) as u64;
            } else {
                client.queue.finish(slot);
            }
        }
    }

    /// Records policy drops and, where the newest group was lost, asks for a keyframe.
    fn after_drops(&mut self, who: Who, dropped: Vec<Dropped>) {
        for d in dropped {
            let newest = self
                .sources
                .iter()
                .find(|s| s.who.meeting == who.meeting && s.key() == d.key)
                .map_or(0, |s| s.sent.len() as u64 - 1);
            self.drops.push(DropEvent {
                at: self.now,
                who,
                dropped: d,
                newest,
            });
            if d.need_keyframe {
                let k = d.key;
                let actions = self.meetings[who.meeting].request_keyframe(
                    k.publisher,
                    k.track,
                    k.layer,
                    self.now,
                );
                for Action::Send { to, msg } in &actions {
                    assert_eq!(*to, k.publisher, "a keyframe request went to someone else");
                    let wanted = ServerMessage::KeyframeRequest {
                        track: k.track,
                        layer: k.layer,
                    };
                    assert_eq!(*msg, wanted);
                }
                self.deliver(who.meeting, actions);
            }
        }
    }

    /// Hands a meeting's actions to its clients; publishers may answer keyframe requests.
    fn deliver(&mut self, meeting: usize, actions: Vec<Action>) {
        for Action::Send { to, msg } in actions {
            let who = Who { meeting, id: to };
            if let ServerMessage::KeyframeRequest { track, layer } = msg {
                for s in &mut self.sources {
                    if s.who == who && s.info.track == track && s.layer == layer {
                        s.keyframe_wanted |= s.running && s.video.answers_keyframe_requests;
                    }
                }
            }
            let client = self.clients.get_mut(&who).expect("message to a stranger");
            assert!(client.present, "message to {who:?}, who left");
            client.inbox.push((self.now, msg));
        }
    }
}

impl Client {
    /// One step of the client's writers: resets dropped groups, then writes up to its
    /// rate, highest stream priority first.
    fn drain(&mut self) {
        for rx in self.received.iter_mut().filter(|r| r.end.is_none()) {
            if self.queue.is_dropped(rx.slot) {
                assert_eq!(self.queue.pop(rx.slot), Pop::Dropped);
                rx.end = Some(End::Dropped);
            }
        }
        let rate = self.rate as i64;
        self.credit = (self.credit + rate).min(rate);
        let mut writers: Vec<usize> = (0..self.received.len())
            .filter(|&k| self.received[k].end.is_none())
            .collect();
        writers.sort_by_key(|&k| (Reverse(self.received[k].priority), self.received[k].slot));
        for k in writers {
            let rx = &mut self.received[k];
            while self.credit > 0 {
                match self.queue.pop(rx.slot) {
                    Pop::Chunk(chunk) => {
                        self.credit -= chunk.len() as i64;
                        self.written += chunk.len() as u64;
                        rx.chunks.push(chunk);
                    }
                    Pop::Empty => break,
                    Pop::Finished => {
                        rx.end = Some(End::Finished);
                        break;
                    }
                    Pop::Dropped => {
                        rx.end = Some(End::Dropped);
                        break;
                    }
                }
            }
        }
    }
}
