//! One client connection: the join handshake, the control stream, and the tasks that
//! receive its media. A thin driver around [`crate::core::Meeting`].
//!
//! Logs carry the connection's `stable_id` and a keyed tag of the meeting ID, never
//! the meeting ID, participant ID, info blob or address in clear.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::{
    ClientMessage, ControlDecoder, ErrorCode, ParticipantId, RejectReason, ServerMessage,
};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tracing::{debug, Instrument};

use crate::core::registry::check_join;
use crate::core::{Action, Meeting, MeetingId, SubscriberQueue};
use crate::error::{PeerMisbehaved, PeerNotAllowed, SessionError};
use crate::server::Shared;
use crate::stats::RelayStats;
use crate::telemetry::JoinResult;
use orelay_proto::limits::MAX_TRACKS_PER_PARTICIPANT;

/// A meeting as the I/O layer holds it: the sans-IO core plus each participant's handle.
pub(crate) struct MeetingCell {
    /// Keyed hash of the meeting ID, for logs.
    pub(crate) tag: String,
    pub(crate) state: Mutex<MeetingState>,
    /// Bumped on every membership or subscription change, so media tasks can cache
    /// subscriber lists and refresh them only when this moves.
    pub(crate) epoch: AtomicU64,
}

pub(crate) struct MeetingState {
    pub(crate) core: Meeting,
    pub(crate) peers: HashMap<ParticipantId, Arc<Peer>>,
}

/// A participant's connection as other participants' media tasks see it.
pub(crate) struct Peer {
    pub(crate) conn: quinn::Connection,
    control: mpsc::Sender<ServerMessage>,
    queue: Mutex<SubscriberQueue>,
    /// Where this queue's size is added to the relay-wide `queued_bytes` gauge.
    stats: Arc<RelayStats>,
    /// Wakes this subscriber's group writers when its queue changes.
    pub(crate) notify: Notify,
}

impl Peer {
    /// Runs `f` on the subscriber's queue and moves the relay-wide `queued_bytes`
    /// gauge by however much the queue grew or shrank: the one place that keeps the
    /// gauge in step with the queues, whatever the operation dropped or drained.
    pub(crate) fn with_queue<R>(&self, f: impl FnOnce(&mut SubscriberQueue) -> R) -> R {
        // A panic while holding the lock would be a relay bug; keep serving the data.
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let before = queue.queued_bytes();
        let out = f(&mut queue);
        let after = queue.queued_bytes();
        drop(queue);
        if after != before {
            self.stats
                .queued_bytes
                .fetch_add(after as i64 - before as i64, Relaxed);
        }
        out
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Whatever a departed subscriber still had queued is gone with it.
        let left = self
            .queue
            .get_mut()
            .map_or_else(|p| p.into_inner().queued_bytes(), |q| q.queued_bytes());
        self.stats.queued_bytes.fetch_sub(left as i64, Relaxed);
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
            let Action::Send { to, msg } = action;
            let Some(peer) = self.peers.get(&to) else {
                continue;
            };
            if matches!(msg, ServerMessage::KeyframeRequest { .. }) {
                shared.stats.keyframe_requests.fetch_add(1, Relaxed);
            }
            // A closed channel means that session is already ending; only a full one
            // means a client that does not read.
            if let Err(mpsc::error::TrySendError::Full(_)) = peer.control.try_send(msg) {
                close(
                    &peer.conn,
                    shared,
                    &SessionError::RelayLimit(crate::error::RelayLimit::ControlBacklog),
                );
            }
        }
    }
}

/// Closes a connection because of `err`, counting it by close code.
pub(crate) fn close(conn: &quinn::Connection, shared: &Shared, err: &SessionError) {
    if conn.close_reason().is_some() {
        return;
    }
    debug!(error = %err, code = %err.close_code(), "closing connection");
    shared.stats.count_close(err.label());
    shared.stats.count_fault(err);
    conn.close(err.close_code().0.into(), err.label().as_bytes());
}

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

/// Everything a media task of one participant needs.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cell: Arc<MeetingCell>,
    pub(crate) id: ParticipantId,
    pub(crate) conn: quinn::Connection,
    /// Woken after each `Publish`, for media that arrived before it.
    pub(crate) published: Notify,
    left: AtomicBool,
}

struct ActiveGuard<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Drives one incoming connection from handshake to close.
pub(crate) async fn run(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    _connection: OwnedSemaphorePermit,
    unjoined: OwnedSemaphorePermit,
) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            debug!(error = %e, "handshake failed");
            shared.stats.count_handshake_failure();
            return;
        }
    };
    shared.stats.connections_accepted.fetch_add(1, Relaxed);
    shared.stats.connections_active.fetch_add(1, Relaxed);
    let _active = ActiveGuard(&shared.stats.connections_active);
    tokio::spawn(crate::telemetry::quic::watch_path(
        conn.clone(),
        shared.stats.clone(),
    ));
    let span = tracing::info_span!("conn", id = conn.stable_id());
    serve(&shared, conn, unjoined).instrument(span).await;
}

