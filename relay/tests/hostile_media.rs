//! Hostile clients at the control and media layer, each beside a legitimate meeting
//! on the same relay: a burst of 10,000 control messages, a publisher at ten times the
//! legitimate rate, a new group per object, streams opened and never finished, streams
//! reset right after opening (both directions), and a subscriber that subscribes to
//! everything and never reads. Each test proves its hostile path ran (a counter
//! moved), that the client was limited or closed with a specific code, that the
//! relay's byte gauge and the process RSS stayed within a stated bound, and that the
//! legitimate meeting kept every object within its latency budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::legit::{Legit, FPS, OBJECT};
use common::*;
use orelay_proto::{ClientMessage, ErrorCode, TrackInfo, TrackKind};

const GENEROUS: Duration = Duration::from_secs(30);
const RSS_BOUND_KIB: i64 = 64 * 1024;

/// The attacker's own track, distinct from the legitimate publisher's.
const HOSTILE: TrackInfo = TrackInfo {
    track: 9,
    kind: TrackKind::VIDEO,
    layers: 1,
    priority: 255,
};

/// Discards whatever media the relay sends this session, stopping each group.
fn discard_media(s: &orelay_client::Session) {
    let media = s.media();
    tokio::spawn(async move {
        while let Ok(g) = media.accept_group().await {
            g.stop();
        }
    });
}

