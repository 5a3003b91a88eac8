//! The relay's `/metrics`: read the hot path's atomics at scrape time and render them.
//!
//! Counters and gauges go through the `metrics` facade into a Prometheus recorder that
//! belongs to this relay (a local recorder, not a process-global one, so a relay and
//! a load generator in one process do not mix). The hot path never calls the facade:
//! it only bumps atomics, which costs less than a facade call's registry lookup, and
//! each scrape copies them into the recorder with `absolute`/`set`. Histograms are
//! [`AtomicHistogram`](crate::stats::histogram::AtomicHistogram)s rendered directly, because
//! the recorder cannot take pre-bucketed counts; `process_*` figures are rendered
//! directly because the facade's counters are integers and CPU time is not.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, gauge, Label, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::http::Endpoints;
use super::process;
use crate::stats::figures::{
    DatagramDropReason, FaultClass, GroupDropReason, JoinResult, MediaKind, RefuseReason,
};
use crate::stats::histogram::write_header;
use crate::stats::RelayStats;

/// Close code names a relay-initiated close can carry (each exported, zero until used).
pub const CLOSE_CODES: &[&str] = &[
    "PROTOCOL_VIOLATION",
    "MESSAGE_TOO_LARGE",
    "UNKNOWN_MESSAGE",
    "UNEXPECTED_MESSAGE",
    "TRACK_NOT_PUBLISHED",
    "CONTROL_STREAM_CLOSED",
    "JOIN_REJECTED",
    "JOIN_TIMEOUT",
    "REMOVED",
    "DENIED",
    "CONTROL_BACKLOG",
    "LIMIT_EXCEEDED",
    "UNKNOWN",
];

/// Sets a counter to an absolute value, describing it first.
fn set_counter(name: &'static str, unit: Unit, help: &'static str, labels: Vec<Label>, v: u64) {
    describe_counter!(name, unit, help);
    counter!(name, labels).absolute(v);
}

/// Sets a gauge, describing it first.
fn set_gauge(name: &'static str, unit: Unit, help: &'static str, labels: Vec<Label>, v: f64) {
    describe_gauge!(name, unit, help);
    gauge!(name, labels).set(v);
}

/// One label.
fn label(key: &'static str, value: &'static str) -> Vec<Label> {
    vec![Label::new(key, value)]
}

/// What the relay's metrics endpoint serves.
pub struct RelayEndpoints {
    stats: Arc<RelayStats>,
    max_connections: usize,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for RelayEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayEndpoints").finish_non_exhaustive()
    }
}

impl RelayEndpoints {
    /// Exports `stats`; `max_connections` is the relay's connection cap, past which it
    /// is not ready.
    pub fn new(stats: Arc<RelayStats>, max_connections: usize) -> RelayEndpoints {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        RelayEndpoints {
            stats,
            max_connections,
            recorder,
            handle,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.set_all());
        let mut out = self.handle.render();
        self.render_histograms(&mut out);
        process::render(&mut out, &process::process_figures());
        out
    }

