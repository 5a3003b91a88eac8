//! The figures telemetry adds to [`RelayStats`]: counters by bounded label, hot-path
//! histograms, and the readiness flag, with the hook methods the data plane calls.
//!
//! Every label here is a closed enum, so every label value set is bounded and listed
//! (`docs/METRICS.md`). Nothing here may ever be keyed by a meeting, participant or
//! address. Every hook is a handful of relaxed atomic adds: no lock, no allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use orelay_proto::{RejectReason, TrackKind};

use super::histogram::{AtomicHistogram, MEETING_SIZE_BOUNDS, QUEUE_BOUNDS_BYTES, RTT_BOUNDS_NS};
use super::RelayStats;
use crate::core::DropCause;
use crate::error::SessionError;

/// Declares a label enum: its variants, their label values, and `ALL`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant,)* }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }

            #[inline]
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_enum! {
    /// What kind of media a counter counts (label `kind`).
    MediaKind {
        /// Audio, carried in datagrams.
        Audio => "audio",
        /// Camera video, one stream per group.
        Video => "video",
        /// Screen share, one stream per group.
        Screen => "screen",
    }
}

impl MediaKind {
    /// The media kind of a track kind; unknown kinds count as video.
    pub fn of(kind: TrackKind) -> MediaKind {
        match kind {
            TrackKind::AUDIO => MediaKind::Audio,
            TrackKind::SCREEN => MediaKind::Screen,
            _ => MediaKind::Video,
        }
    }
}

label_enum! {
    /// Why a group was dropped for one subscriber (label `reason`); the values are
    /// [`DropCause::label`]s.
    GroupDropReason {
        /// The publisher's budget was exceeded and this subscriber was furthest behind.
        GroupBudget => "group_budget",
        /// A newer group of the same track was waiting and this one was late.
        Superseded => "superseded",
        /// The subscriber was more than `queue_bytes` behind across its groups.
        SubscriberBudget => "subscriber_budget",
        /// The subscriber had too many groups open.
        GroupCount => "group_count",
    }
}

impl GroupDropReason {
    /// The label for a core drop cause.
    pub fn of(cause: DropCause) -> GroupDropReason {
        match cause {
            DropCause::GroupBudget => GroupDropReason::GroupBudget,
            DropCause::Superseded => GroupDropReason::Superseded,
            DropCause::SubscriberBudget => GroupDropReason::SubscriberBudget,
            DropCause::GroupCount => GroupDropReason::GroupCount,
        }
    }
}

label_enum! {
    /// Why an audio datagram was not forwarded (label `reason`).
    DatagramDropReason {
        /// The subscriber connection's datagram send buffer was full.
        BufferFull => "buffer_full",
        /// The track was not (yet) published: audio that outran its `Publish`.
        Unpublished => "unpublished",
        /// quinn refused it (too large for the path, or the peer does not take datagrams).
        SendFailed => "send_failed",
    }
}

label_enum! {
    /// The outcome of a join (label `result`).
    JoinResult {
        /// Admitted to the meeting.
        Admitted => "admitted",
        /// Rejected: wrong passcode.
        BadPasscode => "bad_passcode",
        /// Rejected: malformed meeting ID.
        InvalidMeetingId => "invalid_meeting_id",
        /// Rejected: protocol version not supported.
        UnsupportedVersion => "unsupported_version",
        /// Rejected: the meeting is full.
        MeetingFull => "meeting_full",
        /// Rejected: the relay holds its most meetings.
        TooManyMeetings => "too_many_meetings",
        /// Rejected for a reason this version does not name.
        OtherRejection => "other_rejection",
        /// No join arrived within the join timeout.
        Timeout => "timeout",
        /// Over the relay's join rate: answered `Overloaded` with a retry time.
        Overloaded => "overloaded",
        /// Too many attempts from this source or on this meeting: answered `Throttled`.
        Throttled => "throttled",
        /// Placed in the meeting's waiting room.
        Waiting => "waiting",
        /// Rejected: the meeting is locked.
        Locked => "locked",
        /// Rejected: the token does not allow this relay's region.
        Region => "region",
        /// Rejected: a host removed this token or identity.
        Removed => "removed",
        /// Rejected: the token is invalid (signature, key, meeting, claims).
        TokenInvalid => "token_invalid",
        /// Rejected: the token has expired or is not yet valid.
        TokenExpired => "token_expired",
        /// Rejected: a required credential is missing.
        NotAllowed => "not_allowed",
    }
}

