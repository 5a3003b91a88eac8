//! Admission and host controls of one meeting, sans-IO: the passcode (a salted hash,
//! compared in constant time), the waiting room, lock, removal with no rejoin, stopped
//! tracks, the screen-share policy, what each role may publish, and opaque key
//! messages, which only admitted participants send and receive.
//!
//! A waiting joiner is not a participant: it is absent from `participants`, so no
//! broadcast, roster, media route or key message can reach it by construction.

use std::collections::BTreeMap;

use bytes::Bytes;
use orelay_proto::control::JoinOutcome;
use orelay_proto::{
    ErrorCode, HostAction, ParticipantId, Recipient, RefuseReason, RejectReason, Role,
    RosterParticipant, ServerMessage, SharePolicy, TrackKind,
};

use super::meeting::{Action, Meeting, Participant};
use super::members::Waiter;
pub use super::members::{JoinRequest, Member, Moderation, Passcode, Placement, MAX_REMOVED};

impl Meeting {
    /// Admits a joiner, puts it in the waiting room, or refuses it. Checks, in order:
    /// the passcode (when required), removal, the lock, the size limit; then a joiner
    /// whose token asks for the waiting room, or whose identity a host removed, waits.
    pub fn join(&mut self, req: JoinRequest) -> Result<(Placement, Vec<Action>), RejectReason> {
        let JoinRequest {
            passcode,
            info,
            keys,
            grant,
        } = req;
        // Always compute, so a required and a skipped check take the same time.
        let passcode_ok = self.passcode.matches(&passcode);
        if grant.passcode_required && !passcode_ok {
            return Err(RejectReason::BAD_PASSCODE);
        }
        let m = &self.moderation;
        if m.removed_tokens.contains(&grant.token_id) {
            return Err(RejectReason::REMOVED);
        }
        let moderator = grant.role.can_moderate();
        if m.locked && !moderator {
            return Err(RejectReason::LOCKED);
        }
        if self.participants.len() + m.waiting.len() >= self.limits.max_participants {
            return Err(RejectReason::MEETING_FULL);
        }
        let id = self.next_participant;
        self.next_participant += 1;
        let member = Member::from(&grant);
        let must_wait =
            !moderator && (grant.waiting_room || m.removed_identities.contains(&grant.identity));
        if must_wait {
            let waiter = Waiter { info, keys, member };
            let mut actions = vec![Action::Send {
                to: id,
                msg: ServerMessage::JoinResult(JoinOutcome::Waiting { participant: id }),
            }];
            actions.extend(
                self.to_moderators(ServerMessage::WaitingJoined(RosterParticipant {
                    participant: id,
                    info: waiter.info.clone(),
                    role: waiter.member.role,
                    keys: waiter.keys.clone(),
                })),
            );
            self.moderation.waiting.insert(id, waiter);
            return Ok((Placement::Waiting(id), actions));
        }
        let actions = self.admit(id, info, keys, member);
        Ok((Placement::Admitted(id), actions))
    }

    /// Puts `id` in the meeting: it learns who is present, with which tracks, and the
    /// meeting's policy; everyone else learns about it; moderators see who waits.
    fn admit(
        &mut self,
        id: ParticipantId,
        info: Bytes,
        keys: Bytes,
        member: Member,
    ) -> Vec<Action> {
        let role = member.role;
        let send = |msg| Action::Send { to: id, msg };
        let mut actions = vec![send(ServerMessage::JoinResult(JoinOutcome::Admitted {
            participant: id,
            role,
        }))];
        actions.push(send(self.policy_message()));
        for (&other, p) in &self.participants {
            actions.push(send(ServerMessage::ParticipantJoined(
                p.roster_entry(other),
            )));
            for t in p.tracks.values() {
                actions.push(send(ServerMessage::TrackPublished {
                    participant: other,
                    info: t.info,
                }));
                if t.stopped {
                    actions.push(send(ServerMessage::TrackStopped {
                        participant: other,
                        track: t.info.track,
                        stopped: true,
                    }));
                }
            }
        }
        if role.can_moderate() {
            for (&w, waiter) in &self.moderation.waiting {
                actions.push(send(ServerMessage::WaitingJoined(RosterParticipant {
                    participant: w,
                    info: waiter.info.clone(),
                    role: waiter.member.role,
                    keys: waiter.keys.clone(),
                })));
            }
        }
        let newcomer = Participant {
            info,
            keys,
            member,
            tracks: BTreeMap::new(),
            subscriptions: Default::default(),
        };
        let announce = ServerMessage::ParticipantJoined(newcomer.roster_entry(id));
        actions.extend(self.broadcast(id, announce));
        self.participants.insert(id, newcomer);
        actions
    }

