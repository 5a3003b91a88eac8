//! Drives the relay's sans-IO core with an arbitrary sequence of events, the way the
//! I/O shell does (`relay/src/media.rs`, `connection.rs`), and checks its invariants
//! after every event (see [`crate::core_check`]).
//!
//! Two meetings with small limits; participants join, leave, publish, subscribe and
//! misbehave; publishers open groups (claiming any ID, track and layer), push chunks
//! that are slices of one arena (so "the same `Bytes`" is a pointer comparison),
//! finish or reset them; subscribers read, stop reading (STOP_SENDING) or stall; audio
//! datagrams go through a route cache keyed by [`RouteVersion`] like the shell's;
//! control messages go through each client's [`Outbox`]; the clock moves by explicit
//! ticks that run idle reclaim and the policy pass. A session error closes that one
//! participant (it leaves), as the shell does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use orelay_proto::{GroupHeader, ParticipantId, TrackId, TrackInfo, TrackKind};
use orelay_relay::core::outbox::Outbox;
use orelay_relay::core::{
    plan_drops, Backlog, FanoutLimits, GroupBuffer, Meeting, MeetingLimits, OpenGroups, Opened,
    PublishGrace, QueueLimits, ReaderId, ResetCause, Route, RouteVersion, TrackKey, Transport,
};

use crate::core_check::View;

/// One thing that happens to the relay. Small integers pick participants, tracks and
/// groups modulo what exists, so almost every input means something.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) enum Event {
    /// A new connection joins meeting `meeting % 2`, with the right passcode or not.
    Join { meeting: bool, wrong_passcode: bool },
    /// A participant leaves (again, if it already left: must be harmless).
    Leave { who: u8 },
    /// `Publish` of any track info, valid or not.
    Publish {
        who: u8,
        track: u8,
        kind: u8,
        layers: u8,
    },
    /// `Unpublish`.
    Unpublish { who: u8, track: u8 },
    /// `Subscribe` to a participant ID of its meeting (any ID, even absent ones).
    Subscribe {
        who: u8,
        publisher: u8,
        track: u8,
        layer: u8,
    },
    /// `Unsubscribe`.
    Unsubscribe { who: u8, publisher: u8, track: u8 },
    /// `RequestKeyframe`.
    RequestKeyframe {
        who: u8,
        publisher: u8,
        track: u8,
        layer: u8,
    },
    /// A group stream opens; `claimed` is the publisher ID in its header (its own if none).
    OpenGroup {
        who: u8,
        claimed: Option<u8>,
        track: u8,
        layer: u8,
        group: u8,
    },
    /// A chunk of `len` bytes arrives on a group stream.
    Chunk { group: u8, len: u16 },
    /// The publisher finishes a group stream.
    Finish { group: u8 },
    /// The publisher resets a group stream.
    Reset { group: u8 },
    /// A client's writers take up to `chunks` chunks; its control messages are written.
    Read { who: u8, chunks: u8 },
    /// A client stops (STOP_SENDING) one of the group streams it receives.
    Stop { who: u8, read: u8 },
    /// An audio datagram; `claimed` as for groups.
    Datagram {
        who: u8,
        claimed: Option<u8>,
        track: u8,
    },
    /// Time passes: idle groups are reset and every subscriber's policy runs.
    Tick { ms: u16 },
}

/// Most participants one run creates (joins past it are ignored): bounds a run.
const MAX_PEERS: usize = 48;
/// Participants per meeting: small, so `MEETING_FULL` happens.
pub(crate) const MAX_PARTICIPANTS: usize = 5;
/// Control messages queued per client before it is closed (a newcomer's roster
/// snapshot, at most 4 others with 8 tracks each, fits).
pub(crate) const OUTBOX_LIMIT: usize = 64;
/// Chunks are slices of an arena this large (distinct chunks, distinct pointers).
const ARENA: usize = 1 << 20;

/// Limits small enough that the budgets and drops are reached within a short input.
pub(crate) fn queue_limits() -> QueueLimits {
    QueueLimits {
        max_bytes: 16 * 1024,
        max_groups: 6,
        max_group_delay: Duration::from_millis(500),
    }
}

pub(crate) fn fanout_limits() -> FanoutLimits {
    FanoutLimits {
        max_publisher_bytes: 48 * 1024,
        group_idle_timeout: Duration::from_secs(10),
    }
}

