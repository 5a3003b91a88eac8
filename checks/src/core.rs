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
use orelay_proto::{
    GroupHeader, HostAction, ParticipantId, Recipient, Role, SharePolicy, TrackId, TrackInfo,
    TrackKind,
};
use orelay_relay::core::{
    FanoutLimits, Grant, GroupBuffer, KindSet, Meeting, MeetingLimits, OpenGroups, PublishGrace,
    QueueLimits, ReaderId, ResetCause, RouteVersion, TrackKey,
};

use crate::view::View;

/// One thing that happens to the relay. Small integers pick participants, tracks and
/// groups modulo what exists, so almost every input means something.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) enum Event {
    /// A new connection joins, mostly the first meeting, mostly with the right
    /// passcode, with any role; `wait` asks for the waiting room, `identity` names who
    /// it is (for removals). Slow clients (one in four) read control messages only on
    /// `Read`, the others after every event.
    Join {
        meeting: u8,
        passcode: u8,
        slow: u8,
        role: u8,
        wait: bool,
        identity: u8,
    },
    /// A host action from `who` (refused unless it moderates).
    Host {
        who: u8,
        action: u8,
        target: u8,
        track: u8,
        flag: bool,
    },
    /// An opaque key message to everyone, or to one participant ID.
    Key { who: u8, to: Option<u8>, len: u8 },
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
    /// A group stream opens; its header names the sender unless `forge` says otherwise.
    OpenGroup {
        who: u8,
        forge: u8,
        track: u8,
        layer: u8,
        group: u8,
    },
    /// `1 + count % 4` chunks of `len` bytes arrive on a group stream.
    Chunk { group: u8, len: u16, count: u8 },
    /// The publisher finishes a group stream.
    Finish { group: u8 },
    /// The publisher resets a group stream.
    Reset { group: u8 },
    /// A client's writers take up to `chunks` chunks; its control messages are written.
    Read { who: u8, chunks: u8 },
    /// A client stops (STOP_SENDING) one of the group streams it receives.
    Stop { who: u8, read: u8 },
    /// An audio datagram; `forge` as for groups.
    Datagram { who: u8, forge: u8, track: u8 },
    /// Time passes: idle groups are reset and every subscriber's policy runs.
    Tick { ms: u16 },
}

/// Most participants one run creates (joins past it are ignored): bounds a run.
pub(crate) const MAX_PEERS: usize = 48;
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
    /// In the meeting (not in the waiting room).
    pub(crate) admitted: bool,
    /// Reads its control messages only when told to.
    pub(crate) slow: bool,
    pub(crate) outbox: orelay_relay::core::outbox::Outbox,
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
    /// Tracks a host stopped: published, but forwarded to nobody.
    pub(crate) stopped: BTreeSet<(ParticipantId, TrackId)>,
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
        if self.stopped.contains(&(publisher, track)) {
            return Vec::new();
        }
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
    pub(crate) coverage: std::cell::Cell<Coverage>,
}

pub(crate) const PASSCODES: [&str; 2] = ["alpha", "beta"];

/// Runs the events decoded from `data` and checks the invariants after each one.
pub fn relay_core(data: &[u8]) {
    run(data);
}

/// What one run exercised: proof that the checks saw the paths they guard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// Participants admitted.
    pub joined: u64,
    /// Groups forwarded to at least one subscriber.
    pub groups: u64,
    /// Chunks a subscriber's writer took (each checked to be the publisher's `Bytes`).
    pub chunks: u64,
    /// Groups dropped for a subscriber by its policy or its publisher's budget.
    pub drops: u64,
    /// Audio datagrams routed to at least one subscriber.
    pub datagrams: u64,
    /// Participants closed for misbehaving or a full outbox.
    pub closed: u64,
    /// Times a client that had read everything was checked against the meeting.
    pub views: u64,
}

/// [`relay_core`], returning what the run covered.
pub fn run(data: &[u8]) -> Coverage {
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
    h.coverage.get()
}

/// Few tracks, so that publishers, subscribers and groups meet.
pub(crate) fn track_id(n: u8) -> TrackId {
    u64::from(n % 4)
}

/// `n % modulus` mostly, the raw byte one time in sixteen: valid values are common
/// enough to reach deep states, invalid ones still come.
fn rarely_raw(n: u8, modulus: u8) -> u8 {
    if n >= 240 {
        n
    } else {
        n % modulus
    }
}

const MAX_EVENTS: usize = 2000;

impl Harness {
    fn new() -> Self {
        let limits = MeetingLimits {
            max_participants: MAX_PARTICIPANTS,
        };
        let start = Instant::now();
        // One arena for every run of the process: filling a fresh one cost more than a run.
        static SHARED: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
        let arena = SHARED.get_or_init(|| (0..ARENA).map(|i| (i * 7 + i / 251) as u8).collect());
        Self {
            now: start,
            meetings: [
                Meeting::new(PASSCODES[0], limits),
                Meeting::new(PASSCODES[1], limits),
            ],
            models: [Model::default(), Model::default()],
            peers: Vec::new(),
            groups: Vec::new(),
            arena: arena.clone(),
            arena_at: 0,
            coverage: Default::default(),
        }
    }

