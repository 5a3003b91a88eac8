//! What one simulated client knows of its meeting, built only from the control
//! messages it has read, and checked for sense as it goes.

use std::collections::BTreeSet;

use orelay_proto::control::JoinOutcome;
use orelay_proto::{ParticipantId, ServerMessage, TrackId};

/// What one client knows of its meeting from the control messages it has read.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Its own ID, once `JoinResult` was read.
    pub(crate) me: Option<ParticipantId>,
    /// Everyone else it was told is present.
    pub(crate) others: BTreeSet<ParticipantId>,
    /// Tracks it was told are published.
    pub(crate) tracks: BTreeSet<(ParticipantId, TrackId)>,
}

impl View {
    /// Applies one message as a client would, asserting it makes sense in order: no
    /// announcement twice, nothing about someone never announced.
    pub(crate) fn read(&mut self, msg: &ServerMessage) {
        let Some(me) = self.me else {
            match msg {
                ServerMessage::JoinResult(JoinOutcome::Admitted { participant, .. }) => {
                    self.me = Some(*participant);
                }
                ServerMessage::JoinResult(JoinOutcome::Waiting { .. }) => {}
                other => panic!("{other:?} before admission"),
            }
            return;
        };
        match msg {
            ServerMessage::ParticipantJoined(r) => {
                assert!(
                    r.participant != me && self.others.insert(r.participant),
                    "{msg:?} twice"
                );
            }
            ServerMessage::ParticipantLeft { participant } => {
                assert!(self.others.remove(participant), "{msg:?} of a stranger");
                self.tracks.retain(|(p, _)| p != participant);
            }
            ServerMessage::TrackPublished { participant, info } => {
                assert!(self.others.contains(participant), "{msg:?} of a stranger");
                assert!(
                    self.tracks.insert((*participant, info.track)),
                    "{msg:?} twice"
                );
            }
            ServerMessage::TrackUnpublished { participant, track } => {
                assert!(
                    self.tracks.remove(&(*participant, *track)),
                    "{msg:?} unknown"
                );
            }
            ServerMessage::KeyframeRequest { .. }
            | ServerMessage::SubscriptionEnded { .. }
            | ServerMessage::KeyMessage { .. }
            | ServerMessage::WaitingJoined(_)
            | ServerMessage::WaitingLeft { .. }
            | ServerMessage::MeetingPolicy { .. }
            | ServerMessage::TrackStopped { .. }
            | ServerMessage::AtRisk { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
