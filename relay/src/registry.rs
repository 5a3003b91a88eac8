//! The relay's shared state below the connection and media modules: the meeting
//! registry (a concurrent map keyed by meeting ID), each meeting's core state with its
//! participants' handles, and a participant as the others' tasks see it ([`Peer`]).
//!
//! Lock order everywhere: a meeting, then a peer's open groups, then a group. The
//! registry's shard locks are held only to find or insert a meeting, never across a
//! meeting's own work. Logs carry a keyed tag of the meeting ID, never the ID.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::BytesMut;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::{ParticipantId, RejectReason, ServerMessage};
use tokio::sync::Notify;

use crate::config::Config;
use crate::core::guard::{JoinGuard, MeetingKey};
use crate::core::moderation::Passcode;
use crate::core::outbox::{Full, Outbox};
use crate::core::{
    Action, FanoutLimits, JoinRequest, Meeting, MeetingId, Placement, RateLimit, ReaderId,
    TokenBucket, TokenVerifier,
};
use crate::error::{RelayLimit, SessionError};
use crate::fanout::GroupCell;
use crate::stats::RelayStats;

/// State shared by every connection task of one relay.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) meetings: DashMap<MeetingId, Arc<MeetingCell>>,
    pub(crate) stats: Arc<RelayStats>,
    /// Per-publisher fan-out limits (from `config`).
    pub(crate) fanout: FanoutLimits,
    /// The relay-wide join rate.
    join_rate: Mutex<TokenBucket>,
    /// Token verification keys (empty in open mode).
    pub(crate) verifier: TokenVerifier,
    /// Per-source and per-meeting join-attempt limits and the at-risk signal.
    guard: Mutex<JoinGuard>,
    /// Keys the guard's meeting digests (never the ID itself).
    meeting_key: ring::hmac::Key,
    /// Checked against the passcode of a join to a meeting that does not exist, so
    /// that answer takes as long as a wrong passcode.
    decoy: Passcode,
    /// Keys the constant-time comparison of an open-mode host secret.
    pub(crate) secret_key: ring::hmac::Key,
}

/// A meeting as the I/O layer holds it: the sans-IO core plus each participant's handle.
pub(crate) struct MeetingCell {
    id: MeetingId,
    /// Keyed hash of the meeting ID, for logs.
    pub(crate) tag: String,
    state: Mutex<MeetingState>,
}

pub(crate) struct MeetingState {
    pub(crate) core: Meeting,
    pub(crate) peers: HashMap<ParticipantId, Arc<Peer>>,
    /// The last participant left and the cell is leaving the registry: a join that
    /// finds it must look again.
    closed: bool,
}

/// One group a subscriber is reading.
pub(crate) struct OpenRead {
    pub(crate) group: Arc<GroupCell>,
    pub(crate) reader: ReaderId,
    /// Set when a newer group of the same track layer opened for this subscriber; its
    /// writer then lowers the stream's priority.
    pub(crate) superseded: Arc<AtomicBool>,
}

/// A participant's connection as other participants' tasks see it.
pub(crate) struct Peer {
    pub(crate) conn: quinn::Connection,
    /// In the meeting (not, or no longer, in the waiting room); set when its
    /// `JoinResult(Admitted)` is queued.
    pub(crate) admitted: AtomicBool,
    /// Woken when `admitted` is set.
    pub(crate) admitted_notify: Notify,
    /// Control messages waiting for its control writer (bounded, coalescing).
    outbox: Mutex<Outbox>,
    /// Wakes its control writer when the outbox gains a message.
    outbox_ready: Notify,
    /// The groups this subscriber is reading, oldest first; each writer removes its
    /// own entry on every exit path.
    pub(crate) reads: Mutex<Vec<OpenRead>>,
    /// Woken when a group opens for this subscriber, so its policy timer sleeps while
    /// it reads nothing (an idle participant costs no timer wake-ups).
    pub(crate) reading: Notify,
}