    /// A present peer picked by `who`, if any.
    /// An admitted participant picked by `who`, if any (a waiting joiner may only leave).
    fn pick(&self, who: u8) -> Option<usize> {
        let present: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].present && self.peers[i].admitted)
            .collect();
        (!present.is_empty()).then(|| present[usize::from(who) % present.len()])
    }

    /// The publisher ID a header of `p`'s claims: its own, or one time in sixteen
    /// someone else's (or a stranger's).
    fn claimed(&self, p: usize, forge: u8) -> ParticipantId {
        if forge >= 240 {
            self.id_in(p, forge)
        } else {
            self.peers[p].id
        }
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
                passcode,
                slow,
                role,
                wait,
                identity,
            } => {
                let roles = [Role::Host, Role::CoHost, Role::Participant, Role::Viewer];
                let grant = Grant {
                    identity: format!("identity {}", identity % 8),
                    token_id: format!("token {}", self.peers.len()),
                    role: roles[usize::from(role % 4)],
                    publish: KindSet::ALL,
                    passcode_required: true,
                    waiting_room: wait,
                };
                self.join(
                    usize::from(meeting >= 192),
                    passcode >= 240,
                    slow >= 192,
                    grant,
                );
            }
            Event::Host {
                who,
                action,
                target,
                track,
                flag,
            } => {
                let Some(p) = self.pick(who) else { return };
                let target = self.id_in(p, target);
                let track = track_id(track);
                let action = match action % 8 {
                    0 => HostAction::Admit(target),
                    1 => HostAction::AdmitAll,
                    2 => HostAction::Deny(target),
                    3 => HostAction::Lock(flag),
                    4 => HostAction::Remove(target),
                    5 => HostAction::StopTrack {
                        participant: target,
                        track,
                    },
                    6 => HostAction::ResumeTrack {
                        participant: target,
                        track,
                    },
                    _ => HostAction::SetSharePolicy(if flag {
                        SharePolicy::HostOnly
                    } else {
                        SharePolicy::Anyone
                    }),
                };
                self.host_action(p, action);
            }
            Event::Key { who, to, len } => {
                let Some(p) = self.pick(who) else { return };
                let to = to.map_or(Recipient::All, |n| Recipient::One(self.id_in(p, n)));
                let blob = self.chunk(usize::from(len) + 1);
                self.key_message(p, to, blob);
            }
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
                    track: self.unused_track(p, track),
                    kind: TrackKind(rarely_raw(kind, 3)),
                    layers: if layers >= 240 {
                        layers % 8
                    } else {
                        1 + layers % 4
                    },
                    priority: 1,
                };
                self.publish(p, info);
            }
            Event::Unpublish { who, track } => {
                let Some(p) = self.pick(who) else { return };
                let any = |_: &TrackInfo| true;
                let track = match self.published(p, Some(any), track, track / 7) {
                    Some((_, info)) => info.track,
                    None if track >= 224 => track_id(track),
                    None => return,
                };
                self.unpublish(p, track);
            }
            Event::Subscribe {
                who,
                publisher,
                track,
                layer,
            } => {
                let Some(p) = self.pick(who) else { return };
                let (publisher, track) = match self.published(p, None, publisher, track) {
                    Some((publisher, info)) => (publisher, info.track),
                    None => (self.id_in(p, publisher), track_id(track)),
                };
                self.subscribe(p, publisher, track, rarely_raw(layer, 2));
            }
            Event::Unsubscribe {
                who,
                publisher,
                track,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.id_in(p, publisher);
                self.unsubscribe(p, publisher, track_id(track));
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
                    track_id(track),
                    rarely_raw(layer, 4),
                    self.now,
                );
                self.deliver(m, actions);
            }
            Event::OpenGroup {
                who,
                forge,
                track,
                layer,
                group,
            } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.claimed(p, forge);
                let streams = |info: &TrackInfo| info.kind.uses_streams();
                let (track, layer) = match self.published(p, Some(streams), forge, track) {
                    Some((_, info)) => (info.track, rarely_raw(layer, info.layers.min(2))),
                    None if forge >= 224 => (track_id(track), rarely_raw(layer, 4)),
                    None => return,
                };
                let header = GroupHeader {
                    publisher,
                    track,
                    group: u64::from(group),
                    layer,
                    priority: 1,
                };
                self.open_group(p, header);
            }
            Event::Chunk { group, len, count } => {
                if let Some(g) = self.pick_group(group) {
                    for _ in 0..=count % 4 {
                        let chunk = self.chunk(usize::from(len % 8192) + 1);
                        self.push(g, chunk);
                    }
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
            Event::Datagram { who, forge, track } => {
                let Some(p) = self.pick(who) else { return };
                let publisher = self.claimed(p, forge);
                let audio = |info: &TrackInfo| info.kind == TrackKind::AUDIO;
                let track = match self.published(p, Some(audio), forge, track) {
                    Some((_, info)) => info.track,
                    None if forge >= 224 => track_id(track),
                    None => return,
                };
                self.datagram(p, publisher, track);
            }
            Event::Tick { ms } => {
                // Mostly short steps; now and then past the grace or the idle timeout.
                let ms = if ms >= 0xf000 {
                    u64::from(ms - 0xf000) * 4
                } else {
                    u64::from(ms % 300)
                };
                self.tick(Duration::from_millis(ms));
            }
        }
        for p in 0..self.peers.len() {
            if self.peers[p].present && !self.peers[p].slow {
                self.read_control(p);
            }
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
}
