#!/usr/bin/env bash
# Soak: churn against a relay process for MINUTES (default 30), then check that its
# RSS stayed flat after warm-up, that its gauges (connections, participants,
# meetings, queued bytes, open streams) are back to zero once everyone has left, and
# that it logged nothing at error level. See relay/tests/soak.rs and docs/RELIABILITY.md.
#   scripts/soak.sh        # 30 minutes
#   scripts/soak.sh 2      # the short run the test command uses
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "usage: $0 [MINUTES]  (a whole number, at least 1; default 30)" >&2
  exit 2
fi
echo "== soak: ${minutes} minute(s) of churn"
ORELAY_SOAK_SECS=$((minutes * 60)) \
  cargo test -p orelay-relay --locked --test soak -- --ignored --nocapture
