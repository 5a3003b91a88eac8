//! Media forwarding: the hot path. Never copies, parses or re-frames a payload.
//!
//! The walk of one video object, publisher to subscriber:
//! 1. [`ingest_group`] reads the publisher's group stream as `Bytes` chunks straight
//!    from quinn and splits the group header off the first one without copying.
//! 2. [`Meeting::route`](crate::core::Meeting::route) names the subscribers (waiting
//!    out the [`PublishGrace`] if the `Publish` is still on its way);
//!    [`OpenGroups`] enforces the concurrent-group limit per track layer.
//! 3. One shared [`GroupBuffer`](crate::core::GroupBuffer) per group receives every
//!    chunk once (O(1) per chunk, one wake per subscriber waiting at its end), within
//!    the publisher's byte budget.
//! 4. One [`write_group`] task per subscriber reads at its own cursor and hands the
//!    same `Bytes` to `SendStream::write_chunk`; the subscriber's drop policy
//!    ([`plan_drops`]) runs when a group opens for it and every `POLICY_INTERVAL`.
//!
//! Audio datagrams are checked by header and the same `Bytes` is handed to each
//! subscriber's `send_datagram`, with routes cached per track until its
//! [`RouteVersion`] moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use orelay_proto::{DatagramHeader, ErrorCode, GroupHeader, ParticipantId, TrackId};
use tokio::sync::Notify;

use crate::core::group_header::{GroupHeaderReader, SplitHeader};
use crate::core::routing::GroupSlot;
use crate::core::{
    plan_drops, stream_priority, Backlog, DropCause, Grace, GroupBuffer, OpenGroups, Opened,
    PublishGrace, Read, ReaderId, ResetCause, Route, RouteVersion, TrackKey, Transport,
};
use crate::error::{PeerMisbehaved, SessionError};
use crate::fanout::{GroupCell, PublisherHeld};
use crate::registry::{close, MeetingCell, Peer, Shared};
use crate::telemetry::{DatagramDropReason, MediaKind};

/// Largest chunk read from a publisher stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// A joined participant's media side: what its ingest tasks share.
pub(crate) struct Participant {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cell: Arc<MeetingCell>,
    pub(crate) id: ParticipantId,
    pub(crate) conn: quinn::Connection,
    /// Woken after each `Publish`, for media that arrived before it.
    pub(crate) published: Notify,
    left: AtomicBool,
    held: Arc<PublisherHeld>,
    groups: Mutex<InFlight>,
    grace: Mutex<PublishGrace>,
}

/// This publisher's groups in flight.
#[derive(Default)]
struct InFlight {
    open: OpenGroups,
    cells: HashMap<GroupSlot, Arc<GroupCell>>,
    next: GroupSlot,
}

