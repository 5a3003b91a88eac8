//! Resource scenarios: every per-subscriber and per-group resource is released on every
//! exit path — a stopped or failed stream, a publisher gone quiet, a subscriber gone.

use std::time::Duration;

use super::*;

const PASSCODE: &str = "correct horse battery";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Bytes a group buffer charges for one chunk besides its length.
const OVERHEAD: usize = crate::core::group::CHUNK_OVERHEAD;

#[test]
fn two_thousand_stopped_streams_pin_nothing_and_leave_the_publishers_groups_undisturbed() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let publisher = sim.join(m, PASSCODE).unwrap();
    // A group per millisecond: one 2 KB keyframe in two chunks.
    let tiny_groups = Video {
        fps: 1000,
        group_frames: 1,
        keyframe_bytes: 2_000,
        ..Video::camera()
    };
    sim.publish_video(publisher, 1, 1, tiny_groups).unwrap();
    let [honest, reader, stalled] = [(); 3].map(|()| sim.join(m, PASSCODE).unwrap());
    for s in [honest, reader, stalled] {
        sim.subscribe(s, publisher, 1, 0).unwrap();
    }
    // `reader` takes each header, then sends STOP_SENDING; `stalled` reads nothing and
    // its every stream fails at once.
    sim.client_mut(reader).stop_after = Some(1);
    sim.client_mut(stalled).stop_after = Some(0);
    sim.set_rate(stalled, STALLED);
    sim.run_for(ms(2_000));
    sim.stop_publishing();
    sim.run_for(ms(10));

    let sent = sim.source(publisher, 1, 0).sent.len();
    assert!(sent >= 2_000, "{sent} groups");
    for s in [reader, stalled] {
        let c = sim.client(s);
        assert_eq!(c.stopped_groups, sent as u64, "{s:?}");
        assert!(c.received.iter().all(|rx| rx.end == Some(End::Stopped)));
        assert!(c.open.is_empty());
        assert_eq!(c.pushed, c.written + c.released_bytes);
    }
    assert!(sim
        .client(reader)
        .received
        .iter()
        .all(|rx| rx.chunks.len() == 1));
    assert_eq!(sim.client(stalled).written, 0);
    // Nothing stopped ever looked like a backlog: no drops, no keyframe requests.
    assert!(sim.drops.is_empty());
    assert_eq!(
        sim.keyframe_requests(publisher, 0).len(),
        1,
        "the subscribe's"
    );
    // The honest subscriber got every group, whole.
    let c = sim.client(honest);
    assert_eq!(c.received.len(), sent);
    assert!(c.received.iter().all(|rx| rx.end == Some(End::Finished)));
    // Never more was held than the groups pushed in one step (two in the first step,
    // whose clock starts a tick late): no stopped reader pinned a byte.
    let group = sim.source(publisher, 1, 0).sent[1].header.len() + 2_005 + 3 * OVERHEAD;
    let peak = sim.client(publisher).peak_held;
    assert!(peak <= 2 * group, "{peak} bytes held at the peak");
    assert_eq!(sim.held_by(publisher), 0);
    assert!(sim.client(publisher).open_groups.is_empty());
    assert!(sim
        .groups
        .iter()
        .all(|g| g.buf.as_ref().is_none_or(|b| b.active_readers() == 0)));
}

#[test]
fn a_group_whose_publisher_goes_quiet_is_reset_after_the_idle_timeout() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let publisher = sim.join(m, PASSCODE).unwrap();
    sim.publish_video(publisher, 1, 1, Video::camera()).unwrap();
    let [fast, stalled] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.set_rate(stalled, STALLED);
    for s in [fast, stalled] {
        sim.subscribe(s, publisher, 1, 0).unwrap();
    }
    sim.run_for(ms(500));
    // The publisher stops mid-group without finishing or resetting the stream.
    sim.pause(publisher, 1);
    let quiet_since = sim.groups[0].buf.as_ref().unwrap().last_push();
    let timeout = sim.fanout.group_idle_timeout;
    let pinned = sim.unread(stalled);
    assert!(pinned > 40_000, "the stalled reader pins {pinned} bytes");
    while sim.now < quiet_since + timeout - TICK {
        sim.step();
    }
    assert!(sim.groups[0].reset.is_none(), "reset before the timeout");
    assert_eq!(sim.unread(stalled), pinned);
    assert!(sim.held_by(publisher) > pinned);
    sim.run_for(ms(2));

    assert_eq!(sim.groups[0].reset, Some(ResetCause::Idle));
    assert_eq!(sim.held_by(publisher), 0);
    assert!(sim.client(publisher).open_groups.is_empty());
    for s in [fast, stalled] {
        let c = sim.client(s);
        assert_eq!(c.received.len(), 1);
        assert_eq!(c.received[0].end, Some(End::Reset), "{s:?}");
        assert!(c.open.is_empty());
        assert_eq!(c.dropped_groups, 0, "a reset is not a policy drop");
    }
    assert_eq!(sim.client(stalled).reset_bytes, pinned as u64);
    assert_eq!(sim.client(fast).reset_bytes, 0);
}

#[test]
fn a_subscriber_that_leaves_mid_group_releases_its_readers_and_receives_nothing_more() {
    let mut sim = Sim::new(QueueLimits::default());
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [camera, screen] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.publish_video(camera, 1, 1, Video::camera()).unwrap();
    sim.publish_video(screen, 2, 1, Video::camera()).unwrap();
    let [leaver, stays] = [(); 2].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.set_rate(leaver, 40);
    for s in [leaver, stays] {
        sim.subscribe(s, camera, 1, 0).unwrap();
        sim.subscribe(s, screen, 2, 0).unwrap();
    }
    sim.run_for(ms(1_500));
    let open = sim.client(leaver).open.clone();
    assert!(open.len() >= 2, "mid-group in both tracks");
    let unread = sim.unread(leaver);
    assert!(unread > 0);
    assert!(sim.held_by(camera) + sim.held_by(screen) >= unread);

    sim.leave(leaver);
    let c = sim.client(leaver);
    assert!(open
        .iter()
        .all(|&k| c.received[k].end == Some(End::Stopped)));
    assert_eq!(c.released_bytes, unread as u64);
    // Nothing is held on its account: `stays` keeps up, so nothing is held at all.
    assert_eq!(sim.held_by(camera) + sim.held_by(screen), 0);
    for &k in &open {
        let rx = &c.received[k];
        let readers = sim.groups[rx.slot].buf.as_ref().unwrap().active_readers();
        assert_eq!(readers, 1, "only `stays` still reads group {}", rx.group);
    }
    let had: Vec<usize> = c.received.iter().map(|rx| rx.chunks.len()).collect();
    sim.run_for(ms(1_500));

    let c = sim.client(leaver);
    let now: Vec<usize> = c.received.iter().map(|rx| rx.chunks.len()).collect();
    assert_eq!(now, had, "a chunk reached a participant who left");
    for (publisher, track) in [(camera, 1), (screen, 2)] {
        let sent = sim.source(publisher, track, 0).sent.len();
        let got = sim.client(stays).received.iter();
        let got = got.filter(|rx| rx.key.track == track && rx.end == Some(End::Finished));
        assert_eq!(got.count(), sent - 1, "every group but the one in flight");
    }
}