/// Reads every group the relay sends this session to its end, as a viewer would.
fn read_media(s: &orelay_client::Session) {
    let media = s.media();
    tokio::spawn(async move {
        while let Ok(mut g) = media.accept_group().await {
            tokio::spawn(async move { while let Ok(Some(_)) = g.next_object().await {} });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_control_messages_in_a_burst_are_throttled() {
    let mut cfg = config();
    cfg.control_rate = 2_000;
    cfg.control_burst = 100;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    let peaks = Peaks::start(&relay.stats);
    let mut attacker = join_meeting(&client, relay.addr, 1, b"burst").await;
    discard_media(&attacker);
    let target = legit.publisher.participant();
    const MESSAGES: u32 = 10_000;
    let started = std::time::Instant::now();
    for i in 0..MESSAGES {
        let msg = match i % 4 {
            0 => ClientMessage::Publish(HOSTILE),
            1 => ClientMessage::Subscribe {
                publisher: target,
                track: 2,
                layer: 0,
            },
            2 => ClientMessage::Unsubscribe {
                publisher: target,
                track: 2,
            },
            _ => ClientMessage::Unpublish {
                track: HOSTILE.track,
            },
        };
        attacker.send(&msg).await.unwrap();
    }
    // The answer to one more subscription proves the relay worked through the burst.
    subscribe_confirmed(&mut attacker, target, 2).await;
    let took = started.elapsed();
    let s = relay.stats.snapshot();
    println!(
        "control burst: {MESSAGES} messages took {took:?} at 2000/s, {} throttled, {} \
         announcements coalesced, closes {:?}",
        s.control_throttled, s.control_coalesced, s.closes
    );
    // The rate held: past the burst allowance, 2000 a second at most.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(s.control_throttled >= 1_000, "{s:?}");
    assert!(s.closes.is_empty(), "throttled, not closed: {:?}", s.closes);
    assert!(attacker.media().connection().close_reason().is_none());
    peaks
        .stop()
        .assert_within("control burst", 512 * 1024, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("control burst");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_at_ten_times_the_rate_is_held_to_its_byte_budget() {
    const BUDGET: usize = 256 * 1024;
    let mut cfg = config();
    cfg.publisher_bytes = BUDGET;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    let mut flooder = join_meeting(&client, relay.addr, 1, b"flood").await;
    flooder.publish(HOSTILE).await.unwrap();
    // Its audience: one subscriber on a narrow window that never reads.
    let mut narrow = orelay_client::default_transport();
    narrow
        .receive_window((64u32 * 1024).into())
        .stream_receive_window((32u32 * 1024).into());
    let mut sink = join_meeting(&client_for(&relay, narrow), relay.addr, 1, b"sink").await;
    subscribe_confirmed(&mut sink, flooder.participant(), HOSTILE.track).await;
    let peaks = Peaks::start(&relay.stats);
    // Ten times the legitimate video rate, for three seconds: a 12 KB group per frame.
    let media = flooder.media();
    let start = tokio::time::Instant::now();
    let frames = FPS * 3;
    for f in 0..frames {
        let mut w = media.open_group(HOSTILE.track, f, 0, 255).await.unwrap();
        let h = w.next_header(0, OBJECT * 10);
        w.write(h, Bytes::from(vec![0xaa; OBJECT * 10]))
            .await
            .unwrap();
        w.finish();
        tokio::time::sleep_until(start + Duration::from_micros(1_000_000 * (f + 1) / FPS)).await;
    }
    let stats = relay.stats.clone();
    assert!(eventually(GENEROUS, || stats.snapshot().groups_dropped > 0).await);
    let s = stats.snapshot();
    let sent = frames * (OBJECT as u64) * 10;
    println!(
        "10x publisher: {sent} bytes in {frames} groups; {} groups ({} bytes) dropped for its \
         stalled subscriber",
        s.groups_dropped, s.bytes_dropped
    );
    assert!(flooder.media().connection().close_reason().is_none());
    peaks
        .stop()
        .assert_within("10x publisher", (BUDGET + 128 * 1024) as i64, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("10x publisher");
    drop(sink);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_per_object_is_held_to_four_open_groups() {
    let (relay, client) = start(config());
    let legit = Legit::start(&client, relay.addr, 1).await;
    let mut attacker = join_meeting(&client, relay.addr, 1, b"groups").await;
    attacker.publish(HOSTILE).await.unwrap();
    let mut reader = join_meeting(&client, relay.addr, 1, b"reader").await;
    subscribe_confirmed(&mut reader, attacker.participant(), HOSTILE.track).await;
    read_media(&reader);
    let peaks = Peaks::start(&relay.stats);
    let media = attacker.media();
    const GROUPS: u64 = 2_000;
    let mut opened = 0;
    let mut held = std::collections::VecDeque::new();
    for g in 0..GROUPS {
        // A stream credit comes back only once the relay let go of an old group.
        let Ok(Ok(mut w)) = tokio::time::timeout(
            Duration::from_secs(5),
            media.open_group(HOSTILE.track, g, 0, 255),
        )
        .await
        else {
            break;
        };
        let h = w.next_header(0, 100);
        let _ = w.write(h, Bytes::from_static(&[1; 100])).await;
        opened += 1;
        held.push_back(w); // never finished
                           // Keep far more than the relay's four, yet give stream credit back.
        if held.len() > 16 {
            held.pop_front();
        }
    }
    let stats = relay.stats.clone();
    // Every group ended: reset by the concurrent-group limit (4 per layer), dropped
    // for the reader by its policy (a newer group superseded it), or finished when the
    // attacker finally let go of it, 16 groups later.
    let limited = eventually(GENEROUS, || {
        let s = stats.snapshot();
        // A group that reaches the relay after four newer ones is refused as too old
        // (counted limited, not in): streams of one connection are accepted in any order.
        s.groups_in + s.groups_limited >= opened * 9 / 10 && s.reads_open <= 2
    })
    .await;
    let s = stats.snapshot();
    assert!(limited, "{opened} opened: {s:?}");
    println!(
        "group per object: {opened} groups opened ({} reached the relay), {} reset by the \
         concurrent-group limit, {} dropped for the reader as superseded",
        s.groups_in, s.groups_limited, s.groups_dropped
    );
    assert!(
        s.groups_limited + s.groups_dropped >= s.groups_in / 2,
        "{s:?}"
    );
    assert!(opened == GROUPS, "{opened}");
    let p = peaks.stop();
    // Streams towards the reader (open, or waiting for the reader's stream credit) are
    // not capped by count: the reader's drop policy ends superseded groups within
    // `max_group_delay_ms`, so they are bounded by the group rate times that delay,
    // and hold no bytes beyond the publisher's budget. Stated bound: 1,024.
    println!(
        "group per object: peak streams towards subscribers {}",
        p.reads_open
    );
    assert!(p.reads_open <= 1_024, "{p:?}");
    p.assert_within("group per object", 256 * 1024, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("group per object");
    drop(held);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_never_finished_are_reclaimed_at_the_idle_timeout() {
    let mut cfg = config();
    cfg.group_idle_timeout_ms = 500;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    let mut attacker = join_meeting(&client, relay.addr, 1, b"stalls").await;
    attacker.publish(HOSTILE).await.unwrap();
    let mut reader = join_meeting(&client, relay.addr, 1, b"reader").await;
    subscribe_confirmed(&mut reader, attacker.participant(), HOSTILE.track).await;
    discard_media(&reader);
    let peaks = Peaks::start(&relay.stats);
    let conn = attacker.media().connection().clone();
    // Three rounds of the relay's whole stream allowance (64): half stop inside the
    // group header, half after the header, inside an object. A round can open only
    // once the relay gave the previous round's streams up.
    const ROUNDS: u64 = 3;
    let mut stopped = 0;
    for round in 0..ROUNDS {
        let mut streams = Vec::new();
        for i in 0..64u64 {
            let mut s = tokio::time::timeout(GENEROUS, conn.open_uni())
                .await
                .unwrap()
                .unwrap();
            let mut bytes = bytes::BytesMut::new();
            orelay_proto::GroupHeader {
                publisher: attacker.participant(),
                track: HOSTILE.track,
                group: round * 64 + i,
                layer: 0,
                priority: 1,
            }
            .encode(&mut bytes);
            if i % 2 == 0 {
                bytes.truncate(1);
            } else {
                orelay_proto::media::ObjectHeader {
                    object: 0,
                    flags: 0,
                    length: 5_000,
                }
                .encode(&mut bytes);
                bytes.extend_from_slice(&[2; 100]);
            }
            s.write_all(&bytes).await.unwrap();
            streams.push(s);
        }
        for s in &mut streams {
            let code = tokio::time::timeout(GENEROUS, s.stopped()).await.unwrap();
            assert_eq!(code.ok().flatten(), Some(ErrorCode::GROUP_DROPPED.0.into()));
            stopped += 1;
        }
    }
    let stats = relay.stats.clone();
    assert!(
        eventually(GENEROUS, || {
            let s = stats.snapshot();
            // Stalled inside the header: idle; with a header: idle or, being a
            // newer group of the same layer, reset by the concurrent-group limit.
            s.groups_idle >= stopped / 2
                && s.groups_idle + s.groups_limited >= stopped
                && s.reads_open <= 2
        })
        .await,
        "{:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    println!(
        "never-finished streams: {} opened over {ROUNDS} rounds, {stopped} stopped with \
         GROUP_DROPPED, {} counted idle, {} reset by the concurrent-group limit",
        ROUNDS * 64,
        s.groups_idle,
        s.groups_limited
    );
    assert!(attacker.media().connection().close_reason().is_none());
    peaks
        .stop()
        .assert_within("never-finished streams", 256 * 1024, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("never-finished streams");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_right_after_opening_in_both_directions_leave_nothing_behind() {
    let (relay, client) = start(config());
    let legit = Legit::start(&client, relay.addr, 1).await;
    let mut attacker = join_meeting(&client, relay.addr, 1, b"resets").await;
    attacker.publish(HOSTILE).await.unwrap();
    // The attacker also subscribes to the legitimate video and stops every group at
    // once; a reader of the attacker's track sees its resets.
    subscribe_confirmed(&mut attacker, legit.publisher.participant(), 2).await;
    discard_media(&attacker);
    let mut reader = join_meeting(&client, relay.addr, 1, b"reader").await;
    subscribe_confirmed(&mut reader, attacker.participant(), HOSTILE.track).await;
    let cancelled = {
        let media = reader.media();
        tokio::spawn(async move {
            let mut cancelled = 0u64;
            while let Ok(Ok(mut g)) =
                tokio::time::timeout(Duration::from_secs(3), media.accept_group()).await
            {
                if g.next_object().await.is_err() {
                    cancelled += 1;
                }
            }
            cancelled
        })
    };
    let peaks = Peaks::start(&relay.stats);
    let before = relay.stats.snapshot();
    const RESETS: u64 = 1_000;
    let media = attacker.media();
    for g in 0..RESETS {
        let mut w = media.open_group(HOSTILE.track, g, 0, 255).await.unwrap();
        if g % 2 == 0 {
            // Half carry the start of an object, so the relay had forwarded something.
            let h = w.next_header(0, 4_000);
            let _ = w.write(h, Bytes::from_static(&[3; 64])).await;
        }
        w.reset();
    }
    let cancelled = tokio::time::timeout(GENEROUS, cancelled)
        .await
        .unwrap()
        .unwrap();
    let stats = relay.stats.clone();
    assert!(
        eventually(GENEROUS, || {
            let s = stats.snapshot();
            s.groups_in > before.groups_in && s.reads_open <= 2 && s.queued_bytes == 0
        })
        .await,
        "{:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    // The attacker opened RESETS streams through a window of 64: the relay accepted
    // and let go of all but the last 64 (no counter names a publisher's reset).
    println!(
        "resets: {RESETS} groups reset by their publisher ({} reached routing, the reader saw \
         {cancelled} cut short); the attacker stopped every legitimate group it was sent \
         ({} groups out in all)",
        s.groups_in - before.groups_in,
        s.groups_out
    );
    assert!(s.closes.is_empty(), "{:?}", s.closes);
    peaks
        .stop()
        .assert_within("resets", 256 * 1024, RSS_BOUND_KIB);
    legit.finish().await.assert_unhurt("resets");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_to_everything_that_never_reads_loses_groups_alone() {
    const QUEUE: usize = 128 * 1024;
    let mut cfg = config();
    cfg.queue_bytes = QUEUE;
    let (relay, client) = start(cfg);
    let legit = Legit::start(&client, relay.addr, 1).await;
    // A second publisher with big groups, so there is plenty not to read.
    let mut big = join_meeting(&client, relay.addr, 1, b"big").await;
    big.publish(HOSTILE).await.unwrap();
    let mut narrow = orelay_client::default_transport();
    narrow
        .receive_window((64u32 * 1024).into())
        .stream_receive_window((32u32 * 1024).into());
    let mut hog = join_meeting(&client_for(&relay, narrow), relay.addr, 1, b"hog").await;
    for (who, track) in [
        (legit.publisher.participant(), 1),
        (legit.publisher.participant(), 2),
        (big.participant(), HOSTILE.track),
    ] {
        subscribe_confirmed(&mut hog, who, track).await;
    }
    // From here on the hog reads nothing: no media, no control.
    let peaks = Peaks::start(&relay.stats);
    let media = big.media();
    let start = tokio::time::Instant::now();
    for g in 0..FPS * 3 {
        let mut w = media.open_group(HOSTILE.track, g, 0, 1).await.unwrap();
        let h = w.next_header(0, 16_000);
        w.write(h, Bytes::from(vec![4; 16_000])).await.unwrap();
        w.finish();
        tokio::time::sleep_until(start + Duration::from_micros(1_000_000 * (g + 1) / FPS)).await;
    }
    let stats = relay.stats.clone();
    assert!(eventually(GENEROUS, || stats.snapshot().groups_dropped > 0).await);
    let s = stats.snapshot();
    println!(
        "never-reading subscriber: {} groups ({} bytes) dropped for it, {} datagrams dropped, \
         closes {:?}",
        s.groups_dropped, s.bytes_dropped, s.datagrams_dropped, s.closes
    );
    peaks.stop().assert_within(
        "never-reading subscriber",
        (QUEUE + 3 * 64 * 1024) as i64,
        RSS_BOUND_KIB,
    );
    legit
        .finish()
        .await
        .assert_unhurt("never-reading subscriber");
    drop(hog);
    relay.shutdown().await;
}