impl Participant {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cell: Arc<MeetingCell>,
        id: ParticipantId,
        conn: quinn::Connection,
    ) -> Self {
        Self {
            shared,
            cell,
            id,
            conn,
            published: Notify::new(),
            left: AtomicBool::new(false),
            held: Arc::default(),
            groups: Mutex::default(),
            grace: Mutex::default(),
        }
    }

    /// Whether the participant has left its meeting (its late media is ignored).
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Relaxed)
    }

    /// Marks the participant gone and resets every group it was still sending.
    pub(crate) fn mark_left(&self) {
        self.left.store(true, Relaxed);
        let cells: Vec<Arc<GroupCell>> = self.in_flight().cells.values().cloned().collect();
        for cell in cells {
            cell.reset(ResetCause::Publisher);
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn grace(&self, now: Instant) -> Grace {
        self.grace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unknown(now)
    }

    fn routed(&self) {
        self.grace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routed();
    }

    /// Most bytes a group now holding `held` may hold after one more push: the
    /// publisher's budget less what its other groups hold. Called inside the group's
    /// lock, so the chunk path takes that lock once.
    fn budget(&self, held: usize) -> usize {
        let others = self.held.get().saturating_sub(held);
        self.shared.fanout.group_budget(others)
    }
}

/// Reads a group stream's header, returning it, its original bytes, and whatever
/// followed it in the same chunk (see [`GroupHeaderReader`]). A stream that ends or
/// fails inside its header is dropped quietly: nothing of it was forwarded.
async fn read_header(stream: &mut quinn::RecvStream) -> Result<Option<SplitHeader>, SessionError> {
    let mut reader = GroupHeaderReader::new();
    loop {
        let Ok(Some(chunk)) = stream.read_chunk(READ_CHUNK, true).await else {
            return Ok(None);
        };
        #[cfg(feature = "test-hooks")]
        let chunk = quinn::Chunk {
            bytes: crate::test_hooks::media(chunk.bytes),
            ..chunk
        };
        if let Some(split) = reader.push(chunk.bytes)? {
            return Ok(Some(split));
        }
    }
}

/// Receives one group stream from a publisher and fans it out.
pub(crate) async fn ingest_group(me: Arc<Participant>, mut stream: quinn::RecvStream) {
    let idle = me.shared.fanout.group_idle_timeout;
    let split = match tokio::time::timeout(idle, read_header(&mut stream)).await {
        Ok(Ok(Some(split))) => split,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return close(&me.conn, &me.shared, &e),
        Err(_) => {
            // Counted like a group that stalls later: a stream opened and left
            // inside its header is the same slowloris.
            me.shared.stats.groups_idle.fetch_add(1, Relaxed);
            let _ = stream.stop(ErrorCode::GROUP_DROPPED.0.into());
            return;
        }
    };
    let header = split.header;
    let first_bytes = split.bytes.len() + split.rest.len();
    let (targets, kind) = match group_targets(&me, &header).await {
        Ok(routed) => routed,
        Err(None) => return,
        Err(Some(e)) => return close(&me.conn, &me.shared, &e),
    };
    let key = TrackKey {
        publisher: header.publisher,
        track: header.track,
        layer: header.layer,
    };
    let stats = &me.shared.stats;
    let now = Instant::now();
    let buffer = GroupBuffer::new(split.bytes, targets.len(), now);
    let cell = Arc::new(GroupCell::new(
        buffer,
        key,
        header.group,
        kind,
        me.held.clone(),
        stats.clone(),
    ));
    let Some(slot) = register(&me, &cell) else {
        // Older than the open groups of its layer: the same limit, so the same count.
        stats.groups_limited.fetch_add(1, Relaxed);
        let _ = stream.stop(ErrorCode::GROUP_DROPPED.0.into());
        return;
    };
    let _registered = Registered { me: &me, slot, key };
    stats.count_group_in(kind);
    stats.count_groups_out(kind, targets.len());
    stats.count_media_in(kind, first_bytes);
    for (i, peer) in targets.into_iter().enumerate() {
        let reader = ReaderId(i as u32);
        let superseded = peer.open_read(&cell, reader);
        stats.reads_open.fetch_add(1, Relaxed);
        tokio::spawn(write_group(
            me.shared.clone(),
            peer.clone(),
            cell.clone(),
            reader,
            superseded,
        ));
        enforce(&me.shared, &me.cell, &peer, now);
    }
    // The header counts against the publisher's budget like any chunk.
    let evicted = cell.with(|g| {
        let before = g.shed_bytes();
        let budget = me.budget(g.held_bytes());
        (g.shed(budget), g.shed_bytes() - before)
    });
    after_eviction(&me, &cell, evicted, now);
    if !split.rest.is_empty() {
        push(&me, &cell, split.rest);
    }
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_chunk(READ_CHUNK, true)) => r,
            () = cell.stopped_ingest() => {
                // Reset by the concurrent-group limit or because the publisher left.
                let _ = stream.stop(ErrorCode::GROUP_DROPPED.0.into());
                return;
            }
        };
        match next {
            Ok(Ok(Some(chunk))) => {
                #[cfg(feature = "test-hooks")]
                let chunk = quinn::Chunk {
                    bytes: crate::test_hooks::media(chunk.bytes),
                    ..chunk
                };
                stats.count_media_in(kind, chunk.bytes.len());
                push(&me, &cell, chunk.bytes);
            }
            Ok(Ok(None)) => return cell.with(|g| g.finish()),
            // The publisher reset the group or went away: subscribers' copies are reset too.
            Ok(Err(_)) => return cell.with(|g| g.reset(ResetCause::Publisher)),
            Err(_) => {
                stats.groups_idle.fetch_add(1, Relaxed);
                cell.with(|g| g.reset(ResetCause::Idle));
                let _ = stream.stop(ErrorCode::GROUP_DROPPED.0.into());
                return;
            }
        }
    }
}

