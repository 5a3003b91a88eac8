//! One benchmark cell: a profile, N subscribers, one target (relay or raw forwarder).
//!
//! Publishers and subscribers are real `orelay_client` connections on loopback. Every
//! payload starts with its send time (microseconds since the Unix epoch, big-endian),
//! so receivers time each object; payloads are not sealed (both targets treat them as
//! opaque bytes, and sealing would only spend load-side CPU).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use orelay_client::{Client, ClientError, GroupReader, Media, Session};
use orelay_proto::media::FLAG_KEYFRAME;
use orelay_proto::{ErrorCode, ParticipantId, ServerMessage, TrackInfo, TrackKind};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until, Instant};

use crate::procfs::{cpu_between, stat_cpu_between, udp_rcvbuf_errors, wait_pct, Proc};
use crate::{CellArgs, Profile, Target};

/// The publisher's track ID (every publisher uses the same one).
const TRACK: u64 = 1;
/// Meeting used by every cell.
const MEETING: &str = "fanout-bench";
/// Connections per client endpoint. Each endpoint is its own UDP socket with the
/// default receive buffer (about 208 KiB here), so few connections share one: with 100
/// per socket, a 10 kB frame fanned out to 100 subscribers overflowed it (kernel
/// `RcvbufErrors`), and the resulting loss throttled both targets alike.
const PER_ENDPOINT: usize = 10;
/// Joins in flight at once.
const JOIN_CONCURRENCY: usize = 32;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Media shape of a profile.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Objects per second per publisher.
    rate: f64,
    /// Payload bytes per object.
    bytes: usize,
    /// Objects per group stream; 0 = datagrams.
    group_len: u64,
}

fn shape(profile: Profile) -> Shape {
    match profile {
        Profile::Video => Shape {
            rate: 30.0,
            bytes: 10_000,
            group_len: 60,
        },
        Profile::Small => Shape {
            rate: 1_000.0,
            bytes: 1_200,
            group_len: 100,
        },
        Profile::Audio => Shape {
            rate: 50.0,
            bytes: 100,
            group_len: 0,
        },
    }
}

/// What receivers count; the window is set once everyone has joined.
struct Stats {
    window_start: AtomicU64,
    window_end: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Objects sent inside the window and received by each subscriber (at any time).
    per_sub: Vec<AtomicU64>,
    /// Objects that arrived (at any subscriber) inside the window.
    arrivals: AtomicU64,
    groups_reset: AtomicU64,
    malformed: AtomicU64,
}

