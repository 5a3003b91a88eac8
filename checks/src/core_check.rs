//! The invariants [`crate::core::relay_core`] checks after every event, and the
//! client-side view of the roster that control messages build.

use std::collections::{BTreeMap, BTreeSet};
use std::task::Waker;

use orelay_proto::control::JoinOutcome;
use orelay_proto::{ParticipantId, ServerMessage, TrackId};
use orelay_relay::core::routing::MAX_OPEN_GROUPS_PER_LAYER;
use orelay_relay::core::{Action, Read, ReaderId};

use crate::core::{fanout_limits, queue_limits, Harness, MAX_PARTICIPANTS, OUTBOX_LIMIT};
pub(crate) use crate::view::View;

impl Harness {
    /// Hands a meeting's actions to the recipients' outboxes; a full outbox closes that
    /// client (`CONTROL_BACKLOG`), as the shell does.
    pub(crate) fn deliver(&mut self, m: usize, actions: Vec<Action>) {
        // A waiting joiner a host admits is a member from its `JoinResult` on.
        for action in &actions {
            if let Action::Send {
                to,
                msg: ServerMessage::JoinResult(JoinOutcome::Admitted { .. }),
            } = action
            {
                let p = self.connection(m, *to);
                if !self.peers[p].admitted {
                    self.peers[p].admitted = true;
                    self.models[m].present.insert(*to);
                }
            }
        }
        let mut closing = Vec::new();
        for action in actions {
            let (to, msg) = match action {
                Action::Send { to, msg } => (to, msg),
                Action::Close { to, .. } => {
                    closing.push(self.connection(m, to));
                    continue;
                }
            };
            // Only members hear anything, and only about their own meeting; a waiting
            // joiner hears only how its join ends.
            let member = self.models[m].present.contains(&to);
            assert!(
                member || matches!(msg, ServerMessage::JoinResult(_)),
                "{msg:?} to {to}, not a member"
            );
            match &msg {
                ServerMessage::ParticipantJoined(r) => {
                    assert!(self.models[m].present.contains(&r.participant))
                }
                ServerMessage::TrackPublished { participant, info } => {
                    assert!(self.models[m]
                        .tracks
                        .contains_key(&(*participant, info.track)));
                }
                ServerMessage::KeyframeRequest { track, layer } => {
                    self.keyframe_asked(m, to, *track, *layer)
                }
                ServerMessage::TrackStopped {
                    participant,
                    track,
                    stopped,
                } => {
                    let model = &mut self.models[m];
                    assert!(model.tracks.contains_key(&(*participant, *track)));
                    if *stopped {
                        model.stopped.insert((*participant, *track));
                    } else {
                        model.stopped.remove(&(*participant, *track));
                    }
                }
                _ => {}
            }
            let p = self.connection(m, to);
            if self.peers[p].outbox.push(msg).is_err() {
                closing.push(p);
            }
        }
        for p in closing {
            if self.peers[p].present {
                self.close(p);
            }
        }
    }

    /// The live connection of participant `id` of meeting `m`.
    fn connection(&self, m: usize, id: ParticipantId) -> usize {
        let p = self
            .peers
            .iter()
            .position(|q| q.meeting == m && q.id == id && q.present);
        p.unwrap_or_else(|| panic!("{id} has no connection"))
    }

    /// A keyframe request goes to the publisher of a stream track it has, and at most
    /// once per interval per layer.
    fn keyframe_asked(&mut self, m: usize, to: ParticipantId, track: TrackId, layer: u8) {
        let model = &mut self.models[m];
        let info = model.tracks.get(&(to, track));
        assert!(
            info.is_some_and(|t| t.kind.uses_streams() && layer < t.layers),
            "keyframe request for {track}/{layer}"
        );
        let interval = orelay_relay::core::meeting::KEYFRAME_REQUEST_INTERVAL;
        if let Some(last) = model.keyframes.insert((to, track, layer), self.now) {
            assert!(
                self.now.duration_since(last) >= interval,
                "keyframe requests too often"
            );
        }
    }

    /// The client reads every queued control message.
    pub(crate) fn read_control(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        while let Some(msg) = peer.outbox.pop() {
            peer.view.read(&msg);
        }
    }