    /// A waiting joiner went away before a host decided.
    pub(super) fn leave_waiting_room(&mut self, id: ParticipantId) -> Vec<Action> {
        if self.moderation.waiting.remove(&id).is_none() {
            return Vec::new();
        }
        self.to_moderators(ServerMessage::WaitingLeft { participant: id })
    }

    /// Whether `id` is in the waiting room.
    pub fn is_waiting(&self, id: ParticipantId) -> bool {
        self.moderation.waiting.contains_key(&id)
    }

    /// Number of joiners in the waiting room.
    pub fn waiting_len(&self) -> usize {
        self.moderation.waiting.len()
    }

    /// Whether the meeting is locked.
    pub fn is_locked(&self) -> bool {
        self.moderation.locked
    }

    /// A participant's role, if it is in the meeting.
    pub fn role(&self, id: ParticipantId) -> Option<Role> {
        self.participants.get(&id).map(|p| p.member.role)
    }

    /// Whether a host stopped `id`'s `track` (it may not be published again until resumed).
    pub fn is_stopped(&self, id: ParticipantId, track: u64) -> bool {
        self.moderation.stopped.contains(&(id, track))
    }

    /// Forgets a departed participant's stopped tracks.
    pub(super) fn forget_stopped(&mut self, id: ParticipantId) {
        self.moderation.stopped.retain(|(p, _)| *p != id);
    }

    /// Whether `id` may publish a track of `kind` now.
    pub fn may_publish(&self, id: ParticipantId, kind: TrackKind) -> Result<(), RefuseReason> {
        let Some(p) = self.participants.get(&id) else {
            return Err(RefuseReason::NOT_ADMITTED);
        };
        let member = &p.member;
        if member.role == Role::Viewer {
            return Err(RefuseReason::ROLE_CANNOT_PUBLISH);
        }
        if !member.publish.contains(kind) {
            return Err(RefuseReason::KIND_NOT_GRANTED);
        }
        if kind == TrackKind::SCREEN
            && self.moderation.share == SharePolicy::HostOnly
            && !member.role.can_moderate()
        {
            return Err(RefuseReason::SCREEN_SHARE_HOST_ONLY);
        }
        Ok(())
    }

    /// Carries out a host action from `from`.
    pub fn host_action(
        &mut self,
        from: ParticipantId,
        action: HostAction,
    ) -> Result<Vec<Action>, RefuseReason> {
        let Some(role) = self.role(from) else {
            return Err(RefuseReason::NOT_ADMITTED);
        };
        if !role.can_moderate() {
            return Err(RefuseReason::NOT_HOST);
        }
        match action {
            HostAction::Admit(id) => self.admit_waiting(id),
            HostAction::AdmitAll => {
                let ids: Vec<_> = self.moderation.waiting.keys().copied().collect();
                Ok(ids
                    .into_iter()
                    .flat_map(|id| self.admit_waiting(id).unwrap_or_default())
                    .collect())
            }
            HostAction::Deny(id) => {
                if self.moderation.waiting.remove(&id).is_none() {
                    return Err(RefuseReason::NO_SUCH_PARTICIPANT);
                }
                let mut actions = vec![
                    Action::Send {
                        to: id,
                        msg: ServerMessage::JoinResult(JoinOutcome::Rejected {
                            reason: RejectReason::DENIED,
                        }),
                    },
                    Action::Close {
                        to: id,
                        code: ErrorCode::DENIED,
                    },
                ];
                actions.extend(self.to_moderators(ServerMessage::WaitingLeft { participant: id }));
                Ok(actions)
            }
            HostAction::Lock(locked) => {
                self.moderation.locked = locked;
                Ok(self.broadcast(0, self.policy_message()))
            }
            HostAction::Remove(id) => self.remove(from, id),
            HostAction::StopTrack { participant, track } => {
                self.set_stopped(participant, track, true)
            }
            HostAction::ResumeTrack { participant, track } => {
                self.set_stopped(participant, track, false)
            }
            HostAction::SetSharePolicy(share) => {
                self.moderation.share = share;
                let mut actions = self.broadcast(0, self.policy_message());
                if share == SharePolicy::HostOnly {
                    let offending: Vec<_> = self
                        .participants
                        .iter()
                        .filter(|(_, p)| !p.member.role.can_moderate())
                        .flat_map(|(&id, p)| {
                            p.tracks
                                .values()
                                .filter(|t| t.info.kind == TrackKind::SCREEN && !t.stopped)
                                .map(move |t| (id, t.info.track))
                        })
                        .collect();
                    for (id, track) in offending {
                        actions.extend(self.set_stopped(id, track, true).unwrap_or_default());
                    }
                }
                Ok(actions)
            }
        }
    }