    fn set_all(&self) {
        let s = self.stats.snapshot();
        let f = &self.stats.figures;
        let none = Vec::new;
        set_gauge(
            "orelay_build_info",
            Unit::Count,
            "Always 1; labels carry the relay version and protocol version.",
            vec![
                Label::new("version", env!("CARGO_PKG_VERSION")),
                Label::new("protocol", orelay_proto::PROTOCOL_VERSION.to_string()),
            ],
            1.0,
        );
        let ready = self.readiness().is_ok();
        set_gauge(
            "orelay_ready",
            Unit::Count,
            "1 while the relay accepts joins (as /readyz).",
            none(),
            f64::from(u8::from(ready)),
        );
        set_gauge(
            "orelay_draining",
            Unit::Count,
            "1 once the relay is shutting down.",
            none(),
            f64::from(u8::from(self.stats.is_draining())),
        );
        set_gauge(
            "orelay_cpus",
            Unit::Count,
            "CPUs available to the relay process.",
            none(),
            std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        );
        set_gauge(
            "orelay_connections_max",
            Unit::Count,
            "Configured connection cap (max_connections).",
            none(),
            self.max_connections as f64,
        );
        set_gauge(
            "orelay_connections_active",
            Unit::Count,
            "QUIC connections open now.",
            none(),
            s.connections_active as f64,
        );
        set_gauge(
            "orelay_participants_active",
            Unit::Count,
            "Participants in meetings now.",
            none(),
            s.participants_active as f64,
        );
        set_gauge(
            "orelay_meetings_active",
            Unit::Count,
            "Meetings with at least one participant now.",
            none(),
            s.meetings_active as f64,
        );
        set_gauge(
            "orelay_subscriber_queue_bytes",
            Unit::Bytes,
            "Bytes held in group buffers now: what some subscriber has not read yet.",
            none(),
            s.queued_bytes as f64,
        );
        set_counter(
            "orelay_connections_accepted_total",
            Unit::Count,
            "Connections that completed the QUIC handshake.",
            none(),
            s.connections_accepted,
        );
        for r in RefuseReason::ALL {
            set_counter(
                "orelay_connections_refused_total",
                Unit::Count,
                "Connection attempts refused at a limit, by reason.",
                label("reason", r.label()),
                f.refused[*r as usize].load(Relaxed),
            );
        }
        set_counter(
            "orelay_handshake_failures_total",
            Unit::Count,
            "QUIC handshakes that failed (TLS, ALPN, timeout).",
            none(),
            f.handshake_failures.load(Relaxed),
        );
        for r in JoinResult::ALL {
            set_counter(
                "orelay_joins_total",
                Unit::Count,
                "Joins by result: admitted, each rejection reason, or timeout.",
                label("result", r.label()),
                f.joins[*r as usize].load(Relaxed),
            );
        }
        for k in MediaKind::ALL {
            let i = *k as usize;
            set_counter(
                "orelay_media_received_bytes_total",
                Unit::Bytes,
                "Media bytes received from publishers, by kind.",
                label("kind", k.label()),
                f.bytes_in[i].load(Relaxed),
            );
            set_counter(
                "orelay_media_sent_bytes_total",
                Unit::Bytes,
                "Media bytes handed to subscribers, by kind.",
                label("kind", k.label()),
                f.bytes_out[i].load(Relaxed),
            );
            if *k != MediaKind::Audio {
                set_counter(
                    "orelay_groups_received_total",
                    Unit::Count,
                    "Group streams received from publishers, by kind.",
                    label("kind", k.label()),
                    f.groups_in[i].load(Relaxed),
                );
                set_counter(
                    "orelay_groups_sent_total",
                    Unit::Count,
                    "Group streams opened towards subscribers, by kind.",
                    label("kind", k.label()),
                    f.groups_out[i].load(Relaxed),
                );
            }
        }
        set_counter(
            "orelay_datagrams_received_total",
            Unit::Count,
            "Audio datagrams received from publishers.",
            none(),
            s.datagrams_in,
        );
        set_counter(
            "orelay_datagrams_sent_total",
            Unit::Count,
            "Audio datagrams handed to subscribers' connections.",
            none(),
            s.datagrams_out,
        );
        for r in DatagramDropReason::ALL {
            set_counter(
                "orelay_datagrams_dropped_total",
                Unit::Count,
                "Audio datagrams not forwarded to a subscriber, by reason.",
                label("reason", r.label()),
                f.datagram_drops[*r as usize].load(Relaxed),
            );
        }
        for r in GroupDropReason::ALL {
            let i = *r as usize;
            set_counter(
                "orelay_groups_dropped_total",
                Unit::Count,
                "Groups dropped for subscribers that fell behind, by reason.",
                label("reason", r.label()),
                f.group_drops[i].load(Relaxed),
            );
            set_counter(
                "orelay_groups_dropped_bytes_total",
                Unit::Bytes,
                "Bytes of dropped groups, by reason.",
                label("reason", r.label()),
                f.group_drop_bytes[i].load(Relaxed),
            );
        }
        let relay_counters: [(&str, &str, u64); 14] = [
            (
                "orelay_groups_reset_idle_total",
                "Groups reset because no bytes arrived within the group idle timeout.",
                s.groups_idle,
            ),
            (
                "orelay_groups_reset_limit_total",
                "Groups reset because a newer group of the same track layer passed the concurrent-group limit.",
                s.groups_limited,
            ),
            (
                "orelay_publish_grace_waits_total",
                "Groups that arrived before their track's Publish and waited for it.",
                s.grace_waits,
            ),
            (
                "orelay_control_throttled_total",
                "Control messages that waited for their sender's rate limit.",
                s.control_throttled,
            ),
            (
                "orelay_control_coalesced_total",
                "Queued announcements cancelled before the client read them.",
                s.control_coalesced,
            ),
            (
                "orelay_unjoined_evicted_total",
                "Connections that had not joined, closed to make room for newer ones.",
                s.unjoined_evicted,
            ),
            (
                "orelay_retries_sent_total",
                "QUIC Retry packets sent to validate addresses under pressure.",
                s.retries_sent,
            ),
            (
                "orelay_joins_overloaded_total",
                "Joins answered Overloaded because the relay was over its join rate.",
                s.joins_overloaded,
            ),
            (
                "orelay_joins_throttled_total",
                "Join attempts answered Throttled: too many from one source or on one meeting ID.",
                s.joins_throttled,
            ),
            (
                "orelay_meetings_at_risk_total",
                "Times a meeting crossed the threshold of failed join attempts in a window.",
                s.at_risk_total,
            ),
            (
                "orelay_key_messages_total",
                "End-to-end key messages forwarded, once per recipient.",
                s.key_messages,
            ),
            (
                "orelay_key_message_bytes_total",
                "End-to-end key-message bytes forwarded, once per recipient.",
                s.key_message_bytes,
            ),
            (
                "orelay_requests_refused_total",
                "Requests answered Refused (viewer publishing, non-host action, ...); the connection stays open.",
                s.requests_refused,
            ),
            (
                "orelay_host_actions_total",
                "Host actions carried out (admit, deny, lock, remove, stop track, share policy).",
                s.host_actions,
            ),
        ];
        for (name, help, value) in relay_counters {
            set_counter(name, Unit::Count, help, none(), value);
        }
        set_gauge(
            "orelay_meetings_at_risk",
            Unit::Count,
            "Meetings flagged at risk whose failed-attempt window is still open.",
            none(),
            s.meetings_at_risk as f64,
        );
        set_gauge(
            "orelay_subscriber_streams_open",
            Unit::Count,
            "Group streams open towards subscribers now (one per subscriber per group).",
            none(),
            s.reads_open as f64,
        );
        set_counter(
            "orelay_keyframe_requests_total",
            Unit::Count,
            "Keyframe requests sent to publishers.",
            none(),
            s.keyframe_requests,
        );
        let mut closes = s.closes.clone();
        for code in CLOSE_CODES {
            closes.entry(code).or_default();
        }
        for (code, n) in closes {
            set_counter(
                "orelay_closes_total",
                Unit::Count,
                "Connections the relay closed, by close code name.",
                label("code", code),
                n,
            );
        }
        for c in FaultClass::ALL {
            set_counter(
                "orelay_closes_by_fault_total",
                Unit::Count,
                "Connections the relay closed, by who was at fault.",
                label("fault", c.label()),
                f.faults[*c as usize].load(Relaxed),
            );
        }
        set_counter(
            "orelay_quic_sent_packets_total",
            Unit::Count,
            "QUIC packets sent (sampled from connection stats).",
            none(),
            f.quic_sent_packets.load(Relaxed),
        );
        set_counter(
            "orelay_quic_lost_packets_total",
            Unit::Count,
            "QUIC packets declared lost (sampled from connection stats).",
            none(),
            f.quic_lost_packets.load(Relaxed),
        );
        set_counter(
            "orelay_quic_congestion_events_total",
            Unit::Count,
            "QUIC congestion events (sampled from connection stats).",
            none(),
            f.quic_congestion_events.load(Relaxed),
        );
        if let Some(udp) = process::udp_errors() {
            set_counter(
                "orelay_udp_receive_buffer_errors_total",
                Unit::Count,
                "Host-wide UDP datagrams dropped for a full receive buffer (/proc/net/snmp).",
                none(),
                udp.receive_buffer,
            );
            set_counter(
                "orelay_udp_send_buffer_errors_total",
                Unit::Count,
                "Host-wide UDP datagrams dropped for a full send buffer (/proc/net/snmp).",
                none(),
                udp.send_buffer,
            );
        }
    }

