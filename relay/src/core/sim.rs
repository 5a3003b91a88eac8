//! A deterministic simulator of the relay core, in the spirit of quinn-proto's test
//! `Pair`: a fake clock advanced by explicit steps (never a sleep), meetings whose
//! participants are driven through [`Meeting`], publishers emitting groups of chunks
//! (and audio datagrams) on a script, and clients reading at a scripted byte rate.
//!
//! Media goes through the glue the I/O shell runs, in `sim_fanout.rs`, calling the
//! same core functions: [`Meeting::route`] per group (and per route change for audio),
//! [`PublishGrace`], the publisher's [`OpenGroups`], one shared [`GroupBuffer`] per
//! group pushed with the publisher's [`FanoutLimits::group_budget`], a policy pass
//! ([`plan_drops`]) per subscriber when a group opens for it and every
//! [`POLICY_INTERVAL`], one writer per subscriber per group in [`stream_priority`]
//! order, and the group idle timeout. Nothing here decides what the core decides.
//!
//! After each phase of every step the simulator checks its invariants (see
//! [`Sim::check`]). Payloads are generated and compared here; the core never reads them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{
    ObjectHeader, ParticipantId, RejectReason, ServerMessage, TrackId, TrackInfo, TrackKind,
};

use self::audio::Audio;
use super::{
    plan_drops, stream_priority, Action, Backlog, DropCause, FanoutLimits, GroupBuffer, Meeting,
    MeetingLimits, OpenGroups, PublishGrace, QueueLimits, ReaderId, ResetCause, RouteVersion,
    TrackKey, POLICY_INTERVAL,
};
use crate::error::SessionError;

#[path = "sim_audio.rs"]
mod audio;
#[path = "sim_fanout.rs"]
mod fanout;
#[path = "sim_fanout_tests.rs"]
mod fanout_tests;
#[path = "sim_media_tests.rs"]
mod media_tests;
#[path = "sim_robustness_tests.rs"]
mod robustness_tests;
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
    /// Whether a full group's stream is finished (a flooder leaves them open).
    finishes_groups: bool,
    /// The track priority it publishes with.
    priority: u8,
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
            finishes_groups: true,
            priority: 1,
        }
    }
}

/// How a client's copy of a group ended, as its writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Everything written, the stream finished.
    Finished,
    /// The group read `Reset` (dropped for this client, or reset for everyone).
    Reset,
    /// The writer gave up: STOP_SENDING, a failed stream, or the client left.
    Stopped,
}

/// A group as its publisher sent it.
#[derive(Debug)]
struct Sent {
    group: u64,
    header: Bytes,
    chunks: Vec<Bytes>,
}

/// A group as one client's writer saw it: an entry of the client's open list while
/// `end` is `None`.
#[derive(Debug)]
struct Received {
    key: TrackKey,
    group: u64,
    /// Index of the group in [`Sim::groups`].
    slot: usize,
    reader: ReaderId,
    priority: i32,
    chunks: Vec<Bytes>,
    end: Option<End>,
    /// Bytes appended to the group while this reader was reading it.
    offered: u64,
    written: u64,
    /// Whether the simulator believes the reader still reads (checked against the buffer).
    reading: bool,
    /// When its writer finished the stream.
    finished_at: Option<Instant>,
}

/// A group a client lost while it went on for others: a policy drop or an eviction.
#[derive(Debug)]
struct DropEvent {
    at: Instant,
    who: Who,
    key: TrackKey,
    group: u64,
    cause: DropCause,
    bytes: usize,
    need_keyframe: bool,
    /// The publisher's newest group of that layer at the time.
    newest: u64,
}

