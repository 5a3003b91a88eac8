//! One client connection: handshake and join under a deadline, then the control stream
//! (rate-limited), the tasks that receive its media, and its subscriber policy timer.
//! A thin driver around the core; leaving the meeting is guaranteed by a drop guard.
//!
//! Logs carry the connection's `stable_id` and a keyed tag of the meeting ID, never
//! the meeting ID, participant ID, info blob or address in clear.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use orelay_proto::control::{ControlMessage, JoinOutcome};
use orelay_proto::limits::MAX_TRACKS_PER_PARTICIPANT;
use orelay_proto::{ClientMessage, ControlDecoder, ErrorCode, ServerMessage};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tracing::{debug, Instrument};

use crate::core::meeting_id::check_join;
use crate::core::subscriber::POLICY_INTERVAL;
use crate::core::TokenBucket;
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
    } = next_message(&mut recv, &mut decoder).await?
    else {
        return Err(PeerMisbehaved::UnexpectedMessage("first message must be Join").into());
    };
    if let Err(retry_at) = shared.take_join_token(Instant::now()) {
        // Over the relay's join rate: an explicit answer, not a silent drop.
        shared.stats.joins_overloaded.fetch_add(1, Relaxed);
        shared.stats.count_join(JoinResult::Overloaded);
        let retry_after_ms = retry_at
            .saturating_duration_since(Instant::now())
            .as_millis()
            .max(1) as u64;
        let msg = ServerMessage::JoinResult(JoinOutcome::Overloaded { retry_after_ms });
        answer_and_wait(conn, &mut send, &msg).await;
        return Err(RelayLimit::Overloaded.into());
    }
    // A newcomer's first messages are the roster snapshot (each participant and its
    // tracks), bounded by the meeting limits; the backlog limit applies beyond that,
    // so joining a large meeting is not mistaken for a client that does not read.
    // (The outbox grows as it fills, not up front.)
    let roster = shared.config.max_participants * (1 + MAX_TRACKS_PER_PARTICIPANT);
    let peer = Arc::new(Peer::new(
        conn.clone(),
        shared.config.control_backlog + roster,
    ));
    let admitted = check_join(version, &meeting_id)
        .map_err(|e| e.0)
        .and_then(|id| shared.admit(id, &passcode, info, peer.clone()));
    match admitted {
        Ok((cell, id)) => {
            shared.stats.count_join(JoinResult::Admitted);
            shared.stats.record_join_duration(started.elapsed());
            let me = Arc::new(Participant::new(shared.clone(), cell, id, conn.clone()));
            Ok(Session {
                me,
                peer,
                send,
                recv,
                decoder,
            })
        }
        Err(reason) => {
            shared.stats.count_join(JoinResult::rejected(reason));
            debug!(reason = %reason, "join rejected");
            let msg = ServerMessage::JoinResult(JoinOutcome::Rejected { reason });
            answer_and_wait(conn, &mut send, &msg).await;
            Err(PeerNotAllowed::JoinRejected(reason).into())
        }
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
                handle(&me, msg)?;
            }
        };
        let streams = async {
            loop {
                let Ok(stream) = me.conn.accept_uni().await else {
                    return End::Lost;
                };
                tokio::spawn(ingest_group(me.clone(), stream).in_current_span());
            }
        };
        let datagrams = async {
            let mut audio = AudioRoutes::default();
            loop {
                let Ok(datagram) = me.conn.read_datagram().await else {
                    return End::Lost;
                };
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

fn handle(me: &Participant, msg: ClientMessage) -> Result<(), SessionError> {
    let now = Instant::now();
    let mut state = me.cell.lock();
    let core = &mut state.core;
    let publish = matches!(msg, ClientMessage::Publish(_));
    let actions = match msg {
        ClientMessage::Join { .. } => {
            return Err(PeerMisbehaved::UnexpectedMessage("second Join").into())
        }
        ClientMessage::Leave => Vec::new(),
        ClientMessage::Publish(info) => core.publish(me.id, info)?,
        ClientMessage::Unpublish { track } => core.unpublish(me.id, track)?,
        ClientMessage::Subscribe {
            publisher,
            track,
            layer,
        } => core.subscribe(me.id, publisher, track, layer, now)?,
        ClientMessage::Unsubscribe { publisher, track } => {
            core.unsubscribe(me.id, publisher, track)?;
            Vec::new()
        }
        ClientMessage::RequestKeyframe {
            publisher,
            track,
            layer,
        } => core.request_keyframe(publisher, track, layer, now),
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
