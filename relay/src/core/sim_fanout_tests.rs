//! Routing scenarios: the publish grace, audio datagrams on cached routes, and
//! publishers competing for a shared subscriber.

use std::time::Duration;

use orelay_proto::ErrorCode;

use crate::core::routing::MAX_OPEN_GROUPS_PER_LAYER;
use crate::core::PUBLISH_GRACE;

use super::*;
use crate::core::{Route, Transport};

const PASSCODE: &str = "correct horse battery";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn track(track: TrackId, kind: TrackKind) -> TrackInfo {
    TrackInfo {
        track,
        kind,
        layers: 1,
        priority: 1,
    }
}

fn closed_with(sim: &Sim, who: Who) -> Option<ErrorCode> {
    sim.client(who)
        .closed
        .as_ref()
        .map(SessionError::close_code)
}

#[test]
fn media_that_outruns_its_publish_waits_in_the_grace_then_routes() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [alice, bob] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    let camera = track(1, TrackKind::VIDEO);
    sim.start_video(alice, camera, Video::camera());
    sim.run_for(ms(300));
    // The first group's stream is held, not refused: the publisher may be in step soon.
    assert!(sim.groups[0].waiting);
    assert!(sim.groups[0].buf.is_none());
    assert!(!sim.groups[0].pending.is_empty());
    assert_eq!(closed_with(&sim, alice), None);

    sim.publish(alice, camera).unwrap();
    sim.subscribe(bob, alice, 1, 0).unwrap();
    sim.run_for(ms(2_000));

    assert_eq!(closed_with(&sim, alice), None);
    let sent = &sim.source(alice, 1, 0).sent;
    let got = &sim.client(bob).received;
    assert_eq!(got.len(), sent.len());
    // Group 0, read before the Publish, arrives whole and by reference.
    assert_eq!(got[0].end, Some(End::Finished));
    assert_eq!(got[0].chunks.len(), 1 + sent[0].chunks.len());
    for (rx, tx) in got[0].chunks[1..].iter().zip(&sent[0].chunks) {
        assert_eq!(rx.as_ptr(), tx.as_ptr());
    }
    assert!(sim.waiting.is_empty());
}

#[test]
fn media_for_a_track_never_published_closes_the_sender_when_the_grace_runs_out() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [alice, bob] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.start_video(alice, track(1, TrackKind::VIDEO), Video::camera());
    // The grace runs from the first unknown group, which arrived in the first step.
    let first = sim.now + TICK;
    while sim.now + TICK < first + PUBLISH_GRACE {
        sim.step();
    }
    assert_eq!(closed_with(&sim, alice), None, "closed within the grace");
    assert!(sim.client(alice).present);
    sim.step();

    assert_eq!(
        closed_with(&sim, alice),
        Some(ErrorCode::TRACK_NOT_PUBLISHED)
    );
    assert!(!sim.client(alice).present);
    let left = ServerMessage::ParticipantLeft {
        participant: alice.id,
    };
    assert_eq!(sim.inbox(bob).last(), Some(&left));
    assert!(sim.waiting.is_empty(), "the held groups are discarded");
    assert!(sim.groups.iter().all(|g| g.buf.is_none() && g.ended));
}

