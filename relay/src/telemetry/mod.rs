//! Telemetry: Prometheus metrics and health endpoints on a separate HTTP listener.
//!
//! The hot path only bumps atomics in [`RelayStats`](crate::RelayStats) (see
//! [`crate::stats::figures`] for the hooks); [`export`] reads them at scrape time. Nothing here
//! may label a metric with a meeting ID, participant ID, name or address: every
//! label is a closed enum, listed in `docs/METRICS.md`. This module never touches
//! media bytes.

pub mod export;
pub mod http;
pub mod process;
pub mod quic;

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::stats::figures::{
    DatagramDropReason, FaultClass, Figures, GroupDropReason, JoinResult, MediaKind, RefuseReason,
};
pub use crate::stats::histogram::AtomicHistogram;
pub use export::RelayEndpoints;
pub use http::{Endpoints, MetricsServer};

use crate::stats::RelayStats;

/// Binds `addr` and serves the relay's `/metrics`, `/healthz` and `/readyz` in a
/// background task; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    max_connections: usize,
) -> std::io::Result<SocketAddr> {
    let server = MetricsServer::bind(addr).await?;
    let bound = server.local_addr()?;
    tokio::spawn(server.serve(Arc::new(RelayEndpoints::new(stats, max_connections))));
    Ok(bound)
}
