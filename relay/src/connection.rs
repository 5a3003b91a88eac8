//! One client connection: handshake and join under a deadline, then the control stream
//! (rate-limited), the tasks that receive its media, and its subscriber policy timer.
//! A thin driver around the core; leaving the meeting is guaranteed by a drop guard.
//!
//! Logs carry the connection's `stable_id` and a keyed tag of the meeting ID, never
//! the meeting ID, participant ID, info blob or address in clear.

use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::limits::MAX_TRACKS_PER_PARTICIPANT;
use orelay_proto::{
    ClientMessage, ControlDecoder, Credential, ErrorCode, Recipient, RefuseReason, RejectReason,
    Role, ServerMessage,
};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, warn, Instrument};

use crate::config::AdmissionMode;
use crate::core::guard::SourceKey;
use crate::core::meeting_id::check_join;
use crate::core::subscriber::POLICY_INTERVAL;
use crate::core::token::unix_now;
use crate::core::{Grant, JoinRequest, KindSet, MeetingId, Placement};
use crate::core::{RateLimit, TokenBucket};
use crate::error::{PeerMisbehaved, PeerNotAllowed, RelayLimit, SessionError};
use crate::media::{enforce, ingest_group, AudioRoutes, Participant};
use crate::registry::{close, Peer, Shared};
use crate::telemetry::JoinResult;

/// Most bytes of control messages written in one batch; the buffer is given back
/// after a batch that grew past it, so one large roster does not stay allocated.
const CONTROL_BATCH: usize = 64 * 1024;

/// How a session's loops ended.
enum End {
    /// The participant sent `Leave`.
    Left,
    /// The connection went away (peer closed, idle timeout, relay shutdown).
    Lost,
    /// The relay must close the connection.
    Error(SessionError),
}

impl<E: Into<SessionError>> From<E> for End {
    fn from(e: E) -> Self {
        End::Error(e.into())
    }
}

/// What the endpoint hands a new connection besides the handshake itself.
pub(crate) struct Admission {
    /// Held for the connection's lifetime (the connection cap).
    pub(crate) permit: OwnedSemaphorePermit,
    /// Resolves (or is dropped) when the endpoint evicts this connection to make room.
    pub(crate) evicted: oneshot::Receiver<()>,
    /// Dropped once the connection joined or ended: it no longer waits.
    pub(crate) waiting: Box<dyn Send + Sync>,
    /// Deadline for handshake and join together.
    pub(crate) deadline: Duration,
}

struct ActiveGuard<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Drives one incoming connection from handshake to close.
pub(crate) async fn run(shared: Arc<Shared>, incoming: quinn::Incoming, admission: Admission) {
    let Admission {
        permit: _permit,
        mut evicted,
        waiting,
        deadline,
    } = admission;
    let deadline = tokio::time::Instant::now() + deadline;
    let conn = tokio::select! {
        r = tokio::time::timeout_at(deadline, incoming) => match r {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(error = %e, "handshake failed");
                shared.stats.count_handshake_failure();
                return;
            }
            Err(_) => {
                // Dropping a handshake in progress abandons it.
                shared.stats.count_close(SessionError::from(PeerNotAllowed::JoinTimeout).label());
                shared.stats.count_join(JoinResult::Timeout);
                return;
            }
        },
        _ = &mut evicted => {
            shared.stats.unjoined_evicted.fetch_add(1, Relaxed);
            return;
        }
    };
    shared.stats.connections_accepted.fetch_add(1, Relaxed);
    shared.stats.connections_active.fetch_add(1, Relaxed);
    tokio::spawn(crate::telemetry::quic::watch_path(
        conn.clone(),
        shared.stats.clone(),
    ));
    let _active = ActiveGuard(&shared.stats.connections_active);
    let span = tracing::info_span!("conn", id = conn.stable_id());
    async {
        let joined = tokio::select! {
            r = tokio::time::timeout_at(deadline, join(&shared, &conn)) => {
                r.unwrap_or_else(|_| {
                    shared.stats.count_join(JoinResult::Timeout);
                    Err(End::Error(PeerNotAllowed::JoinTimeout.into()))
                })
            }
            _ = &mut evicted => {
                shared.stats.unjoined_evicted.fetch_add(1, Relaxed);
                Err(End::Error(RelayLimit::Evicted.into()))
            }
        };
        drop(waiting);
        let end = match joined {
            Ok(session) => {
                debug!(meeting = %session.me.cell.tag, "joined");
                let membership = Membership(session.me.clone());
                let end = session.serve().await;
                drop(membership);
                end
            }
            Err(end) => end,
        };
        match end {
            End::Left => conn.close(ErrorCode::NO_ERROR.0.into(), b"left"),
            End::Lost => {}
            End::Error(e) => close(&conn, &shared, &e),
        }
    }
    .instrument(span)
    .await;
}

