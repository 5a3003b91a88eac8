//! One simulated participant: a real client with its own QUIC connection, a real
//! join, sealed media paced like a real sender, and receivers that open and time
//! every object.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use orelay_client::{Client, ClientError, GroupReader, GroupWriter, JoinRequest, Media, Session};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{Credential, ErrorCode, ServerMessage, TrackInfo, TrackKind};
use tokio::time::{sleep_until, Instant as TokioInstant};

use crate::report::{Live, Tally};
use crate::seal::MeetingKey;
use crate::Scenario;

const AUDIO_TRACK: u64 = 1;
const VIDEO_TRACK: u64 = 2;

/// Microseconds since the Unix epoch: the send time sealed into every payload, so
/// receivers in other processes on the same host can time it too.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What one participant needs to know.
pub struct Plan {
    /// The scenario.
    pub scenario: Arc<Scenario>,
    /// Relay address.
    pub relay: SocketAddr,
    /// Meeting ID.
    pub meeting_id: String,
    /// Meeting passcode.
    pub passcode: String,
    /// What the join presents: a signed token (the meeting's first participant holds
    /// a host token, the others participant tokens) or the open-mode host secret.
    pub credential: Credential,
    /// The meeting's media key.
    pub key: Arc<MeetingKey>,
    /// When to start joining.
    pub join_at: Instant,
    /// When media stops.
    pub media_until: Instant,
    /// How long to keep receiving after media stops.
    pub drain: Duration,
    /// Live counters.
    pub live: Arc<Live>,
}

/// Runs one participant to completion; returns its join time (if admitted) and tally.
pub async fn run(client: Client, plan: Plan) -> (Option<Duration>, Tally) {
    sleep_until(plan.join_at.into()).await;
    let started = Instant::now();
    let request = JoinRequest {
        meeting_id: plan.meeting_id.clone(),
        passcode: plan.passcode.clone(),
        info: b"loadgen".to_vec(),
        credential: plan.credential.clone(),
        keys: bytes::Bytes::new(),
    };
    let session = match client.join_with(plan.relay, &request).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "join failed");
            plan.live.join_failed.fetch_add(1, Relaxed);
            return (None, Tally::default());
        }
    };
    let join_time = started.elapsed();
    plan.live.joined.fetch_add(1, Relaxed);
    plan.live.join_time.record_duration(join_time);
    let tally = Arc::new(Mutex::new(Tally::default()));
    if let Err(e) = participate(session, &plan, tally.clone()).await {
        tracing::debug!(error = %e, "participant ended with an error");
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    (Some(join_time), tally)
}

