//! One simulated participant executing its [`Slot`] of the plan: for each stint a
//! real client connection and join, sealed media sent on the schedule's grid,
//! and receivers that open and time every object.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use orelay_client::{Client, ClientError, GroupWriter, JoinRequest, Media, Session};
use orelay_e2ee::{KemSuite, LocalKeys};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{Credential, ServerMessage, TrackInfo, TrackKind};
use tokio::time::sleep_until;

use crate::hist::Hist;
use crate::protect::{Protect, StintKeys};
use crate::receive::{lock, now_us, SCREEN_TRACK};
use crate::receive::{receive_audio, receive_groups};
use crate::scenario::{frame_bytes, Subscribe};
use crate::schedule::{audio_period, screen_frames, ticks, video_period, Slot, Stint};
use crate::seal::MeetingKey;
use crate::tally::{Kind, Live, Receiver, Tally};
use crate::Scenario;

const AUDIO_TRACK: u64 = 1;
const VIDEO_TRACK: u64 = 2;
/// Join info of speakers, so others can tell them apart (active-speaker model).
const SPEAKER_INFO: &[u8] = b"loadgen:speaker";
const LISTENER_INFO: &[u8] = b"loadgen:listener";

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
    /// `--no-e2ee`: the meeting's shared key; `None`: end-to-end encryption.
    pub shared_key: Option<Arc<MeetingKey>>,
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