/// Leaves the meeting when dropped: on `Leave`, on error, on a lost connection, and
/// on a panic in the session's tasks alike.
struct Membership(Arc<Participant>);

impl Drop for Membership {
    fn drop(&mut self) {
        let me = &self.0;
        me.mark_left();
        me.shared.leave(&me.cell, me.id);
        debug!(meeting = %me.cell.tag, "left");
    }
}

/// A joined participant's session: its media side, its handle for others, and its
/// control stream.
struct Session {
    me: Arc<Participant>,
    peer: Arc<Peer>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: ControlDecoder<ClientMessage>,
}

/// Reads the next control message, or ends.
async fn next_message(
    recv: &mut quinn::RecvStream,
    decoder: &mut ControlDecoder<ClientMessage>,
) -> Result<ClientMessage, End> {
    loop {
        if let Some(msg) = decoder.next()? {
            return Ok(msg);
        }
        match recv.read_chunk(4096, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            Ok(None) => return Err(PeerMisbehaved::ControlStreamClosed.into()),
            Err(_) => return Err(End::Lost),
        }
    }
}

async fn join(shared: &Arc<Shared>, conn: &quinn::Connection) -> Result<Session, End> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| End::Lost)?;
    let mut decoder = ControlDecoder::new();
    let ClientMessage::Join {
        version,
        meeting_id,
        passcode,
        info,
        credential,
        keys,
    } = next_message(&mut recv, &mut decoder).await?
    else {
        return Err(PeerMisbehaved::UnexpectedMessage("first message must be Join").into());
    };
    if let Err(retry_at) = shared.take_join_token(Instant::now()) {
        // Over the relay's join rate: an explicit answer, not a silent drop.
        shared.stats.joins_overloaded.fetch_add(1, Relaxed);
        shared.stats.count_join(JoinResult::Overloaded);
        let retry_after_ms = millis_until(retry_at);
        let msg = ServerMessage::JoinResult(JoinOutcome::Overloaded { retry_after_ms });
        answer_and_wait(conn, &mut send, &msg).await;
        return Err(RelayLimit::Overloaded.into());
    }
    let meeting_id = match check_join(version, &meeting_id) {
        Ok(id) => id,
        Err(e) => return reject(shared, conn, &mut send, e.0).await,
    };
    let source = SourceKey::from(conn.remote_address().ip());
    let meeting_key = shared.meeting_key(&meeting_id);
    let checked = {
        let (mut guard, now) = (shared.guard(), Instant::now());
        // A turned-away attempt still counts towards its meeting's at-risk window.
        guard
            .check(source, meeting_key, now)
            .map_err(|refusal| (refusal, guard.record_refused(meeting_key, now)))
    };
    if let Err((refusal, at_risk)) = checked {
        if let Some(signal) = at_risk {
            raise_at_risk(shared, &meeting_id, signal.failed_attempts);
        }
        // Brute force is slowed, not served: no token check, no meeting lookup.
        shared.stats.joins_throttled.fetch_add(1, Relaxed);
        shared.stats.count_join(JoinResult::Throttled);
        let retry_after_ms = refusal.retry_after().as_millis().max(1) as u64;
        let msg = ServerMessage::JoinResult(JoinOutcome::Throttled { retry_after_ms });
        answer_and_wait(conn, &mut send, &msg).await;
        return Err(PeerNotAllowed::JoinRejected(RejectReason::NOT_ALLOWED).into());
    }
    // A newcomer's first messages are the roster snapshot (each participant and its
    // tracks), bounded by the meeting limits; the backlog limit applies beyond that,
    // so joining a large meeting is not mistaken for a client that does not read.
    // (The outbox grows as it fills, not up front.)
    let roster = shared.config.max_participants * (2 + MAX_TRACKS_PER_PARTICIPANT);
    let peer = Arc::new(Peer::new(
        conn.clone(),
        shared.config.control_backlog + roster,
    ));
    let admitted =
        authenticate(shared, &meeting_id, &passcode, credential).and_then(|(grant, create)| {
            let request = JoinRequest {
                passcode,
                info,
                keys,
                grant,
            };
            shared.admit(meeting_id.clone(), request, create, peer.clone())
        });
    match admitted {
        Ok((cell, admission)) => {
            shared.guard().record_success(source, Instant::now());
            match admission {
                // Admissions are counted where the JoinResult is queued (registry).
                Placement::Admitted(_) => shared.stats.record_join_duration(started.elapsed()),
                Placement::Waiting(_) => shared.stats.count_join(JoinResult::Waiting),
            }
            let me = Arc::new(Participant::new(
                shared.clone(),
                cell,
                admission.id(),
                conn.clone(),
            ));
            Ok(Session {
                me,
                peer,
                send,
                recv,
                decoder,
            })
        }
        Err(reason) => {
            if counts_as_guess(reason) {
                let at_risk = shared
                    .guard()
                    .record_failure(source, meeting_key, Instant::now());
                if let Some(signal) = at_risk {
                    raise_at_risk(shared, &meeting_id, signal.failed_attempts);
                }
            }
            reject(shared, conn, &mut send, reason).await
        }
    }
}

