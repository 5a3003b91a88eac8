//! Process figures during a run: loadgen's own CPU and memory, and the relay's from
//! its Prometheus `/metrics` (plain HTTP/1.0 over TCP: no HTTP stack for one GET)
//! or, in-process, from its stats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::{ProcessUse, RelayFigures};

/// Relay counters whose increase over the run goes into the report (names as in
/// `docs/METRICS.md`; a series with labels is summed over them unless the label is given).
pub const RELAY_COUNTERS: &[&str] = &[
    "orelay_joins_total{result=\"admitted\"}",
    "orelay_joins_total",
    "orelay_connections_accepted_total",
    "orelay_datagrams_received_total",
    "orelay_datagrams_sent_total",
    "orelay_datagrams_dropped_total",
    "orelay_groups_received_total",
    "orelay_groups_sent_total",
    "orelay_groups_dropped_total",
    "orelay_keyframe_requests_total",
    "orelay_closes_total",
    "orelay_media_received_bytes_total",
    "orelay_media_sent_bytes_total",
    "orelay_quic_lost_packets_total",
    "orelay_quic_congestion_events_total",
    "orelay_udp_receive_buffer_errors_total",
];

/// Parses the Prometheus text format into `name{labels}` → value, plus a per-name sum.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if name != series {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
        out.insert(series.to_owned(), v);
    }
    out
}

/// Fetches `url` (`http://host:port/path`) with one HTTP/1.0 GET, within 5 s.
pub async fn fetch(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("relay metrics URL must start with http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let io = async {
        let mut s = tokio::net::TcpStream::connect(host).await?;
        let req = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut body = Vec::new();
        // Bounded: a metrics page is well under 4 MiB.
        s.take(4 << 20).read_to_end(&mut body).await?;
        anyhow::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .context("relay metrics: timed out")??;
    let text = String::from_utf8_lossy(&body).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("relay metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// Samples a relay's `/metrics` through a run.
#[derive(Debug)]
pub struct RelayProbe {
    url: String,
    first: BTreeMap<String, f64>,
    last: BTreeMap<String, f64>,
    rss_start: f64,
    rss_peak: f64,
    started: Instant,
}

impl RelayProbe {
    /// Takes the first sample (fails when the URL does not answer).
    pub async fn start(url: &str) -> anyhow::Result<RelayProbe> {
        let first = parse_metrics(&fetch(url).await?);
        let rss_peak = first
            .get("process_resident_memory_bytes")
            .copied()
            .unwrap_or(0.0);
        Ok(RelayProbe {
            url: url.to_owned(),
            last: first.clone(),
            first,
            rss_start: rss_peak,
            rss_peak,
            started: Instant::now(),
        })
    }

    /// Takes a sample (a failed one is skipped: the run goes on).
    pub async fn sample(&mut self) {
        match fetch(&self.url).await {
            Ok(text) => {
                self.last = parse_metrics(&text);
                let rss = self.last.get("process_resident_memory_bytes").copied();
                self.rss_peak = self.rss_peak.max(rss.unwrap_or(0.0));
            }
            Err(e) => tracing::warn!(error = %e, "relay metrics sample failed"),
        }
    }

    /// The latest sample.
    pub fn last(&self) -> &BTreeMap<String, f64> {
        &self.last
    }

    /// The figures over the run so far.
    pub fn figures(&self) -> RelayFigures {
        let delta = |k: &str| self.last.get(k).unwrap_or(&0.0) - self.first.get(k).unwrap_or(&0.0);
        RelayFigures {
            source: self.url.clone(),
            process: Some(ProcessUse {
                cpu_seconds: delta("process_cpu_seconds_total"),
                wall_seconds: self.started.elapsed().as_secs_f64(),
                cores: self.last.get("orelay_cpus").copied().unwrap_or(1.0) as usize,
                rss_start_bytes: self.rss_start as u64,
                rss_peak_bytes: self.rss_peak as u64,
            }),
            counters: RELAY_COUNTERS
                .iter()
                .filter(|k| self.last.contains_key(**k))
                .map(|k| ((*k).to_owned(), delta(k)))
                .collect(),
        }
    }
}

/// An in-process relay's counters, named as its `/metrics` would name them.
pub fn in_process(stats: &orelay_relay::stats::StatsSnapshot) -> RelayFigures {
    let c = [
        (
            "orelay_joins_total{result=\"admitted\"}",
            stats.joins_admitted,
        ),
        (
            "orelay_connections_accepted_total",
            stats.connections_accepted,
        ),
        ("orelay_datagrams_received_total", stats.datagrams_in),
        ("orelay_datagrams_sent_total", stats.datagrams_out),
        ("orelay_datagrams_dropped_total", stats.datagrams_dropped),
        ("orelay_groups_received_total", stats.groups_in),
        ("orelay_groups_sent_total", stats.groups_out),
        ("orelay_groups_dropped_total", stats.groups_dropped),
        ("orelay_keyframe_requests_total", stats.keyframe_requests),
    ];
    let mut counters: BTreeMap<String, f64> = c
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v as f64))
        .collect();
    let closes: u64 = stats.closes.values().sum();
    counters.insert("orelay_closes_total".into(), closes as f64);
    RelayFigures {
        source: "in-process".into(),
        process: None,
        counters,
    }
}

/// Tracks loadgen's own CPU and memory.
#[derive(Debug)]
pub struct SelfProbe {
    cpu0: f64,
    started: Instant,
    rss_start: u64,
    rss_peak: u64,
}

impl SelfProbe {
    /// Starts measuring now.
    pub fn start() -> SelfProbe {
        let f = orelay_relay::telemetry::process::process_figures();
        SelfProbe {
            cpu0: f.cpu_seconds.unwrap_or(0.0),
            started: Instant::now(),
            rss_start: f.resident_bytes.unwrap_or(0),
            rss_peak: f.resident_bytes.unwrap_or(0),
        }
    }

    /// Use so far (also updates the RSS peak).
    pub fn sample(&mut self) -> ProcessUse {
        let f = orelay_relay::telemetry::process::process_figures();
        self.rss_peak = self.rss_peak.max(f.resident_bytes.unwrap_or(0));
        ProcessUse {
            cpu_seconds: f.cpu_seconds.unwrap_or(0.0) - self.cpu0,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rss_start_bytes: self.rss_start,
            rss_peak_bytes: self.rss_peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_and_sums_labels() {
        let m = parse_metrics(
            "# HELP x\norelay_joins_total{result=\"admitted\"} 5\norelay_joins_total{result=\"timeout\"} 2\nprocess_cpu_seconds_total 1.5\n",
        );
        assert_eq!(m["orelay_joins_total"], 7.0);
        assert_eq!(m["orelay_joins_total{result=\"admitted\"}"], 5.0);
        assert_eq!(m["process_cpu_seconds_total"], 1.5);
    }
}