async fn serve(shared: &Arc<Shared>, conn: quinn::Connection, unjoined: OwnedSemaphorePermit) {
    let deadline = Duration::from_millis(shared.config.join_timeout_ms);
    let joined = match tokio::time::timeout(deadline, join(shared, &conn)).await {
        Err(_) => {
            shared.stats.count_join(JoinResult::Timeout);
            Err(End::Error(PeerNotAllowed::JoinTimeout.into()))
        }
        Ok(result) => result,
    };
    drop(unjoined);
    let end = match joined {
        Ok((session, send, recv, decoder, control_rx)) => {
            let session = Arc::new(session);
            debug!(meeting = %session.cell.tag, "joined");
            let end = session.clone().serve(send, recv, decoder, control_rx).await;
            session.leave();
            end
        }
        Err(end) => end,
    };
    match end {
        End::Left => conn.close(ErrorCode::NO_ERROR.0.into(), b"left"),
        End::Lost => {}
        End::Error(e) => close(&conn, shared, &e),
    }
}

type Joined = (
    Session,
    quinn::SendStream,
    quinn::RecvStream,
    ControlDecoder<ClientMessage>,
    mpsc::Receiver<ServerMessage>,
);

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

async fn join(shared: &Arc<Shared>, conn: &quinn::Connection) -> Result<Joined, End> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| End::Lost)?;
    let mut decoder = ControlDecoder::new();
    let ClientMessage::Join {
        version,
        meeting_id,
        passcode,
        info,
    } = next_message(&mut recv, &mut decoder).await?
    else {
        return Err(PeerMisbehaved::UnexpectedMessage("first message must be Join").into());
    };
    // A newcomer's first messages are the roster snapshot (each participant and its
    // tracks), bounded by the meeting limits; the backlog limit applies beyond that,
    // so joining a large meeting is not mistaken for a client that does not read.
    // (tokio allocates channel slots as they fill, not up front.)
    let roster = shared.config.max_participants * (1 + MAX_TRACKS_PER_PARTICIPANT);
    let (control_tx, control_rx) = mpsc::channel(shared.config.control_backlog + roster);
    let admitted = check_join(version, &meeting_id)
        .map_err(|e| e.0)
        .and_then(|id| admit(shared, conn, id, &passcode, info, control_tx));
    match admitted {
        Ok((cell, id)) => {
            shared.stats.count_join(JoinResult::Admitted);
            shared.stats.record_join_duration(started.elapsed());
            let session = Session {
                shared: shared.clone(),
                cell,
                id,
                conn: conn.clone(),
                published: Notify::new(),
                left: AtomicBool::new(false),
            };
            Ok((session, send, recv, decoder, control_rx))
        }
        Err(reason) => {
            shared.stats.count_join(JoinResult::rejected(reason));
            debug!(reason = %reason, "join rejected");
            let msg = ServerMessage::JoinResult(JoinOutcome::Rejected { reason });
            // Give the client a moment to read the reason and close itself.
            if send.write_all(&msg.to_bytes()).await.is_ok() && send.finish().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
            }
            Err(PeerNotAllowed::JoinRejected(reason).into())
        }
    }
}

fn admit(
    shared: &Shared,
    conn: &quinn::Connection,
    meeting_id: MeetingId,
    passcode: &str,
    info: bytes::Bytes,
    control: mpsc::Sender<ServerMessage>,
) -> Result<(Arc<MeetingCell>, ParticipantId), RejectReason> {
    // Lock order everywhere: registry, then meeting.
    let mut meetings = shared.meetings.lock().unwrap_or_else(|p| p.into_inner());
    let cell = match meetings.get(&meeting_id) {
        Some(cell) => cell.clone(),
        None => {
            if meetings.len() >= shared.config.max_meetings {
                return Err(RejectReason::TOO_MANY_MEETINGS);
            }
            let cell = Arc::new(MeetingCell {
                tag: crate::privacy::tag(meeting_id.as_bytes()),
                state: Mutex::new(MeetingState {
                    core: Meeting::new(passcode, shared.config.meeting_limits()),
                    peers: HashMap::new(),
                }),
                epoch: AtomicU64::new(0),
            });
            meetings.insert(meeting_id, cell.clone());
            shared.stats.meetings_active.fetch_add(1, Relaxed);
            cell
        }
    };
    let mut state = cell.lock();
    let (id, actions) = state.core.join(passcode, info)?;
    shared.stats.record_meeting_size(state.core.len());
    let peer = Arc::new(Peer {
        conn: conn.clone(),
        control,
        queue: Mutex::new(SubscriberQueue::new(shared.config.queue_limits())),
        stats: shared.stats.clone(),
        notify: Notify::new(),
    });
    state.peers.insert(id, peer);
    state.apply(actions, shared);
    cell.epoch.fetch_add(1, Relaxed);
    shared.stats.participants_active.fetch_add(1, Relaxed);
    drop(state);
    Ok((cell.clone(), id))
}

