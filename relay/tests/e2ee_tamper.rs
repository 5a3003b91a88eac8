//! A tampering relay: a test hook flips one bit of a routing header the relay forwards
//! (the priority byte of one group header, which the relay itself ignores). Receivers
//! reject that frame and count it; the meeting goes on. Its own test binary, because
//! the hook is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod secure_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use orelay_e2ee::frame::FrameError;
use orelay_proto::{GroupHeader, Role};
use orelay_relay::test_hooks::set_media_hook;
use secure_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_header_bit_is_rejected_and_counted_and_the_meeting_goes_on() {
    let (relay, client) = start(config());
    let (tick, mut rx) = progress();
    let id = meeting_id(9100);
    let mut peers = Vec::new();
    for (i, role) in [Role::Host, Role::Participant, Role::Participant]
        .into_iter()
        .enumerate()
    {
        peers.push(join(&client, relay.addr, &id, &format!("p{i}"), role, &tick).await);
    }
    same_epoch(&peers, &mut rx, 0).await;
    wire_media(&peers, &mut rx).await;
    let victim = peers[1].pid;
    let armed = Arc::new(AtomicBool::new(true));
    let a = armed.clone();
    set_media_hook(Some(Arc::new(move |b: Bytes| {
        // The first group header from the victim publisher: flip its priority's low bit.
        match GroupHeader::decode(&b) {
            Ok((h, len)) if h.publisher == victim && a.swap(false, Ordering::SeqCst) => {
                let mut v = b.to_vec();
                v[len - 1] ^= 1;
                Bytes::from(v)
            }
            _ => b,
        }
    })));
    let (_, sealed) = peers[1].send_frame(b"tampered in transit").await;
    assert!(!sealed.is_empty());
    until(
        &mut rx,
        "both receivers to reject the altered frame",
        || {
            [0, 2].iter().all(|&r| {
                peers[r]
                    .failures()
                    .iter()
                    .any(|(p, _, e)| *p == victim && *e == Err(FrameError::Forged))
            })
        },
    )
    .await;
    assert!(!armed.load(Ordering::SeqCst));
    for r in [0, 2] {
        assert_eq!(peers[r].opened_from(victim, b"tampered in transit"), 0);
        assert!(peers[r].secure.lock().unwrap().stats().decrypt_failures >= 1);
    }
    // The meeting goes on: the next frames open everywhere.
    all_exchange(&mut peers, &mut rx, |pid| {
        format!("after tamper {pid}").into_bytes()
    })
    .await;
    set_media_hook(None);
}
