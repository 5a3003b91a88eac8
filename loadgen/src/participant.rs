//! One simulated participant executing its [`Slot`] of the plan: for each stint a
//! real client connection and join, sealed media sent on the schedule's grid,
//! and receivers that open and time every object.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use orelay_client::{Client, ClientError, GroupReader, GroupWriter, JoinRequest, Media, Session};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{Credential, ErrorCode, ServerMessage, TrackInfo, TrackKind};
use tokio::time::sleep_until;

use crate::hist::Hist;
use crate::scenario::{frame_bytes, Subscribe};
use crate::schedule::{audio_period, screen_frames, ticks, video_period, Slot, Stint};
use crate::seal::MeetingKey;
use crate::tally::{Kind, Live, Receiver, Tally};
use crate::Scenario;

const AUDIO_TRACK: u64 = 1;
const VIDEO_TRACK: u64 = 2;
const SCREEN_TRACK: u64 = 3;
/// Join info of speakers, so others can tell them apart (active-speaker model).
const SPEAKER_INFO: &[u8] = b"loadgen:speaker";
const LISTENER_INFO: &[u8] = b"loadgen:listener";

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
    /// What the join presents: a signed token (seat 0 holds a host token, the others
    /// participant tokens) or the open-mode host secret.
    pub credential: Credential,
    /// The meeting's media key.
    pub key: Arc<MeetingKey>,
    /// Its part of the schedule.
    pub slot: Slot,
    /// Its index in the schedule (receiver IDs derive from it).
    pub index: usize,
    /// The run's time zero (schedule offsets count from here).
    pub start: Instant,
    /// How long to keep receiving after media stops.
    pub drain: Duration,
    /// Live counters.
    pub live: Arc<Live>,
}

/// Locks a tally, shrugging off a poisoned lock (a panicked receiver task).
fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one participant's stints to completion, measuring into its meeting's `tally`.
pub async fn run(client: Client, plan: Plan, tally: Arc<Mutex<Tally>>) {
    let last = plan.slot.stints.len().saturating_sub(1);
    for (i, stint) in plan.slot.stints.iter().enumerate() {
        sleep_until((plan.start + stint.join).into()).await;
        let receiver = ((plan.index as u64) << 8) | i as u64;
        let session = match join(&client, &plan, &tally, receiver).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "join failed");
                plan.live.join_failed.fetch_add(1, Relaxed);
                continue;
            }
        };
        plan.live.joined.fetch_add(1, Relaxed);
        plan.live.connected.fetch_add(1, Relaxed);
        let drain = if i == last {
            plan.drain
        } else {
            Duration::ZERO
        };
        if let Err(e) = participate(session, &plan, *stint, drain, receiver, tally.clone()).await {
            tracing::debug!(error = %e, "participant ended with an error");
        }
        plan.live.connected.fetch_sub(1, Relaxed);
    }
}

/// The one place a participant joins: connects (timing the first server flight and
/// the TLS handshake) and sends `Join` with its credential. A participant put in a
/// waiting room counts as admitted when a host lets it in (its admit phase includes
/// the wait).
async fn join(
    client: &Client,
    plan: &Plan,
    tally: &Mutex<Tally>,
    receiver: Receiver,
) -> Result<Session, ClientError> {
    let t0 = Instant::now();
    let mut connecting = client.connecting(plan.relay)?;
    connecting.handshake_data().await?;
    let t1 = Instant::now();
    let conn = connecting.await?;
    let t2 = Instant::now();
    let info = if plan.slot.role.speaker {
        SPEAKER_INFO
    } else {
        LISTENER_INFO
    };
    let request = JoinRequest {
        meeting_id: plan.meeting_id.clone(),
        passcode: plan.passcode.clone(),
        info: info.to_vec(),
        credential: plan.credential.clone(),
        keys: bytes::Bytes::new(),
    };
    let session = Session::join_with(conn, &request).await?;
    let t3 = Instant::now();
    plan.live.join_time.record_duration(t3 - t0);
    let mut t = lock(tally);
    let us = |d: Duration| d.as_micros() as u64;
    t.join.record_us(us(t3 - t0));
    t.join_phases[0].record_us(us(t1 - t0));
    t.join_phases[1].record_us(us(t2 - t1));
    t.join_phases[2].record_us(us(t3 - t2));
    t.admitted(receiver);
    Ok(session)
}

/// Seals a payload: every call to the media-key code on the send side goes through here.
fn seal(key: &MeetingKey, publisher: u64, ctr: &AtomicU64, aad: &[u8], plain: &[u8]) -> Bytes {
    key.seal(publisher, ctr.fetch_add(1, Relaxed), aad, plain)
}

/// Opens a payload and returns its sealed send time (µs since the epoch); `None`
/// when it does not authenticate. The receive side's only call to the media-key code.
fn open(key: &MeetingKey, publisher: u64, aad: &[u8], payload: &[u8]) -> Option<u64> {
    let plain = key.open(publisher, aad, payload).ok()?;
    let sent: [u8; 8] = plain.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(sent))
}