/// Milliseconds from now until `at`, at least 1.
fn millis_until(at: Instant) -> u64 {
    at.saturating_duration_since(Instant::now())
        .as_millis()
        .max(1) as u64
}

/// Answers a join with `reason` and ends the connection.
async fn reject(
    shared: &Shared,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: RejectReason,
) -> Result<Session, End> {
    shared.stats.count_join(JoinResult::rejected(reason));
    debug!(reason = %reason, "join rejected");
    let msg = ServerMessage::JoinResult(JoinOutcome::Rejected { reason });
    answer_and_wait(conn, send, &msg).await;
    Err(PeerNotAllowed::JoinRejected(reason).into())
}

/// Rejections that a guesser gets (and an honest client rarely does): they grow the
/// source's back-off and the meeting's failure count.
fn counts_as_guess(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::BAD_PASSCODE
            | RejectReason::TOKEN_INVALID
            | RejectReason::NOT_ALLOWED
            | RejectReason::REMOVED
    )
}

/// A meeting drew many failed attempts: count it, log it under a keyed tag (never
/// the ID), and tell its hosts if it exists.
fn raise_at_risk(shared: &Shared, meeting_id: &MeetingId, failed_attempts: u64) {
    shared.stats.at_risk_total.fetch_add(1, Relaxed);
    // The upkeep task recounts the gauge; this makes the signal visible at once.
    shared.stats.meetings_at_risk.fetch_add(1, Relaxed);
    let tag = crate::privacy::tag(meeting_id.as_bytes());
    warn!(meeting = %tag, failed_attempts, "meeting at risk: many failed join attempts");
    if let Some(cell) = shared.meeting(meeting_id) {
        let state = cell.lock();
        let actions = state.core.at_risk(failed_attempts);
        state.apply(actions, shared);
    }
}

/// Checks the join's credential: what it grants, and whether it may create the
/// meeting (`Err` holds the answer a join to a missing meeting then gets).
fn authenticate(
    shared: &Shared,
    meeting_id: &MeetingId,
    passcode: &str,
    credential: Credential,
) -> Result<(Grant, Result<(), RejectReason>), RejectReason> {
    let admission = &shared.config.admission;
    match (admission.mode, credential) {
        (AdmissionMode::Token, Credential::Token(token)) => {
            // The token carries the passcode check: any valid token may start the
            // meeting, which then keeps no passcode of its own.
            let grant =
                shared
                    .verifier
                    .verify(&token, meeting_id.as_str(), passcode, unix_now())?;
            Ok((grant, Ok(())))
        }
        (AdmissionMode::Token, _) => Err(RejectReason::NOT_ALLOWED),
        (AdmissionMode::Open, Credential::HostSecret(secret)) => {
            let expected = admission.host_secret.as_bytes();
            let tag = ring::hmac::sign(&shared.secret_key, expected);
            if ring::hmac::verify(&shared.secret_key, secret.as_bytes(), tag.as_ref()).is_err() {
                return Err(RejectReason::BAD_PASSCODE);
            }
            Ok((open_grant(Role::Host, false, false), Ok(())))
        }
        (AdmissionMode::Open, Credential::None) => Ok((
            open_grant(Role::Participant, true, admission.waiting_room),
            // A missing meeting answers exactly as a wrong passcode does.
            Err(RejectReason::BAD_PASSCODE),
        )),
        (AdmissionMode::Open, Credential::Token(_)) => Err(RejectReason::NOT_ALLOWED),
    }
}

