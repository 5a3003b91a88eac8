//! Criterion benchmarks for Oblivious Relay; the benchmarks live in `benches/`:
//!
//! - `codec`: control message and media header encode/decode;
//! - `fanout`: the sans-IO fan-out (one chunk to N subscriber queues, `Bytes` handles
//!   vs copies), and end-to-end forwarding over loopback QUIC through the relay vs
//!   raw quinn on the same machine, reported side by side.
//!
//! Two binaries drive the fan-out benchmark against the limit (`scripts/bench-fanout.sh`,
//! described in `docs/PERFORMANCE.md`):
//!
//! - `raw-forwarder`: the baseline, a minimal quinn server that answers the join and
//!   forwards each group stream and datagram from a publisher to every subscriber;
//! - `fanout-load`: the load side, one publisher (audio: several) and N subscribers
//!   against the relay or the raw forwarder, reporting CPU per delivered object,
//!   delivered/s, loss, latency and RSS as JSON lines, and RSS per idle participant.
//!
//! Run the criterion benchmarks with `cargo bench -p orelay-benches`; results and the machine they came from
//! are recorded in `docs/PERFORMANCE.md`.
