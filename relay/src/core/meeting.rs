//! One meeting's membership, published tracks and subscriptions, sans-IO.
//!
//! A [`Meeting`] is fed events (join, publish, subscribe, ...) and the current time,
//! and answers with [`Action`]s for the I/O layer to carry out. It owns no sockets and
//! reads no clock, and it never sees a media payload: forwarding looks up subscribers
//! here once per group, then moves opaque bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orelay_proto::limits::{MAX_SUBSCRIPTIONS_PER_PARTICIPANT, MAX_TRACKS_PER_PARTICIPANT};
use orelay_proto::{ErrorCode, ParticipantId, RefuseReason, ServerMessage, TrackId, TrackInfo};

use super::members::{Member, Moderation, Passcode};
use crate::error::{PeerMisbehaved, RelayLimit, SessionError};

/// The fewest milliseconds between two keyframe requests forwarded for one track layer:
/// a burst of subscribers joining or skipping costs the publisher one keyframe, not one each.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

/// Something the I/O layer must do on the meeting's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a control message to a participant.
    Send {
        /// The recipient.
        to: ParticipantId,
        /// The message.
        msg: ServerMessage,
    },
    /// Close a participant's connection (removed by a host, or denied entry).
    Close {
        /// Whose connection.
        to: ParticipantId,
        /// The close code.
        code: ErrorCode,
    },
}

/// Per-meeting limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeetingLimits {
    /// Most participants at once; further joins get `MEETING_FULL`.
    pub max_participants: usize,
}

impl Default for MeetingLimits {
    fn default() -> Self {
        Self {
            max_participants: 1000,
        }
    }
}

/// A track's route generation: moves whenever the set of its subscribers changes or
/// the track goes away, so a publisher's task can cache who receives its audio and
/// check one atomic per datagram instead of taking the meeting lock. Per track, so a
/// change elsewhere in the meeting invalidates nothing here.
#[derive(Debug, Clone, Default)]
pub struct RouteVersion(Arc<AtomicU64>);

impl RouteVersion {
    /// The current generation.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// How media reaches the relay, which must match the track's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A unidirectional group stream (video, screen).
    Stream,
    /// A datagram (audio).
    Datagram,
}

/// Who receives a track layer's media. See [`Meeting::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Deliver to these participants.
    Deliver {
        /// The subscribers of that layer.
        targets: Vec<ParticipantId>,
        /// The track's route generation handle: `targets` is stale once its value
        /// differs from `generation`.
        version: RouteVersion,
        /// `version`'s value when `targets` was read.
        generation: u64,
    },
    /// The track is not (yet) published: see [`super::routing::PublishGrace`].
    Unknown,
    /// Never valid: someone else's ID, a layer the track does not have, or the wrong
    /// transport for its kind.
    Invalid,
}

impl PartialEq for RouteVersion {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RouteVersion {}

/// A track as the meeting knows it.
#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) info: TrackInfo,
    pub(super) version: RouteVersion,
    /// Subscriber → chosen layer.
    pub(super) subscribers: BTreeMap<ParticipantId, u8>,
    /// When a keyframe was last requested, per layer.
    last_keyframe_request: [Option<Instant>; orelay_proto::limits::MAX_LAYERS as usize],
    /// A host stopped forwarding it: its media is read and dropped.
    pub(super) stopped: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Participant {
    pub(super) info: Bytes,
    pub(super) keys: Bytes,
    pub(super) member: Member,
    pub(super) tracks: BTreeMap<TrackId, Track>,
    /// (publisher, track) pairs this participant receives.
    pub(super) subscriptions: BTreeSet<(ParticipantId, TrackId)>,
}

/// One meeting's state. See the module docs.
#[derive(Debug)]
pub struct Meeting {
    pub(super) passcode: Passcode,
    pub(super) limits: MeetingLimits,
    pub(super) participants: BTreeMap<ParticipantId, Participant>,
    pub(super) next_participant: ParticipantId,
    pub(super) moderation: Moderation,
}

impl Meeting {
    /// A new, empty meeting whose passcode is `passcode` (set by the join that
    /// creates it, which must be a host's), kept only as a salted hash.
    pub fn new(passcode: &str, limits: MeetingLimits) -> Self {
        Self {
            passcode: Passcode::new(passcode),
            limits,
            participants: BTreeMap::new(),
            next_participant: 1,
            moderation: Moderation::default(),
        }
    }