/// What an open-mode join grants: everything a role may publish, no identity.
fn open_grant(role: Role, passcode_required: bool, waiting_room: bool) -> Grant {
    Grant {
        identity: String::new(),
        token_id: String::new(),
        role,
        publish: KindSet::ALL,
        passcode_required,
        waiting_room,
    }
}

/// Sends a final answer and gives the client a moment to read it and close itself.
async fn answer_and_wait(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    msg: &ServerMessage,
) {
    if send.write_all(&msg.to_bytes()).await.is_ok() && send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
    }
}

impl Session {
    /// Runs the control reader, control writer, stream acceptor, datagram reader and
    /// policy timer until one of them ends the session.
    async fn serve(self) -> End {
        let Session {
            me,
            peer,
            send,
            mut recv,
            mut decoder,
        } = self;
        let shared = &me.shared;
        let control = async {
            let mut bucket = TokenBucket::new(shared.config.control_limit(), Instant::now());
            let mut key_bytes = TokenBucket::new(key_message_limit(shared), Instant::now());
            loop {
                let msg = next_message(&mut recv, &mut decoder).await?;
                if let ClientMessage::Leave = msg {
                    return Ok::<End, End>(End::Left);
                }
                if let Err(at) = bucket.take(Instant::now()) {
                    // Stop reading this client's control stream until a token is due:
                    // flow control pushes back on it, no one else waits.
                    shared.stats.control_throttled.fetch_add(1, Relaxed);
                    tokio::time::sleep_until(at.into()).await;
                    let _ = bucket.take(Instant::now());
                }
                if let ClientMessage::KeyMessage { to, blob } = &msg {
                    // Key messages fan out: charge bytes times recipients (in KiB).
                    let recipients = match to {
                        Recipient::All => me.cell.lock().core.len().saturating_sub(1),
                        Recipient::One(_) => 1,
                    };
                    // Each delivery also costs a queued message: an empty blob is not free.
                    let cost = ((blob.len() + KEY_MESSAGE_OVERHEAD) * recipients.max(1))
                        .div_ceil(1024)
                        .min(u32::MAX as usize) as u32;
                    if let Err(at) = key_bytes.take_n(Instant::now(), cost) {
                        shared.stats.control_throttled.fetch_add(1, Relaxed);
                        tokio::time::sleep_until(at.into()).await;
                        let _ = key_bytes.take_n(Instant::now(), cost);
                    }
                }
                handle(&me, &peer, msg)?;
            }
        };
        // A waiting participant's media is not read: flow control holds it back.
        let streams = async {
            peer_admitted(&peer).await;
            loop {
                let Ok(stream) = me.conn.accept_uni().await else {
                    return End::Lost;
                };
                tokio::spawn(ingest_group(me.clone(), stream).in_current_span());
            }
        };
        let datagrams = async {
            peer_admitted(&peer).await;
            let mut audio = AudioRoutes::default();
            loop {
                let Ok(datagram) = me.conn.read_datagram().await else {
                    return End::Lost;
                };
                #[cfg(feature = "test-hooks")]
                let datagram = crate::test_hooks::media(datagram);
                if let Err(e) = audio.forward(&me, datagram) {
                    return End::Error(e);
                }
            }
        };
        let policy = async {
            loop {
                // Asleep while this participant reads no group: no timer, no wake-ups.
                while peer.reads().is_empty() {
                    peer.reading.notified().await;
                }
                tokio::time::sleep(POLICY_INTERVAL).await;
                enforce(shared, &me.cell, &peer, Instant::now());
            }
        };
        tokio::select! {
            end = control => end.unwrap_or_else(|e| e),
            end = streams => end,
            end = datagrams => end,
            end = write_control(send, &peer) => end,
            end = policy => end,
        }
    }
}

