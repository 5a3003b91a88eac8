//! Oblivious Relay: a QUIC relay that forwards end-to-end-encrypted meeting media
//! between participants without ever holding a key.
//!
//! The crate splits like quinn: [`core`] is sans-IO state (meetings, subscriptions,
//! the drop policy) driven by events and `now`; [`server`], `session` and `forward`
//! are the thin tokio/quinn shell around it. The relay depends on no media-key code:
//! payloads are opaque bytes it forwards by reference. [`telemetry`] exports the
//! counters as Prometheus metrics and serves the health endpoints.
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod error;
mod forward;
pub mod logging;
pub mod privacy;
pub mod server;
mod session;
pub mod stats;
pub mod telemetry;
pub mod tls;

pub use config::{Cli, Config};
pub use server::{Relay, RunningRelay};
pub use stats::{RelayStats, StatsSnapshot};