impl Peer {
    /// A peer whose outbox holds at most `backlog` control messages.
    pub(crate) fn new(conn: quinn::Connection, backlog: usize) -> Self {
        Self {
            conn,
            admitted: AtomicBool::new(false),
            admitted_notify: Notify::new(),
            outbox: Mutex::new(Outbox::new(backlog)),
            outbox_ready: Notify::new(),
            reads: Mutex::new(Vec::new()),
            reading: Notify::new(),
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a control message for this participant; `Ok(n)`: `n` queued messages
    /// (this one included) were cancelled by coalescing instead.
    pub(crate) fn send(&self, msg: ServerMessage) -> Result<u64, Full> {
        let mut outbox = self.outbox();
        let before = outbox.coalesced();
        outbox.push(msg)?;
        let coalesced = outbox.coalesced() - before;
        drop(outbox);
        self.outbox_ready.notify_one();
        Ok(coalesced)
    }

    /// Encodes queued control messages into `buf`, up to about `max` bytes; waits
    /// until there is at least one.
    pub(crate) async fn next_control_batch(&self, buf: &mut BytesMut, max: usize) {
        loop {
            {
                let mut outbox = self.outbox();
                while buf.len() < max {
                    let Some(msg) = outbox.pop() else { break };
                    msg.encode(buf);
                }
            }
            if !buf.is_empty() {
                return;
            }
            // notify_one keeps a permit if the writer was not waiting yet.
            self.outbox_ready.notified().await;
        }
    }

    pub(crate) fn reads(&self) -> MutexGuard<'_, Vec<OpenRead>> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new group for this subscriber, marking its older groups of the same
    /// track layer superseded; returns the new group's flag for its writer.
    pub(crate) fn open_read(&self, group: &Arc<GroupCell>, reader: ReaderId) -> Arc<AtomicBool> {
        let superseded = Arc::new(AtomicBool::new(false));
        let mut reads = self.reads();
        for r in reads.iter() {
            if r.group.key == group.key && r.group.group < group.group {
                r.superseded.store(true, Relaxed);
            }
        }
        reads.push(OpenRead {
            group: group.clone(),
            reader,
            superseded: superseded.clone(),
        });
        drop(reads);
        // Keeps a permit if the policy timer is not waiting right now.
        self.reading.notify_one();
        superseded
    }

    /// Forgets the writer of `reader` in `group` (its stream ended one way or another).
    pub(crate) fn forget(&self, group: &Arc<GroupCell>, reader: ReaderId) {
        self.reads()
            .retain(|r| !(Arc::ptr_eq(&r.group, group) && r.reader == reader));
    }
}

impl MeetingCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, MeetingState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MeetingState {
    /// Carries out the core's actions. Never blocks: a client whose control backlog is
    /// full is closed rather than allowed to stall the meeting.
    pub(crate) fn apply(&self, actions: Vec<Action>, shared: &Shared) {
        for action in actions {
            let (to, msg) = match action {
                Action::Send { to, msg } => (to, msg),
                Action::Close { to, code } => {
                    if let Some(peer) = self.peers.get(&to) {
                        if peer.conn.close_reason().is_none() {
                            shared.stats.count_close(code.name().unwrap_or("UNKNOWN"));
                            shared
                                .stats
                                .count_fault_class(crate::telemetry::FaultClass::PeerNotAllowed);
                            peer.conn
                                .close(code.0.into(), code.name().unwrap_or("").as_bytes());
                        }
                    }
                    continue;
                }
            };
            let Some(peer) = self.peers.get(&to) else {
                continue;
            };
            match msg {
                ServerMessage::KeyframeRequest { .. } => {
                    shared.stats.keyframe_requests.fetch_add(1, Relaxed);
                }
                ServerMessage::JoinResult(JoinOutcome::Admitted { .. }) => {
                    // Counted here, where every admission passes (at join or later
                    // from the waiting room), exactly once per participant.
                    if !peer.admitted.swap(true, Release) {
                        shared
                            .stats
                            .count_join(crate::telemetry::JoinResult::Admitted);
                    }
                    peer.admitted_notify.notify_waiters();
                }
                _ => {}
            }
            match peer.send(msg) {
                Ok(0) => {}
                Ok(n) => {
                    shared.stats.control_coalesced.fetch_add(n, Relaxed);
                }
                Err(Full) => close(
                    &peer.conn,
                    shared,
                    &SessionError::RelayLimit(RelayLimit::ControlBacklog),
                ),
            }
        }
    }

    /// Tells every participant to go elsewhere (the relay is draining).
    pub(crate) fn go_away(&self) {
        for peer in self.peers.values() {
            let _ = peer.send(ServerMessage::GoAway {
                redirect: String::new(),
            });
        }
    }
}

/// Closes a connection because of `err`, counting it by close code.
pub(crate) fn close(conn: &quinn::Connection, shared: &Shared, err: &SessionError) {
    if conn.close_reason().is_some() {
        return;
    }
    tracing::debug!(error = %err, code = %err.close_code(), "closing connection");
    shared.stats.count_close(err.label());
    shared.stats.count_fault(err);
    conn.close(err.close_code().0.into(), err.label().as_bytes());
}

impl Shared {
    pub(crate) fn new(config: Config, stats: Arc<RelayStats>) -> Self {
        let join_rate = RateLimit {
            per_second: config.max_join_rate,
            // A second's worth at once: a top-of-the-hour burst is what it is for.
            burst: config.max_join_rate,
        };
        let rng = ring::rand::SystemRandom::new();
        let meeting_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"orelay"));
        Self {
            fanout: config.fanout_limits(),
            // Validated at start-up; an unusable key set admits no token.
            verifier: config.admission.verifier().unwrap_or_default(),
            guard: Mutex::new(JoinGuard::new(
                config.admission.guard_limits(),
                Instant::now(),
            )),
            meeting_key,
            decoy: Passcode::new(""),
            secret_key: ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
                .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret")),
            config,
            meetings: DashMap::new(),
            stats,
            join_rate: Mutex::new(TokenBucket::new(join_rate, Instant::now())),
        }
    }

