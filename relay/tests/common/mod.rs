//! Helpers shared by the relay's integration tests: a relay on loopback, clients,
//! deterministic payloads and event helpers. Everything runs over real QUIC.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod impair;
pub mod legit;
pub mod netlab;
pub mod process;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use orelay_client::{parse_fingerprint, Client, Session};
use orelay_proto::{Credential, ParticipantId, Role, ServerMessage, TrackInfo, TrackKind};
use orelay_relay::config::TokenKey;
use orelay_relay::core::token::{unix_now, Claims, SigningKey};
use orelay_relay::{Config, Relay, RelayStats, RunningRelay};

/// The audio track every test participant publishes.
pub const AUDIO: TrackInfo = TrackInfo {
    track: 1,
    kind: TrackKind::AUDIO,
    layers: 1,
    priority: 200,
};

/// The video track every test participant publishes.
pub const VIDEO: TrackInfo = TrackInfo {
    track: 2,
    kind: TrackKind::VIDEO,
    layers: 1,
    priority: 100,
};

/// The token-signing key of this test process (the operator's meeting service).
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(Some("test")).unwrap())
}

/// A signed token for `meeting` with `role`, valid for an hour, publishing anything.
pub fn token(meeting: &str, identity: &str, role: Role) -> String {
    let claims = Claims::new(meeting, identity, role, unix_now(), 3600);
    signing_key().mint(&claims).unwrap()
}

/// A host token for `meeting` as a credential (what the tests' clients join with).
pub fn credential(meeting: &str) -> Credential {
    Credential::Token(token(meeting, "test-host", Role::Host))
}

/// A relay configuration for tests: loopback, ephemeral port, signed join tokens
/// verified with [`signing_key`]'s public key.
pub fn config() -> Config {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config.admission.token_keys = vec![TokenKey {
        kid: signing_key().kid().to_owned(),
        public_key: signing_key().public_key().to_owned(),
    }];
    // Every test client shares 127.0.0.1: only the brute-force tests tighten these.
    config.admission.attempts_per_source_per_minute = 1_000_000;
    config.admission.attempts_per_meeting_per_minute = 1_000_000;
    config
}

/// Starts a relay in this runtime and a client endpoint that pins its certificate.
pub fn start(config: Config) -> (RunningRelay, Client) {
    let relay = Relay::bind(config).unwrap().spawn().unwrap();
    let client = client_for(&relay, orelay_client::default_transport());
    (relay, client)
}

/// A client endpoint with custom transport settings for `relay`, whose joins carry a
/// host token for the meeting (see [`credential`]).
pub fn client_for(relay: &RunningRelay, transport: quinn::TransportConfig) -> Client {
    let pin = parse_fingerprint(&relay.fingerprint).unwrap();
    Client::with_transport(SocketAddr::from(([127, 0, 0, 1], 0)), pin, transport)
        .unwrap()
        .with_credentials(Arc::new(credential))
}

/// A valid meeting ID for meeting number `n`.
pub fn meeting_id(n: u32) -> String {
    format!("{:011}", 40_000_000_000u64 + u64::from(n))
}

/// A deterministic payload naming its meeting, publisher, track, group and object, so a
/// receiver can recompute exactly what it should have received.
pub fn payload(
    meeting: u32,
    publisher: ParticipantId,
    track: u64,
    group: u64,
    object: u64,
    len: usize,
) -> Bytes {
    let mut seed = u64::from(meeting) << 48 ^ publisher << 32 ^ track << 24 ^ group << 12 ^ object;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&meeting.to_be_bytes());
    while out.len() < len {
        // xorshift64*: cheap and deterministic.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Reads events until `count` tracks of other participants were announced; returns them.
pub async fn await_tracks(session: &mut Session, count: usize) -> Vec<(ParticipantId, TrackInfo)> {
    let mut tracks = Vec::new();
    while tracks.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(10), session.next_event())
            .await
            .expect("timed out waiting for TrackPublished")
            .expect("control stream ended")
            .expect("control stream failed");
        if let ServerMessage::TrackPublished { participant, info } = event {
            tracks.push((participant, info));
        }
    }
    tracks
}

/// The application close code a connection ended with, if it was closed that way.
pub async fn close_code(conn: &quinn::Connection) -> Option<u64> {
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("connection was not closed");
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

/// Polls `cond` every 20 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Subscribes and waits until the relay has applied it: the control stream is ordered,
/// so the answer to a second subscription (to a track nobody publishes) proves the
/// first one is in place before any media is sent.
pub async fn subscribe_confirmed(session: &mut Session, publisher: ParticipantId, track: u64) {
    const NOBODY: u64 = 0xdead;
    session.subscribe(publisher, track, 0).await.unwrap();
    session.subscribe(publisher, NOBODY, 0).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), session.next_event())
            .await
            .expect("timed out waiting for SubscriptionEnded")
            .expect("control stream ended")
            .expect("control stream failed");
        if matches!(event, ServerMessage::SubscriptionEnded { track: t, .. } if t == NOBODY) {
            return;
        }
    }
}