impl Stats {
    fn record(&self, sub: usize, payload: &[u8]) {
        let Some(sent) = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
        else {
            self.malformed.fetch_add(1, Relaxed);
            return;
        };
        let now = now_us();
        let (start, end) = (
            self.window_start.load(Relaxed),
            self.window_end.load(Relaxed),
        );
        if (start..end).contains(&now) {
            self.arrivals.fetch_add(1, Relaxed);
        }
        if (start..end).contains(&sent) {
            if let Some(c) = self.per_sub.get(sub) {
                c.fetch_add(1, Relaxed);
            }
            let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
    }
}

/// Client endpoints, each serving up to [`PER_ENDPOINT`] connections.
fn endpoints(count: usize, fingerprint: [u8; 32]) -> anyhow::Result<Vec<Client>> {
    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
    (0..count.div_ceil(PER_ENDPOINT).max(1))
        .map(|_| {
            Client::new(bind, fingerprint)
                .map(with_host_secret)
                .context("client endpoint")
        })
        .collect()
}

/// Joins carry `ORELAY_HOST_SECRET` when it is set: the bench runs the relay in open
/// mode (token minting is not what it measures).
pub fn with_host_secret(client: Client) -> Client {
    match std::env::var("ORELAY_HOST_SECRET") {
        Ok(secret) => client.with_credentials(std::sync::Arc::new(move |_: &str| {
            orelay_proto::Credential::HostSecret(secret.clone())
        })),
        Err(_) => client,
    }
}

/// Keeps a session alive and drains its control events until the connection ends.
fn keep(mut session: Session) {
    tokio::spawn(async move { while let Some(Ok(_)) = session.next_event().await {} });
}

/// Joins one subscriber and subscribes it to every publisher's track.
async fn join_subscriber(
    client: Client,
    args: Arc<CellArgs>,
    publishers: Arc<Vec<ParticipantId>>,
) -> Result<Session, ClientError> {
    let mut session = client.join(args.addr, MEETING, "bench", b"sub").await?;
    match args.target {
        // The raw forwarder sends every publisher's media to every subscriber anyway.
        Target::Raw => {}
        Target::Relay => {
            let mut missing: Vec<ParticipantId> = publishers.to_vec();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !missing.is_empty() {
                let event = tokio::select! {
                    e = session.next_event() => e,
                    () = sleep_until(deadline) => return Err(ClientError::Unexpected("no TrackPublished")),
                };
                match event {
                    Some(Ok(ServerMessage::TrackPublished { participant, info }))
                        if missing.contains(&participant) =>
                    {
                        session.subscribe(participant, info.track, 0).await?;
                        missing.retain(|p| *p != participant);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(ClientError::Unexpected("control stream ended")),
                }
            }
        }
    }
    Ok(session)
}

/// Runs one cell and returns its JSON line.
pub async fn run(args: CellArgs) -> anyhow::Result<serde_json::Value> {
    let args = Arc::new(args);
    let shape = shape(args.profile);
    let n_pub = match args.profile {
        Profile::Audio => args.audio_publishers.max(1),
        _ => 1,
    };
    let fingerprint =
        orelay_client::parse_fingerprint(&args.fingerprint).context("bad --fingerprint")?;
    let target = Proc {
        pid: Some(args.pid),
        clk_tck: args.clk_tck,
    };
    let me = Proc {
        pid: None,
        clk_tck: args.clk_tck,
    };
    let rss_idle = target.sample()?.rss_kib;

    // Publishers first, so subscribers learn their tracks on admission.
    let pub_client = endpoints(n_pub, fingerprint)?;
    let mut pub_media = Vec::new();
    let mut pub_ids = Vec::new();
    for i in 0..n_pub {
        let client = &pub_client[i / PER_ENDPOINT];
        let mut session = client.join(args.addr, MEETING, "bench", b"pub").await?;
        let kind = if shape.group_len == 0 {
            TrackKind::AUDIO
        } else {
            TrackKind::VIDEO
        };
        session
            .publish(TrackInfo {
                track: TRACK,
                kind,
                layers: 1,
                priority: 100,
            })
            .await?;
        pub_ids.push(session.participant());
        pub_media.push(session.media());
        keep(session);
    }

    let stats = Arc::new(Stats {
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        per_sub: (0..args.subscribers).map(|_| AtomicU64::new(0)).collect(),
        arrivals: AtomicU64::new(0),
        groups_reset: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
    });
    let join_started = Instant::now();
    let sub_clients = endpoints(args.subscribers, fingerprint)?;
    let pub_ids = Arc::new(pub_ids);
    let gate = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..args.subscribers {
        let client = sub_clients[i / PER_ENDPOINT].clone();
        let (args, pub_ids, gate, stats) =
            (args.clone(), pub_ids.clone(), gate.clone(), stats.clone());
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let session = join_subscriber(client, args, pub_ids).await?;
            let media = session.media();
            keep(session);
            if shape.group_len == 0 {
                tokio::spawn(receive_audio(media, i, stats));
            } else {
                tokio::spawn(receive_groups(media, i, stats));
            }
            Ok::<(), ClientError>(())
        });
    }
    let mut join_failures = 0u64;
    let mut first_error = None;
    while let Some(r) = joins.join_next().await {
        let error = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        join_failures += 1;
        first_error.get_or_insert(error);
    }
    let join_secs = join_started.elapsed().as_secs_f64();
    if join_failures > 0 {
        eprintln!("fanout-load: {join_failures} subscriber joins failed; first: {first_error:?}");
    }
    sleep(Duration::from_millis(300)).await;

    // The schedule: warm-up, then the measured window; senders stop at its end.
    let start = Instant::now() + Duration::from_millis(50);
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.window);
    let start_us = now_us() + 50_000;
    let window_start_us = start_us + warmup.as_micros() as u64;
    let window_end_us = window_start_us + window.as_micros() as u64;
    stats.window_start.store(window_start_us, Relaxed);
    stats.window_end.store(window_end_us, Relaxed);
    let sent_in_window = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (p, media) in pub_media.into_iter().enumerate() {
        // Publishers spread evenly over one period, not all at once.
        let offset = Duration::from_secs_f64(p as f64 / (n_pub as f64 * shape.rate));
        let sched = Schedule {
            start: start + offset,
            end: start + warmup + window,
            window_start_us,
            window_end_us,
        };
        senders.push(tokio::spawn(publish(
            media,
            shape,
            sched,
            sent_in_window.clone(),
        )));
    }
    sleep_until(start + warmup).await;
    let (t0, l0, drops0) = (target.sample()?, me.sample()?, udp_rcvbuf_errors());
    sleep_until(start + warmup + window).await;
    let (t1, l1, drops1) = (target.sample()?, me.sample()?, udp_rcvbuf_errors());
    sleep(Duration::from_secs_f64(args.drain)).await;
    // A publisher still blocked in a write now is stopped: the cell ends on time.
    let (mut publish_errors, mut publish_stalled, mut skipped) = (0u64, 0u64, 0u64);
    for s in senders {
        if !s.is_finished() {
            publish_stalled += 1;
            s.abort();
            continue;
        }
        match s.await {
            Ok(Ok(n)) => skipped += n,
            _ => publish_errors += 1,
        }
    }

    let (cpu_us, cpu_pct) = cpu_between(&t0, &t1);
    let (_, load_cpu_pct) = cpu_between(&l0, &l1);
    let (stat_cpu_us, _) = stat_cpu_between(&t0, &t1);
    let sent = sent_in_window.load(Relaxed);
    let received: u64 = stats.per_sub.iter().map(|c| c.load(Relaxed)).sum();
    let worst = stats
        .per_sub
        .iter()
        .map(|c| c.load(Relaxed))
        .min()
        .unwrap_or(0);
    let expected = sent * args.subscribers as u64;
    let delivered = stats.arrivals.load(Relaxed);
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let h = stats.latency.lock().unwrap_or_else(|p| p.into_inner());
    Ok(json!({
        "mode": "cell",
        "target": args.target.name(),
        "profile": args.profile.name(),
        "subscribers": args.subscribers,
        "publishers": n_pub,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "join_s": join_secs,
        "join_failures": join_failures,
        "publish_errors": publish_errors,
        "publish_stalled": publish_stalled,
        "send_slots_skipped": skipped,
        "sent_in_window": sent,
        "expected": expected,
        "received": received,
        "loss": 1.0 - ratio(received, expected),
        "worst_subscriber_loss": 1.0 - ratio(worst, sent),
        "delivered": delivered,
        "delivered_per_s": delivered as f64 / args.window,
        "groups_reset": stats.groups_reset.load(Relaxed),
        "malformed": stats.malformed.load(Relaxed),
        "latency_p50_us": h.value_at_quantile(0.50),
        "latency_p99_us": h.value_at_quantile(0.99),
        "latency_max_us": h.max(),
        "target_cpu_us": cpu_us,
        "target_cpu_pct": cpu_pct,
        "target_stat_cpu_us": stat_cpu_us,
        "cpu_us_per_1k": if delivered == 0 { 0.0 } else { cpu_us as f64 * 1000.0 / delivered as f64 },
        "rss_idle_kib": rss_idle,
        "rss_start_kib": t0.rss_kib,
        "rss_end_kib": t1.rss_kib,
        "load_cpu_pct": load_cpu_pct,
        "target_runqueue_wait_pct": wait_pct(&t0, &t1),
        "load_runqueue_wait_pct": wait_pct(&l0, &l1),
        "udp_rcvbuf_drops": drops1.saturating_sub(drops0),
        "load_saturated": load_cpu_pct >= args.saturated_pct,
    }))
}

