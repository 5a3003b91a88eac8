//! Receivers of one stint: every group object and audio datagram is opened (E2EE:
//! decrypted and verified against its routing header) and timed from the send time
//! inside its ciphertext.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use orelay_client::{ClientError, GroupReader, Media};
use orelay_proto::ErrorCode;

use crate::protect::Protect;
use crate::tally::{Kind, Live, Receiver, Tally};

/// The screen-share track's ID (audio is 1, video 2).
pub(crate) const SCREEN_TRACK: u64 = 3;

/// Microseconds since the Unix epoch: the send time sealed into every payload, so
/// receivers in other processes on the same host can time it too.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Locks a tally, shrugging off a poisoned lock (a panicked receiver task).
pub(crate) fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) async fn receive_groups(
    me: Receiver,
    media: Media,
    protect: Protect,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    while let Ok(group) = media.accept_group().await {
        tokio::spawn(receive_group(
            me,
            group,
            protect.clone(),
            live.clone(),
            tally.clone(),
        ));
    }
}

async fn receive_group(
    me: Receiver,
    mut group: GroupReader,
    protect: Protect,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    let h = group.header;
    let kind = if h.track == SCREEN_TRACK {
        Kind::Screen
    } else {
        Kind::Video
    };
    lock(&tally).group_started(me, h.publisher, h.track, h.group);
    loop {
        match group.next_object().await {
            Ok(Some(obj)) => match protect.open_object(&h, &obj.header, &obj.payload).await {
                Some(sent) => {
                    live.received[kind as usize].fetch_add(1, Relaxed);
                    live.bytes_received
                        .fetch_add(obj.payload.len() as u64, Relaxed);
                    let latency_us = now_us().saturating_sub(sent);
                    live.latency.record(latency_us.saturating_mul(1000));
                    lock(&tally).object(me, kind, latency_us);
                }
                None => {
                    live.decrypt_failures.fetch_add(1, Relaxed);
                }
            },
            Ok(None) => {
                lock(&tally).group_complete(me, h.publisher, h.track);
                return;
            }
            Err(ClientError::Reset(code)) if code == ErrorCode::GROUP_DROPPED => {
                lock(&tally).group_reset(me, h.publisher, h.track);
                return;
            }
            Err(_) => return,
        }
    }
}

pub(crate) async fn receive_audio(
    me: Receiver,
    media: Media,
    protect: Protect,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    while let Ok((h, payload)) = media.read_audio().await {
        match protect.open_audio(&h, &payload).await {
            Some(sent) => {
                live.received[Kind::Audio as usize].fetch_add(1, Relaxed);
                live.bytes_received.fetch_add(payload.len() as u64, Relaxed);
                let latency_us = now_us().saturating_sub(sent);
                live.latency.record(latency_us.saturating_mul(1000));
                let expected = lock(&tally).audio(me, h.publisher, h.track, h.object, latency_us);
                live.audio_expected.fetch_add(expected, Relaxed);
            }
            None => {
                live.decrypt_failures.fetch_add(1, Relaxed);
            }
        }
    }
}