/// Registers a new group with its publisher's concurrent-group limit, resetting the
/// groups it pushes out. `None`: older than every open group of its layer.
fn register(me: &Participant, cell: &Arc<GroupCell>) -> Option<GroupSlot> {
    let mut in_flight = me.in_flight();
    let slot = in_flight.next;
    in_flight.next += 1;
    match in_flight.open.open(cell.key, cell.group, slot) {
        Opened::TooOld => None,
        Opened::Forward { reset } => {
            for old in reset {
                if let Some(old) = in_flight.cells.remove(&old) {
                    me.shared.stats.groups_limited.fetch_add(1, Relaxed);
                    old.reset(ResetCause::GroupLimit);
                }
            }
            in_flight.cells.insert(slot, cell.clone());
            Some(slot)
        }
    }
}

/// Takes a group out of its publisher's books on every exit path of its ingest task.
struct Registered<'a> {
    me: &'a Participant,
    slot: GroupSlot,
    key: TrackKey,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.me.in_flight();
        in_flight.open.close(self.key, self.slot);
        if let Some(cell) = in_flight.cells.remove(&self.slot) {
            drop(in_flight);
            // An ingest task that ends without finishing (a panic, a lost connection)
            // must not leave readers waiting for more.
            cell.with(|g| {
                if g.end().is_none() {
                    g.reset(ResetCause::Publisher);
                }
            });
        }
    }
}

/// Appends one chunk within the publisher's budget; readers it pushes out lose the group.
fn push(me: &Participant, cell: &GroupCell, chunk: Bytes) {
    let now = Instant::now();
    let evicted = cell.with(|g| {
        let before = g.shed_bytes();
        let budget = me.budget(g.held_bytes());
        (g.push(chunk, now, budget), g.shed_bytes() - before)
    });
    after_eviction(me, cell, evicted, now);
}

/// Counts readers the publisher's budget pushed out of a group, and asks for a
/// keyframe if they lost the newest group of the track layer.
fn after_eviction(
    me: &Participant,
    cell: &GroupCell,
    (evicted, bytes): (Vec<ReaderId>, u64),
    now: Instant,
) {
    if evicted.is_empty() {
        return;
    }
    let stats = &me.shared.stats;
    stats.count_group_drop(DropCause::GroupBudget, evicted.len() as u64, bytes as usize);
    let newest = me.in_flight().open.is_newest(cell.key, cell.group);
    if newest {
        request_keyframe(&me.shared, &me.cell, cell.key, now);
    }
}

fn request_keyframe(shared: &Shared, meeting: &MeetingCell, key: TrackKey, now: Instant) {
    let mut state = meeting.lock();
    let actions = state
        .core
        .request_keyframe(key.publisher, key.track, key.layer, now);
    state.apply(actions, shared);
}

