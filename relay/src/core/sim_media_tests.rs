//! Media scenarios: fan-out, slow and stalled readers, skipping to the newest group,
//! keyframe requests, the group limit, and isolation between meetings.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::core::meeting::KEYFRAME_REQUEST_INTERVAL;

const PASSCODE: &str = "correct horse battery";

/// Milliseconds, for scenario scripts.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A meeting with one camera publisher (track 1, one layer) and a subscriber per rate.
fn camera_meeting(sim: &mut Sim, video: Video, rates: &[usize]) -> (Who, Vec<Who>) {
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let publisher = sim.join(m, PASSCODE).unwrap();
    sim.publish_video(publisher, 1, 1, video).unwrap();
    let subscribers = rates
        .iter()
        .map(|&rate| {
            let s = sim.join(m, PASSCODE).unwrap();
            sim.set_rate(s, rate);
            sim.subscribe(s, publisher, 1, 0).unwrap();
            s
        })
        .collect();
    (publisher, subscribers)
}

/// Every group `who` received is what its publisher sent, in order and by reference:
/// whole if it finished, a prefix if it was dropped or is still open.
fn assert_faithful(sim: &Sim, who: Who) {
    for rx in &sim.client(who).received {
        let source = sim
            .sources
            .iter()
            .find(|s| s.who.meeting == who.meeting && s.key() == rx.key)
            .expect("a group from outside the meeting");
        let sent = &source.sent[rx.group as usize];
        assert_eq!(sent.group, rx.group);
        let expected: Vec<&Bytes> = std::iter::once(&sent.header).chain(&sent.chunks).collect();
        if rx.end == Some(End::Finished) {
            assert_eq!(
                rx.chunks.len(),
                expected.len(),
                "{who:?} group {}",
                rx.group
            );
        }
        assert!(rx.chunks.len() <= expected.len());
        for (got, want) in rx.chunks.iter().zip(expected) {
            assert_eq!(
                got.as_ptr(),
                want.as_ptr(),
                "{who:?} got a copy or another chunk"
            );
            assert_eq!(got.len(), want.len());
        }
    }
}

/// What a client received, by content, for comparing runs.
fn contents(sim: &Sim, who: Who) -> Vec<(u64, Option<End>, Vec<u8>)> {
    let client = sim.client(who);
    let group = |rx: &Received| rx.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    client
        .received
        .iter()
        .map(|rx| (rx.group, rx.end, group(rx)))
        .collect()
}

#[test]
fn fast_subscribers_get_every_chunk_in_order_sharing_the_publishers_bytes() {
    let mut sim = Sim::new(QueueLimits::default());
    let (publisher, subscribers) = camera_meeting(&mut sim, Video::camera(), &[FAST; 4]);
    sim.run_for(ms(3_500));
    sim.stop_publishing();
    sim.run_for(ms(10));

    let sent = &sim.source(publisher, 1, 0).sent;
    assert_eq!(sent.len(), 4, "a group per second, the last one cut short");
    for &s in &subscribers {
        let client = sim.client(s);
        let groups: Vec<u64> = client.received.iter().map(|rx| rx.group).collect();
        assert_eq!(groups, [0, 1, 2, 3]);
        assert!(client
            .received
            .iter()
            .all(|rx| rx.end == Some(End::Finished)));
        assert_faithful(&sim, s);
        assert_eq!((client.dropped_groups, client.dropped_bytes), (0, 0));
        assert_eq!(sim.unread(s), 0);
        assert!(client.open.is_empty());
    }
    assert!(sim.drops.is_empty());
}

