//! The sans-IO meeting security state machine.
//!
//! Driven by [`Input`]s (roster joins and leaves with their key bundles, key messages)
//! and `now`; produces [`Outbound`] key messages (poll with
//! [`MeetingSecurity::poll_transmit`]) and [`SecurityEvent`]s.
//!
//! Rules (times are [`Config`] defaults):
//! - **Leader** = the lowest-ID host if any, else the oldest participant (lowest ID),
//!   among those with a valid key bundle. Everyone computes it from the same roster.
//! - The leader keys each new participant with the current meeting key (HPKE to its KEM
//!   key, signed), and **rekeys** (fresh random key, epoch + 1, sealed to every
//!   remaining participant) when a keyed participant leaves or is removed, when it
//!   becomes leader, and every 5 minutes. A join does not rekey (a newcomer may read
//!   frames still in flight from just before it joined; see docs/SECURITY.md).
//! - Receivers keep the **previous epoch** for 10 s after switching, so frames sealed
//!   just before a rekey still open; after that, old-epoch frames fail.
//! - The leader sends its **signed roster** (keyed participants and their identity
//!   keys) after every change (coalesced over 200 ms) and at least every 10 s.
//! - A participant checks each roster against the participants the relay shows it: an
//!   entry it has never seen (a hidden listener) or an identity key that differs from
//!   the bundle it saw (a swapped key, its own included) is a
//!   [`Warning::RosterMismatch`], and it **stops sending** until a later roster matches.
//!   A participant shown but not keyed for 10 s is a [`Warning::Unkeyed`] (no key, no
//!   risk: only a warning), and no roster for 25 s a [`Warning::RosterStale`].
//! - The **security code** digests the keyed roster and epoch ([`crate::roster`]).

mod check;
mod info_msgs;
mod leader;

pub use leader::roster_parts;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::envelope::{Envelope, InfoMessage, KeyDelivery, DELIVERY_INFO};
use crate::frame::{epoch_byte, EpochKeys, FrameError};
use crate::identity::{KeyBundle, LocalKeys};
use crate::roster::RosterEntry;
use crate::{E2eeError, ParticipantId, Recipient};

/// Timings of the key schedule.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Leader rekeys at least this often (default 5 min).
    pub rekey_interval: Duration,
    /// Leader re-sends the signed roster at least this often (default 10 s).
    pub roster_interval: Duration,
    /// Receivers keep the previous epoch's keys this long after switching (default 10 s).
    pub previous_epoch_grace: Duration,
    /// How long a participant may be shown but unkeyed, or keyed after it left, before
    /// that is reported (default 10 s).
    pub roster_grace: Duration,
    /// Delay that coalesces roster sends after changes (default 200 ms).
    pub roster_coalesce: Duration,
    /// How long a newcomer waits for the existing roster (and a key) before it may lead
    /// (default 500 ms): it must not start its own epoch in a meeting that has one.
    pub settle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rekey_interval: Duration::from_secs(300),
            roster_interval: Duration::from_secs(10),
            previous_epoch_grace: Duration::from_secs(10),
            roster_grace: Duration::from_secs(10),
            roster_coalesce: Duration::from_millis(200),
            settle: Duration::from_millis(500),
        }
    }
}

/// What the relay told the client (mapped from `orelay_proto` server messages).
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// `ParticipantJoined`: someone is in the meeting, with its key bundle.
    Joined {
        /// Who.
        participant: ParticipantId,
        /// Whether its role is host.
        host: bool,
        /// Its `keys` bundle as the relay forwarded it.
        keys: &'a [u8],
    },
    /// `ParticipantLeft`: someone left or was removed.
    Left {
        /// Who.
        participant: ParticipantId,
    },
    /// `KeyMessage` forwarded by the relay.
    KeyMessage {
        /// Sender, as the relay says.
        from: ParticipantId,
        /// The opaque blob.
        blob: &'a [u8],
    },
}

/// A key message to send (`ClientMessage::KeyMessage { to, blob }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Recipient.
    pub to: Recipient,
    /// Envelope bytes (≤ `MAX_KEY_MESSAGE_LEN`).
    pub blob: Vec<u8>,
}

/// Something the user (or the client's counters) should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityEvent {
    /// Media now uses a new epoch; `code` is its security code.
    EpochChanged {
        /// New epoch.
        epoch: u64,
        /// Meeting security code, if the matching roster is known yet.
        code: Option<String>,
    },
    /// A participant's info (display name…), opened with the meeting key.
    Info {
        /// Whose.
        participant: ParticipantId,
        /// The plaintext info.
        info: Vec<u8>,
    },
    /// Something is wrong.
    Warning(Warning),
}

