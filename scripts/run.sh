#!/usr/bin/env bash
# The main job: builds loadgen (release) and runs the default scenario against a relay
# started in-process on loopback. Extra arguments go to `loadgen run`
# (see `loadgen run --help`), e.g. `scripts/run.sh --meetings 5 --duration 10`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
cargo build --release --locked -p orelay-loadgen -p orelay-relay
exec ./target/release/loadgen run "$@"