#[test]
fn stalled_subscriber_stays_within_its_budget_and_fast_ones_do_not_notice() {
    let limits = QueueLimits {
        max_bytes: 64 * 1024,
        ..QueueLimits::default()
    };
    let run = |rates: &[usize]| {
        let mut sim = Sim::new(limits);
        let (_, subscribers) = camera_meeting(&mut sim, Video::camera(), rates);
        sim.run_for(ms(5_000));
        sim.stop_publishing();
        sim.run_for(ms(10));
        (sim, subscribers)
    };
    let (alone, fast) = run(&[FAST, FAST, FAST]);
    let (sim, all) = run(&[FAST, FAST, FAST, STALLED, 40]);
    assert_eq!(&all[..3], &fast[..]);

    for &s in &fast {
        assert_eq!(contents(&sim, s), contents(&alone, s), "{s:?} noticed");
        assert_eq!(sim.client(s).received.len(), sim.sources[0].sent.len());
        let client = sim.client(s);
        assert_eq!((client.dropped_groups, client.dropped_bytes), (0, 0));
        assert_faithful(&sim, s);
    }
    for &s in &all[3..] {
        let client = sim.client(s);
        // The budget (plus what one policy interval adds) was checked after every
        // step; it was also really under pressure.
        let slack = limits.max_bytes as u64 + client.peak_since_policy;
        assert!(client.peak_unread as u64 <= slack);
        assert!(
            client.peak_unread > limits.max_bytes * 3 / 4,
            "{s:?} never filled"
        );
        let drops: Vec<&DropEvent> = sim.drops_of(s).collect();
        assert!(!drops.is_empty());
        assert_eq!(client.dropped_groups, drops.len() as u64);
        let policy_bytes: u64 = drops.iter().map(|d| d.bytes as u64).sum();
        assert_eq!(client.dropped_bytes, policy_bytes);
        assert_faithful(&sim, s);
    }
    let stalled = sim.client(all[3]);
    // Every full group overflowed the budget; the last, one keyframe long, still waits.
    let (last, full) = stalled.received.split_last().unwrap();
    assert!(full.iter().all(|rx| rx.end == Some(End::Reset)));
    assert_eq!(last.end, None);
    assert_eq!(stalled.received.len(), sim.sources[0].sent.len());
    // Chunks that arrive after a drop are never the dropped reader's: with one shared
    // buffer they cost it nothing, so every lost byte is one the policy counted.
    let lost: u64 = stalled
        .received
        .iter()
        .map(|rx| rx.offered - rx.written)
        .sum();
    let unread = sim.unread(all[3]) as u64;
    assert_eq!(stalled.dropped_bytes + unread, lost);
}

#[test]
fn a_subscriber_that_falls_behind_skips_superseded_groups_and_keeps_the_newest() {
    let mut sim = Sim::new(QueueLimits::default());
    // About 94 KB/s arrive; `late` reads 60 KB/s with room to spare but a 500 ms
    // patience for superseded groups; `tight` reads 40 KB/s with a small budget and
    // all the patience in the world.
    let (publisher, subscribers) = camera_meeting(&mut sim, Video::camera(), &[60, 40]);
    let (late, tight) = (subscribers[0], subscribers[1]);
    sim.set_queue_limits(
        tight,
        QueueLimits {
            max_bytes: 150_000,
            max_group_delay: Duration::from_secs(60),
            ..QueueLimits::default()
        },
    );
    sim.run_for(ms(7_500));

    for s in [late, tight] {
        let drops: Vec<&DropEvent> = sim.drops_of(s).collect();
        assert!(drops.len() >= 3, "{s:?} kept up after all");
        for d in &drops {
            assert!(d.group < d.newest, "{s:?} dropped its newest group: {d:?}");
            assert!(!d.need_keyframe);
        }
        let client = sim.client(s);
        let newest = client.received.last().unwrap();
        let newest_sent = sim.source(publisher, 1, 0).sent.len() as u64 - 1;
        let on_newest = (newest.group, newest.end) == (newest_sent, None);
        assert!(on_newest, "{s:?} is not reading the newest group");
        assert!(!newest.chunks.is_empty());
        // After each skip the client reads on in a newer group.
        for d in &drops {
            assert!(client
                .received
                .iter()
                .any(|rx| rx.group > d.group && rx.end != Some(End::Reset)));
        }
        assert_faithful(&sim, s);
    }
    assert!(
        sim.client(late).peak_unread < QueueLimits::default().max_bytes / 2,
        "late, not over budget"
    );
    assert!(
        sim.client(tight).peak_unread > 140_000,
        "over budget, not late"
    );
    let after_subscribing = |at: &Instant| *at > sim.start;
    assert!(!sim
        .keyframe_requests(publisher, 0)
        .iter()
        .any(after_subscribing));
}