/// When a publisher sends, and which send times count as inside the window.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    end: Instant,
    window_start_us: u64,
    window_end_us: u64,
}

/// A payload of `len` bytes starting with the send time.
fn payload(len: usize, sent_us: u64) -> Bytes {
    let mut b = BytesMut::zeroed(len.max(8));
    b[..8].copy_from_slice(&sent_us.to_be_bytes());
    b.freeze()
}

/// Sends paced objects from `sched.start` to `sched.end`, as groups or datagrams;
/// returns how many send slots were skipped because sending was held back.
async fn publish(
    media: Media,
    shape: Shape,
    sched: Schedule,
    sent_in_window: Arc<AtomicU64>,
) -> Result<u64, ClientError> {
    let period = Duration::from_secs_f64(1.0 / shape.rate);
    let mut next = sched.start;
    let mut writer = None;
    let mut group = 0u64;
    let mut seq = 0u64;
    let mut skipped = 0u64;
    while next < sched.end {
        sleep_until(next).await;
        next += period;
        // A publisher held back by flow control does not burst to catch up: slots
        // already more than two periods in the past are skipped (counted, not sent).
        let now = Instant::now();
        if now >= sched.end {
            break;
        }
        while next + 2 * period < now {
            next += period;
            skipped += 1;
        }
        let sent = now_us();
        let body = payload(shape.bytes, sent);
        if shape.group_len == 0 {
            let header = media.audio_header(TRACK, 0, seq, 200);
            media.send_audio(&header, &body)?;
        } else {
            let index = seq % shape.group_len;
            if index == 0 {
                if let Some(w) = writer.take() {
                    orelay_client::GroupWriter::finish(w);
                }
                writer = Some(media.open_group(TRACK, group, 0, 100).await?);
                group += 1;
            }
            if let Some(w) = writer.as_mut() {
                let flags = if index == 0 { FLAG_KEYFRAME } else { 0 };
                let header = w.next_header(flags, body.len());
                w.write(header, body).await?;
            }
        }
        seq += 1;
        if (sched.window_start_us..sched.window_end_us).contains(&sent) {
            sent_in_window.fetch_add(1, Relaxed);
        }
    }
    if let Some(w) = writer {
        w.finish();
    }
    Ok(skipped)
}

/// Receives every group stream of one subscriber.
async fn receive_groups(media: Media, sub: usize, stats: Arc<Stats>) {
    while let Ok(group) = media.accept_group().await {
        tokio::spawn(receive_group(group, sub, stats.clone()));
    }
}

async fn receive_group(mut group: GroupReader, sub: usize, stats: Arc<Stats>) {
    loop {
        match group.next_object().await {
            Ok(Some(obj)) => stats.record(sub, &obj.payload),
            Ok(None) => return,
            Err(ClientError::Reset(code)) if code == ErrorCode::GROUP_DROPPED => {
                stats.groups_reset.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => return,
        }
    }
}

/// Receives every audio datagram of one subscriber.
async fn receive_audio(media: Media, sub: usize, stats: Arc<Stats>) {
    while let Ok((_, payload)) = media.read_audio().await {
        stats.record(sub, &payload);
    }
}