/// The subscribers of a group and its track's kind, waiting out the publish grace.
/// `Err(None)`: the session is over, drop quietly; `Err(Some)`: close the connection.
async fn group_targets(
    me: &Participant,
    header: &GroupHeader,
) -> Result<(Vec<Arc<Peer>>, MediaKind), Option<SessionError>> {
    loop {
        let published = me.published.notified();
        tokio::pin!(published);
        published.as_mut().enable();
        if me.has_left() {
            return Err(None);
        }
        let route = {
            let state = me.cell.lock();
            match state.core.route(
                me.id,
                header.publisher,
                header.track,
                header.layer,
                Transport::Stream,
            ) {
                Route::Deliver { targets, .. } => {
                    let kind = state
                        .core
                        .track(me.id, header.track)
                        .map_or(MediaKind::Video, |t| MediaKind::of(t.kind));
                    let peers = targets
                        .iter()
                        .filter_map(|id| state.peers.get(id).cloned())
                        .collect();
                    Ok((peers, kind))
                }
                Route::Unknown => Err(false),
                Route::Invalid => Err(true),
            }
        };
        match route {
            Ok(routed) => {
                me.routed();
                return Ok(routed);
            }
            Err(true) => return Err(Some(PeerMisbehaved::TrackNotPublished.into())),
            Err(false) => match me.grace(Instant::now()) {
                Grace::Expired => return Err(Some(PeerMisbehaved::TrackNotPublished.into())),
                Grace::Wait { until } => {
                    me.shared.stats.grace_waits.fetch_add(1, Relaxed);
                    tokio::select! {
                        () = published => {}
                        () = tokio::time::sleep_until(until.into()) => {}
                    }
                }
            },
        }
    }
}

/// Runs one subscriber's drop policy over the groups it is reading.
pub(crate) fn enforce(shared: &Shared, meeting: &MeetingCell, peer: &Peer, now: Instant) {
    let mut keyframes = Vec::new();
    {
        let reads = peer.reads();
        if reads.is_empty() {
            return;
        }
        let mut open = Vec::with_capacity(reads.len());
        let mut which = Vec::with_capacity(reads.len());
        for (i, r) in reads.iter().enumerate() {
            if let Some(lag) = r.group.with(|g| g.lag(r.reader)) {
                open.push(Backlog {
                    key: r.group.key,
                    group: r.group.group,
                    lag,
                });
                which.push(i);
            }
        }
        shared
            .stats
            .record_queue_depth(open.iter().map(|b| b.lag.bytes).sum());
        for d in plan_drops(&open, &shared.config.queue_limits(), now) {
            let r = &reads[which[d.index]];
            if let Some(bytes) = r.group.with(|g| g.drop_reader(r.reader)) {
                shared.stats.count_group_drop(d.cause, 1, bytes);
                if d.need_keyframe {
                    keyframes.push(r.group.key);
                }
            }
        }
    }
    for key in keyframes {
        request_keyframe(shared, meeting, key, now);
    }
}

/// Drains one subscriber's reader of a group into a new unidirectional stream.
async fn write_group(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    cell: Arc<GroupCell>,
    reader: ReaderId,
    superseded: Arc<AtomicBool>,
) {
    // However this ends, the reader is released and the subscriber's entry removed.
    let _guard = ReaderGuard {
        shared: &shared,
        peer: &peer,
        cell: &cell,
        reader,
    };
    let opened = tokio::select! {
        s = peer.conn.open_uni() => s.ok(),
        () = cell.stopped(reader) => None,
    };
    let Some(mut stream) = opened else {
        return;
    };
    let mut demoted = superseded.load(Relaxed);
    let _ = stream.set_priority(stream_priority(demoted));
    loop {
        let (step, arrived) = cell.read(reader).await;
        match step {
            Read::Chunk(chunk) => {
                if !demoted && superseded.load(Relaxed) {
                    // A newer group of this track is on its way: it goes first.
                    demoted = true;
                    let _ = stream.set_priority(stream_priority(true));
                }
                let len = chunk.len();
                let written = tokio::select! {
                    r = stream.write_chunk(chunk) => r.is_ok(),
                    () = cell.stopped(reader) => false,
                };
                if !written {
                    let _ = stream.reset(ErrorCode::GROUP_DROPPED.0.into());
                    return;
                }
                let stats = &shared.stats;
                stats.count_media_out(cell.kind, len);
                if let Some(at) = arrived {
                    // Received from the publisher → handed to this subscriber's stream.
                    stats.record_stream_forward(at, 1);
                }
            }
            Read::Pending => {}
            Read::Finished => {
                let _ = stream.finish();
                return;
            }
            Read::Reset => {
                let _ = stream.reset(ErrorCode::GROUP_DROPPED.0.into());
                return;
            }
        }
    }
}