/// A security warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A participant's key bundle did not parse or verify: it cannot be keyed.
    BadBundle(ParticipantId),
    /// A key message was rejected (bad signature, not from the leader, garbage…).
    BadKeyMessage {
        /// Sender as the relay said.
        from: ParticipantId,
        /// Why.
        error: E2eeError,
    },
    /// The signed roster lists this participant with no or another identity key than
    /// the meeting shows: sending stops.
    RosterMismatch(ParticipantId),
    /// This participant is shown in the meeting but the leader has not keyed it.
    Unkeyed(ParticipantId),
    /// No roster from the leader for too long.
    RosterStale,
}

#[derive(Debug)]
struct Member {
    bundle: Option<KeyBundle>,
    host: bool,
    since: Instant,
    unkeyed_reported: bool,
}

/// A verified roster received from the leader.
#[derive(Debug, Clone)]
struct Roster {
    leader: ParticipantId,
    epoch: u64,
    seq: u64,
    digest: [u8; 32],
    entries: BTreeMap<ParticipantId, [u8; 32]>,
}

/// Roster parts being collected (keyed by leader, seq, digest).
#[derive(Debug)]
struct Assembly {
    leader: ParticipantId,
    epoch: u64,
    seq: u64,
    digest: [u8; 32],
    parts: Vec<Option<Vec<RosterEntry>>>,
}

/// State kept only while this participant is the leader.
#[derive(Debug)]
struct Leading {
    keyed: BTreeMap<ParticipantId, [u8; 32]>,
    epoch_started: Instant,
    seq: u64,
    roster_due: Instant,
}

/// Most info messages kept while waiting for the key that opens them.
const MAX_PENDING_INFO: usize = 256;

/// Most signed messages kept while their sender is not yet the leader in this view.
const MAX_PENDING_LEADER_MSGS: usize = 16;

/// One participant's view of a meeting's end-to-end encryption.
#[derive(Debug)]
pub struct MeetingSecurity {
    me: ParticipantId,
    me_host: bool,
    keys: LocalKeys,
    config: Config,
    members: BTreeMap<ParticipantId, Member>,
    /// Participants that left recently (a roster may still list them briefly); pruned
    /// after `roster_grace`, so bounded by the churn of that window.
    recently_left: HashMap<ParticipantId, Instant>,
    current: Option<EpochKeys>,
    previous: Option<(EpochKeys, Instant)>,
    max_epoch: u64,
    /// Highest epoch accepted from a leader (replayed older deliveries are ignored).
    accepted_epoch: u64,
    settled: bool,
    created: Instant,
    leading: Option<Leading>,
    roster: Option<Roster>,
    assembly: Option<Assembly>,
    last_roster_at: Instant,
    stale_reported: bool,
    blocked: bool,
    my_info: Option<Vec<u8>>,
    pending_info: VecDeque<(ParticipantId, InfoMessage)>,
    /// Signed messages from someone not (yet) the leader in this view: retried when the
    /// roster or leadership changes (the new leader's key can overtake the old leader's
    /// roster that names it).
    pending_leader_msgs: VecDeque<(ParticipantId, Vec<u8>)>,
    out: VecDeque<Outbound>,
    events: VecDeque<SecurityEvent>,
}

