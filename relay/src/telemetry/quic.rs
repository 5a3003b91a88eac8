//! QUIC path figures from quinn's per-connection statistics, sampled every
//! [`PATH_SAMPLE_INTERVAL`] and once more at close, never per packet.

use std::sync::Arc;
use std::time::Duration;

use crate::stats::RelayStats;

/// How often a connection's path statistics are sampled.
pub const PATH_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The cumulative counters of one connection at its previous sample, so each sample
/// adds only what is new.
#[derive(Debug, Default, Clone, Copy)]
pub struct PathSampler {
    sent: u64,
    lost: u64,
    congestion_events: u64,
}

impl PathSampler {
    /// Records `conn`'s current RTT and what it sent, lost and backed off since the
    /// previous call.
    pub fn sample(&mut self, conn: &quinn::Connection, stats: &RelayStats) {
        let path = conn.stats().path;
        stats.record_path(
            path.rtt,
            path.sent_packets.saturating_sub(self.sent),
            path.lost_packets.saturating_sub(self.lost),
            path.congestion_events
                .saturating_sub(self.congestion_events),
        );
        self.sent = path.sent_packets;
        self.lost = path.lost_packets;
        self.congestion_events = path.congestion_events;
    }
}

/// Samples `conn` every [`PATH_SAMPLE_INTERVAL`] until it closes, then once more.
/// The data plane spawns one per accepted connection.
pub async fn watch_path(conn: quinn::Connection, stats: Arc<RelayStats>) {
    let mut sampler = PathSampler::default();
    let mut tick = tokio::time::interval(PATH_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // The first tick is immediate; there is nothing to sample yet.
    loop {
        tokio::select! {
            _ = tick.tick() => sampler.sample(&conn, &stats),
            _ = conn.closed() => {
                sampler.sample(&conn, &stats);
                return;
            }
        }
    }
}
