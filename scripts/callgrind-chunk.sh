#!/usr/bin/env bash
# Instruction counts of the relay's per-chunk fan-out path (push once, read by each
# subscriber) under callgrind: repeatable figures on a shared, noisy machine.
# Usage: scripts/callgrind-chunk.sh [N ...]   (default N = 10 100 1000; K = 1000 chunks)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release --locked -p orelay-benches --bin chunk-path >&2
bin="${CARGO_TARGET_DIR:-target}/release/chunk-path"
k=1000
ns=("$@"); [ ${#ns[@]} -gt 0 ] || ns=(10 100 1000)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '| readers N | chunks K | instructions in the path | per delivery | per chunk pushed |\n|---|---|---|---|---|\n'
for n in "${ns[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" \
    --toggle-collect='*run_path*' "$bin" "$n" "$k" >"$out/stdout.$n" 2>"$out/stderr.$n"
  delivered=$(sed -n 's/.*delivered=\([0-9]*\).*/\1/p' "$out/stdout.$n")
  ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out/cg.$n")
  [ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out/cg.$n")
  awk -v n="$n" -v k="$k" -v ir="$ir" -v d="$delivered" \
    'BEGIN { printf "| %d | %d | %d | %.1f | %.1f |\n", n, k, ir, ir / d, ir / k }'
done
