//! Media forwarding: the hot path. Never copies, parses or re-frames a payload.
//!
//! A publisher's group stream is read as `Bytes` chunks straight from quinn; the
//! group header is split off the first chunk (`Bytes::split_to`, no copy), checked,
//! and then the header and every later chunk are pushed, as clones of the same `Bytes`
//! handle, into each subscriber's [`SubscriberQueue`](crate::core::SubscriberQueue).
//! One writer task per subscriber and group drains that slot into a unidirectional
//! stream. Audio datagrams are checked by header and the same `Bytes` is handed to
//! each subscriber's `send_datagram`.
//!
//! Subscribers are looked up once per group (and per meeting change for audio), not
//! per chunk. A slow subscriber only ever fills its own queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orelay_proto::{DatagramHeader, ErrorCode, GroupHeader, TrackId, TrackKind};

use crate::core::group_header::{GroupHeaderReader, SplitHeader};
use crate::core::{Dropped, Pop, SlotId, TrackKey};
use crate::error::{PeerMisbehaved, SessionError};
use crate::session::{close, Peer, Session};
use crate::telemetry::{DatagramDropReason, GroupDropReason, MediaKind};

/// Largest chunk read from a publisher stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Reads a group stream's header, returning it, its original bytes, and whatever
/// followed it in the same chunk (see [`GroupHeaderReader`]).
async fn read_header(stream: &mut quinn::RecvStream) -> Result<Option<SplitHeader>, SessionError> {
    let mut reader = GroupHeaderReader::new();
    loop {
        let Ok(Some(chunk)) = stream.read_chunk(READ_CHUNK, true).await else {
            return Ok(None);
        };
        if let Some(split) = reader.push(chunk.bytes)? {
            return Ok(Some(split));
        }
    }
}

/// Receives one group stream from a publisher and fans it out.
pub(crate) async fn ingest_group(session: Arc<Session>, mut stream: quinn::RecvStream) {
    let (header, header_bytes, rest) = match read_header(&mut stream).await {
        Ok(Some(split)) => (split.header, split.bytes, split.rest),
        Ok(None) => return,
        Err(e) => return close(&session.conn, &session.shared, &e),
    };
    let stats = &session.shared.stats;
    let key = TrackKey {
        publisher: header.publisher,
        track: header.track,
        layer: header.layer,
    };
    let targets = match group_targets(&session, &header).await {
        Ok(targets) => targets,
        Err(None) => return,
        Err(Some(e)) => return close(&session.conn, &session.shared, &e),
    };
    let now = Instant::now();
    let kind = media_kind(&session, header.track);
    stats.groups_in.fetch_add(1, Relaxed);
    stats.count_group_in(kind);
    stats.count_media_in(kind, header_bytes.len() + rest.len());
    stats
        .stream_bytes_in
        .fetch_add((header_bytes.len() + rest.len()) as u64, Relaxed);
    let priority = stream_priority(header.priority, header.group);
    let mut slots = Vec::with_capacity(targets.len());
    for peer in targets {
        let (slot, dropped) = peer.with_queue(|q| {
            stats.record_queue_depth(q.queued_bytes());
            q.open(key, header.group, header_bytes.clone(), now)
        });
        after_drops(&session, &peer, &dropped, now);
        tokio::spawn(write_group(
            session.shared.clone(),
            peer.clone(),
            slot,
            priority,
        ));
        slots.push((peer, slot));
    }
    stats.groups_out.fetch_add(slots.len() as u64, Relaxed);
    stats.count_groups_out(kind, slots.len());
    stats.count_media_out(kind, header_bytes.len() * slots.len());
    if !rest.is_empty() {
        push_all(&session, &slots, rest, kind);
    }
    loop {
        match stream.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                stats
                    .stream_bytes_in
                    .fetch_add(chunk.bytes.len() as u64, Relaxed);
                stats.count_media_in(kind, chunk.bytes.len());
                push_all(&session, &slots, chunk.bytes, kind);
            }
            Ok(None) => {
                for (peer, slot) in &slots {
                    peer.with_queue(|q| q.finish(*slot));
                    peer.notify.notify_waiters();
                }
                return;
            }
            Err(_) => {
                // The publisher reset the group or went away: subscribers' copies of it
                // are reset too.
                for (peer, slot) in &slots {
                    peer.with_queue(|q| q.cancel(*slot));
                    peer.notify.notify_waiters();
                }
                return;
            }
        }
    }
}

