//! The control messages waiting to be written to one client, sans-IO: a bounded queue
//! that coalesces announcements the client has not seen yet.
//!
//! A `TrackUnpublished` whose `TrackPublished` is still queued cancels both: the
//! client never learns of a track that is already gone. Likewise a
//! `ParticipantLeft` cancels its still-queued `ParticipantJoined` (and that
//! participant's queued track announcements). So a participant that toggles its tracks
//! or reconnects in a loop costs a slow reader nothing that piles up, and whatever a
//! client finally reads describes the meeting as it is. Nothing else is reordered or
//! dropped: when the bound is reached the caller closes the client (`CONTROL_BACKLOG`).

use std::collections::{HashMap, VecDeque};

use orelay_proto::{ParticipantId, ServerMessage, TrackId};

/// The queue was full; the message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// One client's queued control messages. See the module docs.
#[derive(Debug)]
pub struct Outbox {
    /// Queued messages; `None` where one was cancelled.
    queue: VecDeque<Option<ServerMessage>>,
    /// Absolute position of `queue[0]`.
    base: u64,
    /// Messages queued and not cancelled.
    len: usize,
    limit: usize,
    /// Where each still-queued `TrackPublished` and `ParticipantJoined` sits.
    published: HashMap<(ParticipantId, TrackId), u64>,
    joined: HashMap<ParticipantId, u64>,
    coalesced: u64,
}

impl Outbox {
    /// An empty outbox holding at most `limit` messages.
    pub fn new(limit: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            base: 0,
            len: 0,
            limit,
            published: HashMap::new(),
            joined: HashMap::new(),
            coalesced: 0,
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages cancelled by coalescing so far (each cancelled pair counts two).
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    fn cancel(&mut self, at: u64) {
        if let Some(slot) = at
            .checked_sub(self.base)
            .and_then(|i| self.queue.get_mut(i as usize))
        {
            if slot.take().is_some() {
                self.len -= 1;
                self.coalesced += 1;
            }
        }
    }

    /// Queues `msg`, or cancels it against a queued announcement it undoes.
    pub fn push(&mut self, msg: ServerMessage) -> Result<(), Full> {
        match &msg {
            ServerMessage::TrackUnpublished { participant, track } => {
                if let Some(at) = self.published.remove(&(*participant, *track)) {
                    self.cancel(at);
                    self.coalesced += 1;
                    return Ok(());
                }
            }
            ServerMessage::ParticipantLeft { participant } => {
                if let Some(at) = self.joined.remove(participant) {
                    self.cancel(at);
                    let tracks: Vec<(ParticipantId, TrackId)> = self
                        .published
                        .keys()
                        .filter(|(p, _)| p == participant)
                        .copied()
                        .collect();
                    for key in tracks {
                        if let Some(at) = self.published.remove(&key) {
                            self.cancel(at);
                        }
                    }
                    self.coalesced += 1;
                    return Ok(());
                }
            }
            _ => {}
        }
        if self.len >= self.limit {
            return Err(Full);
        }
        let at = self.base + self.queue.len() as u64;
        match &msg {
            ServerMessage::TrackPublished { participant, info } => {
                self.published.insert((*participant, info.track), at);
            }
            ServerMessage::ParticipantJoined(p) => {
                self.joined.insert(p.participant, at);
            }
            _ => {}
        }
        self.queue.push_back(Some(msg));
        self.len += 1;
        Ok(())
    }

    /// Takes the next message to write.
    pub fn pop(&mut self) -> Option<ServerMessage> {
        while let Some(slot) = self.queue.pop_front() {
            let at = self.base;
            self.base += 1;
            let Some(msg) = slot else { continue };
            self.len -= 1;
            match &msg {
                ServerMessage::TrackPublished { participant, info }
                    if self.published.get(&(*participant, info.track)) == Some(&at) =>
                {
                    self.published.remove(&(*participant, info.track));
                }
                ServerMessage::ParticipantJoined(p)
                    if self.joined.get(&p.participant) == Some(&at) =>
                {
                    self.joined.remove(&p.participant);
                }
                _ => {}
            }
            return Some(msg);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use orelay_proto::{RosterParticipant, TrackInfo, TrackKind};

    use super::*;

    fn published(p: ParticipantId, track: TrackId) -> ServerMessage {
        ServerMessage::TrackPublished {
            participant: p,
            info: TrackInfo {
                track,
                kind: TrackKind::VIDEO,
                layers: 1,
                priority: 1,
            },
        }
    }

    fn unpublished(p: ParticipantId, track: TrackId) -> ServerMessage {
        ServerMessage::TrackUnpublished {
            participant: p,
            track,
        }
    }

    fn joined(p: ParticipantId) -> ServerMessage {
        ServerMessage::ParticipantJoined(RosterParticipant {
            participant: p,
            info: Bytes::new(),
            ..RosterParticipant::default()
        })
    }

    fn drain(o: &mut Outbox) -> Vec<ServerMessage> {
        std::iter::from_fn(|| o.pop()).collect()
    }

    #[test]
    fn a_toggling_publisher_costs_a_slow_reader_nothing_that_piles_up() {
        let mut o = Outbox::new(4);
        for _ in 0..10_000 {
            o.push(published(7, 1)).unwrap();
            o.push(unpublished(7, 1)).unwrap();
        }
        assert!(o.is_empty());
        assert_eq!(o.coalesced(), 20_000);
        o.push(published(7, 1)).unwrap();
        assert_eq!(drain(&mut o), [published(7, 1)]);
    }

    #[test]
    fn an_announcement_already_written_is_not_undone() {
        let mut o = Outbox::new(8);
        o.push(published(7, 1)).unwrap();
        assert_eq!(o.pop(), Some(published(7, 1)));
        o.push(unpublished(7, 1)).unwrap();
        o.push(published(7, 1)).unwrap();
        assert_eq!(drain(&mut o), [unpublished(7, 1), published(7, 1)]);
    }

    #[test]
    fn a_participant_who_left_before_being_announced_is_never_announced() {
        let mut o = Outbox::new(8);
        o.push(joined(3)).unwrap();
        o.push(joined(4)).unwrap();
        o.push(published(3, 1)).unwrap();
        o.push(published(3, 2)).unwrap();
        o.push(ServerMessage::ParticipantLeft { participant: 3 })
            .unwrap();
        assert_eq!(drain(&mut o), [joined(4)]);
    }

    #[test]
    fn the_bound_holds_and_order_is_kept() {
        let mut o = Outbox::new(2);
        o.push(joined(1)).unwrap();
        o.push(joined(2)).unwrap();
        assert_eq!(o.push(joined(3)), Err(Full));
        // Cancelling never needs room.
        o.push(ServerMessage::ParticipantLeft { participant: 2 })
            .unwrap();
        o.push(joined(3)).unwrap();
        assert_eq!(drain(&mut o), [joined(1), joined(3)]);
        assert_eq!(o.len(), 0);
    }
}