impl MeetingSecurity {
    /// State for participant `me` (its ID from `JoinResult::Admitted`), `host` if its role
    /// is host. Call [`handle`](Self::handle) with the roster that follows admission.
    pub fn new(
        keys: LocalKeys,
        me: ParticipantId,
        host: bool,
        config: Config,
        now: Instant,
    ) -> MeetingSecurity {
        let mut s = MeetingSecurity {
            me,
            me_host: host,
            keys,
            config,
            members: BTreeMap::new(),
            recently_left: HashMap::new(),
            current: None,
            previous: None,
            max_epoch: 0,
            accepted_epoch: 0,
            settled: false,
            created: now,
            leading: None,
            roster: None,
            assembly: None,
            last_roster_at: now,
            stale_reported: false,
            blocked: false,
            my_info: None,
            pending_info: VecDeque::new(),
            pending_leader_msgs: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.update_leadership(now);
        s
    }

    /// This participant's ID.
    pub fn me(&self) -> ParticipantId {
        self.me
    }

    /// Feeds one event from the relay.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Joined {
                participant,
                host,
                keys,
            } => {
                if participant == self.me {
                    return;
                }
                let bundle = match KeyBundle::decode(keys) {
                    Ok(b) => Some(b),
                    Err(_) => {
                        self.warn(Warning::BadBundle(participant));
                        None
                    }
                };
                self.recently_left.remove(&participant);
                self.members.insert(
                    participant,
                    Member {
                        bundle,
                        host,
                        since: now,
                        unkeyed_reported: false,
                    },
                );
                if !self.update_leadership(now) {
                    self.leader_key_newcomer(participant, now);
                    // A keyed host newcomer takes over from here.
                    self.update_leadership(now);
                }
            }
            Input::Left { participant } => {
                if self.members.remove(&participant).is_some() {
                    self.recently_left.insert(participant, now);
                }
                if !self.update_leadership(now) {
                    self.leader_on_leave(participant, now);
                }
            }
            Input::KeyMessage { from, blob } => {
                if let Err(error) = self.on_key_message(from, blob, now) {
                    self.warn(Warning::BadKeyMessage { from, error });
                }
            }
        }
    }

    /// Runs timers: leader rekey and roster heartbeat, expiry of the previous epoch,
    /// roster checks.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, until)) = &self.previous {
            if now >= *until {
                self.previous = None;
            }
        }
        let grace = self.config.roster_grace;
        self.recently_left.retain(|_, t| now < *t + grace);
        if !self.settled && now >= self.created + self.config.settle {
            self.settled = true;
            self.update_leadership(now);
        }
        self.leader_timers(now);
        self.follower_timers(now);
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some((_, until)) = &self.previous {
            consider(*until);
        }
        if !self.settled {
            consider(self.created + self.config.settle);
        }
        if let Some(l) = &self.leading {
            consider(l.roster_due);
            consider(l.epoch_started + self.config.rekey_interval);
        } else {
            consider(self.last_roster_at + self.config.roster_interval * 5 / 2);
        }
        for m in self.members.values().filter(|m| !m.unkeyed_reported) {
            consider(m.since + self.config.roster_grace);
        }
        for t in self.recently_left.values() {
            consider(*t + self.config.roster_grace);
        }
        next
    }

    /// The next key message to send.
    pub fn poll_transmit(&mut self) -> Option<Outbound> {
        self.out.pop_front()
    }

    /// The next event for the user or the client's counters.
    pub fn poll_event(&mut self) -> Option<SecurityEvent> {
        self.events.pop_front()
    }

    /// The current leader (possibly this participant), if any is eligible yet.
    ///
    /// Eligible: this participant once settled (keyed, or alone past the settle time),
    /// and others with a valid bundle that the current keyed roster lists (all of them
    /// before any roster is known). A newcomer is thus keyed by the old leader before it
    /// can take over, and everyone agrees on the leader from the same signed roster.
    pub fn leader(&self) -> Option<ParticipantId> {
        let me = self.settled.then_some((self.me, self.me_host));
        self.members
            .iter()
            .filter(|(p, m)| m.bundle.is_some() && self.known_keyed(**p))
            .map(|(p, m)| (*p, m.host))
            .chain(me)
            // Hosts first, then the lowest (oldest) ID.
            .min_by_key(|(p, host)| (!host, *p))
            .map(|(p, _)| p)
    }

    fn known_keyed(&self, p: ParticipantId) -> bool {
        match (&self.leading, &self.roster) {
            (Some(l), _) => l.keyed.contains_key(&p),
            (None, Some(r)) => r.entries.contains_key(&p),
            (None, None) => true,
        }
    }

    /// Whether this participant leads key distribution.
    pub fn is_leader(&self) -> bool {
        self.leading.is_some()
    }

    /// Current epoch, if keyed.
    pub fn epoch(&self) -> Option<u64> {
        self.current.as_ref().map(EpochKeys::epoch)
    }

    /// Whether media may be sent: keyed, and the signed roster matches.
    pub fn can_send(&self) -> bool {
        self.current.is_some() && !self.blocked
    }

    /// The meeting security code of the current epoch's keyed roster.
    pub fn security_code(&self) -> Option<String> {
        let epoch = self.epoch()?;
        let digest = match &self.leading {
            Some(l) => crate::roster::digest(epoch, &l.keyed_entries()),
            None => {
                let r = self.roster.as_ref().filter(|r| r.epoch == epoch)?;
                r.digest
            }
        };
        Some(crate::roster::security_code(&digest))
    }

    /// Length [`encrypt`](Self::encrypt) will produce for `plain_len` bytes.
    pub fn sealed_len(&self, plain_len: usize) -> usize {
        self.current
            .as_ref()
            .map_or(plain_len + 32, |k| k.sealed_len(plain_len))
    }

    /// Encrypts a media payload, binding the relay's routing `header`.
    pub fn encrypt(&mut self, header: &[u8], payload: &[u8]) -> Result<Vec<u8>, FrameError> {
        if self.blocked {
            return Err(FrameError::Blocked);
        }
        self.current
            .as_mut()
            .ok_or(FrameError::NoKey)?
            .encrypt(header, payload)
    }

    /// Decrypts a media payload from `sender` with the current or (within its grace)
    /// previous epoch's keys.
    pub fn decrypt(
        &mut self,
        sender: ParticipantId,
        header: &[u8],
        data: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, FrameError> {
        let byte = epoch_byte(data).ok_or(FrameError::Malformed)?;
        if let Some(cur) = self.current.as_mut() {
            if cur.epoch() & 0xff == u64::from(byte) {
                return cur.decrypt(sender, header, data);
            }
        }
        match self.previous.as_mut() {
            Some((prev, until)) if now < *until && prev.epoch() & 0xff == u64::from(byte) => {
                prev.decrypt(sender, header, data)
            }
            _ => Err(FrameError::NoKey),
        }
    }

    fn on_key_message(
        &mut self,
        from: ParticipantId,
        blob: &[u8],
        now: Instant,
    ) -> Result<(), E2eeError> {
        let parsed = Envelope::decode(blob)?;
        if let Envelope::Info(m) = &parsed.envelope {
            match self.open_info_message(from, m) {
                Ok(info) => self.events.push_back(SecurityEvent::Info {
                    participant: from,
                    info,
                }),
                Err(E2eeError::NoKey) if m.epoch > self.epoch().unwrap_or(0) => {
                    if self.pending_info.len() >= MAX_PENDING_INFO {
                        self.pending_info.pop_front();
                    }
                    self.pending_info.push_back((from, m.clone()));
                }
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        // Key deliveries and rosters count only from the leader, signed by its identity.
        if from == self.me {
            return Err(E2eeError::Forged);
        }
        if self.leader() != Some(from) {
            if self.pending_leader_msgs.len() >= MAX_PENDING_LEADER_MSGS {
                self.pending_leader_msgs.pop_front();
            }
            self.pending_leader_msgs.push_back((from, blob.to_vec()));
            return Ok(());
        }
        let identity = self
            .members
            .get(&from)
            .and_then(|m| m.bundle.as_ref())
            .map(|b| b.identity)
            .ok_or(E2eeError::NoKey)?;
        parsed.verify(&identity)?;
        match parsed.envelope {
            Envelope::Delivery(d) => self.on_delivery(from, d, now),
            Envelope::Roster(part) => self.on_roster_part(from, part, now),
            Envelope::Info(_) => Ok(()),
        }
    }

    fn on_delivery(
        &mut self,
        from: ParticipantId,
        d: KeyDelivery,
        now: Instant,
    ) -> Result<(), E2eeError> {
        if d.leader != from || d.recipient != self.me || d.suite != self.keys.kem.suite() {
            return Err(E2eeError::Forged);
        }
        if d.epoch <= self.accepted_epoch {
            // An old or replayed delivery: nothing to do.
            return Ok(());
        }
        let aad = KeyDelivery::aad(d.epoch, d.leader, d.recipient);
        let plain = self.keys.kem.open(DELIVERY_INFO, &aad, &d.sealed)?;
        let secret: [u8; 32] = plain
            .try_into()
            .map_err(|_| E2eeError::Malformed("meeting key"))?;
        self.accepted_epoch = d.epoch;
        self.install_epoch(d.epoch, secret, now);
        if !self.settled {
            self.settled = true;
            self.update_leadership(now);
        }
        Ok(())
    }

    /// Switches media to a new epoch, keeping the previous one for the grace period.
    fn install_epoch(&mut self, epoch: u64, secret: [u8; 32], now: Instant) {
        let keys = EpochKeys::new(epoch, secret, self.me);
        if let Some(old) = self.current.replace(keys) {
            self.previous = Some((old, now + self.config.previous_epoch_grace));
        }
        self.max_epoch = self.max_epoch.max(epoch);
        let pending = std::mem::take(&mut self.pending_info);
        for (from, m) in pending {
            if let Ok(info) = self.open_info_message(from, &m) {
                self.events.push_back(SecurityEvent::Info {
                    participant: from,
                    info,
                });
            }
        }
        self.send_info(Recipient::All);
        let code = self.security_code();
        self.events
            .push_back(SecurityEvent::EpochChanged { epoch, code });
    }

    fn warn(&mut self, w: Warning) {
        self.events.push_back(SecurityEvent::Warning(w));
    }
}