#[test]
fn losing_the_newest_group_asks_the_publisher_for_a_keyframe_once_per_interval_per_layer() {
    let mut sim = Sim::new(QueueLimits {
        max_bytes: 32 * 1024,
        ..QueueLimits::default()
    });
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let publisher = sim.join(m, PASSCODE).unwrap();
    let video = Video {
        answers_keyframe_requests: true,
        ..Video::camera()
    };
    sim.publish_video(publisher, 1, 2, video).unwrap();
    let mut subscribers = Vec::new();
    for (layer, rate) in [(0, STALLED), (0, STALLED), (1, STALLED), (0, FAST)] {
        let s = sim.join(m, PASSCODE).unwrap();
        sim.set_rate(s, rate);
        sim.subscribe(s, publisher, 1, layer).unwrap();
        subscribers.push(s);
    }
    let (a, b, c, fast) = (
        subscribers[0],
        subscribers[1],
        subscribers[2],
        subscribers[3],
    );
    sim.run_for(ms(3_000));

    for layer in 0..2 {
        let requests = sim.keyframe_requests(publisher, layer);
        for pair in requests.windows(2) {
            assert!(
                pair[1] - pair[0] >= KEYFRAME_REQUEST_INTERVAL,
                "layer {layer} asked too often"
            );
        }
        let lost_newest: Vec<&DropEvent> = sim
            .drops
            .iter()
            .filter(|d| d.need_keyframe && d.key.layer == layer)
            .collect();
        for d in &lost_newest {
            assert_eq!(d.group, d.newest);
            let covered = requests
                .iter()
                .any(|&r| r <= d.at && d.at - r < KEYFRAME_REQUEST_INTERVAL);
            assert!(
                covered,
                "a lost newest group at {:?} asked for nothing",
                d.at - sim.start
            );
        }
        assert!(
            requests.len() >= 3,
            "layer {layer}: {} requests",
            requests.len()
        );
        assert!(
            lost_newest.len() > requests.len(),
            "throttling was never needed"
        );
    }
    // Two stalled subscribers of layer 0 lose each group at the same moment: one request.
    let at_once = |x: &DropEvent, y: &DropEvent| x.at == y.at && x.group == y.group;
    let (drops_a, drops_b): (Vec<_>, Vec<_>) =
        (sim.drops_of(a).collect(), sim.drops_of(b).collect());
    assert_eq!(drops_a.len(), drops_b.len());
    assert!(drops_a.iter().zip(&drops_b).all(|(x, y)| at_once(x, y)));
    // `c` loses layer 1 at those same moments, and layer 1 is asked for then too: the
    // throttle is per layer, not per track.
    assert!(sim.drops_of(c).any(|d| d.need_keyframe));
    let layer_0 = sim.keyframe_requests(publisher, 0);
    let layer_1 = sim.keyframe_requests(publisher, 1);
    assert_eq!(layer_0, layer_1);

    // The publisher answered with new groups, and the fast subscriber got all of them.
    let sent = sim.source(publisher, 1, 0).sent.len();
    assert!(sent > 3, "{sent} groups in 3 s: no more than scheduled");
    assert_eq!(sim.client(fast).received.len(), sent);
    assert!(sim.drops_of(fast).next().is_none());
    assert_faithful(&sim, fast);

    // Once `a` reads again it receives whole groups, starting with a keyframe.
    sim.set_rate(a, FAST);
    let resumed = sim.client(a).received.len();
    sim.run_for(ms(1_000));
    let recovered = &sim.client(a).received[resumed..];
    let whole = recovered.iter().find(|rx| rx.end == Some(End::Finished));
    let (first, _) = ObjectHeader::decode(&whole.unwrap().chunks[1]).unwrap();
    assert_eq!((first.object, first.flags), (0, FLAG_KEYFRAME));
    assert_faithful(&sim, a);
}