    /// Number of participants present.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether nobody is present (the meeting can be removed).
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty() && self.waiting_len() == 0
    }

    /// Removes a participant (or a waiting joiner) with its tracks and subscriptions,
    /// telling everyone else.
    pub fn leave(&mut self, id: ParticipantId) -> Vec<Action> {
        let Some(gone) = self.participants.remove(&id) else {
            return self.leave_waiting_room(id);
        };
        self.forget_stopped(id);
        for (publisher, track) in gone.subscriptions {
            if let Some(t) = self.track_mut(publisher, track) {
                t.subscribers.remove(&id);
                t.version.bump();
            }
        }
        for track in gone.tracks.into_values() {
            track.version.bump();
            for subscriber in track.subscribers.into_keys() {
                if let Some(p) = self.participants.get_mut(&subscriber) {
                    p.subscriptions.remove(&(id, track.info.track));
                }
            }
        }
        self.broadcast(id, ServerMessage::ParticipantLeft { participant: id })
    }

    /// Starts publishing a track and announces it.
    pub fn publish(
        &mut self,
        id: ParticipantId,
        info: TrackInfo,
    ) -> Result<Vec<Action>, SessionError> {
        if !info.kind.is_known() {
            return Err(PeerMisbehaved::UnknownTrackKind(info.kind.0).into());
        }
        // The decoder already refuses these; the core does not rely on it.
        if info.layers == 0 || info.layers > orelay_proto::limits::MAX_LAYERS {
            return Err(PeerMisbehaved::UnexpectedMessage("track layers out of range").into());
        }
        self.may_publish(id, info.kind)
            .map_err(SessionError::Refused)?;
        if self.is_stopped(id, info.track) {
            return Err(SessionError::Refused(RefuseReason::STOPPED_BY_HOST));
        }
        let p = self.participant_mut(id)?;
        if p.tracks.contains_key(&info.track) {
            return Err(PeerMisbehaved::DuplicateTrack.into());
        }
        if p.tracks.len() >= MAX_TRACKS_PER_PARTICIPANT {
            return Err(RelayLimit::TooManyTracks.into());
        }
        p.tracks.insert(
            info.track,
            Track {
                info,
                version: RouteVersion::default(),
                subscribers: BTreeMap::new(),
                last_keyframe_request: Default::default(),
                stopped: false,
            },
        );
        Ok(self.broadcast(
            id,
            ServerMessage::TrackPublished {
                participant: id,
                info,
            },
        ))
    }

    /// Stops publishing a track; its subscribers are told it is gone.
    pub fn unpublish(
        &mut self,
        id: ParticipantId,
        track: TrackId,
    ) -> Result<Vec<Action>, SessionError> {
        let p = self.participant_mut(id)?;
        let Some(removed) = p.tracks.remove(&track) else {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        };
        removed.version.bump();
        for subscriber in removed.subscribers.keys() {
            if let Some(s) = self.participants.get_mut(subscriber) {
                s.subscriptions.remove(&(id, track));
            }
        }
        Ok(self.broadcast(
            id,
            ServerMessage::TrackUnpublished {
                participant: id,
                track,
            },
        ))
    }

    /// Subscribes `id` to one layer of a track. A track that does not exist (it may
    /// have just gone) is answered with `SubscriptionEnded`, not an error. For stream
    /// tracks the publisher is asked for a keyframe so the newcomer starts soon.
    pub fn subscribe(
        &mut self,
        id: ParticipantId,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
        now: Instant,
    ) -> Result<Vec<Action>, SessionError> {
        let subscriber = self.participant_mut(id)?;
        let is_new = !subscriber.subscriptions.contains(&(publisher, track));
        if is_new && subscriber.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_PARTICIPANT {
            return Err(RelayLimit::TooManySubscriptions.into());
        }
        let Some(t) = self.track_mut(publisher, track) else {
            return Ok(vec![Action::Send {
                to: id,
                msg: ServerMessage::SubscriptionEnded { publisher, track },
            }]);
        };
        // Ask for more than the publisher sends and you get its best layer.
        let layer = layer.min(t.info.layers - 1);
        if t.subscribers.insert(id, layer) != Some(layer) {
            t.version.bump();
        }
        let wants_keyframe = t.info.kind.uses_streams();
        if let Some(s) = self.participants.get_mut(&id) {
            s.subscriptions.insert((publisher, track));
        }
        Ok(if wants_keyframe {
            self.request_keyframe(publisher, track, layer, now)
        } else {
            Vec::new()
        })
    }

