//! A legitimate meeting running beside an attack or across a faulty link: one
//! publisher sends paced video (groups of [`GOP`] objects, each group opening with a
//! keyframe) and an audio datagram per frame; one viewer receives both and records
//! what arrived, when, and how each group ended. [`Legit::finish`] turns that into a
//! [`Delivery`] the tests assert on and print.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orelay_client::{Client, ClientError, Session};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::ErrorCode;

use super::{await_tracks, join_meeting, subscribe_confirmed, AUDIO, VIDEO};

/// Frames per second of the legitimate publisher.
pub const FPS: u64 = 30;
/// Objects per group (a keyframe every half second).
pub const GOP: u64 = 15;
/// Bytes per video object.
pub const OBJECT: usize = 1_200;
/// Most frames one run sends (two minutes): every load loop is bounded.
const MAX_FRAMES: u64 = FPS * 120;

/// What the viewer saw.
#[derive(Debug, Default)]
struct Seen {
    latencies_us: Vec<u64>,
    last_arrival: Option<Instant>,
    max_gap: Duration,
    groups_complete: u64,
    groups_broken: u64,
    /// Groups whose first object received was not a keyframe (never expected).
    groups_without_keyframe: u64,
    audio: u64,
    /// One past the highest group number that ended (whole or reset) at the viewer.
    ended_before: u64,
}

impl Seen {
    fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last_arrival = Some(now);
    }
}

/// The delivery figures of one legitimate meeting.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Video objects sent.
    pub video_sent: u64,
    /// Video objects received.
    pub video_received: u64,
    /// Groups sent.
    pub groups_sent: u64,
    /// Groups received whole.
    pub groups_complete: u64,
    /// Groups skipped cleanly: reset by the relay (`GROUP_DROPPED`), or dropped before
    /// the relay opened the viewer's stream for them.
    pub groups_dropped: u64,
    /// Groups that ended any other way (must stay 0).
    pub groups_broken: u64,
    /// Groups whose first object was not a keyframe (must stay 0).
    pub groups_without_keyframe: u64,
    /// Audio datagrams sent and received.
    pub audio_sent: u64,
    /// Audio datagrams received.
    pub audio_received: u64,
    /// Video object latency, publisher's write to viewer's read: median, p99, worst.
    pub p50: Duration,
    /// p99 latency.
    pub p99: Duration,
    /// Worst latency.
    pub max: Duration,
    /// Longest time between two consecutive video objects at the viewer.
    pub max_gap: Duration,
}

impl Delivery {
    /// Fraction of video objects received.
    pub fn video_ratio(&self) -> f64 {
        self.video_received as f64 / self.video_sent.max(1) as f64
    }

    /// Fraction of audio datagrams lost.
    pub fn audio_loss(&self) -> f64 {
        1.0 - self.audio_received as f64 / self.audio_sent.max(1) as f64
    }

    /// Asserts the delivery of a meeting on a clean loopback path beside an attack:
    /// every video object, nearly all audio, and a p99 latency far below what waiting
    /// behind a hostile client (seconds) would cost on this shared debug build.
    pub fn assert_unhurt(&self, what: &str) {
        println!("{what}: legitimate meeting {self}");
        assert_eq!(self.video_received, self.video_sent, "{what}: {self}");
        assert_eq!(self.groups_complete, self.groups_sent, "{what}: {self}");
        assert!(self.audio_loss() <= 0.05, "{what}: {self}");
        assert!(self.p99 < Duration::from_millis(300), "{what}: {self}");
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "video {}/{} objects, groups {} whole + {} skipped + {} broken of {} \
             ({} without keyframe), audio {}/{} ({:.1}% lost), latency p50 {:?} p99 {:?} \
             max {:?}, longest gap {:?}",
            self.video_received,
            self.video_sent,
            self.groups_complete,
            self.groups_dropped,
            self.groups_broken,
            self.groups_sent,
            self.groups_without_keyframe,
            self.audio_received,
            self.audio_sent,
            self.audio_loss() * 100.0,
            self.p50,
            self.p99,
            self.max,
            self.max_gap
        )
    }
}

/// A running legitimate meeting.
pub struct Legit {
    /// The publisher's session (kept open while the meeting runs).
    pub publisher: Session,
    /// The viewer's session.
    pub viewer: Session,
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<(u64, u64, u64)>,
    seen: Arc<Mutex<Seen>>,
}

impl Legit {
    /// Joins a publisher and a viewer to meeting `m` and starts the media.
    pub async fn start(client: &Client, addr: std::net::SocketAddr, m: u32) -> Legit {
        Self::start_with(client, client, addr, m).await
    }

