//! How one participant's stint protects its media: end-to-end encryption through the
//! client's [`Secure`] layer (the default: real keys, real key schedule, SFrame), or,
//! with `--no-e2ee` (only to measure E2EE's cost), the old shared AES-GCM key of
//! [`crate::seal`].
//!
//! Every payload starts with its send time (µs since the Unix epoch), inside the
//! ciphertext, so latency is measured on what a receiver decrypted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use orelay_client::secure::Secure;
use orelay_client::GroupWriter;
use orelay_e2ee::frame::FrameError;
use orelay_e2ee::LocalKeys;
use orelay_proto::{DatagramHeader, GroupHeader, ObjectHeader, ParticipantId, Role};
use tokio::sync::watch;

use crate::keying::E2eeFigures;
use crate::seal::MeetingKey;

/// How long a receiver holds a frame that arrived before its key (a rekey's key
/// delivery can trail the leader's first frames of the new epoch by a round trip).
pub const KEY_WAIT: Duration = Duration::from_secs(1);

/// A stint's E2EE state: the client layer, and its epoch for receivers to wait on.
#[derive(Debug)]
pub struct E2ee {
    secure: Mutex<Secure>,
    epoch: watch::Sender<Option<u64>>,
    /// Frames not sent for want of a key.
    pub unkeyed: AtomicU64,
    /// Frames that opened after waiting for their key.
    pub late: AtomicU64,
    /// Key messages handed to the session.
    pub sent_key_messages: AtomicU64,
    /// Frames that never opened, by cause: no key, replayed (or older than the
    /// replay window), forged, other.
    pub failures: [AtomicU64; 4],
}

impl E2ee {
    /// Wraps a joined session's layer.
    pub fn new(secure: Secure) -> E2ee {
        E2ee {
            secure: Mutex::new(secure),
            epoch: watch::channel(None).0,
            unkeyed: AtomicU64::new(0),
            late: AtomicU64::new(0),
            sent_key_messages: AtomicU64::new(0),
            failures: Default::default(),
        }
    }

    /// The layer (the driver feeds it; a poisoned lock is shrugged off).
    pub fn lock(&self) -> MutexGuard<'_, Secure> {
        self.secure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the layer's current epoch to waiting receivers; returns it.
    pub fn publish_epoch(&self) -> Option<u64> {
        let epoch = self.lock().security().epoch();
        self.epoch.send_if_modified(|e| {
            let changed = *e != epoch;
            *e = epoch;
            changed
        });
        epoch
    }

    /// Whether media may be sent.
    pub fn keyed(&self) -> bool {
        self.epoch.borrow().is_some()
    }

    /// Opens with `open`; a frame with no key yet waits up to [`KEY_WAIT`] for an epoch
    /// change and is retried.
    async fn open_waiting(
        &self,
        open: impl Fn(&mut Secure, Instant) -> Result<Vec<u8>, FrameError>,
    ) -> Option<Vec<u8>> {
        let mut changes = self.epoch.subscribe();
        let deadline = tokio::time::Instant::now() + KEY_WAIT;
        let mut waited = false;
        loop {
            // The guard must not live across the wait below.
            let opened = open(&mut self.lock(), Instant::now());
            match opened {
                Ok(plain) => {
                    if waited {
                        self.late.fetch_add(1, Relaxed);
                    }
                    return Some(plain);
                }
                Err(FrameError::NoKey) => {
                    let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        self.failures[0].fetch_add(1, Relaxed);
                        return None;
                    }
                    waited = true;
                }
                Err(e) => {
                    let cause = match e {
                        FrameError::Replayed => 1,
                        FrameError::Forged => 2,
                        _ => 3,
                    };
                    self.failures[cause].fetch_add(1, Relaxed);
                    return None;
                }
            }
        }
    }
}

/// What a stint joins with.
#[derive(Debug)]
pub enum StintKeys {
    /// Its identity and KEM keys (E2EE).
    E2ee(LocalKeys),
    /// `--no-e2ee`: the meeting's shared key.
    Shared(Arc<MeetingKey>),
}

impl StintKeys {
    /// The public-key bundle for `Join.keys` (empty without E2EE).
    pub fn bundle(&self) -> Bytes {
        match self {
            StintKeys::E2ee(k) => k.bundle().map_or_else(|_| Bytes::new(), Bytes::from),
            StintKeys::Shared(_) => Bytes::new(),
        }
    }

    /// The protection of the session admitted as `participant` with `role`.
    pub fn protect(self, participant: ParticipantId, role: Role, now: Instant) -> Protect {
        match self {
            StintKeys::E2ee(k) => {
                Protect::E2ee(Arc::new(E2ee::new(Secure::new(k, participant, role, now))))
            }
            StintKeys::Shared(key) => Protect::Shared(key, Arc::default()),
        }
    }
}

