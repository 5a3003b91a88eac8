//! The checks behind Oblivious Relay's fuzz targets, as plain functions on `&[u8]`.
//!
//! `fuzz/` (cargo-fuzz, nightly) calls each of [`TARGETS`] from a libFuzzer target of the
//! same name; `tests/corpus.rs` (stable, part of `cargo test`) replays the seeds from the
//! protocol test vectors, the committed corpus (`fuzz/seeds/`) and every input that once
//! failed (`fuzz/regressions/`) through the very same functions. A check panics when a
//! property breaks; any other outcome is a pass.
//!
//! - [`decode`]: every decoder in `orelay_proto` and the relay's group-header splitter:
//!   no panic, bounded buffering, chunked decoding equals whole decoding, and round trips.
//! - [`token::join_token`]: the relay's join-token verifier on garbage and on signed
//!   arbitrary claims.
//! - [`core::relay_core`]: the relay's sans-IO core driven by arbitrary event sequences,
//!   with its invariants checked after every event (see `core_check.rs`): media only to
//!   present members of the publisher's meeting that subscribe to that layer (audio
//!   through a cached route that must never be stale), the very same `Bytes` in order,
//!   no byte lost or made up, bounded groups and bytes per subscriber and per publisher,
//!   at most four open groups per layer, rate-limited keyframe requests, control
//!   messages that leave each client with the meeting as it is, and nothing held once
//!   everyone has left.
#![forbid(unsafe_code)]
// A check's job is to panic when a property breaks, like a test's; nothing here runs
// in the relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod core;
mod core_check;
mod core_ops;
pub mod decode;
pub mod seeds;
pub mod token;
mod view;

/// A check: panics when a property breaks.
pub type Check = fn(&[u8]);

/// Every fuzz target: its name (the file `fuzz/fuzz_targets/NAME.rs` and the corpus
/// folders) and its check.
pub const TARGETS: [(&str, Check); 8] = [
    ("client_message", decode::client_message),
    ("server_message", decode::server_message),
    ("control_decoder", decode::control_decoder),
    ("group_header", decode::group_header),
    ("object_header", decode::object_header),
    ("datagram_header", decode::datagram_header),
    ("join_token", token::join_token),
    ("relay_core", core::relay_core),
];