#[test]
fn audio_routes_by_datagram_and_each_track_caches_its_route_until_its_own_version_moves() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [alice, bob, carol, dave] = [(); 4].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish(alice, track(1, TrackKind::AUDIO)).unwrap();
    sim.publish(bob, track(2, TrackKind::AUDIO)).unwrap();
    for (s, p, t) in [(bob, alice, 1), (carol, alice, 1), (alice, bob, 2)] {
        sim.subscribe(s, p, t, 0).unwrap();
    }
    sim.start_audio(alice, 1);
    sim.start_audio(bob, 2);
    sim.run_for(ms(200));
    let lookups = |sim: &Sim| (sim.audio[0].lookups, sim.audio[1].lookups);
    assert_eq!(lookups(&sim), (1, 1), "one route per track, then the cache");
    let received = |sim: &Sim, who: Who, track: TrackId| {
        let c = sim.client(who);
        c.datagrams.iter().filter(|d| d.1.track == track).count()
    };
    let sent = sim.audio[0].sent.len();
    assert!(sent >= 10);
    assert_eq!(received(&sim, bob, 1), sent);
    assert_eq!(received(&sim, carol, 1), sent);
    assert_eq!(received(&sim, dave, 1), 0);
    for (got, want) in sim.client(carol).datagrams.iter().zip(&sim.audio[0].sent) {
        assert_eq!(got.2.as_ptr(), want.as_ptr(), "forwarded by reference");
    }
    assert!(
        sim.keyframe_requests(alice, 0).is_empty(),
        "audio has no keyframes"
    );

    // Dave subscribes to Alice's track: her route moves, Bob's does not.
    let generation =
        |sim: &Sim| match sim.meetings[m].route(bob.id, bob.id, 2, 0, Transport::Datagram) {
            Route::Deliver { generation, .. } => generation,
            other => panic!("Bob's audio does not route: {other:?}"),
        };
    let bobs = generation(&sim);
    sim.subscribe(dave, alice, 1, 0).unwrap();
    assert_eq!(generation(&sim), bobs);
    sim.run_for(ms(100));
    assert_eq!(lookups(&sim), (2, 1));
    assert!(received(&sim, dave, 1) >= 4);

    // Carol unsubscribes: she receives nothing more.
    sim.unsubscribe(carol, alice, 1);
    let carol_had = received(&sim, carol, 1);
    sim.run_for(ms(100));
    assert_eq!(lookups(&sim), (3, 1));
    assert_eq!(received(&sim, carol, 1), carol_had);

    // Bob leaves: Alice's route (he subscribed to her) moves; his datagrams stop.
    let bob_had = received(&sim, bob, 1);
    sim.leave(bob);
    sim.run_for(ms(100));
    assert_eq!(lookups(&sim).0, 4);
    assert_eq!(
        received(&sim, bob, 1),
        bob_had,
        "a datagram to a participant who left"
    );
    assert_eq!(received(&sim, alice, 2), sim.audio[1].sent.len());

    // The wrong transport for a track's kind is never valid.
    sim.publish(carol, track(3, TrackKind::VIDEO)).unwrap();
    sim.start_audio(carol, 3);
    sim.publish(dave, track(4, TrackKind::AUDIO)).unwrap();
    sim.start_video(dave, track(4, TrackKind::AUDIO), Video::camera());
    sim.run_for(ms(30));
    assert_eq!(
        closed_with(&sim, carol),
        Some(ErrorCode::TRACK_NOT_PUBLISHED)
    );
    assert_eq!(
        closed_with(&sim, dave),
        Some(ErrorCode::TRACK_NOT_PUBLISHED)
    );
}

/// A flooder publishing at priority 255 a 1 MB/s track whose groups it never finishes.
fn flood() -> Video {
    Video {
        fps: 1000,
        group_frames: 200,
        keyframe_bytes: 1_000,
        delta_bytes: 1_000,
        finishes_groups: false,
        priority: 255,
        ..Video::camera()
    }
}