/// How long media may precede the `Publish` that announces its track. QUIC does not
/// order the control stream against media streams, so a client that publishes and
/// starts sending at once can have its first group arrive first.
pub(crate) const PUBLISH_GRACE: Duration = Duration::from_secs(1);

/// Whether a group header names a track this session publishes, and if so who receives it.
enum Route {
    Valid(Vec<Arc<Peer>>),
    /// The track is not (yet) published.
    Unknown,
    /// Someone else's ID, or a track of the wrong kind or layer: never valid.
    Invalid,
}

fn route_group(session: &Session, header: &GroupHeader) -> Route {
    let state = session.cell.lock();
    if header.publisher != session.id {
        return Route::Invalid;
    }
    match state.core.track(header.publisher, header.track) {
        None => Route::Unknown,
        Some(t) if !t.kind.uses_streams() || header.layer >= t.layers => Route::Invalid,
        Some(_) => Route::Valid(
            state
                .core
                .subscribers(header.publisher, header.track, header.layer)
                .filter_map(|id| state.peers.get(&id).cloned())
                .collect(),
        ),
    }
}

/// The subscribers of a group, waiting up to [`PUBLISH_GRACE`] for its `Publish`.
/// `Err(None)`: the session is over, drop quietly; `Err(Some)`: close the connection.
async fn group_targets(
    session: &Session,
    header: &GroupHeader,
) -> Result<Vec<Arc<Peer>>, Option<SessionError>> {
    let deadline = tokio::time::Instant::now() + PUBLISH_GRACE;
    loop {
        let published = session.published.notified();
        tokio::pin!(published);
        published.as_mut().enable();
        if session.has_left() {
            return Err(None);
        }
        match route_group(session, header) {
            Route::Valid(targets) => return Ok(targets),
            Route::Invalid => return Err(Some(PeerMisbehaved::TrackNotPublished.into())),
            Route::Unknown if tokio::time::Instant::now() >= deadline => {
                return Err(Some(PeerMisbehaved::TrackNotPublished.into()))
            }
            Route::Unknown => {
                tokio::select! {
                    () = published => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
    }
}

/// Pushes one chunk to every subscriber of the group: a refcount bump each, no copy.
fn push_all(session: &Session, slots: &[(Arc<Peer>, SlotId)], chunk: Bytes, kind: MediaKind) {
    let now = Instant::now();
    let len = chunk.len();
    for (peer, slot) in slots {
        let dropped = peer.with_queue(|q| q.push(*slot, chunk.clone(), now));
        after_drops(session, peer, &dropped, now);
        peer.notify.notify_waiters();
    }
    let stats = &session.shared.stats;
    stats.count_media_out(kind, len * slots.len());
    stats.record_stream_forward(now, slots.len());
}

/// Counts policy drops, wakes the affected writers so they reset their streams, and
/// asks publishers for keyframes where a subscriber lost the newest group.
fn after_drops(session: &Session, peer: &Peer, dropped: &[Dropped], now: Instant) {
    if dropped.is_empty() {
        return;
    }
    let stats = &session.shared.stats;
    for d in dropped {
        stats.count_group_drop(GroupDropReason::of(d), d.bytes);
    }
    peer.notify.notify_waiters();
    if dropped.iter().any(|d| d.need_keyframe) {
        let mut state = session.cell.lock();
        for d in dropped.iter().filter(|d| d.need_keyframe) {
            let actions =
                state
                    .core
                    .request_keyframe(d.key.publisher, d.key.track, d.key.layer, now);
            state.apply(actions, &session.shared);
        }
    }
}

/// The media kind of one of the session's tracks, for per-kind counters (one lock
/// per group, never per chunk).
fn media_kind(session: &Session, track: TrackId) -> MediaKind {
    let state = session.cell.lock();
    state
        .core
        .track(session.id, track)
        .map_or(MediaKind::Video, |t| MediaKind::of(t.kind))
}

/// Stream priority: the track's priority first, then newer groups before older ones
/// (the low 23 bits of the group sequence; a wrap briefly inverts one pair of groups).
fn stream_priority(track_priority: u8, group: u64) -> i32 {
    (i32::from(track_priority) << 23) | (group & 0x7f_ffff) as i32
}

/// Resolves once `slot` has been dropped from the subscriber's queue.
async fn until_dropped(peer: &Peer, slot: SlotId) {
    loop {
        let notified = peer.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if peer.with_queue(|q| q.is_dropped(slot)) {
            return;
        }
        notified.await;
    }
}

/// Drains one subscriber's slot into a new unidirectional stream.
async fn write_group(
    shared: Arc<crate::server::Shared>,
    peer: Arc<Peer>,
    slot: SlotId,
    priority: i32,
) {
    let stats = &shared.stats;
    let opened = tokio::select! {
        s = peer.conn.open_uni() => s.ok(),
        () = until_dropped(&peer, slot) => None,
    };
    let Some(mut stream) = opened else {
        // Never opened: make sure the slot does not linger.
        discard(&peer, slot);
        return;
    };
    let _ = stream.set_priority(priority);
    loop {
        let notified = peer.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = peer.with_queue(|q| q.pop(slot));
        match next {
            Pop::Chunk(chunk) => {
                let len = chunk.len();
                let written = tokio::select! {
                    r = stream.write_chunk(chunk) => r.is_ok(),
                    () = until_dropped(&peer, slot) => false,
                };
                if !written {
                    let _ = stream.reset(ErrorCode::GROUP_DROPPED.0.into());
                    discard(&peer, slot);
                    return;
                }
                stats.stream_bytes_out.fetch_add(len as u64, Relaxed);
            }
            Pop::Empty => notified.await,
            Pop::Finished => {
                let _ = stream.finish();
                return;
            }
            Pop::Dropped => {
                let _ = stream.reset(ErrorCode::GROUP_DROPPED.0.into());
                return;
            }
        }
    }
}

/// Drains a slot whose writer gave up, so its bytes leave the queue now.
fn discard(peer: &Peer, slot: SlotId) {
    peer.with_queue(|q| while let Pop::Chunk(_) = q.pop(slot) {});
}

/// A publisher's cached audio routes: the subscriber connections of each audio
/// track, refreshed only when the meeting's epoch moves.
#[derive(Default)]
pub(crate) struct AudioRoutes {
    epoch: u64,
    routes: HashMap<TrackId, Vec<quinn::Connection>>,
    /// When datagrams for a not-yet-published track started arriving.
    unknown_since: Option<Instant>,
}

impl AudioRoutes {
    /// Checks an audio datagram's header and hands the same `Bytes` to each subscriber.
    pub(crate) fn forward(
        &mut self,
        session: &Session,
        datagram: Bytes,
    ) -> Result<(), SessionError> {
        let received = Instant::now();
        let stats = &session.shared.stats;
        stats.datagrams_in.fetch_add(1, Relaxed);
        stats.count_media_in(MediaKind::Audio, datagram.len());
        let (header, _) = DatagramHeader::decode(&datagram)?;
        if header.publisher != session.id {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        }
        let epoch = session.cell.epoch.load(Relaxed);
        if epoch != self.epoch {
            // Routes changed somewhere in the meeting: rebuild lazily, track by track.
            self.routes.clear();
            self.epoch = epoch;
        }
        if !self.routes.contains_key(&header.track) {
            match self.refresh(session, header.track) {
                Ok(()) => self.unknown_since = None,
                Err(e) => {
                    // Audio may outrun its Publish (see PUBLISH_GRACE): drop it for a while.
                    let since = *self.unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > PUBLISH_GRACE {
                        return Err(e);
                    }
                    stats.count_datagram_drop(DatagramDropReason::Unpublished);
                    return Ok(());
                }
            }
        }
        let Some(targets) = self.routes.get(&header.track) else {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        };
        let mut handed = 0;
        for conn in targets {
            // quinn drops the oldest queued datagram when its buffer is full; count it.
            let full = conn.datagram_send_buffer_space() < datagram.len();
            match conn.send_datagram(datagram.clone()) {
                Ok(()) if !full => {
                    stats.datagrams_out.fetch_add(1, Relaxed);
                    handed += 1;
                }
                Ok(()) => stats.count_datagram_drop(DatagramDropReason::BufferFull),
                Err(_) => stats.count_datagram_drop(DatagramDropReason::SendFailed),
            };
        }
        stats.count_media_out(MediaKind::Audio, datagram.len() * handed);
        stats.record_datagram_forward(received, handed);
        Ok(())
    }

    fn refresh(&mut self, session: &Session, track: TrackId) -> Result<(), SessionError> {
        let state = session.cell.lock();
        let is_audio = state
            .core
            .track(session.id, track)
            .is_some_and(|t| t.kind == TrackKind::AUDIO);
        if !is_audio {
            return Err(PeerMisbehaved::TrackNotPublished.into());
        }
        let conns = state
            .core
            .subscribers(session.id, track, 0)
            .filter_map(|id| state.peers.get(&id).map(|p| p.conn.clone()))
            .collect();
        self.routes.insert(track, conns);
        Ok(())
    }
}