    /// The join-attempt guard.
    pub(crate) fn guard(&self) -> MutexGuard<'_, JoinGuard> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A keyed digest of a meeting ID for the guard's tables.
    pub(crate) fn meeting_key(&self, id: &MeetingId) -> MeetingKey {
        let tag = ring::hmac::sign(&self.meeting_key, id.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&tag.as_ref()[..16]);
        key
    }

    /// The meeting's cell, if it exists.
    pub(crate) fn meeting(&self, id: &MeetingId) -> Option<Arc<MeetingCell>> {
        self.meetings.get(id).map(|e| e.value().clone())
    }

    /// Takes one join from the relay-wide join rate, or says when one is due.
    pub(crate) fn take_join_token(&self, now: Instant) -> Result<(), Instant> {
        self.join_rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now)
    }

    /// Admits `peer` to a meeting (or its waiting room). A meeting that does not exist
    /// is created only if `create` is `Ok`; otherwise the join gets `create`'s reason,
    /// after the same passcode work a wrong passcode costs. Only the map's shard is
    /// locked while finding the meeting; the join runs under the meeting's own lock.
    pub(crate) fn admit(
        &self,
        meeting_id: MeetingId,
        request: JoinRequest,
        create: Result<(), RejectReason>,
        peer: Arc<Peer>,
    ) -> Result<(Arc<MeetingCell>, Placement), RejectReason> {
        // A meeting found closing is gone a moment later; two looks are enough unless
        // the meeting is being emptied and refilled in a tight loop.
        for _ in 0..3 {
            let cell = match self.meetings.entry(meeting_id.clone()) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(e) => {
                    if let Err(reason) = create {
                        drop(e);
                        let _ = self.decoy.matches(&request.passcode);
                        return Err(reason);
                    }
                    if self.stats.meetings_active.load(Relaxed) as usize >= self.config.max_meetings
                    {
                        return Err(RejectReason::TOO_MANY_MEETINGS);
                    }
                    let cell = Arc::new(MeetingCell {
                        id: meeting_id.clone(),
                        tag: crate::privacy::tag(meeting_id.as_bytes()),
                        state: Mutex::new(MeetingState {
                            core: Meeting::new(&request.passcode, self.config.meeting_limits()),
                            peers: HashMap::new(),
                            closed: false,
                        }),
                    });
                    self.stats.meetings_active.fetch_add(1, Relaxed);
                    e.insert(cell.clone());
                    cell
                }
            };
            let mut state = cell.lock();
            if state.closed {
                continue;
            }
            let (admission, actions) = match state.core.join(request.clone()) {
                Ok(joined) => joined,
                Err(reason) => {
                    // Do not leave behind a meeting this attempt created.
                    let empty = state.core.is_empty();
                    state.closed = empty;
                    drop(state);
                    if empty {
                        self.forget(&cell);
                    }
                    return Err(reason);
                }
            };
            state.peers.insert(admission.id(), peer);
            state.apply(actions, self);
            self.stats.participants_active.fetch_add(1, Relaxed);
            self.stats.record_meeting_size(state.core.len());
            drop(state);
            return Ok((cell, admission));
        }
        Err(RejectReason::TOO_MANY_MEETINGS)
    }

    /// Removes participant `id` from `cell`, and the meeting from the registry when it
    /// is now empty (by key, no scan).
    pub(crate) fn leave(&self, cell: &Arc<MeetingCell>, id: ParticipantId) {
        let mut state = cell.lock();
        let actions = state.core.leave(id);
        if state.peers.remove(&id).is_none() {
            return;
        }
        state.apply(actions, self);
        self.stats.participants_active.fetch_sub(1, Relaxed);
        let empty = state.core.is_empty();
        state.closed = empty;
        drop(state);
        if empty {
            self.forget(cell);
        }
    }

    /// Takes a closed meeting out of the registry (if it is still the one there).
    fn forget(&self, cell: &Arc<MeetingCell>) {
        if self
            .meetings
            .remove_if(&cell.id, |_, c| Arc::ptr_eq(c, cell))
            .is_some()
        {
            self.stats.meetings_active.fetch_sub(1, Relaxed);
        }
    }

    /// Every meeting, for draining.
    pub(crate) fn each_meeting(&self, mut f: impl FnMut(&MeetingCell)) {
        let cells: Vec<Arc<MeetingCell>> =
            self.meetings.iter().map(|e| e.value().clone()).collect();
        for cell in cells {
            f(&cell);
        }
    }
}