/// A connection that joined (or tried to).
pub(crate) struct Peer {
    pub(crate) meeting: usize,
    pub(crate) id: ParticipantId,
    pub(crate) present: bool,
    pub(crate) outbox: Outbox,
    /// What the client learned from the messages it read.
    pub(crate) view: View,
    pub(crate) open_groups: OpenGroups,
    pub(crate) grace: PublishGrace,
    /// Its cached audio routes, per track, as the shell keeps them.
    pub(crate) audio: BTreeMap<TrackId, (RouteVersion, u64, Vec<ParticipantId>)>,
    /// Groups it receives: (group index, its reader).
    pub(crate) reads: Vec<(usize, ReaderId)>,
    /// Bytes offered since its last policy pass.
    pub(crate) since_policy: u64,
}

/// A group stream at the relay.
pub(crate) struct Group {
    pub(crate) publisher: usize,
    pub(crate) key: TrackKey,
    pub(crate) seq: u64,
    pub(crate) buf: GroupBuffer,
    /// Reader `i` is `targets[i]` (a peer index).
    pub(crate) targets: Vec<usize>,
    /// Every chunk pushed, header first: what each reader must get, in order.
    pub(crate) sent: Vec<Bytes>,
    /// Per reader: chunks written so far, bytes offered while it read.
    pub(crate) written: Vec<usize>,
    pub(crate) offered: Vec<u64>,
    pub(crate) written_bytes: Vec<u64>,
    /// Closed in its publisher's `OpenGroups` (finished, reset or ended).
    pub(crate) closed: bool,
}

/// The model of one meeting the core must agree with.
#[derive(Default)]
pub(crate) struct Model {
    pub(crate) present: BTreeSet<ParticipantId>,
    pub(crate) tracks: BTreeMap<(ParticipantId, TrackId), TrackInfo>,
    /// (subscriber, publisher, track) → the layer it receives.
    pub(crate) subs: BTreeMap<(ParticipantId, ParticipantId, TrackId), u8>,
    /// When a keyframe was last requested, per (publisher, track, layer).
    pub(crate) keyframes: BTreeMap<(ParticipantId, TrackId, u8), Instant>,
}

impl Model {
    /// Who receives `layer` of a published track (every subscriber, for audio).
    pub(crate) fn receivers(
        &self,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
    ) -> Vec<ParticipantId> {
        let audio = self
            .tracks
            .get(&(publisher, track))
            .is_some_and(|t| !t.kind.uses_streams());
        self.subs
            .iter()
            .filter(|((_, p, t), l)| *p == publisher && *t == track && (audio || **l == layer))
            .map(|((s, _, _), _)| *s)
            .collect()
    }
}

/// The harness: core objects plus the model. See the module docs.
pub struct Harness {
    pub(crate) now: Instant,
    pub(crate) meetings: [Meeting; 2],
    pub(crate) models: [Model; 2],
    pub(crate) peers: Vec<Peer>,
    pub(crate) groups: Vec<Group>,
    arena: Bytes,
    arena_at: usize,
}

const PASSCODES: [&str; 2] = ["alpha", "beta"];

/// Runs the events decoded from `data` and checks the invariants after each one.
pub fn relay_core(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    // Bounded: each event consumes input bytes, and MAX_EVENTS caps the rest.
    for _ in 0..MAX_EVENTS {
        let Ok(event) = Event::arbitrary(&mut u) else {
            break;
        };
        h.apply(event);
        h.check();
        if u.is_empty() {
            break;
        }
    }
    h.finish();
}

const MAX_EVENTS: usize = 2000;

impl Harness {
    fn new() -> Self {
        let limits = MeetingLimits {
            max_participants: MAX_PARTICIPANTS,
        };
        let start = Instant::now();
        let arena: Vec<u8> = (0..ARENA).map(|i| (i * 7 + i / 251) as u8).collect();
        Self {
            now: start,
            meetings: [
                Meeting::new(PASSCODES[0], limits),
                Meeting::new(PASSCODES[1], limits),
            ],
            models: [Model::default(), Model::default()],
            peers: Vec::new(),
            groups: Vec::new(),
            arena: Bytes::from(arena),
            arena_at: 0,
        }
    }