impl Session {
    /// Whether the participant has left its meeting (its late media is ignored).
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Relaxed)
    }

    /// Runs the control reader, control writer, stream acceptor and datagram reader
    /// until one of them ends the session.
    async fn serve(
        self: Arc<Self>,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        mut decoder: ControlDecoder<ClientMessage>,
        control_rx: mpsc::Receiver<ServerMessage>,
    ) -> End {
        let control = async {
            loop {
                let msg = next_message(&mut recv, &mut decoder).await?;
                if let ClientMessage::Leave = msg {
                    return Ok::<End, End>(End::Left);
                }
                self.handle(msg)?;
            }
        };
        let streams = async {
            loop {
                let Ok(stream) = self.conn.accept_uni().await else {
                    return End::Lost;
                };
                tokio::spawn(crate::forward::ingest_group(self.clone(), stream).in_current_span());
            }
        };
        let datagrams = async {
            let mut audio = crate::forward::AudioRoutes::default();
            loop {
                let Ok(datagram) = self.conn.read_datagram().await else {
                    return End::Lost;
                };
                if let Err(e) = audio.forward(&self, datagram) {
                    return End::Error(e);
                }
            }
        };
        tokio::select! {
            end = control => end.unwrap_or_else(|e| e),
            end = streams => end,
            end = datagrams => end,
            end = write_control(send, control_rx) => end,
        }
    }

    fn handle(&self, msg: ClientMessage) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut state = self.cell.lock();
        let core = &mut state.core;
        let publish = matches!(msg, ClientMessage::Publish(_));
        // Only these change who receives what; media tasks refresh routes when it moves.
        let reroutes = matches!(
            msg,
            ClientMessage::Publish(_)
                | ClientMessage::Unpublish { .. }
                | ClientMessage::Subscribe { .. }
                | ClientMessage::Unsubscribe { .. }
        );
        let actions = match msg {
            ClientMessage::Join { .. } => {
                return Err(PeerMisbehaved::UnexpectedMessage("second Join").into())
            }
            ClientMessage::Leave => Vec::new(),
            ClientMessage::Publish(info) => core.publish(self.id, info)?,
            ClientMessage::Unpublish { track } => core.unpublish(self.id, track)?,
            ClientMessage::Subscribe {
                publisher,
                track,
                layer,
            } => core.subscribe(self.id, publisher, track, layer, now)?,
            ClientMessage::Unsubscribe { publisher, track } => {
                core.unsubscribe(self.id, publisher, track)?;
                Vec::new()
            }
            ClientMessage::RequestKeyframe {
                publisher,
                track,
                layer,
            } => core.request_keyframe(publisher, track, layer, now),
        };
        state.apply(actions, &self.shared);
        if reroutes {
            self.cell.epoch.fetch_add(1, Relaxed);
        }
        drop(state);
        if publish {
            self.published.notify_waiters();
        }
        Ok(())
    }

    /// Removes the participant from its meeting, and the meeting if it is now empty.
    fn leave(&self) {
        self.left.store(true, Relaxed);
        let mut state = self.cell.lock();
        let actions = state.core.leave(self.id);
        state.peers.remove(&self.id);
        state.apply(actions, &self.shared);
        self.cell.epoch.fetch_add(1, Relaxed);
        self.shared.stats.participants_active.fetch_sub(1, Relaxed);
        let empty = state.core.is_empty();
        drop(state);
        if empty {
            let mut meetings = self
                .shared
                .meetings
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Re-check under both locks: someone may have joined in between.
            let still_empty = self.cell.lock().core.is_empty();
            let before = meetings.len();
            if still_empty {
                meetings.retain(|_, cell| !Arc::ptr_eq(cell, &self.cell));
            }
            if meetings.len() < before {
                self.shared.stats.meetings_active.fetch_sub(1, Relaxed);
            }
        }
        debug!(meeting = %self.cell.tag, "left");
    }
}

/// Writes queued control messages, batching whatever is ready into one write.
async fn write_control(mut send: quinn::SendStream, mut rx: mpsc::Receiver<ServerMessage>) -> End {
    let mut buf = BytesMut::new();
    while let Some(msg) = rx.recv().await {
        msg.encode(&mut buf);
        while let Ok(more) = rx.try_recv() {
            more.encode(&mut buf);
        }
        if send.write_all(&buf).await.is_err() {
            return End::Lost;
        }
        buf.clear();
    }
    End::Lost
}