impl JoinResult {
    /// The result for a rejection reason.
    pub fn rejected(reason: RejectReason) -> JoinResult {
        match reason {
            RejectReason::BAD_PASSCODE => JoinResult::BadPasscode,
            RejectReason::INVALID_MEETING_ID => JoinResult::InvalidMeetingId,
            RejectReason::UNSUPPORTED_VERSION => JoinResult::UnsupportedVersion,
            RejectReason::MEETING_FULL => JoinResult::MeetingFull,
            RejectReason::TOO_MANY_MEETINGS => JoinResult::TooManyMeetings,
            RejectReason::LOCKED => JoinResult::Locked,
            RejectReason::REGION => JoinResult::Region,
            RejectReason::REMOVED => JoinResult::Removed,
            RejectReason::TOKEN_INVALID => JoinResult::TokenInvalid,
            RejectReason::TOKEN_EXPIRED => JoinResult::TokenExpired,
            RejectReason::NOT_ALLOWED => JoinResult::NotAllowed,
            _ => JoinResult::OtherRejection,
        }
    }
}

label_enum! {
    /// Why a connection attempt was refused before its handshake (label `reason`).
    RefuseReason {
        /// `max_connections` reached.
        ConnectionLimit => "connection_limit",
        /// Under pressure, a QUIC Retry for address validation could not be sent.
        RetryFailed => "retry_failed",
        /// The source is backing off after failed joins (it was told how long).
        Backoff => "backoff",
    }
}

label_enum! {
    /// Who was at fault when the relay closed a connection (label `fault`).
    FaultClass {
        /// The peer broke the protocol.
        PeerMisbehaved => "peer_misbehaved",
        /// The peer asked for something it may not have.
        PeerNotAllowed => "peer_not_allowed",
        /// The relay protected one of its limits.
        RelayLimit => "relay_limit",
    }
}

