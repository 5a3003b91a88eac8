//! End-to-end encryption over real QUIC through the relay: five participants decrypt
//! each other while the relay never sees a plaintext byte; removal and leader departure
//! rekey; a listener the relay shows to the leader alone is caught by everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod secure_common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use common::*;
use orelay_e2ee::frame::FrameError;
use orelay_e2ee::{KemSuite, LocalKeys, Warning};
use orelay_proto::{ClientMessage, HostAction, Role, RosterParticipant, ServerMessage};
use orelay_relay::test_hooks::set_media_hook;
use secure_common::*;

const CANARY: &[u8] = b"PLAINTEXT-CANARY-7f3a";

fn canary_frame(round: u8) -> impl Fn(u64) -> Vec<u8> {
    move |pid| {
        let mut f = CANARY.to_vec();
        f.extend_from_slice(format!("-round{round}-from{pid}-").as_bytes());
        f.resize(600, b'x');
        f
    }
}

/// Starts a relay and `n` encrypted participants (the first is the host) with media
/// wired between all of them.
async fn meeting(
    n: usize,
    meeting_no: u32,
) -> (
    orelay_relay::RunningRelay,
    Vec<Peer>,
    Arc<tokio::sync::watch::Sender<u64>>,
    tokio::sync::watch::Receiver<u64>,
) {
    let (relay, client) = start(config());
    let (tick, mut rx) = progress();
    let id = meeting_id(meeting_no);
    let mut peers = Vec::new();
    for i in 0..n {
        let role = if i == 0 {
            Role::Host
        } else {
            Role::Participant
        };
        let p = join(&client, relay.addr, &id, &format!("p{i}"), role, &tick).await;
        peers.push(p);
    }
    same_epoch(&peers, &mut rx, 0).await;
    wire_media(&peers, &mut rx).await;
    (relay, peers, tick, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_participants_decrypt_each_other_and_the_relay_never_sees_plaintext() {
    // Every media byte the relay receives, after QUIC decryption.
    let tapped: Arc<Mutex<Vec<u8>>> = Arc::default();
    let t = tapped.clone();
    set_media_hook(Some(Arc::new(move |b: Bytes| {
        t.lock().unwrap().extend_from_slice(&b);
        b
    })));
    let (_relay, mut peers, _tick, mut rx) = meeting(5, 9001).await;
    let code = peers[0].code().unwrap();
    assert!(peers
        .iter()
        .all(|p| p.code().as_deref() == Some(code.as_str())));
    all_exchange(&mut peers, &mut rx, canary_frame(1)).await;
    for p in &peers {
        assert_eq!(p.failures(), vec![], "participant {}", p.pid);
        assert_eq!(p.warnings.lock().unwrap().clone(), vec![]);
    }
    let seen = tapped.lock().unwrap();
    // The tap ran (it saw the five sealed frames the relay received, each forwarded to
    // four others), and no canary is in clear.
    assert!(seen.len() > 5 * 600, "tapped {} bytes", seen.len());
    assert!(!seen.windows(CANARY.len()).any(|w| w == CANARY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_participant_cannot_decrypt_after_the_rekey_and_others_continue() {
    let (_relay, mut peers, _tick, mut rx) = meeting(4, 9002).await;
    let before = peers[0].epoch().unwrap();
    let removed = peers.remove(2);
    peers[0].send(ClientMessage::HostAction(HostAction::Remove(removed.pid)));
    let epoch = same_epoch(&peers, &mut rx, before).await;
    assert!(epoch > before);
    all_exchange(&mut peers, &mut rx, canary_frame(2)).await;
    // The removed participant's keys, given a frame sent after the rekey (as a relay
    // that kept forwarding to it could): no key for the new epoch.
    let w = peers[1]
        .media
        .open_group(VIDEO.track, 1000, 0, 100)
        .await
        .unwrap();
    let (header, sealed) = peers[1]
        .secure
        .lock()
        .unwrap()
        .seal_object(&w, 1, b"after")
        .unwrap();
    let opened =
        removed
            .secure
            .lock()
            .unwrap()
            .open_object(&w.header, &header, &sealed, Instant::now());
    assert_eq!(opened, Err(FrameError::NoKey));
    assert_eq!(removed.epoch(), Some(before));
    w.reset();
    for p in &peers {
        assert_eq!(p.failures(), vec![], "participant {}", p.pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_leaves_and_the_next_takes_over_key_distribution() {
    let (_relay, mut peers, _tick, mut rx) = meeting(4, 9003).await;
    assert!(peers[0].secure.lock().unwrap().security().is_leader());
    let before = peers[0].epoch().unwrap();
    let leader = peers.remove(0);
    leader.leave();
    same_epoch(&peers, &mut rx, before).await;
    assert!(peers[0].secure.lock().unwrap().security().is_leader());
    all_exchange(&mut peers, &mut rx, canary_frame(3)).await;
    for p in &peers {
        assert_eq!(p.failures(), vec![], "participant {}", p.pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_shown_to_the_leader_alone_is_detected_by_every_other_participant() {
    let (_relay, peers, _tick, mut rx) = meeting(4, 9004).await;
    // The relay (here: a hook at the leader's inbound control stream) announces a
    // participant with keys it holds, to the leader only.
    let fake = LocalKeys::generate(KemSuite::XWing).unwrap();
    peers[0].inject(ServerMessage::ParticipantJoined(RosterParticipant {
        participant: 999,
        info: Bytes::new(),
        role: Role::Participant,
        keys: Bytes::from(fake.bundle().unwrap()),
    }));
    until(
        &mut rx,
        "every other participant to flag the listener",
        || {
            peers[1..].iter().all(|p| {
                !p.can_send()
                    && p.warnings
                        .lock()
                        .unwrap()
                        .contains(&Warning::RosterMismatch(999))
            })
        },
    )
    .await;
    for p in &peers[1..] {
        let w = p.media.open_group(VIDEO.track, 50, 0, 100).await.unwrap();
        assert_eq!(
            p.secure
                .lock()
                .unwrap()
                .seal_object(&w, 1, b"x")
                .map(|_| ()),
            Err(FrameError::Blocked)
        );
        w.reset();
    }
}