/// What one key-message delivery costs beyond its blob, in bytes of the sender's
/// budget (framing and a slot in the recipient's control queue).
const KEY_MESSAGE_OVERHEAD: usize = 64;

/// The key-message byte budget, in KiB tokens.
fn key_message_limit(shared: &Shared) -> RateLimit {
    let a = &shared.config.admission;
    RateLimit {
        per_second: a.key_message_bytes_per_second.div_ceil(1024).max(1),
        burst: a.key_message_burst_bytes.div_ceil(1024).max(1),
    }
}

/// Resolves once `peer` is admitted (at once unless it is in the waiting room).
async fn peer_admitted(peer: &Peer) {
    loop {
        let woken = peer.admitted_notify.notified();
        if peer.admitted.load(Acquire) {
            return;
        }
        woken.await;
    }
}

fn handle(me: &Participant, peer: &Peer, msg: ClientMessage) -> Result<(), SessionError> {
    let message_type = msg.message_type();
    let subject = match &msg {
        ClientMessage::Publish(info) => info.track,
        ClientMessage::HostAction(action) => action.subject(),
        ClientMessage::KeyMessage {
            to: Recipient::One(p),
            ..
        } => *p,
        _ => 0,
    };
    let refuse = |reason| {
        me.shared.stats.requests_refused.fetch_add(1, Relaxed);
        let msg = ServerMessage::Refused {
            message_type,
            subject,
            reason,
        };
        if peer.send(msg).is_err() {
            return Err(SessionError::RelayLimit(RelayLimit::ControlBacklog));
        }
        Ok(())
    };
    if !peer.admitted.load(Acquire) {
        // In the waiting room: nothing but Leave (handled by the caller) is served.
        return refuse(RefuseReason::NOT_ADMITTED);
    }
    let now = Instant::now();
    let mut state = me.cell.lock();
    let core = &mut state.core;
    let publish = matches!(msg, ClientMessage::Publish(_));
    let result = match msg {
        ClientMessage::Join { .. } => {
            return Err(PeerMisbehaved::UnexpectedMessage("second Join").into())
        }
        ClientMessage::Leave => Ok(Vec::new()),
        ClientMessage::Publish(info) => core.publish(me.id, info),
        ClientMessage::Unpublish { track } => core.unpublish(me.id, track),
        ClientMessage::Subscribe {
            publisher,
            track,
            layer,
        } => core.subscribe(me.id, publisher, track, layer, now),
        ClientMessage::Unsubscribe { publisher, track } => core
            .unsubscribe(me.id, publisher, track)
            .map(|()| Vec::new()),
        ClientMessage::RequestKeyframe {
            publisher,
            track,
            layer,
        } => Ok(core.request_keyframe(publisher, track, layer, now)),
        ClientMessage::HostAction(action) => {
            let done = core.host_action(me.id, action);
            if done.is_ok() {
                me.shared.stats.host_actions.fetch_add(1, Relaxed);
            }
            done.map_err(SessionError::Refused)
        }
        ClientMessage::KeyMessage { to, blob } => {
            let len = blob.len() as u64;
            let done = core.key_message(me.id, to, blob);
            if let Ok(actions) = &done {
                let n = actions.len() as u64;
                me.shared.stats.key_messages.fetch_add(n, Relaxed);
                me.shared
                    .stats
                    .key_message_bytes
                    .fetch_add(n * len, Relaxed);
            }
            done.map_err(SessionError::Refused)
        }
    };
    let actions = match result {
        Ok(actions) => actions,
        Err(SessionError::Refused(reason)) => {
            drop(state);
            return refuse(reason);
        }
        Err(e) => return Err(e),
    };
    state.apply(actions, &me.shared);
    drop(state);
    if publish {
        me.published.notify_waiters();
    }
    Ok(())
}

/// Writes queued control messages, batching whatever is ready (up to
/// [`CONTROL_BATCH`] bytes) into one write.
async fn write_control(mut send: quinn::SendStream, peer: &Peer) -> End {
    let mut buf = BytesMut::new();
    loop {
        peer.next_control_batch(&mut buf, CONTROL_BATCH).await;
        if send.write_all(&buf).await.is_err() {
            return End::Lost;
        }
        if buf.capacity() > CONTROL_BATCH {
            buf = BytesMut::new();
        } else {
            buf.clear();
        }
    }
}