impl FaultClass {
    /// The fault class of a session error.
    pub fn of(err: &SessionError) -> FaultClass {
        match err {
            SessionError::PeerMisbehaved(_) => FaultClass::PeerMisbehaved,
            SessionError::PeerNotAllowed(_) => FaultClass::PeerNotAllowed,
            _ => FaultClass::RelayLimit,
        }
    }
}

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// Telemetry's own figures, held in [`RelayStats`] beside the original counters.
#[derive(Debug)]
pub struct Figures {
    pub(crate) bytes_in: [AtomicU64; MediaKind::ALL.len()],
    pub(crate) bytes_out: [AtomicU64; MediaKind::ALL.len()],
    pub(crate) groups_in: [AtomicU64; MediaKind::ALL.len()],
    pub(crate) groups_out: [AtomicU64; MediaKind::ALL.len()],
    pub(crate) group_drops: [AtomicU64; GroupDropReason::ALL.len()],
    pub(crate) group_drop_bytes: [AtomicU64; GroupDropReason::ALL.len()],
    pub(crate) datagram_drops: [AtomicU64; DatagramDropReason::ALL.len()],
    pub(crate) joins: [AtomicU64; JoinResult::ALL.len()],
    pub(crate) refused: [AtomicU64; RefuseReason::ALL.len()],
    pub(crate) faults: [AtomicU64; FaultClass::ALL.len()],
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) quic_sent_packets: AtomicU64,
    pub(crate) quic_lost_packets: AtomicU64,
    pub(crate) quic_congestion_events: AtomicU64,
    pub(crate) draining: AtomicBool,
    /// Chunk read from a publisher's stream → handed to a subscriber's queue.
    pub(crate) forward_stream: AtomicHistogram,
    /// Datagram read → handed to a subscriber connection's `send_datagram`.
    pub(crate) forward_datagram: AtomicHistogram,
    pub(crate) join_duration: AtomicHistogram,
    pub(crate) meeting_size: AtomicHistogram,
    pub(crate) queue_depth: AtomicHistogram,
    pub(crate) rtt: AtomicHistogram,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            bytes_in: counters(),
            bytes_out: counters(),
            groups_in: counters(),
            groups_out: counters(),
            group_drops: counters(),
            group_drop_bytes: counters(),
            datagram_drops: counters(),
            joins: counters(),
            refused: counters(),
            faults: counters(),
            handshake_failures: AtomicU64::new(0),
            quic_sent_packets: AtomicU64::new(0),
            quic_lost_packets: AtomicU64::new(0),
            quic_congestion_events: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            forward_stream: AtomicHistogram::latency(),
            forward_datagram: AtomicHistogram::latency(),
            join_duration: AtomicHistogram::latency(),
            meeting_size: AtomicHistogram::new(MEETING_SIZE_BOUNDS),
            queue_depth: AtomicHistogram::new(QUEUE_BOUNDS_BYTES),
            rtt: AtomicHistogram::new(RTT_BOUNDS_NS),
        }
    }
}

impl Figures {
    /// The sum of a per-kind counter over the kinds that travel as group streams
    /// (video and screen): the snapshot's stream totals, derived rather than counted
    /// twice on the hot path.
    pub(crate) fn stream_total(&self, per_kind: &[AtomicU64; MediaKind::ALL.len()]) -> u64 {
        MediaKind::ALL
            .iter()
            .filter(|k| **k != MediaKind::Audio)
            .map(|k| per_kind[k.index()].load(Relaxed))
            .sum()
    }
}

/// The hooks the data plane calls. Each is cheap enough for the per-chunk path.
impl RelayStats {
    /// Media bytes received from a publisher (group header and chunks, or a datagram).
    #[inline]
    pub fn count_media_in(&self, kind: MediaKind, bytes: usize) {
        self.figures.bytes_in[kind.index()].fetch_add(bytes as u64, Relaxed);
    }

    /// Media bytes handed to subscribers: a chunk's length times the subscribers
    /// whose queues took it, or a datagram's times the connections that took it.
    /// Call once per chunk or datagram, not per subscriber.
    #[inline]
    pub fn count_media_out(&self, kind: MediaKind, bytes: usize) {
        self.figures.bytes_out[kind.index()].fetch_add(bytes as u64, Relaxed);
    }

    /// A group stream received from a publisher.
    pub fn count_group_in(&self, kind: MediaKind) {
        self.figures.groups_in[kind.index()].fetch_add(1, Relaxed);
    }

    /// `n` group streams opened towards subscribers for one incoming group.
    pub fn count_groups_out(&self, kind: MediaKind, n: usize) {
        self.figures.groups_out[kind.index()].fetch_add(n as u64, Relaxed);
    }

    /// A group the queue policy dropped for a subscriber (also moves the totals in
    /// [`crate::StatsSnapshot`]).
    pub fn count_group_drop(&self, cause: DropCause, groups: u64, bytes: usize) {
        let reason = GroupDropReason::of(cause);
        self.groups_dropped.fetch_add(groups, Relaxed);
        self.bytes_dropped.fetch_add(bytes as u64, Relaxed);
        self.figures.group_drops[reason.index()].fetch_add(groups, Relaxed);
        self.figures.group_drop_bytes[reason.index()].fetch_add(bytes as u64, Relaxed);
    }