    /// A present peer picked by `who`, if any.
    fn pick(&self, who: u8) -> Option<usize> {
        let present: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].present)
            .collect();
        (!present.is_empty()).then(|| present[usize::from(who) % present.len()])
    }

    /// A participant ID of `p`'s meeting, picked by `n`: one present or past, or a stranger.
    fn id_in(&self, p: usize, n: u8) -> ParticipantId {
        let meeting = self.peers[p].meeting;
        let ids: Vec<ParticipantId> = self
            .peers
            .iter()
            .filter(|q| q.meeting == meeting)
            .map(|q| q.id)
            .collect();
        ids.get(usize::from(n) % (ids.len() + 1))
            .copied()
            .unwrap_or(u64::from(n) + 1000)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Join {
                meeting,
                wrong_passcode,
            } => self.join(usize::from(meeting), wrong_passcode),
            Event::Leave { who } => {
                // Any peer, present or not: leaving twice must be harmless.
                if !self.peers.is_empty() {
                    self.leave(usize::from(who) % self.peers.len());
                }
            }
            Event::Publish {
                who,
                track,
                kind,
                layers,
            } => {
                let Some(p) = self.pick(who) else { return };
                let info = TrackInfo {
                    track: u64::from(track % 12),
                    kind: TrackKind(kind % 4),
                    layers: layers % 6,
                    priority: 1,
                };
                self.publish(p, info);
            }
            Event::Unpublish { who, track } => {
                let Some(p) = self.pick(who) else { return };
                self.unpublish(p, u64::from(track % 12));
            }
            Event::Subscribe {
                who,
                publisher,
                track,
                layer,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.id_in(p, publisher);
                self.subscribe(p, publisher, u64::from(track % 12), layer % 6);
            }
            Event::Unsubscribe {
                who,
                publisher,
                track,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.id_in(p, publisher);
                self.unsubscribe(p, publisher, u64::from(track % 12));
            }
            Event::RequestKeyframe {
                who,
                publisher,
                track,
                layer,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.id_in(p, publisher);
                let m = self.peers[p].meeting;
                let actions = self.meetings[m].request_keyframe(
                    publisher,
                    u64::from(track % 12),
                    layer % 6,
                    self.now,
                );
                self.deliver(m, actions);
            }
            Event::OpenGroup {
                who,
                claimed,
                track,
                layer,
                group,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = claimed.map_or(self.peers[p].id, |c| self.id_in(p, c));
                let header = GroupHeader {
                    publisher,
                    track: u64::from(track % 12),
                    group: u64::from(group),
                    layer: layer % 5,
                    priority: 1,
                };
                self.open_group(p, header);
            }
            Event::Chunk { group, len } => {
                if let Some(g) = self.pick_group(group) {
                    let chunk = self.chunk(usize::from(len % 8192) + 1);
                    self.push(g, chunk);
                }
            }
            Event::Finish { group } => {
                if let Some(g) = self.pick_group(group) {
                    self.groups[g].buf.finish();
                    self.close_group(g);
                }
            }
            Event::Reset { group } => {
                if let Some(g) = self.pick_group(group) {
                    self.groups[g].buf.reset(ResetCause::Publisher);
                    self.close_group(g);
                }
            }
            Event::Read { who, chunks } => {
                let Some(p) = self.pick(who) else { return };
                self.read_control(p);
                self.drain(p, usize::from(chunks));
            }
            Event::Stop { who, read } => {
                let Some(p) = self.pick(who) else { return };
                let reads = &mut self.peers[p].reads;
                if !reads.is_empty() {
                    let (g, r) = reads.remove(usize::from(read) % reads.len());
                    self.groups[g].buf.release(r);
                }
            }
            Event::Datagram {
                who,
                claimed,
                track,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = claimed.map_or(self.peers[p].id, |c| self.id_in(p, c));
                self.datagram(p, publisher, u64::from(track % 12));
            }
            Event::Tick { ms } => self.tick(Duration::from_millis(u64::from(ms % 2048))),
        }
    }

    /// A group still open at its publisher (not finished, reset or ended), by `n`.
    fn pick_group(&self, n: u8) -> Option<usize> {
        let open: Vec<usize> = (0..self.groups.len())
            .filter(|&g| !self.groups[g].closed)
            .collect();
        (!open.is_empty()).then(|| open[usize::from(n) % open.len()])
    }

    fn chunk(&mut self, len: usize) -> Bytes {
        if self.arena_at + len > ARENA {
            self.arena_at = 0;
        }
        let chunk = self.arena.slice(self.arena_at..self.arena_at + len);
        self.arena_at += len;
        chunk
    }

    fn join(&mut self, meeting: usize, wrong_passcode: bool) {
        if self.peers.len() >= MAX_PEERS {
            return;
        }
        let passcode = if wrong_passcode {
            "wrong"
        } else {
            PASSCODES[meeting]
        };
        let info = Bytes::from(format!("peer {}", self.peers.len()));
        let result = self.meetings[meeting].join(passcode, info);
        let model = &mut self.models[meeting];
        let (id, actions) = match result {
            Err(reason) => {
                let want = if wrong_passcode {
                    orelay_proto::RejectReason::BAD_PASSCODE
                } else {
                    orelay_proto::RejectReason::MEETING_FULL
                };
                assert_eq!(reason, want);
                assert!(wrong_passcode || model.present.len() >= MAX_PARTICIPANTS);
                return;
            }
            Ok(joined) => joined,
        };
        assert!(!wrong_passcode, "admitted with a wrong passcode");
        assert!(
            model.present.len() < MAX_PARTICIPANTS,
            "admitted past the limit"
        );
        assert!(
            self.peers
                .iter()
                .all(|q| q.meeting != meeting || q.id != id),
            "ID {id} reused"
        );
        model.present.insert(id);
        self.peers.push(Peer {
            meeting,
            id,
            present: true,
            outbox: Outbox::new(OUTBOX_LIMIT),
            view: View::default(),
            open_groups: OpenGroups::default(),
            grace: PublishGrace::default(),
            audio: BTreeMap::new(),
            reads: Vec::new(),
            since_policy: 0,
        });
        self.deliver(meeting, actions);
    }

    /// The participant leaves or is closed: its groups are reset for their readers and
    /// its own readers released, as the shell's tasks do on every exit path.
    pub(crate) fn leave(&mut self, p: usize) {
        let (m, id, was_present) = (
            self.peers[p].meeting,
            self.peers[p].id,
            self.peers[p].present,
        );
        self.peers[p].present = false;
        for g in 0..self.groups.len() {
            if self.groups[g].publisher == p && !self.groups[g].closed {
                self.groups[g].buf.reset(ResetCause::Publisher);
                self.close_group(g);
            }
        }
        for (g, r) in std::mem::take(&mut self.peers[p].reads) {
            self.groups[g].buf.release(r);
        }
        let actions = self.meetings[m].leave(id);
        let model = &mut self.models[m];
        if !was_present {
            assert!(actions.is_empty(), "a second leave told someone");
            return;
        }
        model.present.remove(&id);
        model.tracks.retain(|(p, _), _| *p != id);
        model.subs.retain(|(s, p, _), _| *s != id && *p != id);
        self.deliver(m, actions);
    }

    fn publish(&mut self, p: usize, info: TrackInfo) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let result = self.meetings[m].publish(id, info);
        let model = &mut self.models[m];
        let mine = model.tracks.keys().filter(|(q, _)| *q == id).count();
        let valid = info.kind.is_known()
            && (1..=orelay_proto::limits::MAX_LAYERS).contains(&info.layers)
            && !model.tracks.contains_key(&(id, info.track))
            && mine < orelay_proto::limits::MAX_TRACKS_PER_PARTICIPANT;
        assert_eq!(result.is_ok(), valid, "publish {info:?}: {result:?}");
        match result {
            Ok(actions) => {
                model.tracks.insert((id, info.track), info);
                for layer in 0..orelay_proto::limits::MAX_LAYERS {
                    model.keyframes.remove(&(id, info.track, layer));
                }
                self.deliver(m, actions);
            }
            Err(_) => self.leave(p),
        }
    }

    fn unpublish(&mut self, p: usize, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let result = self.meetings[m].unpublish(id, track);
        let model = &mut self.models[m];
        assert_eq!(result.is_ok(), model.tracks.remove(&(id, track)).is_some());
        match result {
            Ok(actions) => {
                model.subs.retain(|(_, q, t), _| (*q, *t) != (id, track));
                self.deliver(m, actions);
            }
            Err(_) => self.leave(p),
        }
    }

    fn subscribe(&mut self, p: usize, publisher: ParticipantId, track: TrackId, layer: u8) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let result = self.meetings[m].subscribe(id, publisher, track, layer, self.now);
        let model = &mut self.models[m];
        let Ok(actions) = result else {
            let mine = model.subs.keys().filter(|(s, _, _)| *s == id).count();
            assert!(mine >= orelay_proto::limits::MAX_SUBSCRIPTIONS_PER_PARTICIPANT);
            return self.leave(p);
        };
        if let Some(info) = model.tracks.get(&(publisher, track)) {
            model
                .subs
                .insert((id, publisher, track), layer.min(info.layers - 1));
        } else {
            let ended = orelay_proto::ServerMessage::SubscriptionEnded { publisher, track };
            assert_eq!(
                actions,
                [orelay_relay::core::Action::Send { to: id, msg: ended }]
            );
        }
        self.deliver(m, actions);
    }

    fn unsubscribe(&mut self, p: usize, publisher: ParticipantId, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        assert!(self.meetings[m].unsubscribe(id, publisher, track).is_ok());
        self.models[m].subs.remove(&(id, publisher, track));
    }

    /// A group stream's header arrived: route it as the shell does.
    fn open_group(&mut self, p: usize, header: GroupHeader) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let key = TrackKey {
            publisher: header.publisher,
            track: header.track,
            layer: header.layer,
        };
        let route = self.meetings[m].route(
            id,
            header.publisher,
            header.track,
            header.layer,
            Transport::Stream,
        );
        let targets = match self.route_checked(p, key, Transport::Stream, route) {
            Some(targets) => targets,
            None => return,
        };
        let slot = self.groups.len() as u64;
        match self.peers[p].open_groups.open(key, header.group, slot) {
            Opened::TooOld => return,
            Opened::Forward { reset } => {
                for old in reset {
                    let old = old as usize;
                    assert_eq!(
                        self.groups[old].key, key,
                        "the limit reset another layer's group"
                    );
                    self.groups[old].buf.reset(ResetCause::GroupLimit);
                    self.groups[old].closed = true;
                }
            }
        }
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        let header_bytes = Bytes::from(bytes);
        let n = targets.len();
        let peers: Vec<usize> = targets.iter().map(|&t| self.peer_of(m, t)).collect();
        let g = self.groups.len();
        self.groups.push(Group {
            publisher: p,
            key,
            seq: header.group,
            buf: GroupBuffer::new(header_bytes.clone(), n, self.now),
            targets: peers.clone(),
            sent: vec![header_bytes.clone()],
            written: vec![0; n],
            offered: vec![header_bytes.len() as u64; n],
            written_bytes: vec![0; n],
            closed: false,
        });
        for (i, &t) in peers.iter().enumerate() {
            self.peers[t].reads.push((g, ReaderId(i as u32)));
            self.peers[t].since_policy += header_bytes.len() as u64;
        }
        let budget = self.budget(g);
        self.groups[g].buf.shed(budget);
        for &t in &peers {
            self.policy(t);
        }
    }

    /// Checks a route against the model; on `Invalid` (or an expired grace) closes `p`.
    fn route_checked(
        &mut self,
        p: usize,
        key: TrackKey,
        transport: Transport,
        route: Route,
    ) -> Option<Vec<ParticipantId>> {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let model = &self.models[m];
        let track = model
            .tracks
            .get(&(key.publisher, key.track))
            .filter(|_| key.publisher == id);
        let invalid = key.publisher != id
            || track.is_some_and(|t| match transport {
                Transport::Stream => !t.kind.uses_streams() || key.layer >= t.layers,
                Transport::Datagram => t.kind != TrackKind::AUDIO,
            });
        match route {
            Route::Invalid => {
                assert!(invalid, "{key:?} refused as invalid");
                self.leave(p);
                None
            }
            Route::Unknown => {
                assert!(!invalid && track.is_none(), "{key:?} unknown");
                if let orelay_relay::core::Grace::Expired = self.peers[p].grace.unknown(self.now) {
                    self.leave(p);
                }
                None
            }
            Route::Deliver {
                targets,
                version,
                generation,
            } => {
                assert!(!invalid && track.is_some(), "{key:?} delivered");
                assert_eq!(version.get(), generation);
                let mut want = model.receivers(key.publisher, key.track, key.layer);
                let mut got = targets.clone();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, want, "{key:?}: targets differ from the subscribers");
                self.peers[p].grace.routed();
                if transport == Transport::Datagram {
                    self.peers[p]
                        .audio
                        .insert(key.track, (version, generation, targets.clone()));
                }
                Some(targets)
            }
        }
    }

    /// The peer index of a present participant of meeting `m`.
    fn peer_of(&self, m: usize, id: ParticipantId) -> usize {
        let found = self
            .peers
            .iter()
            .position(|q| q.meeting == m && q.id == id && q.present);
        found.unwrap_or_else(|| panic!("target {id} is not a present member of meeting {m}"))
    }

    /// The budget a push to group `g` gets: the publisher's limit less its other groups.
    fn budget(&self, g: usize) -> usize {
        let p = self.groups[g].publisher;
        let others: usize = (0..self.groups.len())
            .filter(|&o| o != g && self.groups[o].publisher == p)
            .map(|o| self.groups[o].buf.held_bytes())
            .sum();
        fanout_limits().group_budget(others)
    }

    fn push(&mut self, g: usize, chunk: Bytes) {
        let len = chunk.len() as u64;
        let group = &mut self.groups[g];
        for (i, &t) in group.targets.iter().enumerate() {
            if group.buf.lag(ReaderId(i as u32)).is_some() {
                group.offered[i] += len;
                self.peers[t].since_policy += len;
            }
        }
        group.sent.push(chunk.clone());
        let budget = self.budget(g);
        let group = &mut self.groups[g];
        let evicted = group.buf.push(chunk, self.now, budget);
        if !evicted.is_empty()
            && self.peers[group.publisher]
                .open_groups
                .is_newest(group.key, group.seq)
        {
            let (m, key) = (self.peers[group.publisher].meeting, group.key);
            let actions =
                self.meetings[m].request_keyframe(key.publisher, key.track, key.layer, self.now);
            self.deliver(m, actions);
        }
    }

    fn close_group(&mut self, g: usize) {
        let group = &mut self.groups[g];
        if !group.closed {
            group.closed = true;
            let slot = g as u64;
            self.peers[group.publisher]
                .open_groups
                .close(group.key, slot);
        }
    }

    /// One subscriber's drop policy, as the shell's `enforce`.
    pub(crate) fn policy(&mut self, p: usize) {
        let mut open = Vec::new();
        let mut which = Vec::new();
        for (i, &(g, r)) in self.peers[p].reads.iter().enumerate() {
            let group = &self.groups[g];
            if let Some(lag) = group.buf.lag(r) {
                open.push(Backlog {
                    key: group.key,
                    group: group.seq,
                    lag,
                });
                which.push(i);
            }
        }
        for d in plan_drops(&open, &queue_limits(), self.now) {
            let (g, r) = self.peers[p].reads[which[d.index]];
            let unread = self.groups[g].buf.drop_reader(r);
            assert_eq!(unread, Some(d.bytes), "the policy saw another lag");
            if d.need_keyframe {
                let (m, key) = (self.peers[p].meeting, self.groups[g].key);
                let actions = self.meetings[m].request_keyframe(
                    key.publisher,
                    key.track,
                    key.layer,
                    self.now,
                );
                self.deliver(m, actions);
            }
        }
        self.peers[p].since_policy = 0;
    }

    fn datagram(&mut self, p: usize, publisher: ParticipantId, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let key = TrackKey {
            publisher,
            track,
            layer: 0,
        };
        // The shell's `AudioRoutes::forward`: the named publisher must be the sender,
        // then the cached route is used while its version has not moved.
        if publisher != id {
            self.leave(p);
            return;
        }
        let fresh = self.peers[p]
            .audio
            .get(&track)
            .is_some_and(|(v, at, _)| v.get() == *at);
        if !fresh {
            self.peers[p].audio.remove(&track);
            let route = self.meetings[m].route(id, publisher, track, 0, Transport::Datagram);
            if self
                .route_checked(p, key, Transport::Datagram, route)
                .is_none()
            {
                return;
            }
        }
        let Some((_, _, targets)) = self.peers[p].audio.get(&track) else {
            panic!("a fresh route vanished");
        };
        let mut got = targets.clone();
        let mut want = self.models[m].receivers(id, track, 0);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "audio went by a stale route");
        for t in got {
            self.peer_of(m, t);
        }
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        for g in 0..self.groups.len() {
            let group = &mut self.groups[g];
            if !group.closed && fanout_limits().is_idle(group.buf.last_push(), self.now) {
                group.buf.reset(ResetCause::Idle);
                self.close_group(g);
            }
        }
        for p in 0..self.peers.len() {
            if self.peers[p].present && !self.peers[p].reads.is_empty() {
                self.policy(p);
            }
        }
    }

    /// Runs the end of a session: everyone leaves, and nothing may be left behind.
    fn finish(&mut self) {
        for p in 0..self.peers.len() {
            self.leave(p);
        }
        self.check();
        for (m, meeting) in self.meetings.iter().enumerate() {
            assert!(meeting.is_empty(), "meeting {m} kept someone");
        }
        for (g, group) in self.groups.iter().enumerate() {
            assert_eq!(
                group.buf.held_bytes(),
                0,
                "group {g} pins bytes after everyone left"
            );
            assert_eq!(
                group.buf.active_readers(),
                0,
                "group {g} has readers after everyone left"
            );
        }
    }
}