#[test]
fn a_priority_255_flooder_is_held_to_its_own_budget_and_group_limit() {
    let run = |with_flooder: bool| {
        let mut sim = Sim::new(QueueLimits::default());
        sim.fanout.max_publisher_bytes = 256 * 1024;
        let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
        let [honest, flooder, shared, solo, sink] =
            [(); 5].map(|()| sim.join(m, PASSCODE).unwrap());
        sim.publish_video(honest, 1, 1, Video::camera()).unwrap();
        // `shared` reads enough for both; `sink` reads nothing of the flood.
        sim.set_rate(shared, 1_500);
        sim.set_rate(sink, STALLED);
        if with_flooder {
            sim.publish_video(flooder, 2, 1, flood()).unwrap();
            sim.subscribe(shared, flooder, 2, 0).unwrap();
            sim.subscribe(sink, flooder, 2, 0).unwrap();
        }
        for s in [shared, solo] {
            sim.subscribe(s, honest, 1, 0).unwrap();
        }
        sim.run_for(ms(3_000));
        (sim, [honest, flooder, shared, solo, sink])
    };
    let (alone, _) = run(false);
    let (sim, [honest, flooder, shared, solo, sink]) = run(true);

    // The flood cost the relay at most its own budget, checked after every step, and
    // was under pressure: its slowest reader was evicted from its groups.
    let budget = sim.fanout.max_publisher_bytes;
    assert!(sim.client(flooder).peak_held > budget / 2);
    // (With four groups open per layer, some of the sink's flood groups also go as
    // late and superseded; all of them are the flood's.)
    assert!(sim.drops_of(sink).all(|d| d.key.publisher == flooder.id));
    assert!(sim
        .drops_of(sink)
        .any(|d| d.cause == DropCause::GroupBudget));
    // Every other group: the older open group pins most of the budget, so the newer one
    // sheds its slowest reader; when the older one is reset, the next group has room.
    let evicted: Vec<u64> = sim.drops_of(sink).map(|d| d.group).collect();
    assert!(evicted.len() >= 6, "{evicted:?}");
    // Groups it left open beyond the concurrent-group limit were reset, oldest first.
    let flood_groups: Vec<&Group> = sim
        .groups
        .iter()
        .filter(|g| g.publisher == flooder)
        .collect();
    let reset = flood_groups
        .iter()
        .filter(|g| g.reset == Some(ResetCause::GroupLimit));
    let reset: Vec<u64> = reset.map(|g| g.seq).collect();
    assert!(reset.len() >= 12, "{reset:?}");
    assert_eq!(reset, (0..reset.len() as u64).collect::<Vec<_>>());
    assert!(sim.client(flooder).open_groups.len() <= MAX_OPEN_GROUPS_PER_LAYER);

    // None of it touched the honest publisher's groups: the same groups, whole, none
    // lost. The other subscriber sees no difference at all; the shared one, whose link
    // also carries the flood (1 of its 1.5 MB/s), finishes each group a few
    // milliseconds later (the keyframe burst shares the link), never later than that.
    let honest_groups = |sim: &Sim, who: Who| -> Vec<(u64, Option<End>, Option<Duration>)> {
        let got = sim.client(who).received.iter();
        let got = got.filter(|rx| rx.key.publisher == honest.id);
        let at = |rx: &Received| rx.finished_at.map(|t| t - sim.start);
        got.map(|rx| (rx.group, rx.end, at(rx))).collect()
    };
    assert_eq!(honest_groups(&sim, solo), honest_groups(&alone, solo));
    let (with, without) = (honest_groups(&sim, shared), honest_groups(&alone, shared));
    assert_eq!(with.len(), without.len());
    for (a, b) in with.iter().zip(&without) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        let delay = a.2.zip(b.2).map(|(a, b)| a.saturating_sub(b));
        assert!(
            delay.is_none_or(|d| d <= ms(10)),
            "group {} delayed {delay:?}",
            a.0
        );
    }
    for s in [shared, solo] {
        let lost = sim.drops_of(s).filter(|d| d.key.publisher == honest.id);
        assert_eq!(lost.count(), 0);
    }
}

/// Once a finding: stream priority was the publisher's own `TrackInfo::priority` (and
/// then group numbers compared across publishers), so a publisher claiming 255 and
/// sending faster than a shared subscriber can read took all of that subscriber's
/// bandwidth. Now the relay assigns every current group the same priority and the
/// writers share the link in turn: the honest camera, a tenth of the flood's rate,
/// gets through.
#[test]
fn a_priority_255_flooder_cannot_starve_a_shared_subscribers_other_tracks() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [honest, flooder, shared] = [(); 3].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish_video(honest, 1, 1, Video::camera()).unwrap();
    sim.publish_video(flooder, 2, 1, flood()).unwrap();
    // 400 KB/s: four times the camera, less than half the flood.
    sim.set_rate(shared, 400);
    sim.subscribe(shared, honest, 1, 0).unwrap();
    sim.subscribe(shared, flooder, 2, 0).unwrap();
    sim.run_for(ms(3_000));

    let got = sim.client(shared).received.iter();
    let whole = got.filter(|rx| rx.key.publisher == honest.id && rx.end == Some(End::Finished));
    assert!(
        whole.count() >= 2,
        "the camera's groups did not get through"
    );
}