#[test]
fn the_group_limit_drops_only_the_oldest_groups_and_asks_for_no_keyframe() {
    let limits = |max_groups| QueueLimits {
        max_groups,
        max_group_delay: Duration::from_secs(60),
        ..QueueLimits::default()
    };
    let mut sim = Sim::new(limits(3));
    let m = sim.add_meeting(PASSCODE, MeetingLimits::default());
    let [camera, screen, viewer, narrow] = [(); 4].map(|()| sim.join(m, PASSCODE).unwrap());
    sim.set_queue_limits(narrow, limits(2));
    sim.publish_video(camera, 1, 1, Video::camera()).unwrap();
    for s in [viewer, narrow] {
        sim.set_rate(s, STALLED);
        sim.subscribe(s, camera, 1, 0).unwrap();
    }
    sim.run_for(ms(500));
    sim.publish_video(screen, 2, 1, Video::camera()).unwrap();
    for s in [viewer, narrow] {
        sim.subscribe(s, screen, 2, 0).unwrap();
    }
    // New groups open alternately: camera at 0, 1, 2 s; screen at 0.5, 1.5 s.
    sim.run_for(ms(1_600));

    let drops = |who| -> Vec<(TrackId, u64, bool)> {
        sim.drops_of(who)
            .map(|d| (d.key.track, d.group, d.need_keyframe))
            .collect()
    };
    // Three slots: each new group past the third drops the oldest one, nothing more.
    assert_eq!(drops(viewer), [(1, 0, false), (2, 0, false)]);
    assert_eq!(sim.client(viewer).open.len(), 3);
    // Two slots: the group dropped is the one the new group supersedes, so no keyframe.
    assert_eq!(drops(narrow), [(1, 0, false), (2, 0, false), (1, 1, false)]);
    assert_eq!(sim.client(narrow).open.len(), 2);
    let subscribed = [sim.start, sim.start + ms(500)];
    assert!(sim
        .keyframe_requests(camera, 0)
        .iter()
        .all(|&at| at == subscribed[0]));
    assert!(sim
        .keyframe_requests(screen, 0)
        .iter()
        .all(|&at| at == subscribed[1]));
}

#[test]
fn meetings_are_isolated() {
    let mut sim = Sim::new(QueueLimits {
        max_bytes: 48 * 1024,
        ..QueueLimits::default()
    });
    // The same participant IDs publishing the same track ID in both meetings.
    let (p0, subs0) = camera_meeting(&mut sim, Video::camera(), &[FAST, STALLED, 30]);
    let small = Video {
        keyframe_bytes: 6_000,
        delta_bytes: 600,
        ..Video::camera()
    };
    let (p1, subs1) = camera_meeting(&mut sim, small, &[FAST, FAST]);
    assert_eq!((p0.id, subs0[0].id), (p1.id, subs1[0].id));
    sim.run_for(ms(4_000));

    for (meeting, subscribers) in [(0, &subs0), (1, &subs1)] {
        let own: HashSet<*const u8> = sim
            .sources
            .iter()
            .filter(|s| s.who.meeting == meeting)
            .flat_map(|s| &s.sent)
            .flat_map(|g| std::iter::once(&g.header).chain(&g.chunks))
            .map(|b| b.as_ptr())
            .collect();
        for &s in subscribers {
            let client = sim.client(s);
            assert!(!client.received.is_empty());
            for chunk in client.received.iter().flat_map(|rx| &rx.chunks) {
                assert!(
                    own.contains(&chunk.as_ptr()),
                    "{s:?} received another meeting's bytes"
                );
            }
            assert_faithful(&sim, s);
        }
    }
    assert!(sim.drops.iter().all(|d| d.who.meeting == 0));
    assert!(sim.drops_of(subs0[1]).any(|d| d.need_keyframe));
    // Meeting 1's publisher heard only its own subscribers' requests, when they subscribed.
    assert!(sim
        .keyframe_requests(p1, 0)
        .iter()
        .all(|&at| at == sim.start));
    assert!(sim.keyframe_requests(p0, 0).len() > 1);
    for &s in &subs1 {
        let sent = sim.source(p1, 1, 0).sent.len();
        assert_eq!(sim.client(s).received.len(), sent);
        let client = sim.client(s);
        assert_eq!((client.dropped_groups, client.dropped_bytes), (0, 0));
    }
}