    fn admit_waiting(&mut self, id: ParticipantId) -> Result<Vec<Action>, RefuseReason> {
        let Some(w) = self.moderation.waiting.remove(&id) else {
            return Err(RefuseReason::NO_SUCH_PARTICIPANT);
        };
        // A host letting a removed identity back in lifts its removal.
        self.moderation
            .removed_identities
            .remove(&w.member.identity);
        let mut actions = self.to_moderators(ServerMessage::WaitingLeft { participant: id });
        actions.extend(self.admit(id, w.info, w.keys, w.member));
        Ok(actions)
    }

    fn remove(
        &mut self,
        from: ParticipantId,
        id: ParticipantId,
    ) -> Result<Vec<Action>, RefuseReason> {
        if let Some(w) = self.moderation.waiting.get(&id) {
            let (token, identity) = (w.member.token_id.clone(), w.member.identity.clone());
            self.moderation.removed_tokens.insert(&token);
            self.moderation.removed_identities.insert(&identity);
            let mut actions = self.host_action(from, HostAction::Deny(id))?;
            if let Some(Action::Close { code, .. }) = actions.get_mut(1) {
                *code = ErrorCode::REMOVED;
            }
            return Ok(actions);
        }
        let Some(target) = self.participants.get(&id) else {
            return Err(RefuseReason::NO_SUCH_PARTICIPANT);
        };
        // A co-host cannot remove the host.
        if target.member.role == Role::Host && self.role(from) != Some(Role::Host) {
            return Err(RefuseReason::NOT_HOST);
        }
        let member = target.member.clone();
        self.moderation.removed_tokens.insert(&member.token_id);
        self.moderation.removed_identities.insert(&member.identity);
        let mut actions = vec![Action::Close {
            to: id,
            code: ErrorCode::REMOVED,
        }];
        actions.extend(self.leave(id));
        Ok(actions)
    }

    fn set_stopped(
        &mut self,
        participant: ParticipantId,
        track: u64,
        stopped: bool,
    ) -> Result<Vec<Action>, RefuseReason> {
        let Some(t) = self.track_mut(participant, track) else {
            // Resuming a stopped track that was unpublished lifts the stop, so its
            // publisher may publish that track again.
            if !stopped && self.moderation.stopped.remove(&(participant, track)) {
                return Ok(Vec::new());
            }
            return Err(RefuseReason::NO_SUCH_PARTICIPANT);
        };
        if t.stopped == stopped {
            return Ok(Vec::new());
        }
        t.stopped = stopped;
        t.version.bump();
        if stopped {
            self.moderation.stopped.insert((participant, track));
        } else {
            self.moderation.stopped.remove(&(participant, track));
        }
        Ok(self.broadcast(
            0,
            ServerMessage::TrackStopped {
                participant,
                track,
                stopped,
            },
        ))
    }

    /// Routes an opaque key message from `from` to one admitted participant or to all.
    pub fn key_message(
        &self,
        from: ParticipantId,
        to: Recipient,
        blob: Bytes,
    ) -> Result<Vec<Action>, RefuseReason> {
        if !self.participants.contains_key(&from) {
            return Err(RefuseReason::NOT_ADMITTED);
        }
        Ok(match to {
            Recipient::All => self.broadcast(
                from,
                ServerMessage::KeyMessage {
                    from,
                    to_all: true,
                    blob,
                },
            ),
            Recipient::One(p) if p != from && self.participants.contains_key(&p) => {
                vec![Action::Send {
                    to: p,
                    msg: ServerMessage::KeyMessage {
                        from,
                        to_all: false,
                        blob,
                    },
                }]
            }
            Recipient::One(_) => return Err(RefuseReason::NO_SUCH_PARTICIPANT),
        })
    }

    /// Sends the at-risk signal to the meeting's moderators.
    pub fn at_risk(&self, failed_attempts: u64) -> Vec<Action> {
        self.to_moderators(ServerMessage::AtRisk { failed_attempts })
    }

    fn policy_message(&self) -> ServerMessage {
        ServerMessage::MeetingPolicy {
            locked: self.moderation.locked,
            share: self.moderation.share,
        }
    }

    fn to_moderators(&self, msg: ServerMessage) -> Vec<Action> {
        self.participants
            .iter()
            .filter(|(_, p)| p.member.role.can_moderate())
            .map(|(&to, _)| Action::Send {
                to,
                msg: msg.clone(),
            })
            .collect()
    }
}

impl Participant {
    fn roster_entry(&self, id: ParticipantId) -> RosterParticipant {
        RosterParticipant {
            participant: id,
            info: self.info.clone(),
            role: self.member.role,
            keys: self.keys.clone(),
        }
    }
}
