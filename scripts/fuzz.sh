#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each, one after the
# other, and prints the executions per target; exits non-zero if any target finds a
# crash (its input is left in fuzz/artifacts/TARGET/; reproduce it with
# `cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 s each, every target
#
# Needs a nightly toolchain (libFuzzer instrumentation) and cargo-fuzz; installs
# cargo-fuzz if missing, and says how to get nightly if it is. Each run starts from the
# seeds derived from proto/tests/vectors (written into fuzz/corpus/), the committed
# corpus (fuzz/seeds/) and whatever earlier runs left in fuzz/corpus/. The same checks
# run on stable in `cargo test -p orelay-checks` over those seeds, fuzz/seeds/ and
# fuzz/regressions/. Builds without a sanitizer (the checked crates forbid unsafe
# code) but with debug assertions and overflow checks.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "error: fuzzing needs a nightly toolchain: rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== seeds from proto/tests/vectors"
cargo run --quiet --locked -p orelay-checks --bin write_seeds -- fuzz/corpus
echo "== building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build --sanitizer none >/dev/null

mkdir -p fuzz/logs
failed=()
summary=()
for t in "${targets[@]}"; do
  corpora=("fuzz/corpus/$t")
  mkdir -p "fuzz/corpus/$t"
  if [ -d "fuzz/seeds/$t" ]; then corpora+=("fuzz/seeds/$t"); fi
  # Control frames go up to 16 KiB; the other inputs are short.
  case "$t" in
    client_message | server_message | control_decoder) max_len=17000 ;;
    *) max_len=4096 ;;
  esac
  echo "== $t for ${seconds}s"
  status=ok
  if ! cargo +nightly fuzz run --sanitizer none "$t" "${corpora[@]}" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -print_final_stats=1 \
      >"fuzz/logs/$t.log" 2>&1; then
    status=FAILED
    failed+=("$t")
    grep -E 'panicked at|ERROR|Test unit written|artifact' "fuzz/logs/$t.log" | head -n 5 >&2 || true
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "fuzz/logs/$t.log" | awk '{print $2}' | tail -n 1 || true)
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "fuzz/logs/$t.log" | awk '{print $2}' | tail -n 1 || true)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %12s execs %8s/s  corpus %5s  %s' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$status")")
done

echo "== fuzz summary ($(date -u +%Y-%m-%dT%H:%MZ), ${seconds}s per target; logs in fuzz/logs/)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "error: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
