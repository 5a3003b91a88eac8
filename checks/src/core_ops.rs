//! The harness's operations: each event as the I/O shell carries it out, checked
//! against the model where the core answers.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use orelay_proto::{
    GroupHeader, HostAction, ParticipantId, Recipient, ServerMessage, TrackId, TrackInfo, TrackKind,
};
use orelay_relay::core::outbox::Outbox;
use orelay_relay::core::{
    plan_drops, Action, Backlog, Grant, GroupBuffer, JoinRequest, OpenGroups, Opened, Placement,
    PublishGrace, ReaderId, ResetCause, Route, TrackKey, Transport,
};

use crate::core::{
    fanout_limits, queue_limits, track_id, Coverage, Group, Harness, Peer, MAX_PARTICIPANTS,
    MAX_PEERS, OUTBOX_LIMIT, PASSCODES,
};
use crate::core_check::View;

impl Harness {
    pub(crate) fn join(&mut self, meeting: usize, wrong_passcode: bool, slow: bool, grant: Grant) {
        if self.peers.len() >= MAX_PEERS {
            return;
        }
        let passcode = if wrong_passcode {
            "wrong"
        } else {
            PASSCODES[meeting]
        };
        let info = Bytes::from(format!("peer {}", self.peers.len()));
        let keys = Bytes::from_static(b"opaque key bundle");
        let req = JoinRequest {
            passcode: passcode.to_owned(),
            info,
            keys,
            grant,
        };
        let crowd = self.meetings[meeting].len() + self.meetings[meeting].waiting_len();
        let (placement, actions) = match self.meetings[meeting].join(req) {
            // Lock, removal and the limit are the core's to decide; the limit is checked.
            Err(_) => return,
            Ok(joined) => joined,
        };
        assert!(!wrong_passcode, "admitted with a wrong passcode");
        assert!(crowd < MAX_PARTICIPANTS, "admitted past the limit");
        let id = placement.id();
        assert!(
            self.peers
                .iter()
                .all(|q| q.meeting != meeting || q.id != id),
            "ID {id} reused"
        );
        let admitted = matches!(placement, Placement::Admitted(_));
        if admitted {
            self.models[meeting].present.insert(id);
        }
        self.count(|c| c.joined += 1);
        self.peers.push(Peer {
            meeting,
            id,
            present: true,
            admitted,
            slow,
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

    /// A host action; a refusal is answered (`Refused`), nothing else happens.
    pub(crate) fn host_action(&mut self, p: usize, action: HostAction) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let may = self.meetings[m].role(id).is_some_and(|r| r.can_moderate());
        if let Ok(actions) = self.meetings[m].host_action(id, action) {
            assert!(may, "{action:?} from a non-moderator");
            self.deliver(m, actions);
        }
    }

    /// An opaque key message: only admitted members get it, never the sender, and
    /// the very `Bytes` it sent.
    pub(crate) fn key_message(&mut self, p: usize, to: Recipient, blob: Bytes) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let Ok(actions) = self.meetings[m].key_message(id, to, blob.clone()) else {
            return;
        };
        let others = self.models[m].present.len() - 1;
        assert_eq!(actions.len(), if to == Recipient::All { others } else { 1 });
        for action in &actions {
            let Action::Send {
                to: r,
                msg: ServerMessage::KeyMessage { from, blob: b, .. },
            } = action
            else {
                panic!("a key message became {action:?}");
            };
            assert!(*from == id && *r != id && self.models[m].present.contains(r));
            assert_eq!(
                (b.as_ptr(), b.len()),
                (blob.as_ptr(), blob.len()),
                "key message copied"
            );
        }
        self.deliver(m, actions);
    }

    /// The relay closes a participant (a session error, a full outbox).
    pub(crate) fn close(&mut self, p: usize) {
        self.count(|c| c.closed += 1);
        self.leave(p);
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Coverage)) {
        let mut c = self.coverage.get();
        f(&mut c);
        self.coverage.set(c);
    }

