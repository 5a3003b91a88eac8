//! Membership scenarios through [`Meeting`]: joining, leaving, publishing, subscribing
//! and simulcast layer choice, with the roster messages each participant is sent.

use std::time::Duration;

use orelay_proto::control::JoinOutcome;
use orelay_proto::limits::{MAX_SUBSCRIPTIONS_PER_PARTICIPANT, MAX_TRACKS_PER_PARTICIPANT};
use orelay_proto::{ErrorCode, RosterParticipant};

use super::*;
use crate::error::{PeerMisbehaved, RelayLimit};

const PASSCODE: &str = "correct horse battery";

fn meeting(sim: &mut Sim, max_participants: usize) -> usize {
    sim.add_meeting(PASSCODE, MeetingLimits { max_participants })
}

fn admitted(who: Who) -> ServerMessage {
    ServerMessage::JoinResult(JoinOutcome::Admitted {
        participant: who.id,
        role: orelay_proto::Role::Participant,
    })
}

/// What every newcomer learns right after its admission: the meeting is open to all.
fn policy() -> ServerMessage {
    ServerMessage::MeetingPolicy {
        locked: false,
        share: orelay_proto::SharePolicy::Anyone,
    }
}

fn joined(sim: &Sim, who: Who) -> ServerMessage {
    ServerMessage::ParticipantJoined(RosterParticipant {
        participant: who.id,
        info: sim.client(who).info.clone(),
        ..RosterParticipant::default()
    })
}

fn published(sim: &Sim, who: Who, track: TrackId) -> ServerMessage {
    let info = *sim.meetings[who.meeting].track(who.id, track).unwrap();
    ServerMessage::TrackPublished {
        participant: who.id,
        info,
    }
}

fn track(track: TrackId, kind: TrackKind) -> TrackInfo {
    TrackInfo {
        track,
        kind,
        layers: 1,
        priority: 1,
    }
}

fn subscribers(sim: &Sim, publisher: Who, track: TrackId, layer: u8) -> Vec<ParticipantId> {
    sim.meetings[publisher.meeting]
        .subscribers(publisher.id, track, layer)
        .collect()
}

fn ids(who: &[Who]) -> Vec<ParticipantId> {
    who.iter().map(|w| w.id).collect()
}

#[test]
fn a_newcomer_is_admitted_and_learns_who_is_present_and_what_they_publish() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 10);
    let alice = sim.join(m, PASSCODE).unwrap();
    sim.publish_video(alice, 1, 2, Video::camera()).unwrap();
    let bob = sim.join(m, PASSCODE).unwrap();
    let carol = sim.join(m, PASSCODE).unwrap();

    let camera = published(&sim, alice, 1);
    let (a, b, c) = (joined(&sim, alice), joined(&sim, bob), joined(&sim, carol));
    assert_eq!(
        sim.inbox(alice),
        [admitted(alice), policy(), b.clone(), c.clone()]
    );
    assert_eq!(
        sim.inbox(bob),
        [admitted(bob), policy(), a.clone(), camera.clone(), c]
    );
    assert_eq!(sim.inbox(carol), [admitted(carol), policy(), a, camera, b]);
}

#[test]
fn the_wrong_passcode_is_rejected_and_a_full_meeting_turns_newcomers_away() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 2);
    let alice = sim.join(m, PASSCODE).unwrap();
    assert_eq!(
        sim.join(m, "correct horse"),
        Err(RejectReason::BAD_PASSCODE)
    );
    assert_eq!(sim.join(m, ""), Err(RejectReason::BAD_PASSCODE));
    let bob = sim.join(m, PASSCODE).unwrap();
    assert_eq!(sim.join(m, PASSCODE), Err(RejectReason::MEETING_FULL));
    // A guesser learns nothing about the meeting from a full one.
    assert_eq!(sim.join(m, "guess"), Err(RejectReason::BAD_PASSCODE));
    // Nobody hears of rejected attempts.
    assert_eq!(
        sim.inbox(alice),
        [admitted(alice), policy(), joined(&sim, bob)]
    );
    assert_eq!(sim.meetings[m].len(), 2);

    sim.leave(bob);
    let carol = sim.join(m, PASSCODE).unwrap();
    assert_ne!(carol.id, bob.id, "participant IDs are not reused");
}