    fn render_histograms(&self, out: &mut String) {
        let f = &self.stats.figures;
        let name = "orelay_forward_latency_seconds";
        write_header(
            out,
            name,
            "Time from reading a media chunk or datagram until every subscriber had it, once per subscriber.",
        );
        f.forward_stream
            .snapshot()
            .write_series(out, name, Some(("transport", "stream")), 1e9);
        f.forward_datagram
            .snapshot()
            .write_series(out, name, Some(("transport", "datagram")), 1e9);
        f.join_duration.snapshot().render(
            out,
            "orelay_join_duration_seconds",
            "Time from handshake to admission of a join.",
            1e9,
        );
        f.meeting_size.snapshot().render(
            out,
            "orelay_meeting_participants",
            "Meeting size in participants, observed at each admission.",
            1.0,
        );
        f.queue_depth.snapshot().render(
            out,
            "orelay_subscriber_queue_depth_bytes",
            "One subscriber's queue depth, observed when a group opens for it.",
            1.0,
        );
        f.rtt.snapshot().render(
            out,
            "orelay_quic_rtt_seconds",
            "QUIC round-trip time, sampled per connection every few seconds.",
            1e9,
        );
    }
}

impl Endpoints for RelayEndpoints {
    fn metrics(&self) -> String {
        self.render()
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.stats.is_draining() {
            return Err("draining");
        }
        if self.stats.connections_active.load(Relaxed) >= self.max_connections as i64 {
            return Err("at the connection limit");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{DatagramDropReason, JoinResult, MediaKind};

    #[test]
    fn not_ready_while_draining_or_at_the_connection_cap() {
        let stats = Arc::new(RelayStats::default());
        let endpoints = RelayEndpoints::new(stats.clone(), 2);
        assert_eq!(endpoints.readiness(), Ok(()));
        stats.connections_active.store(2, Relaxed);
        assert_eq!(endpoints.readiness(), Err("at the connection limit"));
        stats.connections_active.store(1, Relaxed);
        assert_eq!(endpoints.readiness(), Ok(()));
        stats.set_draining();
        assert_eq!(endpoints.readiness(), Err("draining"));
        assert!(endpoints.render().contains("\norelay_ready 0\n"));
    }

    #[test]
    fn hooks_show_up_in_the_scrape_under_their_labels() {
        let stats = Arc::new(RelayStats::default());
        stats.count_media_out(MediaKind::Screen, 1200);
        stats.count_group_drop(crate::core::DropCause::SubscriberBudget, 1, 500);
        stats.count_datagram_drop(DatagramDropReason::BufferFull);
        stats.count_join(JoinResult::rejected(
            orelay_proto::RejectReason::BAD_PASSCODE,
        ));
        stats.record_stream_forward(std::time::Instant::now(), 1);
        let text = RelayEndpoints::new(stats.clone(), 10).render();
        for line in [
            "orelay_media_sent_bytes_total{kind=\"screen\"} 1200",
            "orelay_groups_dropped_total{reason=\"subscriber_budget\"} 1",
            "orelay_groups_dropped_bytes_total{reason=\"subscriber_budget\"} 500",
            "orelay_datagrams_dropped_total{reason=\"buffer_full\"} 1",
            "orelay_joins_total{result=\"bad_passcode\"} 1",
            "orelay_forward_latency_seconds_count{transport=\"stream\"} 1",
            "orelay_closes_total{code=\"JOIN_TIMEOUT\"} 0",
            "# TYPE orelay_connections_refused_total counter",
            "orelay_ready 1",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line:?} in\n{text}"
            );
        }
        // The snapshot totals the rest of the relay reads move with the hooks.
        let s = stats.snapshot();
        assert_eq!((s.groups_dropped, s.bytes_dropped), (1, 500));
        assert_eq!((s.datagrams_dropped, s.joins_rejected), (1, 1));
    }
}