/// A stint's media protection.
#[derive(Debug, Clone)]
pub enum Protect {
    /// End-to-end encryption.
    E2ee(Arc<E2ee>),
    /// `--no-e2ee`: the meeting's shared key and this sender's counter.
    Shared(Arc<MeetingKey>, Arc<AtomicU64>),
}

/// Reads the send time at the start of an opened payload.
fn sent_at(plain: &[u8]) -> Option<u64> {
    let sent: [u8; 8] = plain.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(sent))
}

impl Protect {
    /// The E2EE state, if this stint runs it.
    pub fn e2ee(&self) -> Option<&Arc<E2ee>> {
        match self {
            Protect::E2ee(e) => Some(e),
            Protect::Shared(..) => None,
        }
    }

    /// Whether this stint holds a key to send and open media with.
    pub fn keyed(&self) -> bool {
        self.e2ee().is_none_or(|e| e.keyed())
    }

    /// Seals an audio payload for `header`; `None` when no key is held yet (counted).
    pub fn seal_audio(&self, header: &DatagramHeader, plain: &[u8]) -> Option<Bytes> {
        match self {
            Protect::E2ee(e) => {
                let sealed = e.lock().seal_audio(header, plain);
                e.sealed(sealed.map(Bytes::from))
            }
            Protect::Shared(key, ctr) => {
                let mut aad = BytesMut::with_capacity(32);
                header.encode(&mut aad);
                Some(key.seal(header.publisher, ctr.fetch_add(1, Relaxed), &aad, plain))
            }
        }
    }

    /// Seals the next object of `w`'s group; `None` when no key is held yet (counted).
    pub fn seal_object(
        &self,
        w: &GroupWriter,
        flags: u8,
        plain: &[u8],
    ) -> Option<(ObjectHeader, Bytes)> {
        match self {
            Protect::E2ee(e) => {
                let sealed = e.lock().seal_object(w, flags, plain);
                e.sealed(sealed)
            }
            Protect::Shared(key, ctr) => {
                let header = w.next_header(flags, plain.len() + crate::seal::OVERHEAD);
                let mut aad = BytesMut::with_capacity(64);
                w.header.encode(&mut aad);
                header.encode(&mut aad);
                let sealed = key.seal(w.header.publisher, ctr.fetch_add(1, Relaxed), &aad, plain);
                Some((header, sealed))
            }
        }
    }

    /// Opens an audio payload; its send time, or `None` if it does not authenticate.
    pub async fn open_audio(&self, h: &DatagramHeader, payload: &[u8]) -> Option<u64> {
        let plain = match self {
            Protect::E2ee(e) => e.open_waiting(|s, now| s.open_audio(h, payload, now)).await,
            Protect::Shared(key, _) => {
                let mut aad = BytesMut::with_capacity(32);
                h.encode(&mut aad);
                key.open(h.publisher, &aad, payload).ok()
            }
        };
        sent_at(&plain?)
    }

    /// Opens an object of group `g`; its send time, or `None` if it does not authenticate.
    pub async fn open_object(
        &self,
        g: &GroupHeader,
        h: &ObjectHeader,
        payload: &[u8],
    ) -> Option<u64> {
        let plain = match self {
            Protect::E2ee(e) => {
                e.open_waiting(|s, now| s.open_object(g, h, payload, now))
                    .await
            }
            Protect::Shared(key, _) => {
                let mut aad = BytesMut::with_capacity(64);
                g.encode(&mut aad);
                h.encode(&mut aad);
                key.open(g.publisher, &aad, payload).ok()
            }
        };
        sent_at(&plain?)
    }
}

impl E2ee {
    /// Adds this stint's key-schedule counters to its meeting's figures.
    pub fn add_figures(&self, f: &mut E2eeFigures) {
        let mut secure = self.lock();
        let stats = secure.stats().clone();
        f.epoch_switches += stats.epochs;
        f.warnings += stats.warnings;
        f.opened_late += self.late.load(Relaxed);
        f.unkeyed_not_sent += self.unkeyed.load(Relaxed);
        f.key_messages += self.sent_key_messages.load(Relaxed);
        for (sum, n) in f.failures.iter_mut().zip(&self.failures) {
            *sum += n.load(Relaxed);
        }
        drop(secure.take_events());
    }

    /// Key messages to send now (counted).
    pub fn outgoing(&self) -> Vec<orelay_proto::ClientMessage> {
        let out = self.lock().outgoing();
        self.sent_key_messages.fetch_add(out.len() as u64, Relaxed);
        out
    }

    /// A sealing result: no key (or blocked by a roster mismatch) is counted, not sent.
    fn sealed<T>(&self, r: Result<T, FrameError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if matches!(e, FrameError::NoKey | FrameError::Blocked) {
                    self.unkeyed.fetch_add(1, Relaxed);
                } else {
                    tracing::warn!(error = %e, "sealing failed");
                }
                None
            }
        }
    }
}