async fn participate(
    mut session: Session,
    plan: &Plan,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), ClientError> {
    let s = &plan.scenario;
    let layers = s.layer_kbps.len() as u8;
    session
        .publish(TrackInfo {
            track: AUDIO_TRACK,
            kind: TrackKind::AUDIO,
            layers: 1,
            priority: 200,
        })
        .await?;
    session
        .publish(TrackInfo {
            track: VIDEO_TRACK,
            kind: TrackKind::VIDEO,
            layers,
            priority: 100,
        })
        .await?;
    let media = session.media();
    let receivers = [
        tokio::spawn(receive_video(
            media.clone(),
            plan.key.clone(),
            plan.live.clone(),
            tally.clone(),
        )),
        tokio::spawn(receive_audio(
            media.clone(),
            plan.key.clone(),
            plan.live.clone(),
            tally,
        )),
    ];
    let keyframe_wanted = Arc::new(AtomicBool::new(false));
    let ctr = AtomicU64::new(0);
    let until: TokioInstant = plan.media_until.into();
    let events = async {
        loop {
            let event = tokio::select! {
                e = session.next_event() => e,
                () = sleep_until(until) => return Ok(()),
            };
            match event {
                Some(Ok(ServerMessage::TrackPublished { participant, info })) => {
                    let layer = if info.kind == TrackKind::AUDIO {
                        0
                    } else {
                        s.subscribe_layer
                    };
                    session.subscribe(participant, info.track, layer).await?;
                }
                Some(Ok(ServerMessage::KeyframeRequest { .. })) => {
                    keyframe_wanted.store(true, Relaxed)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    let (ev, _, video) = tokio::join!(
        events,
        send_audio(&media, plan, &ctr, until),
        send_video(&media, plan, &ctr, &keyframe_wanted, until)
    );
    // Keep receiving what is still in flight, then leave.
    sleep_until((plan.media_until + plan.drain).into()).await;
    for r in receivers {
        r.abort();
    }
    let left = session.leave().await;
    ev.and(video).and(left)
}

async fn send_audio(media: &Media, plan: &Plan, ctr: &AtomicU64, until: TokioInstant) {
    let s = &plan.scenario;
    let period = Duration::from_secs_f64(1.0 / f64::from(s.audio_pps));
    let mut next = TokioInstant::now();
    let mut plain = vec![0u8; s.audio_bytes];
    let mut header_bytes = BytesMut::with_capacity(32);
    for seq in 0.. {
        if next >= until {
            break;
        }
        sleep_until(next).await;
        next += period;
        let header = media.audio_header(AUDIO_TRACK, 0, seq, 200);
        header_bytes.clear();
        header.encode(&mut header_bytes);
        plain[..8].copy_from_slice(&now_us().to_be_bytes());
        let sealed = plan.key.seal(
            header.publisher,
            ctr.fetch_add(1, Relaxed),
            &header_bytes,
            &plain,
        );
        if media.send_audio(&header, &sealed).is_err() {
            return;
        }
        plan.live.audio_sent.fetch_add(1, Relaxed);
    }
}

async fn send_video(
    media: &Media,
    plan: &Plan,
    ctr: &AtomicU64,
    keyframe_wanted: &AtomicBool,
    until: TokioInstant,
) -> Result<(), ClientError> {
    let s = &plan.scenario;
    let period = Duration::from_secs_f64(1.0 / f64::from(s.video_fps));
    let mut writers: Vec<Option<GroupWriter>> = (0..s.layer_kbps.len()).map(|_| None).collect();
    let mut group = 0u64;
    let mut group_started = Instant::now();
    let mut next = TokioInstant::now();
    let mut aad = BytesMut::with_capacity(64);
    while next < until {
        sleep_until(next).await;
        next += period;
        let new_group = writers[0].is_none()
            || group_started.elapsed() >= s.keyframe_interval
            || keyframe_wanted.swap(false, Relaxed);
        if new_group {
            if writers[0].is_some() {
                group += 1;
            }
            group_started = Instant::now();
            for (layer, w) in writers.iter_mut().enumerate() {
                if let Some(old) = w.take() {
                    old.finish();
                }
                *w = Some(
                    media
                        .open_group(VIDEO_TRACK, group, layer as u8, 100)
                        .await?,
                );
            }
        }
        for (layer, w) in writers.iter_mut().enumerate() {
            let Some(w) = w.as_mut() else { continue };
            let mut plain = vec![0u8; s.frame_bytes(layer, new_group)];
            plain[..8].copy_from_slice(&now_us().to_be_bytes());
            let flags = if new_group { FLAG_KEYFRAME } else { 0 };
            let header = w.next_header(flags, plain.len() + crate::seal::OVERHEAD);
            aad.clear();
            w.header.encode(&mut aad);
            header.encode(&mut aad);
            let sealed = plan
                .key
                .seal(w.header.publisher, ctr.fetch_add(1, Relaxed), &aad, &plain);
            w.write(header, sealed).await?;
            plan.live.video_sent.fetch_add(1, Relaxed);
        }
    }
    for w in writers.into_iter().flatten() {
        w.finish();
    }
    Ok(())
}

async fn receive_video(
    media: Media,
    key: Arc<MeetingKey>,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    while let Ok(group) = media.accept_group().await {
        tokio::spawn(receive_group(
            group,
            key.clone(),
            live.clone(),
            tally.clone(),
        ));
    }
}

async fn receive_group(
    mut group: GroupReader,
    key: Arc<MeetingKey>,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    let h = group.header;
    tally
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .group_started(h.publisher, h.track, h.group);
    let mut group_header = BytesMut::with_capacity(32);
    h.encode(&mut group_header);
    let mut aad = BytesMut::with_capacity(64);
    loop {
        match group.next_object().await {
            Ok(Some(obj)) => {
                aad.clear();
                aad.put_slice(&group_header);
                obj.header.encode(&mut aad);
                match key.open(h.publisher, &aad, &obj.payload) {
                    Ok(plain) if plain.len() >= 8 => {
                        let sent = u64::from_be_bytes(plain[..8].try_into().unwrap_or([0; 8]));
                        live.video_received.fetch_add(1, Relaxed);
                        live.bytes_received
                            .fetch_add(obj.payload.len() as u64, Relaxed);
                        let latency_us = now_us().saturating_sub(sent);
                        live.latency.record(latency_us.saturating_mul(1000));
                        tally
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .video(latency_us);
                    }
                    _ => {
                        live.decrypt_failures.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(None) => {
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .groups_complete += 1;
                return;
            }
            Err(ClientError::Reset(code)) if code == ErrorCode::GROUP_DROPPED => {
                tally.lock().unwrap_or_else(|p| p.into_inner()).groups_reset += 1;
                return;
            }
            Err(_) => return,
        }
    }
}

async fn receive_audio(
    media: Media,
    key: Arc<MeetingKey>,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut header_bytes = BytesMut::with_capacity(32);
    while let Ok((h, payload)) = media.read_audio().await {
        header_bytes.clear();
        h.encode(&mut header_bytes);
        match key.open(h.publisher, &header_bytes, &payload) {
            Ok(plain) if plain.len() >= 8 => {
                let sent = u64::from_be_bytes(plain[..8].try_into().unwrap_or([0; 8]));
                live.audio_received.fetch_add(1, Relaxed);
                live.bytes_received.fetch_add(payload.len() as u64, Relaxed);
                let latency_us = now_us().saturating_sub(sent);
                live.latency.record(latency_us.saturating_mul(1000));
                let expected = tally.lock().unwrap_or_else(|p| p.into_inner()).audio(
                    h.publisher,
                    h.track,
                    h.object,
                    latency_us,
                );
                live.audio_expected.fetch_add(expected, Relaxed);
            }
            _ => {
                live.decrypt_failures.fetch_add(1, Relaxed);
            }
        }
    }
}