    /// An audio datagram not forwarded to one subscriber (also moves the snapshot total).
    #[inline]
    pub fn count_datagram_drop(&self, reason: DatagramDropReason) {
        self.datagrams_dropped.fetch_add(1, Relaxed);
        self.figures.datagram_drops[reason.index()].fetch_add(1, Relaxed);
    }

    /// Forwarding latency of one stream chunk handed to `subscribers` subscribers,
    /// `t0` being when the chunk was read from the publisher's stream. Call once per
    /// chunk, after the fan-out: one clock read, recorded once per subscriber (the
    /// time until the last of them had it, an upper bound for each).
    #[inline]
    pub fn record_stream_forward(&self, t0: Instant, subscribers: usize) {
        if subscribers > 0 {
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.figures.forward_stream.record_n(ns, subscribers as u64);
        }
    }

    /// As [`RelayStats::record_stream_forward`], for one datagram handed to
    /// `subscribers` subscriber connections.
    #[inline]
    pub fn record_datagram_forward(&self, t0: Instant, subscribers: usize) {
        if subscribers > 0 {
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.figures
                .forward_datagram
                .record_n(ns, subscribers as u64);
        }
    }

    /// A subscriber's unread bytes across its groups, observed at each policy pass.
    #[inline]
    pub fn record_queue_depth(&self, bytes: usize) {
        self.figures.queue_depth.record(bytes as u64);
    }

    /// The outcome of a join (admitted and rejected also move the snapshot totals).
    pub fn count_join(&self, result: JoinResult) {
        match result {
            JoinResult::Admitted => self.joins_admitted.fetch_add(1, Relaxed),
            JoinResult::Timeout | JoinResult::Overloaded | JoinResult::Waiting => 0,
            _ => self.joins_rejected.fetch_add(1, Relaxed),
        };
        self.figures.joins[result.index()].fetch_add(1, Relaxed);
    }

    /// Time from a connection's handshake to its admission.
    pub fn record_join_duration(&self, d: Duration) {
        self.figures.join_duration.record_duration(d);
    }

    /// A meeting's size right after a participant joined it.
    pub fn record_meeting_size(&self, participants: usize) {
        self.figures.meeting_size.record(participants as u64);
    }

    /// A connection attempt refused at a limit (also moves the snapshot total).
    pub fn count_refused(&self, reason: RefuseReason) {
        self.connections_refused.fetch_add(1, Relaxed);
        self.figures.refused[reason.index()].fetch_add(1, Relaxed);
    }

    /// A connection the relay closed because of `err`, by fault class (the close code
    /// is counted by [`RelayStats::count_close`]).
    pub fn count_fault(&self, err: &SessionError) {
        self.count_fault_class(FaultClass::of(err));
    }

    /// A connection the relay closed, by fault class, when no session error says why
    /// (a host's removal or denial: the peer is not allowed).
    pub fn count_fault_class(&self, class: FaultClass) {
        self.figures.faults[class.index()].fetch_add(1, Relaxed);
    }

    /// A QUIC handshake that failed (bad ALPN, TLS failure, timeout).
    pub fn count_handshake_failure(&self) {
        self.figures.handshake_failures.fetch_add(1, Relaxed);
    }

    /// One periodic sample of a connection's path: its RTT, and the packets sent,
    /// packets lost and congestion events since the previous sample.
    pub fn record_path(&self, rtt: Duration, sent: u64, lost: u64, congestion_events: u64) {
        self.figures.rtt.record_duration(rtt);
        self.figures.quic_sent_packets.fetch_add(sent, Relaxed);
        self.figures.quic_lost_packets.fetch_add(lost, Relaxed);
        self.figures
            .quic_congestion_events
            .fetch_add(congestion_events, Relaxed);
    }

    /// Marks the relay as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.figures.draining.store(true, Relaxed);
    }

    /// Whether the relay is draining.
    pub fn is_draining(&self) -> bool {
        self.figures.draining.load(Relaxed)
    }
}