struct ReaderGuard<'a> {
    shared: &'a Shared,
    peer: &'a Peer,
    cell: &'a Arc<GroupCell>,
    reader: ReaderId,
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        self.cell.with(|g| g.release(self.reader));
        self.peer.forget(self.cell, self.reader);
        self.shared.stats.reads_open.fetch_sub(1, Relaxed);
    }
}

/// A publisher's cached audio routes: per track, its subscribers' connections and the
/// route version they were read at.
#[derive(Default)]
pub(crate) struct AudioRoutes {
    routes: HashMap<TrackId, (RouteVersion, u64, Vec<quinn::Connection>)>,
}

impl AudioRoutes {
    /// Checks an audio datagram's header and hands the same `Bytes` to each subscriber.
    pub(crate) fn forward(
        &mut self,
        me: &Participant,
        datagram: Bytes,
    ) -> Result<(), SessionError> {
        let t0 = Instant::now();
        let stats = &me.shared.stats;
        stats.datagrams_in.fetch_add(1, Relaxed);
        stats.count_media_in(MediaKind::Audio, datagram.len());
        let (header, _) = DatagramHeader::decode(&datagram)?;
        // The cache is keyed by track alone, so the sender's claim is checked here on
        // every datagram, not only when the route is re-read: otherwise, once a route is
        // cached, a member could forward audio under another participant's ID.
        if header.publisher != me.id {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        }
        let fresh = self
            .routes
            .get(&header.track)
            .is_some_and(|(v, at, _)| v.get() == *at);
        if !fresh && !self.refresh(me, &header)? {
            stats.count_datagram_drop(DatagramDropReason::Unpublished);
            return Ok(());
        }
        let Some((_, _, targets)) = self.routes.get(&header.track) else {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        };
        let mut delivered = 0;
        for conn in targets {
            // quinn drops the oldest queued datagram when its buffer is full; count it.
            let full = conn.datagram_send_buffer_space() < datagram.len();
            match conn.send_datagram(datagram.clone()) {
                Ok(()) if !full => delivered += 1,
                Ok(()) => stats.count_datagram_drop(DatagramDropReason::BufferFull),
                Err(_) => stats.count_datagram_drop(DatagramDropReason::SendFailed),
            }
        }
        stats.datagrams_out.fetch_add(delivered as u64, Relaxed);
        stats.count_media_out(MediaKind::Audio, datagram.len() * delivered);
        stats.record_datagram_forward(t0, delivered);
        Ok(())
    }

    /// Re-reads a track's route. `Ok(false)`: not published yet, within the grace.
    fn refresh(&mut self, me: &Participant, header: &DatagramHeader) -> Result<bool, SessionError> {
        let state = me.cell.lock();
        let route = state.core.route(
            me.id,
            header.publisher,
            header.track,
            0,
            Transport::Datagram,
        );
        match route {
            Route::Deliver {
                targets,
                version,
                generation,
            } => {
                let conns = targets
                    .iter()
                    .filter_map(|id| state.peers.get(id).map(|p| p.conn.clone()))
                    .collect();
                drop(state);
                // Bounded: a publisher has at most MAX_TRACKS_PER_PARTICIPANT tracks.
                self.routes
                    .insert(header.track, (version, generation, conns));
                me.routed();
                Ok(true)
            }
            Route::Invalid => Err(PeerMisbehaved::TrackNotPublished.into()),
            Route::Unknown => {
                drop(state);
                self.routes.remove(&header.track);
                match me.grace(Instant::now()) {
                    Grace::Expired => Err(PeerMisbehaved::TrackNotPublished.into()),
                    Grace::Wait { .. } => Ok(false),
                }
            }
        }
    }
}
