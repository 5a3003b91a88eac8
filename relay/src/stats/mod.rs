//! The relay's counters and gauges: lock-free atomics updated on the hot path and
//! read as a [`StatsSnapshot`]. Labels are low-cardinality by construction: close
//! codes and track kinds, never meeting or participant identifiers.

pub mod figures;
pub mod histogram;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Live counters of one relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_active: AtomicI64,
    pub(crate) joins_admitted: AtomicU64,
    pub(crate) joins_rejected: AtomicU64,
    pub(crate) meetings_active: AtomicI64,
    pub(crate) participants_active: AtomicI64,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) groups_dropped: AtomicU64,
    pub(crate) bytes_dropped: AtomicU64,
    pub(crate) keyframe_requests: AtomicU64,
    pub(crate) queued_bytes: AtomicI64,
    pub(crate) reads_open: AtomicI64,
    pub(crate) grace_waits: AtomicU64,
    pub(crate) groups_idle: AtomicU64,
    pub(crate) groups_limited: AtomicU64,
    pub(crate) control_throttled: AtomicU64,
    pub(crate) control_coalesced: AtomicU64,
    pub(crate) unjoined_evicted: AtomicU64,
    pub(crate) retries_sent: AtomicU64,
    pub(crate) joins_overloaded: AtomicU64,
    pub(crate) joins_throttled: AtomicU64,
    pub(crate) at_risk_total: AtomicU64,
    pub(crate) meetings_at_risk: AtomicI64,
    pub(crate) key_messages: AtomicU64,
    pub(crate) key_message_bytes: AtomicU64,
    pub(crate) requests_refused: AtomicU64,
    pub(crate) host_actions: AtomicU64,
    closes: Mutex<BTreeMap<&'static str, u64>>,
    /// Telemetry's labelled counters, histograms and readiness flag.
    pub(crate) figures: figures::Figures,
}

/// A point-in-time copy of [`RelayStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections that completed the handshake.
    pub connections_accepted: u64,
    /// Connection attempts refused at a connection limit.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_active: i64,
    /// Joins admitted.
    pub joins_admitted: u64,
    /// Joins rejected (bad passcode, invalid meeting ID, ...).
    pub joins_rejected: u64,
    /// Meetings with at least one participant.
    pub meetings_active: i64,
    /// Participants in meetings now.
    pub participants_active: i64,
    /// Group streams received from publishers.
    pub groups_in: u64,
    /// Group streams opened towards subscribers.
    pub groups_out: u64,
    /// Bytes received on group streams.
    pub stream_bytes_in: u64,
    /// Bytes written to subscribers' group streams.
    pub stream_bytes_out: u64,
    /// Audio datagrams received.
    pub datagrams_in: u64,
    /// Audio datagrams handed to subscribers' connections.
    pub datagrams_out: u64,
    /// Audio datagrams not forwarded (subscriber's buffer full or path too small).
    pub datagrams_dropped: u64,
    /// Groups dropped for subscribers that fell behind.
    pub groups_dropped: u64,
    /// Bytes dropped for subscribers that fell behind.
    pub bytes_dropped: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Bytes held in group buffers now (what some subscriber has not read yet).
    pub queued_bytes: i64,
    /// Groups that arrived before their track's `Publish` and waited for it.
    pub grace_waits: u64,
    /// Subscriber group streams open now (one per subscriber per group in flight).
    pub reads_open: i64,
    /// Groups reset because no bytes arrived within the group idle timeout (also
    /// streams left inside their group header).
    pub groups_idle: u64,
    /// Groups reset because a newer group of the same track layer passed the
    /// concurrent-group limit, or refused for arriving older than the open ones.
    pub groups_limited: u64,
    /// Control messages that had to wait for the sender's rate limit.
    pub control_throttled: u64,
    /// Queued announcements cancelled before a client read them (a track published
    /// and unpublished, a participant joined and left, while still queued).
    pub control_coalesced: u64,
    /// Connections that had not joined, closed to make room for newer ones.
    pub unjoined_evicted: u64,
    /// QUIC Retry packets sent (address validation under pressure).
    pub retries_sent: u64,
    /// Joins answered `Overloaded` (over the relay's join rate).
    pub joins_overloaded: u64,
    /// QUIC/TLS handshakes that failed (wrong ALPN, TLS failure).
    pub handshake_failures: u64,
    /// Joins answered `Throttled` (too many attempts from a source or on a meeting).
    pub joins_throttled: u64,
    /// Times a meeting crossed the at-risk threshold of failed join attempts.
    pub at_risk_total: u64,
    /// Meetings currently flagged at risk.
    pub meetings_at_risk: i64,
    /// Key messages forwarded (counted once per recipient).
    pub key_messages: u64,
    /// Key-message bytes forwarded (once per recipient).
    pub key_message_bytes: u64,
    /// Requests answered `Refused` (the connection stayed open).
    pub requests_refused: u64,
    /// Host actions carried out.
    pub host_actions: u64,
    /// Connections the relay closed, by close code name.
    pub closes: BTreeMap<&'static str, u64>,
}

impl RelayStats {
    /// Counts a connection the relay closed with `code_name`.
    pub(crate) fn count_close(&self, code_name: &'static str) {
        if let Ok(mut closes) = self.closes.lock() {
            *closes.entry(code_name).or_default() += 1;
        }
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            joins_admitted: self.joins_admitted.load(Relaxed),
            joins_rejected: self.joins_rejected.load(Relaxed),
            meetings_active: self.meetings_active.load(Relaxed),
            participants_active: self.participants_active.load(Relaxed),
            groups_in: self.figures.stream_total(&self.figures.groups_in),
            groups_out: self.figures.stream_total(&self.figures.groups_out),
            stream_bytes_in: self.figures.stream_total(&self.figures.bytes_in),
            stream_bytes_out: self.figures.stream_total(&self.figures.bytes_out),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Relaxed),
            groups_dropped: self.groups_dropped.load(Relaxed),
            bytes_dropped: self.bytes_dropped.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            reads_open: self.reads_open.load(Relaxed),
            grace_waits: self.grace_waits.load(Relaxed),
            groups_idle: self.groups_idle.load(Relaxed),
            groups_limited: self.groups_limited.load(Relaxed),
            control_throttled: self.control_throttled.load(Relaxed),
            control_coalesced: self.control_coalesced.load(Relaxed),
            unjoined_evicted: self.unjoined_evicted.load(Relaxed),
            retries_sent: self.retries_sent.load(Relaxed),
            joins_overloaded: self.joins_overloaded.load(Relaxed),
            handshake_failures: self.figures.handshake_failures.load(Relaxed),
            joins_throttled: self.joins_throttled.load(Relaxed),
            at_risk_total: self.at_risk_total.load(Relaxed),
            meetings_at_risk: self.meetings_at_risk.load(Relaxed),
            key_messages: self.key_messages.load(Relaxed),
            key_message_bytes: self.key_message_bytes.load(Relaxed),
            requests_refused: self.requests_refused.load(Relaxed),
            host_actions: self.host_actions.load(Relaxed),
            closes: self.closes.lock().map(|c| c.clone()).unwrap_or_default(),
        }
    }
}