/// Where a sender is against its schedule; `due` ticks before `ready` (the join
/// completing) are catch-up, not lateness.
struct Pace {
    ready: Instant,
    skew: Hist,
    catchup: u64,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            ready: Instant::now(),
            skew: Hist::default(),
            catchup: 0,
        }
    }

    async fn wait(&mut self, due: Instant, live: &Live) {
        if due > Instant::now() {
            sleep_until(due.into()).await;
        }
        if due < self.ready {
            self.catchup += 1;
        } else {
            let late = due.elapsed();
            self.skew.record_us(late.as_micros() as u64);
            live.send_skew.record_duration(late);
        }
    }

    fn into_tally(self, tally: &Mutex<Tally>) {
        let mut t = lock(tally);
        t.send_skew.add(&self.skew);
        t.send_catchup += self.catchup;
    }
}

async fn participate(
    mut session: Session,
    plan: &Plan,
    stint: Stint,
    drain: Duration,
    me: Receiver,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), ClientError> {
    let s = &plan.scenario;
    let role = plan.slot.role;
    let video_layers = if role.speaker { s.layer_kbps.len() } else { 1 };
    let tracks = [
        (role.speaker, AUDIO_TRACK, TrackKind::AUDIO, 1, 200),
        (
            role.camera,
            VIDEO_TRACK,
            TrackKind::VIDEO,
            video_layers,
            100,
        ),
        (role.screen, SCREEN_TRACK, TrackKind::SCREEN, 1, 150),
    ];
    for (on, track, kind, layers, priority) in tracks {
        if on {
            let layers = layers as u8;
            let info = TrackInfo {
                track,
                kind,
                layers,
                priority,
            };
            session.publish(info).await?;
        }
    }
    let media = session.media();
    let receivers = [
        tokio::spawn(receive_groups(
            me,
            media.clone(),
            plan.key.clone(),
            plan.live.clone(),
            tally.clone(),
        )),
        tokio::spawn(receive_audio(
            me,
            media.clone(),
            plan.key.clone(),
            plan.live.clone(),
            tally.clone(),
        )),
    ];
    let keyframe_wanted = AtomicBool::new(false);
    let ctr = AtomicU64::new(0);
    let until = plan.start + stint.leave;
    let events = async {
        let mut speakers = HashSet::new();
        let mut tiles = 0usize;
        loop {
            let event = tokio::select! {
                e = session.next_event() => e,
                () = sleep_until(until.into()) => return Ok(()),
            };
            match event {
                Some(Ok(ServerMessage::ParticipantJoined(p))) if p.info == SPEAKER_INFO => {
                    speakers.insert(p.participant);
                }
                Some(Ok(ServerMessage::TrackPublished { participant, info })) => {
                    let speaker = speakers.contains(&participant);
                    let top = info.layers.saturating_sub(1);
                    let layer = match (info.kind, s.subscribe) {
                        (TrackKind::VIDEO, Subscribe::SpeakerOnly) if !speaker => None,
                        (TrackKind::VIDEO, Subscribe::Gallery(n)) if tiles >= n => None,
                        (TrackKind::VIDEO, sub) => {
                            tiles += usize::from(matches!(sub, Subscribe::Gallery(_)));
                            let all = matches!(sub, Subscribe::All);
                            Some(if speaker || all {
                                s.subscribe_layer.min(top)
                            } else {
                                0
                            })
                        }
                        _ => Some(0),
                    };
                    if let Some(layer) = layer {
                        session.subscribe(participant, info.track, layer).await?;
                    }
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
    let (ev, (), video, screen) = tokio::join!(
        events,
        send_audio(&media, plan, stint, &ctr, &tally),
        send_video(&media, plan, stint, &ctr, &keyframe_wanted, &tally),
        send_screen(&media, plan, stint, &ctr, &tally)
    );
    // Keep receiving what is still in flight, then leave.
    sleep_until((until + drain).into()).await;
    for r in receivers {
        r.abort();
    }
    let left = session.leave().await;
    ev.and(video).and(screen).and(left)
}

async fn send_audio(
    media: &Media,
    plan: &Plan,
    stint: Stint,
    ctr: &AtomicU64,
    tally: &Mutex<Tally>,
) {
    let s = &plan.scenario;
    if !plan.slot.role.speaker {
        return;
    }
    let period = audio_period(s);
    let anchor = plan.start + stint.join;
    let mut pace = Pace::new();
    let mut plain = vec![0u8; s.audio_bytes];
    let mut header_bytes = BytesMut::with_capacity(32);
    for seq in 0..ticks(stint.join, stint.leave, period) {
        pace.wait(anchor + period.mul_f64(seq as f64), &plan.live)
            .await;
        let header = media.audio_header(AUDIO_TRACK, 0, seq, 200);
        header_bytes.clear();
        header.encode(&mut header_bytes);
        plain[..8].copy_from_slice(&now_us().to_be_bytes());
        let sealed = seal(&plan.key, header.publisher, ctr, &header_bytes, &plain);
        if media.send_audio(&header, &sealed).is_err() {
            break;
        }
        plan.live.sent[Kind::Audio as usize].fetch_add(1, Relaxed);
        plan.live.bytes_sent.fetch_add(sealed.len() as u64, Relaxed);
    }
    pace.into_tally(tally);
}

/// Writes one frame (sealed, timestamped) to an open group.
async fn write_frame(
    w: &mut GroupWriter,
    plan: &Plan,
    ctr: &AtomicU64,
    bytes: usize,
    keyframe: bool,
    kind: Kind,
) -> Result<(), ClientError> {
    let mut plain = vec![0u8; bytes.max(8)];
    plain[..8].copy_from_slice(&now_us().to_be_bytes());
    let flags = if keyframe { FLAG_KEYFRAME } else { 0 };
    let header = w.next_header(flags, plain.len() + crate::seal::OVERHEAD);
    let mut aad = BytesMut::with_capacity(64);
    w.header.encode(&mut aad);
    header.encode(&mut aad);
    let sealed = seal(&plan.key, w.header.publisher, ctr, &aad, &plain);
    let len = sealed.len() as u64;
    w.write(header, sealed).await?;
    plan.live.sent[kind as usize].fetch_add(1, Relaxed);
    plan.live.bytes_sent.fetch_add(len, Relaxed);
    Ok(())
}

async fn send_video(
    media: &Media,
    plan: &Plan,
    stint: Stint,
    ctr: &AtomicU64,
    keyframe_wanted: &AtomicBool,
    tally: &Mutex<Tally>,
) -> Result<(), ClientError> {
    let s = &plan.scenario;
    if !plan.slot.role.camera {
        return Ok(());
    }
    let layers = if plan.slot.role.speaker {
        s.layer_kbps.len()
    } else {
        1
    };
    let period = video_period(s);
    let per_group =
        ((s.keyframe_interval.as_secs_f64() * f64::from(s.video_fps)).round() as u64).max(1);
    let anchor = plan.start + stint.join;
    let mut pace = Pace::new();
    let mut writers: Vec<Option<GroupWriter>> = (0..layers).map(|_| None).collect();
    let mut group = 0u64;
    for frame in 0..ticks(stint.join, stint.leave, period) {
        pace.wait(anchor + period.mul_f64(frame as f64), &plan.live)
            .await;
        let new_group = frame % per_group == 0 || keyframe_wanted.swap(false, Relaxed);
        if new_group {
            if frame > 0 {
                group += 1;
            }
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
            let bytes = s.frame_bytes(layer, new_group);
            write_frame(w, plan, ctr, bytes, new_group, Kind::Video).await?;
        }
    }
    for w in writers.into_iter().flatten() {
        w.finish();
    }
    pace.into_tally(tally);
    Ok(())
}

async fn send_screen(
    media: &Media,
    plan: &Plan,
    stint: Stint,
    ctr: &AtomicU64,
    tally: &Mutex<Tally>,
) -> Result<(), ClientError> {
    let s = &plan.scenario;
    let Some(sc) = s.screen.as_ref().filter(|_| plan.slot.role.screen) else {
        return Ok(());
    };
    let anchor = plan.start + stint.join;
    let mut pace = Pace::new();
    let mut writer: Option<GroupWriter> = None;
    let mut group = 0u64;
    for (offset, new_group) in screen_frames(s, stint.join, stint.leave) {
        pace.wait(anchor + offset, &plan.live).await;
        if new_group || writer.is_none() {
            if let Some(old) = writer.take() {
                old.finish();
                group += 1;
            }
            writer = Some(media.open_group(SCREEN_TRACK, group, 0, 150).await?);
        }
        let bytes = frame_bytes(sc.kbps, sc.burst_fps, sc.every, new_group);
        if let Some(w) = writer.as_mut() {
            write_frame(w, plan, ctr, bytes, new_group, Kind::Screen).await?;
        }
    }
    if let Some(w) = writer {
        w.finish();
    }
    pace.into_tally(tally);
    Ok(())
}

async fn receive_groups(
    me: Receiver,
    media: Media,
    key: Arc<MeetingKey>,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    while let Ok(group) = media.accept_group().await {
        tokio::spawn(receive_group(
            me,
            group,
            key.clone(),
            live.clone(),
            tally.clone(),
        ));
    }
}

async fn receive_group(
    me: Receiver,
    mut group: GroupReader,
    key: Arc<MeetingKey>,
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
    let mut group_header = BytesMut::with_capacity(32);
    h.encode(&mut group_header);
    let mut aad = BytesMut::with_capacity(64);
    loop {
        match group.next_object().await {
            Ok(Some(obj)) => {
                aad.clear();
                aad.put_slice(&group_header);
                obj.header.encode(&mut aad);
                match open(&key, h.publisher, &aad, &obj.payload) {
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
                }
            }
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

async fn receive_audio(
    me: Receiver,
    media: Media,
    key: Arc<MeetingKey>,
    live: Arc<Live>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut header_bytes = BytesMut::with_capacity(32);
    while let Ok((h, payload)) = media.read_audio().await {
        header_bytes.clear();
        h.encode(&mut header_bytes);
        match open(&key, h.publisher, &header_bytes, &payload) {
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