/// Runs one participant's stints to completion, measuring into its meeting's `tally`.
pub async fn run(client: Client, plan: Plan, tally: Arc<Mutex<Tally>>) {
    let last = plan.slot.stints.len().saturating_sub(1);
    for (i, stint) in plan.slot.stints.iter().enumerate() {
        sleep_until((plan.start + stint.join).into()).await;
        let receiver = ((plan.index as u64) << 8) | i as u64;
        // A fresh identity and KEM key pair per connection (~0.2 ms of CPU).
        let keys = match &plan.shared_key {
            Some(key) => StintKeys::Shared(key.clone()),
            None => match LocalKeys::generate(KemSuite::XWing) {
                Ok(k) => StintKeys::E2ee(k),
                Err(e) => {
                    tracing::warn!(error = %e, "key generation failed");
                    plan.live.join_failed.fetch_add(1, Relaxed);
                    continue;
                }
            },
        };
        let (session, protect) = match join(&client, &plan, &tally, receiver, keys).await {
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
        let churn = i != last;
        let end = Ending { drain, churn };
        let r = participate(
            session,
            protect.clone(),
            &plan,
            *stint,
            end,
            receiver,
            tally.clone(),
        )
        .await;
        if let Some(e) = protect.e2ee() {
            // A stint that ended early (an error) leaves the rekey watch here too; a
            // second `left` for one that already left is a no-op.
            let mut t = lock(&tally);
            t.keys.left(receiver, false, Instant::now());
            e.add_figures(&mut t.keys.figures);
        }
        if let Err(e) = r {
            tracing::debug!(error = %e, "participant ended with an error");
        }
        plan.live.connected.fetch_sub(1, Relaxed);
    }
}

/// The one place a participant joins: connects (timing the first server flight and
/// the TLS handshake) and sends `Join` with its credential. A participant put in a
/// waiting room counts as admitted when a host lets it in (its admit phase includes
/// the wait). With `keys`, the join presents their bundle and the stint runs E2EE.
async fn join(
    client: &Client,
    plan: &Plan,
    tally: &Mutex<Tally>,
    receiver: Receiver,
    keys: StintKeys,
) -> Result<(Session, Protect), ClientError> {
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
        keys: keys.bundle(),
    };
    let session = Session::join_with(conn, &request).await?;
    let t3 = Instant::now();
    let protect = keys.protect(session.participant(), session.role(), t3);
    plan.live.join_time.record_duration(t3 - t0);
    let mut t = lock(tally);
    let us = |d: Duration| d.as_micros() as u64;
    t.join.record_us(us(t3 - t0));
    t.join_phases[0].record_us(us(t1 - t0));
    t.join_phases[1].record_us(us(t2 - t1));
    t.join_phases[2].record_us(us(t3 - t2));
    t.admitted(receiver);
    if protect.e2ee().is_some() {
        t.keys.joined(receiver);
    }
    Ok((session, protect))
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

/// How a stint ends: how long it keeps receiving after media stops, and whether its
/// leave is churn (timed for rekey) rather than the run's end.
#[derive(Debug, Clone, Copy)]
struct Ending {
    drain: Duration,
    churn: bool,
}

/// What woke the control loop.
enum Step {
    Event(Option<Result<ServerMessage, ClientError>>),
    KeyTimer,
}

async fn participate(
    mut session: Session,
    protect: Protect,
    plan: &Plan,
    stint: Stint,
    end: Ending,
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
            protect.clone(),
            plan.live.clone(),
            tally.clone(),
        )),
        tokio::spawn(receive_audio(
            me,
            media.clone(),
            protect.clone(),
            plan.live.clone(),
            tally.clone(),
        )),
    ];
    let keyframe_wanted = AtomicBool::new(false);
    let until = plan.start + stint.leave;
    let e2ee = protect.e2ee().cloned();
    let events = async {
        let mut speakers = HashSet::new();
        let mut tiles = 0usize;
        // Subscriptions wait until this participant holds the meeting key, as a real
        // client's would (what it received before could not be opened). Bounded by the
        // tracks of the meeting.
        let mut deferred = Vec::new();
        let mut epoch = None;
        loop {
            let due = e2ee.as_ref().and_then(|e| e.lock().poll_timeout());
            let key_timer = async {
                match due {
                    Some(d) => sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                e = session.next_event() => Step::Event(e),
                () = key_timer => Step::KeyTimer,
                () = sleep_until(until.into()) => return Ok(()),
            };
            if let Some(e) = &e2ee {
                match &step {
                    Step::Event(Some(Ok(msg))) => {
                        e.lock().on_message(msg, Instant::now());
                    }
                    Step::KeyTimer => e.lock().on_timeout(Instant::now()),
                    Step::Event(_) => {}
                }
                let out = e.outgoing();
                for m in &out {
                    session.send(m).await?;
                }
                let now_epoch = e.publish_epoch();
                if now_epoch != epoch {
                    epoch = now_epoch;
                    if let Some(n) = epoch {
                        lock(&tally).keys.epoch(me, n, Instant::now());
                    }
                }
            }
            if protect.keyed() {
                for (participant, track, layer) in deferred.drain(..) {
                    session.subscribe(participant, track, layer).await?;
                }
            }
            let Step::Event(event) = step else { continue };
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
                    match layer {
                        Some(layer) if protect.keyed() => {
                            session.subscribe(participant, info.track, layer).await?;
                        }
                        Some(layer) => deferred.push((participant, info.track, layer)),
                        None => {}
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
        send_audio(&media, plan, stint, &protect, &tally),
        send_video(&media, plan, stint, &protect, &keyframe_wanted, &tally),
        send_screen(&media, plan, stint, &protect, &tally)
    );
    // Keep receiving what is still in flight, then leave.
    sleep_until((until + end.drain).into()).await;
    for r in receivers {
        r.abort();
    }
    if e2ee.is_some() {
        lock(&tally).keys.left(me, end.churn, Instant::now());
    }
    let left = session.leave().await;
    ev.and(video).and(screen).and(left)
}

async fn send_audio(
    media: &Media,
    plan: &Plan,
    stint: Stint,
    protect: &Protect,
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
        let Some(sealed) = protect.seal_audio(&header, &plain) else {
            continue;
        };
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
    protect: &Protect,
    bytes: usize,
    keyframe: bool,
    kind: Kind,
) -> Result<(), ClientError> {
    let mut plain = vec![0u8; bytes.max(8)];
    plain[..8].copy_from_slice(&now_us().to_be_bytes());
    let flags = if keyframe { FLAG_KEYFRAME } else { 0 };
    let Some((header, sealed)) = protect.seal_object(w, flags, &plain) else {
        return Ok(());
    };
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
    protect: &Protect,
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
            write_frame(w, plan, protect, bytes, new_group, Kind::Video).await?;
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
    protect: &Protect,
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
            write_frame(w, plan, protect, bytes, new_group, Kind::Screen).await?;
        }
    }
    if let Some(w) = writer {
        w.finish();
    }
    pace.into_tally(tally);
    Ok(())
}
