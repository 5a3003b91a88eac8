//! End-to-end encryption for a joined session: feeds roster events and key messages
//! into [`orelay_e2ee::MeetingSecurity`], turns its output into `KeyMessage`s, and seals
//! and opens media with SFrame, binding the routing headers the relay reads.
//!
//! What is bound as associated data: for a group object, the encoded `GroupHeader`
//! followed by the encoded `ObjectHeader` (whose `length` is the sealed length); for an
//! audio datagram, the encoded `DatagramHeader`. The relay forwards these bytes as is,
//! so an altered header fails authentication at the receiver.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use orelay_e2ee::frame::FrameError;
use orelay_e2ee::{Config, Input, LocalKeys, MeetingSecurity, SecurityEvent, Warning};
use orelay_proto::{
    ClientMessage, DatagramHeader, GroupHeader, ObjectHeader, ParticipantId, Recipient, Role,
    ServerMessage,
};

use crate::media::GroupWriter;

/// Counters a client (or loadgen) reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SecureStats {
    /// Frames that opened.
    pub decrypted: u64,
    /// Frames that failed to open (forged, altered, replayed, or no key).
    pub decrypt_failures: u64,
    /// Frames that failed for want of a key (included in `decrypt_failures`).
    pub no_key: u64,
    /// Epochs this participant switched to.
    pub epochs: u64,
    /// Warnings raised (roster mismatch, bad key message…).
    pub warnings: u64,
}

/// The E2EE layer of one session.
#[derive(Debug)]
pub struct Secure {
    sec: MeetingSecurity,
    stats: SecureStats,
    events: Vec<SecurityEvent>,
    aad: BytesMut,
}

impl Secure {
    /// The layer for participant `participant` (from `Admitted`) with role `role`, using
    /// the `keys` whose bundle went into `Join.keys`.
    pub fn new(keys: LocalKeys, participant: ParticipantId, role: Role, now: Instant) -> Secure {
        Secure {
            sec: MeetingSecurity::new(
                keys,
                participant,
                role == Role::Host,
                Config::default(),
                now,
            ),
            stats: SecureStats::default(),
            events: Vec::new(),
            aad: BytesMut::with_capacity(64),
        }
    }

    /// Feeds a server message; returns true if it was one E2EE cares about.
    pub fn on_message(&mut self, msg: &ServerMessage, now: Instant) -> bool {
        let input = match msg {
            ServerMessage::ParticipantJoined(p) => Input::Joined {
                participant: p.participant,
                host: p.role == Role::Host,
                keys: &p.keys,
            },
            ServerMessage::ParticipantLeft { participant } => Input::Left {
                participant: *participant,
            },
            ServerMessage::KeyMessage { from, blob, .. } => Input::KeyMessage { from: *from, blob },
            _ => return false,
        };
        self.sec.handle(input, now);
        self.drain_events();
        true
    }

    /// Runs the key schedule's timers (call at [`poll_timeout`](Self::poll_timeout)).
    pub fn on_timeout(&mut self, now: Instant) {
        self.sec.handle_timeout(now);
        self.drain_events();
    }

    /// When [`on_timeout`](Self::on_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sec.poll_timeout()
    }

    /// Key messages to send now.
    pub fn outgoing(&mut self) -> Vec<ClientMessage> {
        std::iter::from_fn(|| self.sec.poll_transmit())
            .map(|o| ClientMessage::KeyMessage {
                to: match o.to {
                    orelay_e2ee::Recipient::All => Recipient::All,
                    orelay_e2ee::Recipient::One(p) => Recipient::One(p),
                },
                blob: Bytes::from(o.blob),
            })
            .collect()
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.sec.poll_event() {
            match &e {
                SecurityEvent::EpochChanged { .. } => self.stats.epochs += 1,
                SecurityEvent::Warning(_) => self.stats.warnings += 1,
                SecurityEvent::Info { .. } => {}
            }
            // Bounded: the caller drains with `take_events`; beyond 1,024 the oldest go.
            if self.events.len() >= 1024 {
                self.events.remove(0);
            }
            self.events.push(e);
        }
    }

    /// Events since the last call (epoch changes, names, warnings).
    pub fn take_events(&mut self) -> Vec<SecurityEvent> {
        std::mem::take(&mut self.events)
    }

    /// Warnings among the events not yet taken.
    pub fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.events.iter().filter_map(|e| match e {
            SecurityEvent::Warning(w) => Some(w),
            _ => None,
        })
    }

    /// The state machine (epoch, leader, security code, info sealing).
    pub fn security(&mut self) -> &mut MeetingSecurity {
        &mut self.sec
    }

    /// Counters so far.
    pub fn stats(&self) -> &SecureStats {
        &self.stats
    }

    /// Seals the next object of `writer`'s group: returns its header and payload.
    pub fn seal_object(
        &mut self,
        writer: &GroupWriter,
        flags: u8,
        plain: &[u8],
    ) -> Result<(ObjectHeader, Bytes), FrameError> {
        let header = writer.next_header(flags, self.sec.sealed_len(plain.len()));
        self.aad.clear();
        writer.header.encode(&mut self.aad);
        header.encode(&mut self.aad);
        let sealed = self.sec.encrypt(&self.aad, plain)?;
        Ok((header, Bytes::from(sealed)))
    }

    /// Opens a received object of the group with header `group`.
    pub fn open_object(
        &mut self,
        group: &GroupHeader,
        header: &ObjectHeader,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, FrameError> {
        self.aad.clear();
        group.encode(&mut self.aad);
        header.encode(&mut self.aad);
        let aad = std::mem::take(&mut self.aad);
        let r = self.sec.decrypt(group.publisher, &aad, payload, now);
        self.aad = aad;
        self.count(r)
    }

    /// Seals an audio payload for the datagram header `header`.
    pub fn seal_audio(
        &mut self,
        header: &DatagramHeader,
        plain: &[u8],
    ) -> Result<Vec<u8>, FrameError> {
        self.aad.clear();
        header.encode(&mut self.aad);
        self.sec.encrypt(&self.aad, plain)
    }

    /// Opens a received audio datagram's payload.
    pub fn open_audio(
        &mut self,
        header: &DatagramHeader,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, FrameError> {
        self.aad.clear();
        header.encode(&mut self.aad);
        let aad = std::mem::take(&mut self.aad);
        let r = self.sec.decrypt(header.publisher, &aad, payload, now);
        self.aad = aad;
        self.count(r)
    }

    fn count(&mut self, r: Result<Vec<u8>, FrameError>) -> Result<Vec<u8>, FrameError> {
        match &r {
            Ok(_) => self.stats.decrypted += 1,
            Err(e) => {
                self.stats.decrypt_failures += 1;
                if *e == FrameError::NoKey {
                    self.stats.no_key += 1;
                }
            }
        }
        r
    }
}