    /// Like [`Legit::start`], with the viewer on its own client endpoint.
    pub async fn start_with(
        publisher_client: &Client,
        viewer_client: &Client,
        addr: std::net::SocketAddr,
        m: u32,
    ) -> Legit {
        let mut publisher = join_meeting(publisher_client, addr, m, b"legit-pub").await;
        let mut viewer = join_meeting(viewer_client, addr, m, b"legit-view").await;
        publisher.publish(VIDEO).await.unwrap();
        publisher.publish(AUDIO).await.unwrap();
        await_tracks(&mut viewer, 2).await;
        subscribe_confirmed(&mut viewer, publisher.participant(), VIDEO.track).await;
        subscribe_confirmed(&mut viewer, publisher.participant(), AUDIO.track).await;
        let epoch = Instant::now();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        spawn_viewer(&viewer, epoch, seen.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let sender = tokio::spawn(send(publisher.media(), epoch, stop.clone()));
        Legit {
            publisher,
            viewer,
            stop,
            sender,
            seen,
        }
    }

    /// Video objects the viewer has received so far.
    pub fn received(&self) -> u64 {
        self.seen.lock().unwrap().latencies_us.len() as u64
    }

    /// Stops the publisher, waits until the viewer has everything that is still coming
    /// (every group ended one way or the other), and returns the figures.
    pub async fn finish(self) -> Delivery {
        // At least two seconds of media, however short the attack beside it was.
        super::eventually(Duration::from_secs(30), || self.received() >= 2 * FPS).await;
        self.stop.store(true, Relaxed);
        let (video_sent, groups_sent, audio_sent) = self.sender.await.unwrap();
        let seen = self.seen.clone();
        // The last group ending proves the rest has arrived: the relay's streams of one
        // track are opened in order. (A group the relay dropped before it opened the
        // viewer's stream leaves no trace at the viewer: it counts as skipped.)
        super::eventually(Duration::from_secs(20), || {
            seen.lock().unwrap().ended_before >= groups_sent
        })
        .await;
        let s = self.seen.lock().unwrap();
        let mut lat = s.latencies_us.clone();
        lat.sort_unstable();
        let at =
            |q: usize| Duration::from_micros(lat.get(lat.len() * q / 100).copied().unwrap_or(0));
        Delivery {
            video_sent,
            video_received: lat.len() as u64,
            groups_sent,
            groups_complete: s.groups_complete,
            groups_dropped: groups_sent.saturating_sub(s.groups_complete + s.groups_broken),
            groups_broken: s.groups_broken,
            groups_without_keyframe: s.groups_without_keyframe,
            audio_sent,
            audio_received: s.audio,
            p50: at(50),
            p99: at(99),
            max: Duration::from_micros(lat.last().copied().unwrap_or(0)),
            max_gap: s.max_gap,
        }
    }
}

fn spawn_viewer(viewer: &Session, epoch: Instant, seen: Arc<Mutex<Seen>>) {
    let media = viewer.media();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok(datagram) = media.read_audio().await {
            drop(datagram);
            log.lock().unwrap().audio += 1;
        }
    });
    let media = viewer.media();
    tokio::spawn(async move {
        loop {
            let mut group = match media.accept_group().await {
                Ok(g) => g,
                // Reset before its header was read: a skipped group (counted as
                // what was sent but neither whole nor broken).
                Err(ClientError::Reset(c)) if c == ErrorCode::GROUP_DROPPED => continue,
                Err(ClientError::Connection(_)) => return,
                Err(_) => {
                    seen.lock().unwrap().groups_broken += 1;
                    continue;
                }
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let number = group.header.group;
                let ended = |s: &mut Seen| s.ended_before = s.ended_before.max(number + 1);
                let mut first = true;
                loop {
                    match group.next_object().await {
                        Ok(Some(obj)) => {
                            let now = Instant::now();
                            let sent = u64::from_be_bytes(obj.payload[..8].try_into().unwrap());
                            let us = (now - epoch).as_micros() as u64;
                            let mut s = seen.lock().unwrap();
                            if first && obj.header.flags & FLAG_KEYFRAME == 0 {
                                s.groups_without_keyframe += 1;
                            }
                            first = false;
                            s.latencies_us.push(us.saturating_sub(sent));
                            s.arrived(now);
                        }
                        Ok(None) => {
                            let mut s = seen.lock().unwrap();
                            s.groups_complete += 1;
                            ended(&mut s);
                            return;
                        }
                        Err(ClientError::Reset(c)) if c == ErrorCode::GROUP_DROPPED => {
                            ended(&mut seen.lock().unwrap());
                            return;
                        }
                        Err(_) => {
                            let mut s = seen.lock().unwrap();
                            s.groups_broken += 1;
                            ended(&mut s);
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Sends paced frames until told to stop; returns (objects, groups, audio) sent.
async fn send(
    media: orelay_client::Media,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, u64, u64) {
    let started = Instant::now();
    let (mut objects, mut groups, mut audio) = (0, 0, 0);
    let mut writer = None;
    for f in 0..MAX_FRAMES {
        let (group, object) = (f / GOP, f % GOP);
        if object == 0 {
            if let Some(w) = writer.take() {
                orelay_client::GroupWriter::finish(w);
            }
            if stop.load(Relaxed) {
                break;
            }
            let Ok(w) = media
                .open_group(VIDEO.track, group, 0, VIDEO.priority)
                .await
            else {
                break;
            };
            writer = Some(w);
            groups += 1;
        }
        let Some(w) = writer.as_mut() else { break };
        let mut data = vec![0u8; OBJECT];
        data[..8].copy_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
        let h = w.next_header(if object == 0 { FLAG_KEYFRAME } else { 0 }, OBJECT);
        if w.write(h, data.into()).await.is_err() {
            break;
        }
        objects += 1;
        let a = media.audio_header(AUDIO.track, group, object, AUDIO.priority);
        if media.send_audio(&a, &[0u8; 100]).is_ok() {
            audio += 1;
        }
        // Pace against the schedule, as a real encoder would.
        let due = started + Duration::from_micros(1_000_000 * (f + 1) / FPS);
        tokio::time::sleep_until(due.into()).await;
    }
    if let Some(w) = writer.take() {
        w.finish();
    }
    (objects, groups, audio)
}