    /// Ends a subscription (a no-op if there was none).
    pub fn unsubscribe(
        &mut self,
        id: ParticipantId,
        publisher: ParticipantId,
        track: TrackId,
    ) -> Result<(), SessionError> {
        self.participant_mut(id)?
            .subscriptions
            .remove(&(publisher, track));
        if let Some(t) = self.track_mut(publisher, track) {
            if t.subscribers.remove(&id).is_some() {
                t.version.bump();
            }
        }
        Ok(())
    }

    /// Asks a publisher for a keyframe on a track layer, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`]. Unknown tracks are ignored (the request may race
    /// with an unpublish), and so are layers the track does not have and audio tracks,
    /// which have no keyframes: a publisher is only ever asked about what it sends.
    pub fn request_keyframe(
        &mut self,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
        now: Instant,
    ) -> Vec<Action> {
        let Some(t) = self.track_mut(publisher, track) else {
            return Vec::new();
        };
        if layer >= t.info.layers || !t.info.kind.uses_streams() {
            return Vec::new();
        }
        let Some(last) = t.last_keyframe_request.get_mut(usize::from(layer)) else {
            return Vec::new();
        };
        if last.is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL) {
            return Vec::new();
        }
        *last = Some(now);
        vec![Action::Send {
            to: publisher,
            msg: ServerMessage::KeyframeRequest { track, layer },
        }]
    }

    /// The published track, if `publisher` publishes `track`.
    pub fn track(&self, publisher: ParticipantId, track: TrackId) -> Option<&TrackInfo> {
        self.participants
            .get(&publisher)?
            .tracks
            .get(&track)
            .map(|t| &t.info)
    }

    /// Who receives media that `sender` sent on `transport` for `layer` of
    /// `publisher`'s `track`. The one routing decision of the relay: the shell calls it
    /// once per group, and once per route change for audio.
    pub fn route(
        &self,
        sender: ParticipantId,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
        transport: Transport,
    ) -> Route {
        if sender != publisher || !self.participants.contains_key(&sender) {
            return Route::Invalid;
        }
        let Some(t) = self.participants[&sender].tracks.get(&track) else {
            return Route::Unknown;
        };
        let kind_ok = match transport {
            Transport::Stream => t.info.kind.uses_streams() && layer < t.info.layers,
            Transport::Datagram => t.info.kind == orelay_proto::TrackKind::AUDIO,
        };
        if !kind_ok {
            return Route::Invalid;
        }
        Route::Deliver {
            // A stopped track's media is read and dropped: the one mute a relay can enforce.
            targets: if t.stopped {
                Vec::new()
            } else {
                self.subscribers(publisher, track, layer).collect()
            },
            version: t.version.clone(),
            generation: t.version.get(),
        }
    }

    /// The participants that receive `layer` of a track (all of them for audio).
    pub fn subscribers(
        &self,
        publisher: ParticipantId,
        track: TrackId,
        layer: u8,
    ) -> impl Iterator<Item = ParticipantId> + '_ {
        let t = self
            .participants
            .get(&publisher)
            .and_then(|p| p.tracks.get(&track));
        let audio = t.is_some_and(|t| !t.info.kind.uses_streams());
        t.into_iter()
            .flat_map(|t| t.subscribers.iter())
            .filter(move |(_, &l)| audio || l == layer)
            .map(|(&id, _)| id)
    }

    pub(super) fn participant_mut(
        &mut self,
        id: ParticipantId,
    ) -> Result<&mut Participant, SessionError> {
        self.participants
            .get_mut(&id)
            .ok_or(PeerMisbehaved::UnexpectedMessage("participant not in meeting").into())
    }

    pub(super) fn track_mut(
        &mut self,
        publisher: ParticipantId,
        track: TrackId,
    ) -> Option<&mut Track> {
        self.participants
            .get_mut(&publisher)?
            .tracks
            .get_mut(&track)
    }

    pub(super) fn broadcast(&self, except: ParticipantId, msg: ServerMessage) -> Vec<Action> {
        self.participants
            .keys()
            .filter(|&&p| p != except)
            .map(|&to| Action::Send {
                to,
                msg: msg.clone(),
            })
            .collect()
    }
}