    /// A client's writers take up to `budget` chunks, oldest group first, checking each
    /// is the very `Bytes` the publisher pushed, in order.
    pub(crate) fn drain(&mut self, p: usize, mut budget: usize) {
        let noop = Waker::noop();
        let mut k = 0;
        while k < self.peers[p].reads.len() {
            let (g, r) = self.peers[p].reads[k];
            let group = &mut self.groups[g];
            let i = r.0 as usize;
            assert_eq!(group.targets[i], p);
            if !group.buf.watch(r, noop) {
                // Dropped for it or reset: the writer resets its stream and lets go.
                assert_eq!(group.buf.read(r, noop), Read::Reset);
                self.peers[p].reads.remove(k);
                continue;
            }
            let mut done = false;
            while budget > 0 && !done {
                match group.buf.read(r, noop) {
                    Read::Chunk(chunk) => {
                        budget -= 1;
                        let want = &group.sent[group.written[i]];
                        assert_eq!(
                            (chunk.as_ptr(), chunk.len()),
                            (want.as_ptr(), want.len()),
                            "a copy or another chunk"
                        );
                        group.written[i] += 1;
                        group.written_bytes[i] += chunk.len() as u64;
                        self.coverage.set(crate::core::Coverage {
                            chunks: self.coverage.get().chunks + 1,
                            ..self.coverage.get()
                        });
                    }
                    Read::Pending => break,
                    Read::Finished => {
                        assert_eq!(group.written[i], group.sent.len(), "finished early");
                        done = true;
                    }
                    Read::Reset => done = true,
                }
            }
            if done {
                group.buf.release(r);
                self.peers[p].reads.remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Every invariant, after each event. See the crate docs for the list.
    pub(crate) fn check(&self) {
        for (m, model) in self.models.iter().enumerate() {
            assert_eq!(self.meetings[m].len(), model.present.len());
            assert!(self.meetings[m].len() + self.meetings[m].waiting_len() <= MAX_PARTICIPANTS);
            for (&(p, t), info) in &model.tracks {
                assert_eq!(self.meetings[m].track(p, t), Some(info));
            }
        }
        let limits = queue_limits();
        let max_publisher = fanout_limits().max_publisher_bytes;
        for (p, peer) in self.peers.iter().enumerate() {
            if !peer.present {
                assert!(peer.reads.is_empty(), "peer {p} left with reads");
                continue;
            }
            let meeting = &self.meetings[peer.meeting];
            assert_eq!(meeting.is_waiting(peer.id), !peer.admitted, "peer {p}");
            assert_eq!(meeting.role(peer.id).is_some(), peer.admitted, "peer {p}");
            if !peer.admitted {
                assert!(peer.reads.is_empty(), "waiting peer {p} reads media");
            }
            assert!(peer.outbox.len() <= OUTBOX_LIMIT);
            if peer.outbox.is_empty() && peer.view.me.is_some() {
                self.view_matches(p);
            }
            let mut unread = 0;
            let mut reading = 0;
            let mut publishers = BTreeSet::new();
            for &(g, r) in &peer.reads {
                let group = &self.groups[g];
                if let Some(lag) = group.buf.lag(r) {
                    let i = r.0 as usize;
                    assert_eq!(
                        group.offered[i],
                        group.written_bytes[i] + lag.bytes as u64,
                        "bytes lost or made up"
                    );
                    unread += lag.bytes;
                    reading += 1;
                    publishers.insert(group.publisher);
                }
            }
            assert!(
                reading <= limits.max_groups,
                "peer {p} reads {reading} groups"
            );
            assert!(
                unread as u64 <= limits.max_bytes as u64 + peer.since_policy,
                "peer {p}: {unread} unread"
            );
            assert!(unread <= publishers.len() * max_publisher);
        }
        let mut held: BTreeMap<usize, usize> = BTreeMap::new();
        let mut open: BTreeMap<(usize, _), usize> = BTreeMap::new();
        for group in &self.groups {
            *held.entry(group.publisher).or_default() += group.buf.held_bytes();
            if !group.closed {
                *open.entry((group.publisher, group.key)).or_default() += 1;
            }
            for (i, &t) in group.targets.iter().enumerate() {
                let reading = group.buf.lag(ReaderId(i as u32)).is_some();
                // Media only to current members: a reader still reading is a present
                // participant of the publisher's meeting that holds the read.
                if reading {
                    let target = &self.peers[t];
                    assert!(
                        target.present && target.admitted,
                        "a group still reads for peer {t}, who left"
                    );
                    assert_eq!(target.meeting, self.peers[group.publisher].meeting);
                }
            }
        }
        for (p, bytes) in held {
            assert!(bytes <= max_publisher, "publisher {p} holds {bytes}");
        }
        for (key, n) in open {
            assert!(n <= MAX_OPEN_GROUPS_PER_LAYER, "{key:?}: {n} open groups");
        }
    }

    /// A client that read everything knows the meeting as it is.
    fn view_matches(&self, p: usize) {
        let peer = &self.peers[p];
        let model = &self.models[peer.meeting];
        let me = peer.id;
        assert_eq!(peer.view.me, Some(me));
        self.count(|c| c.views += 1);
        let others: BTreeSet<ParticipantId> =
            model.present.iter().copied().filter(|&q| q != me).collect();
        assert_eq!(peer.view.others, others, "peer {p}'s roster is stale");
        let tracks: BTreeSet<(ParticipantId, TrackId)> = model
            .tracks
            .keys()
            .copied()
            .filter(|(q, _)| *q != me)
            .collect();
        assert_eq!(peer.view.tracks, tracks, "peer {p}'s tracks are stale");
    }
}