/// A simulated client: subscriber and publisher state at the relay, its script, and
/// what it was told and received.
#[derive(Debug)]
struct Client {
    info: Bytes,
    present: bool,
    limits: QueueLimits,
    /// Bytes its connection accepts per step.
    rate: usize,
    credit: i64,
    /// STOP_SENDING each group stream after this many chunks (header included).
    stop_after: Option<usize>,
    inbox: Vec<(Instant, ServerMessage)>,
    received: Vec<Received>,
    /// Indices into `received` of the open entries, oldest first.
    open: Vec<usize>,
    datagrams: Vec<(Instant, TrackKey, Bytes)>,
    // Subscriber accounting: pushed == written + unread + dropped + reset + released.
    pushed: u64,
    written: u64,
    dropped_groups: u64,
    dropped_bytes: u64,
    reset_bytes: u64,
    released_bytes: u64,
    stopped_groups: u64,
    /// Bytes offered since its last policy pass (the slack its unread may have).
    since_policy: u64,
    peak_unread: usize,
    peak_since_policy: u64,
    // Publisher state.
    open_groups: OpenGroups,
    grace: PublishGrace,
    /// Its groups whose buffers may still hold bytes.
    live: Vec<usize>,
    peak_held: usize,
    closed: Option<SessionError>,
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
    /// The open group (index in [`Sim::groups`]).
    open: Option<usize>,
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

/// A group stream at the relay.
#[derive(Debug)]
struct Group {
    source: usize,
    seq: u64,
    key: TrackKey,
    publisher: Who,
    header: Bytes,
    /// `None` while it waits for its `Publish`, or when it was never forwarded.
    buf: Option<GroupBuffer>,
    /// Waiting for the publish grace; chunks read meanwhile.
    waiting: bool,
    pending: Vec<Bytes>,
    /// The publisher finished the stream.
    finished: bool,
    /// No more chunks will be pushed (finished, reset, refused, or discarded).
    ended: bool,
    reset: Option<ResetCause>,
    /// Target `i` (reader `ReaderId(i)`) and its entry in that client's `received`.
    targets: Vec<(Who, usize)>,
}

/// The simulator. See the module docs.
struct Sim {
    start: Instant,
    now: Instant,
    limits: QueueLimits,
    fanout: FanoutLimits,
    meetings: Vec<Meeting>,
    clients: BTreeMap<Who, Client>,
    sources: Vec<Source>,
    audio: Vec<Audio>,
    groups: Vec<Group>,
    /// Groups waiting for their publish grace.
    waiting: Vec<usize>,
    drops: Vec<DropEvent>,
    next_policy: Instant,
}

impl Sim {
    /// An empty simulation whose clients get queues with `limits`.
    fn new(limits: QueueLimits) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            limits,
            fanout: FanoutLimits::default(),
            meetings: Vec::new(),
            clients: BTreeMap::new(),
            sources: Vec::new(),
            audio: Vec::new(),
            groups: Vec::new(),
            waiting: Vec::new(),
            drops: Vec::new(),
            next_policy: start + POLICY_INTERVAL,
        }
    }

    fn add_meeting(&mut self, passcode: &str, limits: MeetingLimits) -> usize {
        self.meetings.push(Meeting::new(passcode, limits));
        self.meetings.len() - 1
    }

    fn client(&self, who: Who) -> &Client {
        &self.clients[&who]
    }

    fn client_mut(&mut self, who: Who) -> &mut Client {
        self.clients.get_mut(&who).expect("unknown client")
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
        let request = crate::core::JoinRequest {
            passcode: passcode.to_owned(),
            info: info.clone(),
            keys: Bytes::new(),
            grant: participant_grant(),
        };
        let (placement, actions) = self.meetings[meeting].join(request)?;
        let id = placement.id();
        let who = Who { meeting, id };
        let client = Client {
            info,
            present: true,
            limits: self.limits,
            rate: FAST,
            credit: 0,
            stop_after: None,
            inbox: Vec::new(),
            received: Vec::new(),
            open: Vec::new(),
            datagrams: Vec::new(),
            pushed: 0,
            written: 0,
            dropped_groups: 0,
            dropped_bytes: 0,
            reset_bytes: 0,
            released_bytes: 0,
            stopped_groups: 0,
            since_policy: 0,
            peak_unread: 0,
            peak_since_policy: 0,
            open_groups: OpenGroups::default(),
            grace: PublishGrace::default(),
            live: Vec::new(),
            peak_held: 0,
            closed: None,
        };
        assert!(
            self.clients.insert(who, client).is_none(),
            "{who:?} joined twice"
        );
        self.deliver(meeting, actions);
        Ok(who)
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
            priority: video.priority,
        };
        self.publish(who, info)?;
        self.start_video(who, info, video);
        Ok(())
    }

    /// Starts sending group streams for `info`'s layers, published or not.
    fn start_video(&mut self, who: Who, info: TrackInfo, video: Video) {
        for layer in 0..info.layers {
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
    }

    /// The publisher stops sending on `track` without finishing its open groups.
    fn pause(&mut self, who: Who, track: TrackId) {
        for s in self.sources.iter_mut() {
            if s.who == who && s.info.track == track {
                s.running = false;
            }
        }
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

    fn unsubscribe(&mut self, who: Who, publisher: Who, track: TrackId) {
        let meeting = &mut self.meetings[who.meeting];
        meeting.unsubscribe(who.id, publisher.id, track).unwrap();
    }

    fn set_rate(&mut self, who: Who, rate: usize) {
        self.client_mut(who).rate = rate;
    }

    /// Gives a client other queue limits; only before anything reached it.
    fn set_queue_limits(&mut self, who: Who, limits: QueueLimits) {
        let client = self.client_mut(who);
        assert_eq!(client.pushed, 0, "the queue is already in use");
        client.limits = limits;
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

    /// Bytes pushed to `who` that its writers have not taken yet.
    fn unread(&self, who: Who) -> usize {
        let c = self.client(who);
        c.open
            .iter()
            .map(|&k| &c.received[k])
            .filter_map(|e| self.groups[e.slot].buf.as_ref()?.lag(e.reader))
            .map(|l| l.bytes)
            .sum()
    }

    fn drops_of(&self, who: Who) -> impl Iterator<Item = &DropEvent> + '_ {
        self.drops.iter().filter(move |d| d.who == who)
    }

    /// Bytes the buffers of `who`'s groups hold now.
    fn held_by(&self, who: Who) -> usize {
        let live = &self.client(who).live;
        live.iter()
            .filter_map(|&g| self.groups[g].buf.as_ref())
            .map(GroupBuffer::held_bytes)
            .sum()
    }

    /// Stops every publisher, finishing the groups in flight.
    fn stop_publishing(&mut self) {
        for i in 0..self.sources.len() {
            self.end_group(i, None);
            self.sources[i].running = false;
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Advances the clock one tick: waiting groups look again, publishers send what is
    /// due, idle groups are reset, the periodic policy pass runs, then clients read.
    fn step(&mut self) {
        self.now += TICK;
        for slot in self.waiting.clone() {
            self.route_group(slot);
        }
        for i in 0..self.sources.len() {
            while self.sources[i].running && self.sources[i].next_frame_at <= self.now {
                self.emit_frame(i);
            }
        }
        for i in 0..self.audio.len() {
            while self.audio[i].running && self.audio[i].next_at <= self.now {
                self.emit_datagram(i);
            }
        }
        self.reclaim_idle();
        if self.now >= self.next_policy {
            self.next_policy += POLICY_INTERVAL;
            let who: Vec<Who> = self.clients.keys().copied().collect();
            for w in who {
                if !self.client(w).open.is_empty() {
                    self.policy_pass(w);
                }
            }
        }
        self.check(false);
        let who: Vec<Who> = self.clients.keys().copied().collect();
        for w in who {
            if self.client(w).present {
                self.drain(w);
            }
        }
        self.check(true);
        for c in self.clients.values_mut() {
            let groups = &self.groups;
            c.live.retain(|&g| {
                !groups[g].ended || groups[g].buf.as_ref().is_some_and(|b| b.held_bytes() > 0)
            });
        }
    }

    /// The invariants, after the publish phase and (`drained`) after the writers ran:
    ///
    /// - every open entry's buffer agrees with the simulator on whether it still reads,
    ///   and for each reading one, `offered == written + lag` (not a byte lost or made up);
    /// - per client, `pushed == written + unread + dropped + reset + released`;
    /// - per client, `unread <= max_bytes + bytes offered since its last policy pass`
    ///   (what one [`POLICY_INTERVAL`] can add), and `unread <= max_publisher_bytes` per
    ///   publisher it reads (a reader's lag is part of its group's held bytes);
    /// - open entries still reading `<= max_groups`; after the writers ran, every open
    ///   entry is still reading (a dropped or reset group's writer has reset it);
    /// - a client who left has no open entry and no reader in any group;
    /// - per publisher, the bytes its group buffers hold `<= max_publisher_bytes`.
    ///
    /// Every chunk written is checked where it is written (the same `Bytes` as pushed,
    /// in order, to a present client that was a target of the group).
    fn check(&mut self, drained: bool) {
        let at = self.now - self.start;
        let max_publisher = self.fanout.max_publisher_bytes;
        for (who, c) in self.clients.iter_mut() {
            if !c.present {
                assert!(c.open.is_empty(), "{who:?} left with open groups");
                continue;
            }
            let mut unread = 0;
            let mut reading = 0;
            let mut publishers = Vec::new();
            for &k in &c.open {
                let e = &c.received[k];
                let lag = Sim::lag_in(&self.groups, e);
                assert_eq!(lag.is_some(), e.reading, "{who:?} {e:?} at {at:?}");
                if let Some(lag) = lag {
                    assert_eq!(e.offered, e.written + lag.bytes as u64, "{who:?} {e:?}");
                    unread += lag.bytes;
                    reading += 1;
                    if !publishers.contains(&e.key.publisher) {
                        publishers.push(e.key.publisher);
                    }
                }
            }
            let accounted =
                c.written + unread as u64 + c.dropped_bytes + c.reset_bytes + c.released_bytes;
            assert_eq!(c.pushed, accounted, "{who:?} lost track of bytes at {at:?}");
            let slack = c.limits.max_bytes as u64 + c.since_policy;
            assert!(
                unread as u64 <= slack,
                "{who:?} has {unread} unread at {at:?}"
            );
            assert!(unread <= publishers.len() * max_publisher);
            assert!(reading <= c.limits.max_groups, "{who:?}: {reading} groups");
            if drained {
                assert_eq!(reading, c.open.len(), "{who:?}: a writer did not reset");
            }
            c.peak_unread = c.peak_unread.max(unread);
            c.peak_since_policy = c.peak_since_policy.max(c.since_policy);
        }
        for g in &self.groups {
            for &(who, k) in &g.targets {
                let c = &self.clients[&who];
                assert!(
                    c.present || !c.received[k].reading,
                    "{who:?} left, still reads"
                );
            }
        }
        let publishers: Vec<Who> = self.clients.keys().copied().collect();
        for p in publishers {
            let held = self.held_by(p);
            assert!(held <= max_publisher, "{p:?} holds {held} at {at:?}");
            let c = self.client_mut(p);
            c.peak_held = c.peak_held.max(held);
        }
    }

    /// Hands a meeting's actions to its clients; publishers may answer keyframe requests.
    fn deliver(&mut self, meeting: usize, actions: Vec<Action>) {
        for action in actions {
            let Action::Send { to, msg } = action else {
                continue;
            };
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

/// What the simulator's joiners hold: an ordinary participant's grant that requires
/// the passcode (as an open-mode join without the host secret does).
pub(super) fn participant_grant() -> crate::core::Grant {
    crate::core::Grant {
        identity: String::new(),
        token_id: String::new(),
        role: orelay_proto::Role::Participant,
        publish: crate::core::KindSet::ALL,
        passcode_required: true,
        waiting_room: false,
    }
}