    /// The participant leaves or is closed: its groups are reset for their readers and
    /// its own readers released, as the shell's tasks do on every exit path.
    pub(crate) fn leave(&mut self, p: usize) {
        let (m, id, alive) = (
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
        if !alive {
            assert!(actions.is_empty(), "a second leave told someone");
            return;
        }
        let model = &mut self.models[m];
        if model.present.remove(&id) {
            model.tracks.retain(|(p, _), _| *p != id);
            model.subs.retain(|(s, p, _), _| *s != id && *p != id);
            model.stopped.retain(|(p, _)| *p != id);
        }
        self.deliver(m, actions);
    }

    pub(crate) fn publish(&mut self, p: usize, info: TrackInfo) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let meeting = &self.meetings[m];
        if meeting.may_publish(id, info.kind).is_err() || meeting.is_stopped(id, info.track) {
            return; // Refused: the role, the share policy or a host's stop forbids it.
        }
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
                model.stopped.remove(&(id, info.track));
                for layer in 0..orelay_proto::limits::MAX_LAYERS {
                    model.keyframes.remove(&(id, info.track, layer));
                }
                self.deliver(m, actions);
            }
            Err(_) => self.close(p),
        }
    }

    pub(crate) fn unpublish(&mut self, p: usize, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let result = self.meetings[m].unpublish(id, track);
        let model = &mut self.models[m];
        assert_eq!(result.is_ok(), model.tracks.remove(&(id, track)).is_some());
        match result {
            Ok(actions) => {
                model.subs.retain(|(_, q, t), _| (*q, *t) != (id, track));
                model.stopped.remove(&(id, track));
                self.deliver(m, actions);
            }
            Err(_) => self.close(p),
        }
    }

    pub(crate) fn subscribe(
        &mut self,
        p: usize,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
    ) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let result = self.meetings[m].subscribe(id, publisher, track, layer, self.now);
        let model = &mut self.models[m];
        let Ok(actions) = result else {
            let mine = model.subs.keys().filter(|(s, _, _)| *s == id).count();
            assert!(mine >= orelay_proto::limits::MAX_SUBSCRIPTIONS_PER_PARTICIPANT);
            return self.close(p);
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

    pub(crate) fn unsubscribe(&mut self, p: usize, publisher: ParticipantId, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        assert!(self.meetings[m].unsubscribe(id, publisher, track).is_ok());
        self.models[m].subs.remove(&(id, publisher, track));
    }

    /// A group stream's header arrived: route it as the shell does.
    pub(crate) fn open_group(&mut self, p: usize, header: GroupHeader) {
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
        let evicted = self.groups[g].buf.shed(budget);
        self.count(|c| {
            c.groups += u64::from(n > 0);
            c.drops += evicted.len() as u64;
        });
        for &t in &peers {
            self.policy(t);
        }
    }

    /// Checks a route against the model; on `Invalid` (or an expired grace) closes `p`.
    pub(crate) fn route_checked(
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
                self.close(p);
                None
            }
            Route::Unknown => {
                assert!(!invalid && track.is_none(), "{key:?} unknown");
                if let orelay_relay::core::Grace::Expired = self.peers[p].grace.unknown(self.now) {
                    self.close(p);
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
    pub(crate) fn peer_of(&self, m: usize, id: ParticipantId) -> usize {
        let found = self
            .peers
            .iter()
            .position(|q| q.meeting == m && q.id == id && q.present);
        found.unwrap_or_else(|| panic!("target {id} is not a present member of meeting {m}"))
    }

    /// The budget a push to group `g` gets: the publisher's limit less its other groups.
    pub(crate) fn budget(&self, g: usize) -> usize {
        let p = self.groups[g].publisher;
        let others: usize = (0..self.groups.len())
            .filter(|&o| o != g && self.groups[o].publisher == p)
            .map(|o| self.groups[o].buf.held_bytes())
            .sum();
        fanout_limits().group_budget(others)
    }

    pub(crate) fn push(&mut self, g: usize, chunk: Bytes) {
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
        self.count(|c| c.drops += evicted.len() as u64);
        let group = &self.groups[g];
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

    pub(crate) fn close_group(&mut self, g: usize) {
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
            self.count(|c| c.drops += 1);
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

    pub(crate) fn datagram(&mut self, p: usize, publisher: ParticipantId, track: TrackId) {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let key = TrackKey {
            publisher,
            track,
            layer: 0,
        };
        // The shell's `AudioRoutes::forward`: the named publisher must be the sender,
        // then the cached route is used while its version has not moved.
        if publisher != id {
            self.close(p);
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
        self.count(|c| c.datagrams += u64::from(!got.is_empty()));
        for t in got {
            self.peer_of(m, t);
        }
    }

    pub(crate) fn tick(&mut self, by: Duration) {
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
    pub(crate) fn finish(&mut self) {
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
    /// A track ID `p` does not publish yet, or one time in sixteen any (maybe a duplicate).
    pub(crate) fn unused_track(&self, p: usize, n: u8) -> TrackId {
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        if n >= 240 {
            return track_id(n);
        }
        let used = |t: &TrackId| self.models[m].tracks.contains_key(&(id, *t));
        (0..12)
            .map(|k| (u64::from(n) + k) % 12)
            .find(|t| !used(t))
            .unwrap_or(0)
    }

    /// A track published in `p`'s meeting (by `p` itself when `own` filters), picked by
    /// `n`, unless `raw` asks for an arbitrary one (one time in eight).
    pub(crate) fn published(
        &self,
        p: usize,
        own: Option<fn(&TrackInfo) -> bool>,
        raw: u8,
        n: u8,
    ) -> Option<(ParticipantId, TrackInfo)> {
        if raw >= 224 {
            return None;
        }
        let (m, id) = (self.peers[p].meeting, self.peers[p].id);
        let tracks: Vec<(ParticipantId, TrackInfo)> = self.models[m]
            .tracks
            .iter()
            .filter(|((q, _), info)| own.is_none_or(|f| *q == id && f(info)))
            .map(|(&(q, _), &info)| (q, info))
            .collect();
        tracks.get(usize::from(n) % tracks.len().max(1)).copied()
    }
}
