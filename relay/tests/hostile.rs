//! One client trying to hurt others, over real QUIC on loopback: each finding of the
//! data-plane review as a regression test. Each test proves its hostile path ran (a
//! counter moved) before it asserts that nobody else noticed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use orelay_client::{ClientError, Session};
use orelay_proto::control::ControlMessage;
use orelay_proto::{ClientMessage, ErrorCode, TrackInfo, TrackKind};

const GENEROUS: Duration = Duration::from_secs(30);

/// Joins `n` participants to one meeting.
async fn meeting(
    client: &orelay_client::Client,
    addr: std::net::SocketAddr,
    m: u32,
    n: usize,
) -> Vec<Session> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            client
                .join(addr, &meeting_id(m), "pw", &[i as u8])
                .await
                .unwrap(),
        );
    }
    out
}

/// Sends one-object groups of `len` bytes on `track`, finishing each.
async fn send_groups(s: &Session, track: u64, groups: std::ops::Range<u64>, len: usize) {
    for g in groups {
        let mut w = s.media().open_group(track, g, 0, 1).await.unwrap();
        let h = w.next_header(0, len);
        w.write(h, payload(1, s.participant(), track, g, 0, len))
            .await
            .unwrap();
        w.finish();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_stopped_groups_leave_nothing_behind_and_disturb_no_one() {
    let (relay, client) = start(config());
    let mut people = meeting(&client, relay.addr, 1, 3).await;
    let (honest, stopper, viewer) = (people.remove(0), people.remove(0), people.remove(0));
    let (mut honest, mut stopper, mut viewer) = (honest, stopper, viewer);
    honest.publish(VIDEO).await.unwrap();
    await_tracks(&mut stopper, 1).await;
    await_tracks(&mut viewer, 1).await;
    subscribe_confirmed(&mut stopper, honest.participant(), VIDEO.track).await;
    subscribe_confirmed(&mut viewer, honest.participant(), VIDEO.track).await;
    // The honest publisher sends a group when the viewer finished the last one: a
    // real-time pace, so the concurrent-group limit never applies to it.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();

    const GROUPS: u64 = 2_000;
    let stopping = tokio::spawn({
        let media = stopper.media();
        async move {
            for _ in 0..GROUPS {
                // STOP_SENDING on every group, as a client that skips would.
                media.accept_group().await.unwrap().stop();
            }
        }
    });
    let watching = tokio::spawn({
        let media = viewer.media();
        async move {
            let mut complete = 0u64;
            for _ in 0..GROUPS {
                let mut g = media.accept_group().await.unwrap();
                let object = g.next_object().await.unwrap().unwrap();
                let expected = payload(1, g.header.publisher, VIDEO.track, g.header.group, 0, 600);
                assert_eq!(object.payload, expected);
                assert!(g.next_object().await.unwrap().is_none());
                complete += 1;
                let _ = done_tx.send(());
            }
            complete
        }
    });
    for g in 0..GROUPS {
        send_groups(&honest, VIDEO.track, g..g + 1, 600).await;
        done_rx.recv().await.unwrap();
    }
    tokio::time::timeout(GENEROUS, stopping)
        .await
        .unwrap()
        .unwrap();
    let complete = tokio::time::timeout(GENEROUS, watching)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(complete, GROUPS, "the honest viewer got every group whole");
    // The stopper's streams were really stopped and really forgotten.
    let stats = relay.stats.clone();
    assert!(
        eventually(GENEROUS, || {
            let s = stats.snapshot();
            s.reads_open == 0 && s.queued_bytes == 0
        })
        .await,
        "{:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    assert_eq!(s.groups_dropped, 0, "nobody lost a group to the policy");
    assert!(s.closes.is_empty(), "{:?}", s.closes);
    drop((honest, stopper, viewer));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_claiming_top_priority_cannot_evict_anothers_groups() {
    let mut cfg = config();
    cfg.publisher_bytes = 256 * 1024;
    let (relay, client) = start(cfg);
    let mut people = meeting(&client, relay.addr, 2, 3).await;
    let (mut honest, mut flooder, mut viewer) =
        (people.remove(0), people.remove(0), people.remove(0));
    // It claims the top priority in Publish and in every group header.
    let low = TrackInfo {
        track: 7,
        kind: TrackKind::SCREEN,
        layers: 1,
        priority: 255,
    };
    honest.publish(VIDEO).await.unwrap();
    flooder.publish(low).await.unwrap();
    let tracks = await_tracks(&mut viewer, 2).await;
    for (who, info) in tracks {
        subscribe_confirmed(&mut viewer, who, info.track).await;
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The viewer drains only the honest publisher's groups; the flood piles up.
    let honest_id = honest.participant();
    const HONEST_GROUPS: u64 = 30;
    let watching = tokio::spawn({
        let media = viewer.media();
        async move {
            let mut complete = 0;
            while complete < HONEST_GROUPS {
                let mut g = match media.accept_group().await {
                    Ok(g) => g,
                    // A flood group the relay reset before its header was read.
                    Err(ClientError::Reset(c)) if c == ErrorCode::GROUP_DROPPED => continue,
                    Err(e) => panic!("{e}"),
                };
                if g.header.publisher != honest_id {
                    // Keep the flood's streams unread: they only fill its own budget.
                    std::mem::forget(g);
                    continue;
                }
                let object = g.next_object().await.unwrap().unwrap();
                assert_eq!(object.payload.len(), 4_000);
                assert!(g.next_object().await.unwrap().is_none());
                complete += 1;
                let _ = done_tx.send(());
            }
            complete
        }
    });
    // The flood: many concurrent groups of the same layer, each header claiming 255.
    let flood = tokio::spawn({
        let media = flooder.media();
        async move {
            let mut open = Vec::new();
            for g in 0..40u64 {
                let Ok(mut w) = media.open_group(low.track, g, 0, 255).await else {
                    break;
                };
                let h = w.next_header(0, 32_000);
                if w.write(h, Bytes::from(vec![0u8; 32_000])).await.is_err() {
                    break;
                }
                open.push(w); // never finished
            }
            open.len()
        }
    });
    for g in 0..HONEST_GROUPS {
        send_groups(&honest, VIDEO.track, g..g + 1, 4_000).await;
        let done = done_rx.recv().await;
        assert!(
            done.is_some(),
            "viewer failed at group {g}: {:?}",
            relay.stats.snapshot()
        );
    }
    let complete = tokio::time::timeout(GENEROUS, watching)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(complete, HONEST_GROUPS);
    let opened = tokio::time::timeout(GENEROUS, flood)
        .await
        .unwrap()
        .unwrap();
    assert!(opened > 2, "the flood ran ({opened} groups)");
    let s = relay.stats.snapshot();
    assert!(
        s.groups_limited > 0,
        "the concurrent-group limit reset the flood: {s:?}"
    );
    assert!(s.queued_bytes <= 256 * 1024 + 64 * 1024, "{s:?}");
    drop((honest, flooder, viewer));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_toggling_client_is_throttled_and_no_honest_peer_is_closed() {
    let mut cfg = config();
    cfg.control_backlog = 64;
    cfg.control_rate = 1_000;
    // A small meeting, so the backlog a peer may build is small (64 + 4 x 9).
    cfg.max_participants = 4;
    let (relay, client) = start(cfg);
    let mut people = meeting(&client, relay.addr, 3, 3).await;
    let (mut toggler, mut honest, mut other) =
        (people.remove(0), people.remove(0), people.remove(0));
    // A peer that joins and then never reads its control stream, through a 1 KB
    // window: without coalescing, the toggling would overflow its backlog at once.
    let mut narrow = quinn::TransportConfig::default();
    narrow.stream_receive_window(1024u32.into());
    let sleeper = client_for(&relay, narrow)
        .connect(relay.addr)
        .await
        .unwrap();
    let (mut join_send, _never_read) = sleeper.open_bi().await.unwrap();
    let join = ClientMessage::Join {
        version: orelay_proto::PROTOCOL_VERSION,
        meeting_id: meeting_id(3),
        passcode: "pw".into(),
        info: Bytes::new(),
        credential: credential(&meeting_id(3)),
        keys: Bytes::new(),
    };
    join_send.write_all(&join.to_bytes()).await.unwrap();
    let stats = relay.stats.clone();
    assert!(eventually(GENEROUS, || stats.snapshot().participants_active == 4).await);
    const PAIRS: u32 = 2_000;
    let toggling = tokio::spawn(async move {
        for _ in 0..PAIRS {
            toggler.send(&ClientMessage::Publish(VIDEO)).await.unwrap();
            toggler
                .send(&ClientMessage::Unpublish { track: VIDEO.track })
                .await
                .unwrap();
        }
        toggler
    });
    // The honest peers read their control streams normally.
    let throttled = eventually(GENEROUS, || {
        let s = stats.snapshot();
        s.control_throttled > 100 && s.control_coalesced > 1_000
    })
    .await;
    assert!(
        throttled,
        "the toggler was never throttled, or nothing coalesced: {:?}",
        stats.snapshot()
    );
    for peer in [&mut honest, &mut other] {
        let mut seen = 0;
        while seen < 50 {
            let event = tokio::time::timeout(GENEROUS, peer.next_event())
                .await
                .unwrap();
            event.unwrap().unwrap();
            seen += 1;
        }
    }
    assert!(honest.media().connection().close_reason().is_none());
    assert!(other.media().connection().close_reason().is_none());
    assert!(
        sleeper.close_reason().is_none(),
        "{:?}",
        sleeper.close_reason()
    );
    assert!(
        stats.snapshot().closes.is_empty(),
        "{:?}",
        stats.snapshot().closes
    );
    toggling.abort();
    drop((honest, other, sleeper));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_never_joining_connections_from_one_address_does_not_stop_real_joins() {
    let mut cfg = config();
    cfg.max_unjoined = 50;
    cfg.max_unjoined_per_source = 50;
    cfg.max_connections = 2_000;
    let (relay, client) = start(cfg);
    // The flood renews its connections as they are closed, from the same address as
    // the legitimate client (one NAT), bounded in count and time.
    let flood = tokio::spawn({
        let client = client.clone();
        let addr = relay.addr;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut opened = 0u32;
            let mut held = Vec::new();
            while opened < 1_000 && Instant::now() < deadline {
                // A handshake the relay abandoned (evicted) ends only at the client's
                // idle timeout: do not wait for it.
                let attempt = tokio::time::timeout(Duration::from_secs(2), client.connect(addr));
                if let Ok(Ok(conn)) = attempt.await {
                    held.push(conn);
                }
                opened += 1;
            }
            (opened, held.len())
        }
    });
    let stats = relay.stats.clone();
    assert!(eventually(GENEROUS, || stats.snapshot().unjoined_evicted > 0).await);
    let mut joins = Vec::new();
    for i in 0..20u8 {
        let started = Instant::now();
        let s = client.join(relay.addr, &meeting_id(4), "pw", &[i]).await;
        assert!(s.is_ok(), "join {i} failed during the flood: {:?}", s.err());
        joins.push((s.unwrap(), started.elapsed()));
    }
    let (opened, _) = tokio::time::timeout(GENEROUS, flood)
        .await
        .unwrap()
        .unwrap();
    assert!(opened > 50);
    let s = stats.snapshot();
    assert!(s.unjoined_evicted > 0, "{s:?}");
    assert_eq!(s.joins_admitted, 20);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_group_is_reclaimed_after_its_idle_timeout() {
    let mut cfg = config();
    cfg.group_idle_timeout_ms = 300;
    let (relay, client) = start(cfg);
    let mut people = meeting(&client, relay.addr, 5, 2).await;
    let (mut publisher, mut viewer) = (people.remove(0), people.remove(0));
    publisher.publish(VIDEO).await.unwrap();
    await_tracks(&mut viewer, 1).await;
    subscribe_confirmed(&mut viewer, publisher.participant(), VIDEO.track).await;
    let mut w = publisher
        .media()
        .open_group(VIDEO.track, 0, 0, 1)
        .await
        .unwrap();
    let h = w.next_header(0, 1_000);
    w.write(h, Bytes::from(vec![1u8; 1_000])).await.unwrap();
    // ...and nothing more: no FIN, no reset.
    let mut g = tokio::time::timeout(GENEROUS, viewer.media().accept_group())
        .await
        .unwrap()
        .unwrap();
    assert!(g.next_object().await.unwrap().is_some());
    let end = tokio::time::timeout(GENEROUS, g.next_object())
        .await
        .unwrap();
    assert!(
        matches!(end, Err(ClientError::Reset(c)) if c == ErrorCode::GROUP_DROPPED),
        "{end:?}"
    );
    let stats = relay.stats.clone();
    assert!(
        eventually(GENEROUS, || {
            let s = stats.snapshot();
            s.groups_idle == 1 && s.queued_bytes == 0 && s.reads_open == 0
        })
        .await
    );
    drop((publisher, viewer, w));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_gets_every_join_in_or_an_explicit_answer() {
    let mut cfg = config();
    cfg.max_join_rate = 500;
    // One address, as a load test or an office behind one NAT: the waiting caps are
    // for floods, and this is a storm.
    cfg.max_unjoined = 2_000;
    cfg.max_unjoined_per_source = 2_000;
    cfg.max_connections = 4_000;
    let (relay, client) = start(cfg);
    const JOINS: usize = 1_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..JOINS {
        let client = client.clone();
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let m = meeting_id(100 + (i / 10) as u32);
            let r = client.join(addr, &m, "pw", b"s").await;
            (r, t.elapsed())
        }));
        if i % 100 == 99 {
            // Spread over about half a second, as a top-of-the-hour spike.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut admitted = Vec::new();
    let mut overloaded = 0;
    let mut sessions = Vec::new();
    for t in tasks {
        let (r, took) = tokio::time::timeout(GENEROUS, t).await.unwrap().unwrap();
        match r {
            Ok(s) => {
                admitted.push(took);
                sessions.push(s);
            }
            Err(ClientError::Overloaded { retry_after_ms }) => {
                assert!(retry_after_ms > 0);
                overloaded += 1;
            }
            Err(e) => panic!("a join neither got in nor got an answer: {e}"),
        }
    }
    admitted.sort();
    let p99 = admitted[admitted.len() * 99 / 100 - 1];
    println!(
        "join storm: {JOINS} joins in {:?}: {} admitted (p99 {p99:?}), {overloaded} overloaded",
        started.elapsed(),
        admitted.len()
    );
    assert_eq!(admitted.len() + overloaded, JOINS);
    assert!(
        admitted.len() >= 500,
        "the burst allowance is one second's worth"
    );
    assert_eq!(relay.stats.snapshot().joins_overloaded, overloaded as u64);
    drop(sessions);
    relay.shutdown().await;
}
