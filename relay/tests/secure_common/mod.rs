//! End-to-end encrypted participants over real QUIC: each runs the client's E2EE layer
//! (`orelay_client::secure`) in a driver task that feeds it the relay's roster and key
//! messages and sends what it produces; a reader task opens every received object.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orelay_client::secure::Secure;
use orelay_client::{Client, JoinRequest, Media};
use orelay_e2ee::frame::FrameError;
use orelay_e2ee::{KemSuite, LocalKeys, SecurityEvent, Warning};
use orelay_proto::{ClientMessage, Credential, ParticipantId, Role, ServerMessage};
use tokio::sync::{mpsc, watch};

use crate::common::{token, VIDEO};

/// One received object: publisher, group, and what opening it gave.
pub type Received = (ParticipantId, u64, Result<Vec<u8>, FrameError>);

/// Commands to a participant's driver task.
pub enum Cmd {
    /// Send a control message.
    Send(ClientMessage),
    /// Feed a message as if the relay had sent it (the injection hook).
    Inject(ServerMessage),
    /// Leave the meeting.
    Leave,
}

/// An encrypted participant.
pub struct Peer {
    pub pid: ParticipantId,
    pub secure: Arc<Mutex<Secure>>,
    pub media: Media,
    pub events: Arc<Mutex<Vec<ServerMessage>>>,
    pub warnings: Arc<Mutex<Vec<Warning>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    cmd: mpsc::UnboundedSender<Cmd>,
    next_group: u64,
}

/// Bumped by every driver and reader after each step: tests wait on it.
pub fn progress() -> (Arc<watch::Sender<u64>>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    (Arc::new(tx), rx)
}

/// Joins `meeting` with fresh X-Wing keys and starts the driver and reader tasks.
pub async fn join(
    client: &Client,
    relay: SocketAddr,
    meeting: &str,
    name: &str,
    role: Role,
    tick: &Arc<watch::Sender<u64>>,
) -> Peer {
    let keys = LocalKeys::generate(KemSuite::XWing).unwrap();
    let request = JoinRequest {
        meeting_id: meeting.to_owned(),
        passcode: String::new(),
        info: Vec::new(),
        credential: Credential::Token(token(meeting, name, role)),
        keys: Bytes::from(keys.bundle().unwrap()),
    };
    let mut session = client.join_with(relay, &request).await.unwrap();
    let pid = session.participant();
    let secure = Arc::new(Mutex::new(Secure::new(
        keys,
        pid,
        session.role(),
        Instant::now(),
    )));
    let events = Arc::new(Mutex::new(Vec::new()));
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let media = session.media();
    let (cmd, mut cmds) = mpsc::unbounded_channel();
    let (s, e, w, t) = (
        secure.clone(),
        events.clone(),
        warnings.clone(),
        tick.clone(),
    );
    tokio::spawn(async move {
        loop {
            let due = s.lock().unwrap().poll_timeout();
            let timer = async {
                match due {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = session.next_event() => {
                    let Some(Ok(msg)) = ev else { break };
                    if !s.lock().unwrap().on_message(&msg, Instant::now()) {
                        e.lock().unwrap().push(msg);
                    }
                }
                () = timer => s.lock().unwrap().on_timeout(Instant::now()),
                c = cmds.recv() => match c {
                    Some(Cmd::Send(m)) => {
                        if session.send(&m).await.is_err() { break }
                    }
                    Some(Cmd::Inject(m)) => {
                        s.lock().unwrap().on_message(&m, Instant::now());
                    }
                    Some(Cmd::Leave) | None => {
                        let _ = session.leave().await;
                        break;
                    }
                },
            }
            let out = {
                let mut sec = s.lock().unwrap();
                for ev in sec.take_events() {
                    if let SecurityEvent::Warning(x) = ev {
                        w.lock().unwrap().push(x);
                    }
                }
                sec.outgoing()
            };
            for m in out {
                if session.send(&m).await.is_err() {
                    break;
                }
            }
            t.send_modify(|v| *v += 1);
        }
        t.send_modify(|v| *v += 1);
    });
    let (m, s, r, t) = (
        media.clone(),
        secure.clone(),
        received.clone(),
        tick.clone(),
    );
    tokio::spawn(async move {
        while let Ok(mut group) = m.accept_group().await {
            while let Ok(Some(obj)) = group.next_object().await {
                let opened = s.lock().unwrap().open_object(
                    &group.header,
                    &obj.header,
                    &obj.payload,
                    Instant::now(),
                );
                r.lock()
                    .unwrap()
                    .push((group.header.publisher, group.header.group, opened));
                t.send_modify(|v| *v += 1);
            }
        }
    });
    Peer {
        pid,
        secure,
        media,
        events,
        warnings,
        received,
        cmd,
        next_group: 0,
    }
}

impl Peer {
    pub fn send(&self, msg: ClientMessage) {
        self.cmd.send(Cmd::Send(msg)).unwrap();
    }

    pub fn inject(&self, msg: ServerMessage) {
        self.cmd.send(Cmd::Inject(msg)).unwrap();
    }

    pub fn leave(&self) {
        let _ = self.cmd.send(Cmd::Leave);
    }

    pub fn epoch(&self) -> Option<u64> {
        self.secure.lock().unwrap().security().epoch()
    }

    pub fn code(&self) -> Option<String> {
        self.secure.lock().unwrap().security().security_code()
    }

    pub fn can_send(&self) -> bool {
        self.secure.lock().unwrap().security().can_send()
    }

    /// Sends one encrypted video group of one object carrying `plain`; returns its
    /// group number and the sealed payload as sent.
    pub async fn send_frame(&mut self, plain: &[u8]) -> (u64, Bytes) {
        let group = self.next_group;
        self.next_group += 1;
        let mut w = self
            .media
            .open_group(VIDEO.track, group, 0, 100)
            .await
            .unwrap();
        let (header, sealed) = self
            .secure
            .lock()
            .unwrap()
            .seal_object(&w, 1, plain)
            .unwrap();
        w.write(header, sealed.clone()).await.unwrap();
        w.finish();
        (group, sealed)
    }

    /// Objects received from `from` that opened to `plain`.
    pub fn opened_from(&self, from: ParticipantId, plain: &[u8]) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, r)| *p == from && r.as_deref() == Ok(plain))
            .count()
    }

    /// Objects that failed to open.
    pub fn failures(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, r)| r.is_err())
            .cloned()
            .collect()
    }

    fn confirmed(&self, track: u64) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ServerMessage::SubscriptionEnded { track: t, .. } if *t == track))
    }

    fn published(&self, who: ParticipantId) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ServerMessage::TrackPublished { participant, .. } if *participant == who))
    }
}

