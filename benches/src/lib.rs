//! Criterion benchmarks for Oblivious Relay; the benchmarks live in `benches/`:
//!
//! - `codec`: control message and media header encode/decode;
//! - `fanout`: the sans-IO fan-out (one chunk to N subscriber queues, `Bytes` handles
//!   vs copies), and end-to-end forwarding over loopback QUIC through the relay vs
//!   raw quinn on the same machine, reported side by side.
//!
//! Run with `cargo bench -p orelay-benches`; results and the machine they came from
//! are recorded in `docs/PERFORMANCE.md`.
