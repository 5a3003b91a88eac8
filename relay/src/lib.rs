//! Oblivious Relay: a QUIC relay that forwards end-to-end-encrypted meeting media
//! between participants without ever holding a key.
//!
//! The crate splits like quinn: [`core`] is sans-IO state (meetings and routes, the
//! shared group buffers, each subscriber's drop policy, admission limits) driven by
//! events and `now`; the thin tokio/quinn shell around it imports only downward:
//! [`endpoint`] (socket, admission, drain) → `connection` (join, control stream) →
//! `media` (the hot path) → `registry` (meetings and participants' handles) →
//! `fanout` (one group in flight). The relay depends on no media-key code: payloads
//! are opaque bytes it forwards by reference.
//! [`telemetry`] exports the counters as Prometheus metrics and serves the health
//! endpoints.
#![forbid(unsafe_code)]

pub mod config;
mod connection;
pub mod core;
pub mod endpoint;
pub mod error;
mod fanout;
pub mod logging;
mod media;
pub mod privacy;
mod registry;
pub mod stats;
pub mod telemetry;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod tls;
pub mod tools;

pub use config::{Cli, Config};
pub use endpoint::{Relay, RunningRelay};
pub use stats::{RelayStats, StatsSnapshot};