#[test]
fn leaving_ends_subscriptions_and_tells_everyone_else() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 10);
    let [alice, bob, carol] = [(); 3].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish_video(alice, 1, 1, Video::camera()).unwrap();
    sim.publish_video(bob, 2, 1, Video::camera()).unwrap();
    sim.subscribe(bob, alice, 1, 0).unwrap();
    sim.subscribe(carol, alice, 1, 0).unwrap();
    sim.subscribe(alice, bob, 2, 0).unwrap();
    sim.run_for(Duration::from_millis(1_500));
    assert_eq!(subscribers(&sim, alice, 1, 0), ids(&[bob, carol]));

    // Bob leaves halfway through a group he is both sending and receiving.
    sim.leave(bob);
    assert_eq!(subscribers(&sim, alice, 1, 0), ids(&[carol]));
    assert!(sim.meetings[m].track(bob.id, 2).is_none());
    assert!(subscribers(&sim, bob, 2, 0).is_empty());
    let left = ServerMessage::ParticipantLeft {
        participant: bob.id,
    };
    assert_eq!(sim.inbox(alice).last(), Some(&left));
    assert_eq!(sim.inbox(carol).last(), Some(&left));

    // Nothing reaches Bob any more; a late subscription to his track just ends.
    let bob_had = sim.client(bob).received.len();
    sim.run_for(Duration::from_millis(1_500));
    // Alice's copy of Bob's unfinished group was reset, and not as a policy drop.
    let from_bob: Vec<Option<End>> = sim
        .client(alice)
        .received
        .iter()
        .filter(|rx| rx.key.publisher == bob.id)
        .map(|rx| rx.end)
        .collect();
    assert_eq!(from_bob, [Some(End::Finished), Some(End::Reset)]);
    assert_eq!(sim.client(alice).dropped_groups, 0);
    assert_eq!(
        sim.client(alice).reset_bytes,
        0,
        "the fast reader had nothing queued"
    );

    assert_eq!(sim.client(bob).received.len(), bob_had);
    let sent = sim.source(alice, 1, 0).sent.len();
    assert_eq!(sim.client(carol).received.len(), sent);
    sim.subscribe(alice, bob, 2, 0).unwrap();
    let ended = ServerMessage::SubscriptionEnded {
        publisher: bob.id,
        track: 2,
    };
    assert_eq!(sim.inbox(alice).last(), Some(&ended));
}

#[test]
fn subscribing_to_a_track_nobody_publishes_ends_the_subscription() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 10);
    let [alice, bob] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish(bob, track(2, TrackKind::VIDEO)).unwrap();
    let stranger = Who { meeting: m, id: 77 };
    for (publisher, t) in [(bob, 9), (stranger, 2)] {
        sim.subscribe(alice, publisher, t, 0).unwrap();
        let ended = ServerMessage::SubscriptionEnded {
            publisher: publisher.id,
            track: t,
        };
        assert_eq!(sim.inbox(alice).last(), Some(&ended));
    }
    assert!(sim.keyframe_requests(bob, 0).is_empty());

    // A track that goes away takes its subscribers with it.
    sim.subscribe(alice, bob, 2, 0).unwrap();
    assert_eq!(sim.keyframe_requests(bob, 0).len(), 1);
    assert_eq!(subscribers(&sim, bob, 2, 0), ids(&[alice]));
    let actions = sim.meetings[m].unpublish(bob.id, 2).unwrap();
    sim.deliver(m, actions);
    let gone = ServerMessage::TrackUnpublished {
        participant: bob.id,
        track: 2,
    };
    assert_eq!(sim.inbox(alice).last(), Some(&gone));
    assert!(subscribers(&sim, bob, 2, 0).is_empty());
}

#[test]
fn simulcast_subscribers_receive_only_the_layer_they_chose() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 10);
    let [alice, bob, carol, dave] = [(); 4].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish_video(alice, 1, 3, Video::camera()).unwrap();
    sim.subscribe(bob, alice, 1, 0).unwrap();
    sim.subscribe(carol, alice, 1, 2).unwrap();
    sim.subscribe(dave, alice, 1, 9).unwrap();

    assert_eq!(subscribers(&sim, alice, 1, 0), ids(&[bob]));
    assert!(subscribers(&sim, alice, 1, 1).is_empty());
    assert_eq!(
        subscribers(&sim, alice, 1, 2),
        ids(&[carol, dave]),
        "layer 9 clamps to the top"
    );
    // One keyframe request per layer chosen; Dave's (clamped) one was throttled.
    assert_eq!(sim.keyframe_requests(alice, 0).len(), 1);
    assert_eq!(sim.keyframe_requests(alice, 2).len(), 1);
    assert!(sim.keyframe_requests(alice, 9).is_empty());

    sim.run_for(Duration::from_millis(2_500));
    for (who, layer) in [(bob, 0), (carol, 2), (dave, 2)] {
        let layers: Vec<u8> = sim
            .client(who)
            .received
            .iter()
            .map(|rx| rx.key.layer)
            .collect();
        assert_eq!(layers, [layer; 3], "{who:?}");
    }

    // Switching layers: the group in flight completes, then only the new layer arrives.
    sim.subscribe(bob, alice, 1, 1).unwrap();
    assert!(subscribers(&sim, alice, 1, 0).is_empty());
    assert_eq!(subscribers(&sim, alice, 1, 1), ids(&[bob]));
    sim.run_for(Duration::from_millis(1_200));
    let received = &sim.client(bob).received;
    let layers: Vec<u8> = received.iter().map(|rx| rx.key.layer).collect();
    assert_eq!(layers, [0, 0, 0, 1]);
    assert!(received[..3].iter().all(|rx| rx.end == Some(End::Finished)));

    // Audio has no layers to choose: every subscriber gets it, and no keyframe is asked for.
    sim.publish(alice, track(5, TrackKind::AUDIO)).unwrap();
    sim.subscribe(bob, alice, 5, 3).unwrap();
    sim.subscribe(carol, alice, 5, 0).unwrap();
    for layer in 0..3 {
        assert_eq!(subscribers(&sim, alice, 5, layer), ids(&[bob, carol]));
    }
    let asked = sim
        .inbox(alice)
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::KeyframeRequest { track: 5, .. }));
    assert_eq!(asked.count(), 0);
}

