#!/usr/bin/env python3
"""Dashboards as code: writes the Grafana dashboards in this folder.

Run `python3 dashboards/generate.py` after editing; `--check` fails if a committed
JSON file differs from what this script generates (scripts/check_observability.py
runs it). Every panel queries through the `${datasource}` variable; no datasource UID
is hard-coded. Python 3 standard library only.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
INST = 'instance=~"$instance"'
RI = "$__rate_interval"
# Join results that are neither an admission nor a wait for a host.
NOT_ADMITTED = 'result!~"admitted|waiting"'
# Join results the admission checks and the join-attempt guard give.
ADMISSION_FAILURES = "bad_passcode|token_invalid|token_expired|not_allowed|region|removed|locked|throttled"


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0}


def instance_var(metric="orelay_build_info"):
    return {"name": "instance", "label": "Relay", "type": "query", "datasource": DS,
            "query": {"query": f"label_values({metric}, instance)", "refId": "instance"},
            "definition": f"label_values({metric}, instance)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"}, "hide": 0}


def textbox(name, label, default, description):
    return {"name": name, "label": label, "type": "textbox", "query": default,
            "current": {"text": default, "value": default}, "description": description, "hide": 0}


class Board:
    def __init__(self, uid, title, description, variables):
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables
        self.panels = []
        self.x = self.y = 0

    def panel(self, title, unit, description, targets, kind="timeseries", width=12, height=8):
        if self.x + width > 24:
            self.x, self.y = 0, self.y + height
        pid = len(self.panels) + 1
        refs = "ABCDEFGH"
        self.panels.append({
            "id": pid, "type": kind, "title": title, "description": description,
            "datasource": DS,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
            if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
            "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend, "refId": refs[i]}
                        for i, (expr, legend) in enumerate(targets)],
        })
        self.x += width

    def json(self):
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["orelay"], "timezone": "browser", "schemaVersion": 39, "version": 1,
            "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "annotations": {"list": []},
            "templating": {"list": self.variables}, "panels": self.panels,
        }


def fleet():
    b = Board("orelay-fleet", "Oblivious Relay: fleet overview",
              "Per-relay and fleet totals: traffic, forwarding latency, drops, joins and closes.",
              [datasource_var(), instance_var()])
    b.panel("Relays reporting", "none", "Relays whose metrics Prometheus scrapes.",
            [(f"count(orelay_build_info{{{INST}}})", "relays")], kind="stat", width=6, height=4)
    b.panel("Relays ready", "none", "Relays answering /readyz with 200 (not draining, under the connection cap).",
            [(f"sum(orelay_ready{{{INST}}})", "ready")], kind="stat", width=6, height=4)
    b.panel("Participants (fleet)", "none", "Participants in meetings across the selected relays.",
            [(f"sum(orelay_participants_active{{{INST}}})", "participants")], kind="stat", width=6, height=4)
    b.panel("Meetings (fleet)", "none", "Meetings with at least one participant across the selected relays.",
            [(f"sum(orelay_meetings_active{{{INST}}})", "meetings")], kind="stat", width=6, height=4)
    b.panel("Participants per relay", "none", "Participants in meetings now, per relay.",
            [(f"sum by (instance) (orelay_participants_active{{{INST}}})", "{{instance}}")])
    b.panel("Connections per relay", "none", "QUIC connections open now, per relay, against its cap.",
            [(f"sum by (instance) (orelay_connections_active{{{INST}}})", "{{instance}} open"),
             (f"sum by (instance) (orelay_connections_max{{{INST}}})", "{{instance}} cap")])
    b.panel("Egress per relay", "Bps", "Media bytes per second handed to subscribers, per relay.",
            [(f"sum by (instance) (rate(orelay_media_sent_bytes_total{{{INST}}}[{RI}]))", "{{instance}}")])
    b.panel("Traffic by media kind", "Bps", "Fleet media bytes per second in and out, by kind.",
            [(f"sum by (kind) (rate(orelay_media_received_bytes_total{{{INST}}}[{RI}]))", "in {{kind}}"),
             (f"sum by (kind) (rate(orelay_media_sent_bytes_total{{{INST}}}[{RI}]))", "out {{kind}}")])
    b.panel("Groups and datagrams per second", "ops", "Video/screen groups and audio datagrams forwarded per second (fleet).",
            [(f"sum by (kind) (rate(orelay_groups_sent_total{{{INST}}}[{RI}]))", "groups out {{kind}}"),
             (f"sum(rate(orelay_datagrams_sent_total{{{INST}}}[{RI}]))", "datagrams out")])
    b.panel("Forwarding latency inside the relay", "s", "p50 and p99 time from reading a chunk or datagram to handing it to each subscriber.",
            [(f"histogram_quantile(0.99, sum by (le, transport) (rate(orelay_forward_latency_seconds_bucket{{{INST}}}[{RI}])))", "p99 {{transport}}"),
             (f"histogram_quantile(0.50, sum by (le, transport) (rate(orelay_forward_latency_seconds_bucket{{{INST}}}[{RI}])))", "p50 {{transport}}")])
    b.panel("Drops per second by reason", "ops", "Groups dropped for subscribers that fell behind, and audio datagrams not forwarded.",
            [(f"sum by (reason) (rate(orelay_groups_dropped_total{{{INST}}}[{RI}]))", "groups {{reason}}"),
             (f"sum by (reason) (rate(orelay_datagrams_dropped_total{{{INST}}}[{RI}]))", "datagrams {{reason}}")])
    b.panel("Drop ratio", "percentunit", "Share of forwarded objects dropped (recording rule, 5 m window).",
            [(f"orelay:drop_ratio:rate5m{{{INST}}}", "{{instance}}")])
    b.panel("Joins per second by result", "ops", "Joins admitted, put in a waiting room, throttled, rejected by reason, or timed out.",
            [(f"sum by (result) (rate(orelay_joins_total{{{INST}}}[{RI}]))", "{{result}}")])
    b.panel("Join handling time", "s", "p50 and p99 time from handshake to admission.",
            [(f"histogram_quantile(0.99, sum by (le) (rate(orelay_join_duration_seconds_bucket{{{INST}}}[{RI}])))", "p99"),
             (f"histogram_quantile(0.50, sum by (le) (rate(orelay_join_duration_seconds_bucket{{{INST}}}[{RI}])))", "p50")])
    b.panel("Closes by close code", "ops", "Connections the relay closed per second, by close code name.",
            [(f"sum by (code) (rate(orelay_closes_total{{{INST}}}[{RI}]))", "{{code}}")])
    b.panel("Subscriber queues", "bytes", "Bytes queued for subscribers now (per relay), and the p99 of one subscriber's queue depth.",
            [(f"sum by (instance) (orelay_subscriber_queue_bytes{{{INST}}})", "{{instance}} total"),
             (f"histogram_quantile(0.99, sum by (le) (rate(orelay_subscriber_queue_depth_bytes_bucket{{{INST}}}[{RI}])))", "p99 per subscriber")])
    b.panel("Keyframe requests per second", "ops", "Keyframe requests sent to publishers after drops or new subscriptions.",
            [(f"sum(rate(orelay_keyframe_requests_total{{{INST}}}[{RI}]))", "keyframe requests")])
    b.panel("Meeting size", "none", "p50 and p99 meeting size at admission.",
            [(f"histogram_quantile(0.99, sum by (le) (rate(orelay_meeting_participants_bucket{{{INST}}}[{RI}])))", "p99"),
             (f"histogram_quantile(0.50, sum by (le) (rate(orelay_meeting_participants_bucket{{{INST}}}[{RI}])))", "p50")])
    b.panel("QUIC round-trip time", "s", "p50 and p99 of sampled connection RTTs.",
            [(f"histogram_quantile(0.99, sum by (le) (rate(orelay_quic_rtt_seconds_bucket{{{INST}}}[{RI}])))", "p99"),
             (f"histogram_quantile(0.50, sum by (le) (rate(orelay_quic_rtt_seconds_bucket{{{INST}}}[{RI}])))", "p50")])
    b.panel("QUIC loss and congestion", "ops", "Packets lost and congestion events per second (sampled from connection stats).",
            [(f"sum(rate(orelay_quic_lost_packets_total{{{INST}}}[{RI}]))", "lost packets"),
             (f"sum(rate(orelay_quic_congestion_events_total{{{INST}}}[{RI}]))", "congestion events")])
    b.panel("CPU utilisation", "percentunit", "Relay CPU use as a share of its available CPUs (recording rule, 1 m window).",
            [(f"orelay:cpu_utilisation:ratio_rate1m{{{INST}}}", "{{instance}} CPU")])
    b.panel("Resident memory", "bytes", "Resident memory of each relay process.",
            [(f"process_resident_memory_bytes{{{INST}}} and on (instance) orelay_build_info", "{{instance}}")])
    b.panel("UDP buffer errors per second", "ops", "Host-wide UDP datagrams the kernel dropped for full socket buffers.",
            [(f"sum by (instance) (rate(orelay_udp_receive_buffer_errors_total{{{INST}}}[{RI}]))", "{{instance}} receive"),
             (f"sum by (instance) (rate(orelay_udp_send_buffer_errors_total{{{INST}}}[{RI}]))", "{{instance}} send")])
    return b


def capacity():
    cap = "$capacity_participants_per_core"
    ecap = "$capacity_egress_bytes_per_core"
    b = Board("orelay-capacity", "Oblivious Relay: capacity and headroom",
              "Participants and egress per core against a measured capacity figure, headroom and days to exhaustion.",
              [datasource_var(), instance_var(),
               textbox("capacity_participants_per_core", "Capacity (participants per core)", "100",
                       "Participants one core holds within the latency and loss budget, as measured by loadgen's capacity mode."),
               textbox("capacity_egress_bytes_per_core", "Capacity (egress bytes/s per core)", "12500000",
                       "Egress bytes per second one core forwards within budget (12500000 = 100 Mbit/s).")])
    b.panel("Participants per core", "none", "Participants per available CPU on each relay, with the capacity figure.",
            [(f"orelay:participants_per_core{{{INST}}}", "{{instance}}"),
             (f"0 * orelay:participants_per_core{{{INST}}} + {cap}", "capacity")])
    b.panel("Egress per core", "Bps", "Egress bytes per second per available CPU, with the capacity figure.",
            [(f"orelay:egress_bytes_per_core:rate1m{{{INST}}}", "{{instance}}"),
             (f"0 * orelay:egress_bytes_per_core:rate1m{{{INST}}} + {ecap}", "capacity")])
    b.panel("Participant headroom", "percent", "Headroom against the participants-per-core capacity, worst relay.",
            [(f"100 * (1 - max(orelay:participants_per_core{{{INST}}}) / {cap})", "headroom")], kind="gauge", width=6)
    b.panel("Egress headroom", "percent", "Headroom against the egress-per-core capacity, worst relay.",
            [(f"100 * (1 - max(orelay:egress_bytes_per_core:rate1m{{{INST}}}) / {ecap})", "headroom")], kind="gauge", width=6)
    b.panel("Connection headroom", "percent", "Headroom against max_connections, worst relay.",
            [(f"100 * min(orelay:connection_headroom:ratio{{{INST}}})", "headroom")], kind="gauge", width=6)
    b.panel("CPU headroom", "percent", "Idle share of the relay's CPUs, worst relay.",
            [(f"100 * (1 - max(orelay:cpu_utilisation:ratio_rate1m{{{INST}}}))", "headroom")], kind="gauge", width=6)
    b.panel("Fleet participants against capacity", "none", "Participants in the fleet and what its cores hold at the capacity figure.",
            [("orelay:fleet_participants:sum", "participants"),
             (f"orelay:fleet_cpus:sum * {cap}", "capacity")])
    b.panel("Days to exhaustion", "d", "Days until participants reach capacity at the growth of the last 7 days (predict_linear); very large means not growing.",
            [(f"(orelay:fleet_cpus:sum * {cap} - orelay:fleet_participants:sum) / clamp_min(predict_linear(orelay:fleet_participants:sum[7d], 86400) - orelay:fleet_participants:sum, 1e-9)", "days")],
            kind="stat")
    b.panel("Projected participants in 30 days", "none", "Where the fleet's participant count is heading (predict_linear over 7 days).",
            [("predict_linear(orelay:fleet_participants:sum[7d], 30 * 86400)", "in 30 days")])
    b.panel("CPU utilisation per relay", "percentunit", "Relay CPU use as a share of its available CPUs.",
            [(f"orelay:cpu_utilisation:ratio_rate1m{{{INST}}}", "{{instance}}")])
    return b


def loadtest():
    b = Board("orelay-loadtest", "Oblivious Relay: load test",
              "loadgen's live figures next to the relay's: joins, objects, end-to-end latency, loss, authentication failures.",
              [datasource_var(), instance_var()])
    b.panel("Participants joined", "none", "Participants admitted so far, and planned by the scenario.",
            [("sum(orelay_loadgen_joins_total{result=\"admitted\"})", "joined"),
             ("sum(orelay_loadgen_participants_planned)", "planned")])
    b.panel("Joins per second", "ops", "loadgen joins per second by result (admitted, failed).",
            [(f"sum by (result) (rate(orelay_loadgen_joins_total[{RI}]))", "{{result}}")])
    b.panel("Objects per second", "ops", "Media objects loadgen sent and received (all subscribers), by kind.",
            [(f"sum by (kind) (rate(orelay_loadgen_objects_sent_total[{RI}]))", "sent {{kind}}"),
             (f"sum by (kind) (rate(orelay_loadgen_objects_received_total[{RI}]))", "received {{kind}}")])
    b.panel("End-to-end latency", "s", "p50 and p99 from the sender's seal to the receiver's open.",
            [(f"histogram_quantile(0.99, sum by (le) (rate(orelay_loadgen_latency_seconds_bucket[{RI}])))", "p99"),
             (f"histogram_quantile(0.50, sum by (le) (rate(orelay_loadgen_latency_seconds_bucket[{RI}])))", "p50")])
    b.panel("Audio loss", "percentunit", "Share of audio objects missing from the sequence ranges receivers saw.",
            [(f"clamp_min(1 - sum(rate(orelay_loadgen_objects_received_total{{kind=\"audio\"}}[{RI}])) / sum(rate(orelay_loadgen_audio_objects_expected_total[{RI}])), 0)", "loss")])
    b.panel("Authentication failures", "none", "Received payloads that failed authentication; anything but 0 is a bug.",
            [("sum(orelay_loadgen_auth_failures_total)", "failures")], kind="stat", width=6)
    b.panel("Join time", "s", "p99 time from connect to admission, as loadgen saw it.",
            [(f"histogram_quantile(0.99, sum by (le) (rate(orelay_loadgen_join_duration_seconds_bucket[{RI}])))", "p99")],
            width=6)
    b.panel("Receive throughput", "Bps", "Payload bytes per second received by all loadgen participants.",
            [(f"sum(rate(orelay_loadgen_received_bytes_total[{RI}]))", "received")])
    b.panel("Relay forwarding latency p99", "s", "The relay's own p99 forwarding latency (recording rule).",
            [(f"orelay:forward_latency_seconds:p99_rate1m{{{INST}}}", "{{instance}} {{transport}}")])
    b.panel("Relay drops per second", "ops", "What the relay dropped during the run.",
            [(f"sum(rate(orelay_groups_dropped_total{{{INST}}}[{RI}]))", "groups"),
             (f"sum(rate(orelay_datagrams_dropped_total{{{INST}}}[{RI}]))", "datagrams")])
    b.panel("Relay CPU", "percentunit", "Relay CPU use as a share of its CPUs during the run.",
            [(f"orelay:cpu_utilisation:ratio_rate1m{{{INST}}}", "{{instance}}")])
    return b


def security():
    b = Board("orelay-security", "Oblivious Relay: security",
              "Rejected joins by reason, admission failures, meetings at risk, moderation, connection refusals, failed handshakes and closes by fault class.",
              [datasource_var(), instance_var()])
    b.panel("Rejected joins per second by reason", "ops", "Joins rejected, throttled or timed out, by reason (joins put in a waiting room are not rejections).",
            [(f"sum by (result) (rate(orelay_joins_total{{{INST}, {NOT_ADMITTED}}}[{RI}]))", "{{result}}")])
    b.panel("Join rejection ratio", "percentunit", "Share of joins neither admitted nor put in a waiting room.",
            [(f"sum(rate(orelay_joins_total{{{INST}, {NOT_ADMITTED}}}[{RI}])) / clamp_min(sum(rate(orelay_joins_total{{{INST}}}[{RI}])), 1e-9)", "rejected")])
    b.panel("Admission failures by result", "ops",
            "Joins turned away by the admission checks, per second: wrong passcode, bad, expired or missing tokens, "
            "another region, removed tokens, locked meetings, and attempts throttled for guessing (docs/PROTOCOL.md §7.3).",
            [(f"sum by (result) (rate(orelay_joins_total{{{INST}, result=~\"{ADMISSION_FAILURES}\"}}[{RI}]))", "{{result}}")])
    b.panel("Meetings at risk", "none",
            "Meetings flagged now for drawing many failed join attempts (window still open), and how many were flagged "
            "in the last 5 minutes. Their hosts were told (AtRisk); the log has the keyed meeting tag.",
            [(f"sum(orelay_meetings_at_risk{{{INST}}})", "at risk now"),
             (f"sum(increase(orelay_meetings_at_risk_total{{{INST}}}[5m]))", "flagged in 5 m")])
    b.panel("Moderation and key exchange", "ops",
            "Host actions carried out, requests refused (a viewer publishing, a non-host moderating, ...), and "
            "end-to-end key messages forwarded (once per recipient) per second.",
            [(f"sum(rate(orelay_host_actions_total{{{INST}}}[{RI}]))", "host actions"),
             (f"sum(rate(orelay_requests_refused_total{{{INST}}}[{RI}]))", "refused requests"),
             (f"sum(rate(orelay_key_messages_total{{{INST}}}[{RI}]))", "key messages")])
    b.panel("Key-message bytes", "Bps", "End-to-end key-message bytes forwarded per second, once per recipient (bounded per sender by key_message_bytes_per_second).",
            [(f"sum(rate(orelay_key_message_bytes_total{{{INST}}}[{RI}]))", "key-message bytes")])
    b.panel("Connection refusals per second", "ops", "Connection attempts refused before the handshake, by reason: at max_connections, a Retry that could not be sent, or a source backing off after failed joins.",
            [(f"sum by (reason) (rate(orelay_connections_refused_total{{{INST}}}[{RI}]))", "{{reason}}")])
    b.panel("Failed handshakes per second", "ops", "QUIC handshakes that failed (TLS, ALPN, timeout).",
            [(f"sum(rate(orelay_handshake_failures_total{{{INST}}}[{RI}]))", "failed handshakes")])
    b.panel("Closes by fault class", "ops", "Connections the relay closed, by who was at fault.",
            [(f"sum by (fault) (rate(orelay_closes_by_fault_total{{{INST}}}[{RI}]))", "{{fault}}")])
    b.panel("Protocol violations by close code", "ops", "Closes for peer misbehaviour, by close code.",
            [(f"sum by (code) (rate(orelay_closes_total{{{INST}, code=~\"PROTOCOL_VIOLATION|MESSAGE_TOO_LARGE|UNKNOWN_MESSAGE|UNEXPECTED_MESSAGE|TRACK_NOT_PUBLISHED|CONTROL_STREAM_CLOSED\"}}[{RI}]))", "{{code}}")])
    b.panel("Connections evicted before joining, and Retry", "ops",
            "Connections that never joined, closed to make room for newer ones (a flood of never-joining connections, or a storm past max_unjoined); QUIC Retry packets sent to validate addresses while over half of max_unjoined wait.",
            [(f"sum(rate(orelay_unjoined_evicted_total{{{INST}}}[{RI}]))", "evicted"),
             (f"sum(rate(orelay_retries_sent_total{{{INST}}}[{RI}]))", "retries")])
    b.panel("Control-message flooding", "ops",
            "Control messages that waited for their sender's rate limit (one client flooding Publish/Subscribe), and queued announcements cancelled before a client read them.",
            [(f"sum(rate(orelay_control_throttled_total{{{INST}}}[{RI}]))", "throttled"),
             (f"sum(rate(orelay_control_coalesced_total{{{INST}}}[{RI}]))", "coalesced")])
    b.panel("Publishers held to their limits", "ops",
            "Groups reset because a publisher opened more than 4 per track layer, or went silent mid-group past the idle timeout.",
            [(f"sum(rate(orelay_groups_reset_limit_total{{{INST}}}[{RI}]))", "over the group limit"),
             (f"sum(rate(orelay_groups_reset_idle_total{{{INST}}}[{RI}]))", "idle")])
    b.panel("Rejections in the last hour", "none", "Joins rejected, throttled or timed out per reason over the last hour.",
            [(f"sum by (result) (increase(orelay_joins_total{{{INST}, {NOT_ADMITTED}}}[1h]))", "{{result}}")], kind="stat", width=24)
    return b


BOARDS = {"fleet-overview.json": fleet, "capacity.json": capacity,
          "load-test.json": loadtest, "security.json": security}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in BOARDS.items():
        text = json.dumps(build().json(), indent=2) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run python3 dashboards/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
