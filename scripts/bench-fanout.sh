#!/usr/bin/env bash
# Fan-out benchmark: the relay against a minimal raw quinn forwarder (benches/src/bin/).
#
# For each profile x N x target, starts the target pinned to core 0 (taskset -c 0),
# runs `fanout-load cell` pinned to core 1, collects one JSON line, stops the target.
# Then prints a markdown table (relay and raw side by side, with the CPU ratio) and
# writes every cell to a JSON file. Loopback only; every run stops by itself.
#
#   scripts/bench-fanout.sh                  # full matrix: 3 profiles x N in {1,10,100,400,1000}
#   scripts/bench-fanout.sh --quick          # N in {1,10}, 1 s warm-up, 3 s window (< 2 min)
#   scripts/bench-fanout.sh --profiles video,audio --n 10,100 --window 5
#   scripts/bench-fanout.sh --idle           # only: RSS per idle joined participant (5,000)
#   scripts/bench-fanout.sh --with-idle      # the matrix, then the idle measurement
#
# Options: --profiles LIST (video,small,audio) --n LIST --targets LIST (relay,raw)
#          --warmup S --window S --idle-participants N --out FILE (JSON)
#          --no-build (use the binaries already built)
set -euo pipefail
# The relay runs in open mode; fanout-load joins with the same host secret.
export ORELAY_HOST_SECRET="bench-host-secret-0123456789"
cd "$(dirname "$0")/.."

profiles="video,small,audio"
ns="1,10,100,400,1000"
targets="relay,raw"
warmup=3
window=10
matrix=1
idle=0
idle_participants=5000
build=1
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/bench-fanout.json"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ns="1,10"; warmup=1; window=3 ;;
        --profiles) profiles="$2"; shift ;;
        --n) ns="$2"; shift ;;
        --targets) targets="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --window) window="$2"; shift ;;
        --idle) matrix=0; idle=1 ;;
        --with-idle) idle=1 ;;
        --idle-participants) idle_participants="$2"; shift ;;
        --out) out="$2"; shift ;;
        --no-build) build=0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(nproc)" -lt 2 ]; then
    echo "warning: fewer than 2 cores; target and load will share one" >&2
fi
if [ "$build" = 1 ]; then
    cargo build --release -p orelay-relay -p orelay-benches --bins
fi
bin="$target_dir/release"
clk_tck="$(getconf CLK_TCK)"
work="$(mktemp -d)"
lines="$work/cells.jsonl"
: > "$lines"
target_pid=""

stop_target() {
    if [ -n "$target_pid" ]; then
        kill "$target_pid" 2>/dev/null || true
        wait "$target_pid" 2>/dev/null || true
        target_pid=""
    fi
}
trap 'stop_target; rm -rf "$work"' EXIT

# start_target relay|raw: sets target_pid, addr, fingerprint.
start_target() {
    local kind="$1" log="$work/target.out"
    : > "$log"
    case "$kind" in
        # Room for 1,000 subscribers plus publishers in one meeting, 5,000 idle joins.
        # Open mode: the bench measures forwarding, not token checks.
        relay) RUST_LOG=warn taskset -c 0 "$bin/relay" --listen 127.0.0.1:0 \
                   --admission-mode open --attempts-per-source-per-minute 1000000 \
                   --attempts-per-meeting-per-minute 1000000 \
                   --max-participants 2000 --max-connections 20000 --max-unjoined 2000 \
                   > "$log" 2> "$work/target.err" & ;;
        raw) taskset -c 0 "$bin/raw-forwarder" --listen 127.0.0.1:0 \
                 > "$log" 2> "$work/target.err" & ;;
    esac
    target_pid=$!
    for _ in $(seq 100); do
        if grep -q 'fingerprint' "$log"; then break; fi
        sleep 0.1
    done
    addr="$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log")"
    fingerprint="$(sed -n 's/^certificate sha256 fingerprint: \([0-9a-f]*\)$/\1/p' "$log")"
    if [ -z "$addr" ] || [ -z "$fingerprint" ]; then
        echo "$kind did not start:" >&2
        cat "$log" "$work/target.err" >&2
        exit 1
    fi
}

if [ "$matrix" = 1 ]; then
    for profile in ${profiles//,/ }; do
        for n in ${ns//,/ }; do
            for kind in ${targets//,/ }; do
                start_target "$kind"
                echo "== $profile N=$n $kind (pid $target_pid, $addr)" >&2
                if taskset -c 1 "$bin/fanout-load" cell --target "$kind" --addr "$addr" \
                    --fingerprint "$fingerprint" --pid "$target_pid" --profile "$profile" \
                    --subscribers "$n" --warmup "$warmup" --window "$window" \
                    --clk-tck "$clk_tck" >> "$lines"; then
                    tail -n 1 "$lines" >&2
                else
                    echo "cell failed: $profile N=$n $kind" >&2
                fi
                stop_target
            done
        done
    done
fi

if [ "$idle" = 1 ]; then
    for kind in ${targets//,/ }; do
        start_target "$kind"
        echo "== idle: $idle_participants participants, $kind (pid $target_pid)" >&2
        if taskset -c 1 "$bin/fanout-load" idle --target "$kind" --addr "$addr" \
            --fingerprint "$fingerprint" --pid "$target_pid" \
            --participants "$idle_participants" --clk-tck "$clk_tck" >> "$lines"; then
            tail -n 1 "$lines" >&2
        else
            echo "idle measurement failed: $kind" >&2
        fi
        stop_target
    done
fi

echo >&2
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); warm-up ${warmup} s, window ${window} s" >&2
mkdir -p "$(dirname "$out")"
"$bin/fanout-load" report --input "$lines" --json "$out"