#[test]
fn publish_errors_close_the_session_with_the_right_code() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 10);
    let [alice, bob] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    let code = |r: Result<(), SessionError>| r.unwrap_err().close_code();

    sim.publish(alice, track(1, TrackKind::VIDEO)).unwrap();
    let duplicate = sim.publish(alice, track(1, TrackKind::AUDIO));
    assert_eq!(duplicate, Err(PeerMisbehaved::DuplicateTrack.into()));
    assert_eq!(code(duplicate), ErrorCode::UNEXPECTED_MESSAGE);

    for t in 2..=MAX_TRACKS_PER_PARTICIPANT as TrackId {
        sim.publish(alice, track(t, TrackKind::SCREEN)).unwrap();
    }
    let one_too_many = sim.publish(alice, track(100, TrackKind::VIDEO));
    assert_eq!(one_too_many, Err(RelayLimit::TooManyTracks.into()));
    assert_eq!(code(one_too_many), ErrorCode::LIMIT_EXCEEDED);

    let unknown = sim.publish(bob, track(1, TrackKind(7)));
    assert_eq!(unknown, Err(PeerMisbehaved::UnknownTrackKind(7).into()));
    assert_eq!(code(unknown), ErrorCode::PROTOCOL_VIOLATION);

    let unpublish = |sim: &mut Sim, t| sim.meetings[m].unpublish(bob.id, t).map(|_| ());
    assert_eq!(
        code(unpublish(&mut sim, 42)),
        ErrorCode::TRACK_NOT_PUBLISHED
    );

    sim.leave(bob);
    assert_eq!(
        code(sim.publish(bob, track(3, TrackKind::VIDEO))),
        ErrorCode::UNEXPECTED_MESSAGE
    );
    assert_eq!(
        code(sim.subscribe(bob, alice, 1, 0)),
        ErrorCode::UNEXPECTED_MESSAGE
    );
    // Bob heard of each track that was published, and of nothing that failed.
    let announced = sim
        .inbox(bob)
        .into_iter()
        .filter(|m| matches!(m, ServerMessage::TrackPublished { .. }));
    assert_eq!(announced.count(), MAX_TRACKS_PER_PARTICIPANT);
}

#[test]
fn a_participant_cannot_subscribe_without_bound() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = meeting(&mut sim, 100);
    let viewer = sim.join(m, PASSCODE).unwrap();
    let per_publisher = MAX_TRACKS_PER_PARTICIPANT;
    let mut tracks = Vec::new();
    for _ in 0..MAX_SUBSCRIPTIONS_PER_PARTICIPANT.div_ceil(per_publisher) + 1 {
        let publisher = sim.join(m, PASSCODE).unwrap();
        for t in 0..per_publisher as TrackId {
            sim.publish(publisher, track(t, TrackKind::AUDIO)).unwrap();
            tracks.push((publisher, t));
        }
    }
    let (allowed, rest) = tracks.split_at(MAX_SUBSCRIPTIONS_PER_PARTICIPANT);
    for &(publisher, t) in allowed {
        sim.subscribe(viewer, publisher, t, 0).unwrap();
    }
    let over = sim.subscribe(viewer, rest[0].0, rest[0].1, 0);
    assert_eq!(over, Err(RelayLimit::TooManySubscriptions.into()));
    assert_eq!(over.unwrap_err().close_code(), ErrorCode::LIMIT_EXCEEDED);
    // Renewing an existing subscription is not a new one.
    sim.subscribe(viewer, allowed[0].0, allowed[0].1, 0)
        .unwrap();
    // Leaving frees the subscriptions to the leaver's tracks.
    sim.leave(allowed[0].0);
    sim.subscribe(viewer, rest[0].0, rest[0].1, 0).unwrap();
}
