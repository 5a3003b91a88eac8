//! Soak: churn against a relay process for `ORELAY_SOAK_SECS` seconds (default 120;
//! `scripts/soak.sh MINUTES` sets it). Actors join and leave, publish and unpublish,
//! change subscriptions, send and receive media; some read slowly (a narrow window,
//! no media read at all) and some vanish (their path blackholed, no close ever
//! arrives). Asserts the relay's RSS stays flat after warm-up, its own gauges
//! (connections, participants, meetings, queued bytes, open streams) return to zero
//! once everyone has left, and its log has no error-level line. Ignored by default:
//! `cargo test -p orelay-relay --test soak -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::impair::{Fault, Impair};
use common::process::RelayProcess;
use common::*;
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{ClientMessage, ServerMessage};

/// Actors alive at once.
const ACTORS: u64 = 24;
/// Meetings they spread over.
const MEETINGS: u64 = 6;
/// RSS growth allowed between the end of warm-up and the end of the churn.
const RSS_GROWTH_BOUND_KIB: i64 = 24 * 1024;
/// Seconds the relay waits for a vanished client (its idle timeout).
const IDLE_MS: &str = "3000";

#[derive(Default)]
struct Tally {
    joins: AtomicU64,
    leaves: AtomicU64,
    vanished: AtomicU64,
    slow: AtomicU64,
    objects_in: AtomicU64,
    subscription_changes: AtomicU64,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sends 15 fps video (groups of 10) and audio while `on`, until `stop`.
async fn send_media(media: orelay_client::Media, on: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let mut g = 0u64;
    while !stop.load(Relaxed) {
        if !on.load(Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Ok(mut w) = media.open_group(VIDEO.track, g, 0, VIDEO.priority).await else {
            return;
        };
        for o in 0..10u64 {
            let h = w.next_header(if o == 0 { FLAG_KEYFRAME } else { 0 }, 1_000);
            if w.write(h, Bytes::from_static(&[9; 1_000])).await.is_err() {
                return;
            }
            let a = media.audio_header(AUDIO.track, g, o, AUDIO.priority);
            let _ = media.send_audio(&a, &[1; 80]);
            tokio::time::sleep(Duration::from_millis(66)).await;
        }
        w.finish();
        g += 1;
    }
}

/// Reads every group and datagram, counting objects.
fn read_media(media: orelay_client::Media, tally: Arc<Tally>) {
    let audio = media.clone();
    tokio::spawn(async move { while audio.read_audio().await.is_ok() {} });
    tokio::spawn(async move {
        while let Ok(mut g) = media.accept_group().await {
            let tally = tally.clone();
            tokio::spawn(async move {
                while let Ok(Some(_)) = g.next_object().await {
                    tally.objects_in.fetch_add(1, Relaxed);
                }
            });
        }
    });
}

/// One life: join, churn for a few seconds, then leave, drop or vanish.
async fn live(relay: &RelayProcess, seed: u64, tally: &Arc<Tally>) {
    let mut rng = Rng(seed | 1);
    let role = rng.below(10); // 0-6 normal, 7-8 slow, 9 vanishing
    let impair = if role == 9 {
        Some(Impair::start(relay.addr, seed).await)
    } else {
        None
    };
    let addr = impair.as_ref().map_or(relay.addr, |i| i.addr);
    let client = if role == 7 || role == 8 {
        tally.slow.fetch_add(1, Relaxed);
        let mut narrow = orelay_client::default_transport();
        narrow
            .receive_window((64u32 * 1024).into())
            .stream_receive_window((16u32 * 1024).into());
        relay.client_with("127.0.0.1:0".parse().unwrap(), narrow)
    } else {
        relay.client("127.0.0.1:0".parse().unwrap())
    };
    let m = (rng.below(MEETINGS) + 1) as u32;
    let Ok(mut s) = client.join(addr, &meeting_id(m), "pw", b"soak").await else {
        return;
    };
    tally.joins.fetch_add(1, Relaxed);
    let (on, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    if rng.below(3) > 0 {
        s.publish(VIDEO).await.unwrap();
        s.publish(AUDIO).await.unwrap();
        on.store(true, Relaxed);
    }
    let sender = tokio::spawn(send_media(s.media(), on.clone(), stop.clone()));
    if role < 7 {
        read_media(s.media(), tally.clone());
    }
    let mut known = Vec::new();
    let life = Instant::now() + Duration::from_millis(2_000 + rng.below(10_000));
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    while Instant::now() < life {
        tokio::select! {
            ev = s.next_event() => match ev {
                Some(Ok(ServerMessage::TrackPublished { participant, info })) => {
                    known.push((participant, info.track));
                    let _ = s.subscribe(participant, info.track, 0).await;
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = tick.tick() => match rng.below(6) {
                0 if on.load(Relaxed) => {
                    on.store(false, Relaxed);
                    let _ = s.send(&ClientMessage::Unpublish { track: VIDEO.track }).await;
                }
                1 if !on.load(Relaxed) => {
                    let _ = s.publish(VIDEO).await;
                    let _ = s.publish(AUDIO).await;
                    on.store(true, Relaxed);
                }
                2 | 3 if !known.is_empty() => {
                    let (p, t) = known[rng.below(known.len() as u64) as usize];
                    tally.subscription_changes.fetch_add(1, Relaxed);
                    let msg = if rng.below(2) == 0 {
                        ClientMessage::Unsubscribe { publisher: p, track: t }
                    } else {
                        ClientMessage::Subscribe { publisher: p, track: t, layer: 0 }
                    };
                    let _ = s.send(&msg).await;
                }
                _ => {}
            },
        }
    }
    stop.store(true, Relaxed);
    sender.abort();
    match (&impair, rng.below(4)) {
        (Some(impair), _) => {
            // Vanish: from now on nothing reaches the relay, not even the close.
            impair.set(Fault {
                blackout: true,
                ..Fault::default()
            });
            tally.vanished.fetch_add(1, Relaxed);
            drop(s);
        }
        (None, 0) => drop(s), // closes without Leave
        (None, _) => {
            let _ = s.leave().await;
            tally.leaves.fetch_add(1, Relaxed);
        }
    }
    client.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: scripts/soak.sh, or ORELAY_SOAK_SECS=120 ... -- --ignored"]
async fn churn_leaves_memory_flat_and_gauges_at_zero() {
    let secs: u64 = std::env::var("ORELAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let relay = RelayProcess::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--idle-timeout-ms",
            IDLE_MS,
        ],
        None,
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let warm_up = Duration::from_secs((secs / 5).clamp(20, 120));
    let rss_start = relay.rss_kib();
    let tally = Arc::new(Tally::default());
    let relay = Arc::new(relay);
    let mut actors = Vec::new();
    for a in 0..ACTORS {
        let (relay, tally) = (relay.clone(), tally.clone());
        actors.push(tokio::spawn(async move {
            let mut life = 0u64;
            while Instant::now() < deadline {
                live(&relay, a << 32 | life, &tally).await;
                life += 1;
            }
        }));
    }
    let (mut rss_warm, mut rss_peak) = (0, 0);
    let mut next = started;
    while Instant::now() < deadline {
        next += Duration::from_secs(10);
        tokio::time::sleep_until(next.into()).await;
        let m = relay.scrape().await;
        let rss = relay.rss_kib();
        if started.elapsed() >= warm_up && rss_warm == 0 {
            rss_warm = rss;
        }
        if rss_warm > 0 {
            rss_peak = rss_peak.max(rss);
        }
        println!(
            "soak t={:>4}s rss {rss} KiB, {} connections, {} participants, {} meetings, \
             {} queued bytes, {} streams open, {} joins",
            started.elapsed().as_secs(),
            m["orelay_connections_active"],
            m["orelay_participants_active"],
            m["orelay_meetings_active"],
            m["orelay_subscriber_queue_bytes"],
            m["orelay_subscriber_streams_open"],
            tally.joins.load(Relaxed)
        );
    }
    for a in actors {
        a.await.unwrap();
    }
    // Everyone has left or vanished: the vanished go at the relay's idle timeout.
    let mut zero = false;
    let mut m = Default::default();
    for _ in 0..300 {
        m = relay.scrape().await;
        zero = [
            "orelay_connections_active",
            "orelay_participants_active",
            "orelay_meetings_active",
            "orelay_subscriber_queue_bytes",
            "orelay_subscriber_streams_open",
        ]
        .iter()
        .all(|g| m[*g] == 0.0);
        if zero {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_end = relay.rss_kib();
    println!(
        "soak {secs}s: {} joins, {} leaves, {} vanished, {} slow, {} subscription changes, \
         {} objects received; relay RSS start {rss_start} KiB, after warm-up ({warm_up:?}) \
         {rss_warm} KiB, peak after warm-up {rss_peak} KiB, end {rss_end} KiB (growth bound \
         {RSS_GROWTH_BOUND_KIB} KiB)",
        tally.joins.load(Relaxed),
        tally.leaves.load(Relaxed),
        tally.vanished.load(Relaxed),
        tally.slow.load(Relaxed),
        tally.subscription_changes.load(Relaxed),
        tally.objects_in.load(Relaxed),
    );
    assert!(zero, "gauges not back to zero: {m:?}");
    assert!(tally.vanished.load(Relaxed) > 0 && tally.slow.load(Relaxed) > 0);
    assert!(tally.objects_in.load(Relaxed) > 0);
    assert!(rss_warm > 0, "the run ended before warm-up did");
    assert!(
        rss_peak - rss_warm <= RSS_GROWTH_BOUND_KIB,
        "RSS grew from {rss_warm} to {rss_peak} KiB"
    );
    let errors = relay.error_lines();
    assert!(errors.is_empty(), "error-level log lines: {errors:?}");
}