/// Waits (≤ 60 s, failing the test) until `cond` holds, re-checking after each step of
/// any participant.
pub async fn until(rx: &mut watch::Receiver<u64>, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
    }
}

/// Everyone publishes video and subscribes to everyone else's, confirmed by the relay
/// (the answer to a subscription to a track nobody has proves the others are in place).
pub async fn wire_media(peers: &[Peer], rx: &mut watch::Receiver<u64>) {
    const NOBODY: u64 = 0xdead;
    for p in peers {
        p.send(ClientMessage::Publish(VIDEO));
    }
    until(rx, "every track published", || {
        peers
            .iter()
            .all(|p| peers.iter().all(|q| q.pid == p.pid || p.published(q.pid)))
    })
    .await;
    for p in peers {
        for q in peers.iter().filter(|q| q.pid != p.pid) {
            p.send(ClientMessage::Subscribe {
                publisher: q.pid,
                track: VIDEO.track,
                layer: 0,
            });
        }
        p.send(ClientMessage::Subscribe {
            publisher: p.pid,
            track: NOBODY,
            layer: 0,
        });
    }
    until(rx, "subscriptions in place", || {
        peers.iter().all(|p| p.confirmed(NOBODY))
    })
    .await;
}

/// Waits until every peer is on one epoch above `above`, with one security code, and
/// may send; returns the epoch.
pub async fn same_epoch(peers: &[Peer], rx: &mut watch::Receiver<u64>, above: u64) -> u64 {
    until(rx, "one epoch and security code everywhere", || {
        let e = peers[0].epoch();
        let c = peers[0].code();
        e.is_some_and(|e| e > above)
            && c.is_some()
            && peers
                .iter()
                .all(|p| p.epoch() == e && p.code() == c && p.can_send())
    })
    .await;
    peers[0].epoch().unwrap()
}

/// Every peer sends `frame(pid)`; waits until every other peer opened it.
pub async fn all_exchange(
    peers: &mut [Peer],
    rx: &mut watch::Receiver<u64>,
    frame: impl Fn(ParticipantId) -> Vec<u8>,
) {
    for p in peers.iter_mut() {
        let plain = frame(p.pid);
        p.send_frame(&plain).await;
    }
    until(rx, "every frame opened by every other participant", || {
        peers.iter().all(|r| {
            peers
                .iter()
                .all(|s| s.pid == r.pid || r.opened_from(s.pid, &frame(s.pid)) >= 1)
        })
    })
    .await;
}