/// Joins meeting number `m` through the tests' admission (one place to adapt when
/// admission changes).
pub async fn join_meeting(client: &Client, addr: SocketAddr, m: u32, info: &[u8]) -> Session {
    client
        .join(addr, &meeting_id(m), "pw", info)
        .await
        .expect("join failed")
}

/// The encoded `Join` for meeting number `m`, for tests that write raw bytes.
pub fn raw_join(m: u32) -> Vec<u8> {
    use orelay_proto::control::ControlMessage;
    orelay_proto::ClientMessage::Join {
        version: orelay_proto::PROTOCOL_VERSION,
        meeting_id: meeting_id(m),
        passcode: "pw".into(),
        info: Bytes::new(),
        credential: credential(&meeting_id(m)),
        keys: Bytes::new(),
    }
    .to_bytes()
    .to_vec()
}

/// This process's resident set size in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> i64 {
    rss_of("self")
}

/// The resident set size in KiB of process `pid` (`"self"` for this one).
pub fn rss_of(pid: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The peaks of the relay's byte gauges and of this process's RSS while an attack ran.
pub struct Peaks {
    queued: Arc<AtomicI64>,
    reads: Arc<AtomicI64>,
    rss: Arc<AtomicI64>,
    rss_before: i64,
    task: tokio::task::JoinHandle<()>,
}

/// What [`Peaks::stop`] measured.
#[derive(Debug, Clone, Copy)]
pub struct PeakFigures {
    /// Highest `queued_bytes` sampled.
    pub queued_bytes: i64,
    /// Highest `reads_open` sampled.
    pub reads_open: i64,
    /// Growth of this process's RSS (relay and clients) over the start, in KiB.
    pub rss_growth_kib: i64,
}

impl Peaks {
    /// Samples every 10 ms until stopped.
    pub fn start(stats: &Arc<RelayStats>) -> Peaks {
        let (queued, reads, rss) = (Arc::default(), Arc::default(), Arc::default());
        let rss_before = rss_kib();
        let task = tokio::spawn({
            let (stats, queued, reads, rss): (_, Arc<AtomicI64>, Arc<AtomicI64>, Arc<AtomicI64>) = (
                stats.clone(),
                Arc::clone(&queued),
                Arc::clone(&reads),
                Arc::clone(&rss),
            );
            async move {
                loop {
                    let s = stats.snapshot();
                    queued.fetch_max(s.queued_bytes, Relaxed);
                    reads.fetch_max(s.reads_open, Relaxed);
                    rss.fetch_max(rss_kib(), Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Peaks {
            queued,
            reads,
            rss,
            rss_before,
            task,
        }
    }

    /// Stops sampling and returns the peaks.
    pub fn stop(self) -> PeakFigures {
        self.task.abort();
        PeakFigures {
            queued_bytes: self.queued.load(Relaxed),
            reads_open: self.reads.load(Relaxed),
            rss_growth_kib: self.rss.load(Relaxed) - self.rss_before,
        }
    }
}

impl PeakFigures {
    /// Prints the peaks and asserts the relay's byte gauge stayed within `queued_bound`
    /// and the process grew by less than `rss_bound_kib`.
    pub fn assert_within(&self, what: &str, queued_bound: i64, rss_bound_kib: i64) {
        println!(
            "{what}: peak queued {} B (bound {queued_bound}), peak streams to subscribers {}, \
             process RSS growth {} KiB (bound {rss_bound_kib})",
            self.queued_bytes, self.reads_open, self.rss_growth_kib
        );
        assert!(self.queued_bytes <= queued_bound, "{what}: {self:?}");
        assert!(self.rss_growth_kib <= rss_bound_kib, "{what}: {self:?}");
    }
}

/// A connection that sent a `Join` for meeting `m` as raw bytes, with its control
/// stream's send side for more raw bytes; the receive side is drained in the
/// background so the relay's writes do not fail first.
pub async fn joined_raw(
    client: &Client,
    addr: SocketAddr,
    m: u32,
) -> (quinn::Connection, quinn::SendStream) {
    let conn = client.connect(addr).await.unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&raw_join(m)).await.unwrap();
    tokio::spawn(async move {
        let mut recv = recv;
        while let Ok(Some(_)) = recv.read_chunk(4096, true).await {}
    });
    (conn, send)
}
