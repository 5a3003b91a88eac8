//! loadgen's own `/metrics`, so a storm can be watched live next to the relay's.
//!
//! Like the relay, participants only bump atomics in [`Live`]; each scrape copies
//! them into a local Prometheus recorder through the `metrics` facade and renders
//! the latency histograms from their atomic buckets. Labels are closed sets
//! (`kind`: audio, video, screen; `result`: admitted, failed), never meeting or
//! participant identifiers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, gauge, Label, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use orelay_relay::telemetry::{process, Endpoints, MetricsServer};

use crate::tally::Live;

/// What loadgen's metrics endpoint serves.
pub struct LoadgenEndpoints {
    live: Arc<Live>,
    planned: usize,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl LoadgenEndpoints {
    /// Exports `live` for a run of `planned` participants.
    pub fn new(live: Arc<Live>, planned: usize) -> LoadgenEndpoints {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        LoadgenEndpoints {
            live,
            planned,
            recorder,
            handle,
        }
    }

    fn set_all(&self) {
        let l = &self.live;
        let c = |name: &'static str, unit: Unit, help: &'static str, labels: Vec<Label>, v: u64| {
            describe_counter!(name, unit, help);
            counter!(name, labels).absolute(v);
        };
        let one = |k: &'static str, v: &'static str| vec![Label::new(k, v)];
        describe_gauge!(
            "orelay_loadgen_participants_planned",
            Unit::Count,
            "Participants the running scenario will join."
        );
        gauge!("orelay_loadgen_participants_planned").set(self.planned as f64);
        let joins = "Participants' joins by result (admitted or failed).";
        c(
            "orelay_loadgen_joins_total",
            Unit::Count,
            joins,
            one("result", "admitted"),
            l.joined.load(Relaxed),
        );
        c(
            "orelay_loadgen_joins_total",
            Unit::Count,
            joins,
            one("result", "failed"),
            l.join_failed.load(Relaxed),
        );
        let sent = "Media objects sent, by kind.";
        let received = "Media objects received and authenticated, by kind (all subscribers).";
        for (i, kind) in ["audio", "video", "screen"].into_iter().enumerate() {
            let (s, r) = (l.sent[i].load(Relaxed), l.received[i].load(Relaxed));
            c(
                "orelay_loadgen_objects_sent_total",
                Unit::Count,
                sent,
                one("kind", kind),
                s,
            );
            c(
                "orelay_loadgen_objects_received_total",
                Unit::Count,
                received,
                one("kind", kind),
                r,
            );
        }
        describe_gauge!(
            "orelay_loadgen_participants_connected",
            Unit::Count,
            "Participants joined and connected now."
        );
        gauge!("orelay_loadgen_participants_connected").set(l.connected.load(Relaxed) as f64);
        c(
            "orelay_loadgen_sent_bytes_total",
            Unit::Bytes,
            "Sealed payload bytes sent.",
            Vec::new(),
            l.bytes_sent.load(Relaxed),
        );
        c(
            "orelay_loadgen_received_bytes_total",
            Unit::Bytes,
            "Payload bytes received.",
            Vec::new(),
            l.bytes_received.load(Relaxed),
        );
        c("orelay_loadgen_audio_objects_expected_total", Unit::Count, "Audio objects receivers expected from the sequence ranges they saw; loss is 1 - received/expected.", Vec::new(), l.audio_expected.load(Relaxed));
        c(
            "orelay_loadgen_auth_failures_total",
            Unit::Count,
            "Received payloads that failed authentication (should stay 0).",
            Vec::new(),
            l.decrypt_failures.load(Relaxed),
        );
    }
}

impl Endpoints for LoadgenEndpoints {
    fn metrics(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.set_all());
        let mut out = self.handle.render();
        self.live.latency.snapshot().render(
            &mut out,
            "orelay_loadgen_latency_seconds",
            "End-to-end latency of received objects, sender's seal to receiver's open.",
            1e9,
        );
        self.live.join_time.snapshot().render(
            &mut out,
            "orelay_loadgen_join_duration_seconds",
            "Time from connect to admission of each participant.",
            1e9,
        );
        self.live.send_skew.snapshot().render(
            &mut out,
            "orelay_loadgen_send_skew_seconds",
            "How late loadgen sent each object against its schedule; a high p99 means loadgen is the bottleneck.",
            1e9,
        );
        process::render(&mut out, &process::process_figures());
        out
    }

    fn readiness(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

/// Binds `addr` and serves the run's metrics in a background task; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    live: Arc<Live>,
    planned: usize,
) -> std::io::Result<SocketAddr> {
    let server = MetricsServer::bind(addr).await?;
    let bound = server.local_addr()?;
    tokio::spawn(server.serve(Arc::new(LoadgenEndpoints::new(live, planned))));
    Ok(bound)
}
