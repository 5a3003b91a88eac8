#!/usr/bin/env bash
# Sets up and runs every check and test: formatting, lints, and the whole test suite
# (unit, property, and QUIC-over-loopback integration tests), then the observability
# proof: promtool on rules and scrapes, and every dashboard panel against a real
# Prometheus scraping a relay and loadgen (scripts/check_observability.py). CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "installing missing toolchain component: $component"
    rustup component add "$component"
  fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the relay links no client or media-key code"
if cargo tree --locked -p orelay-relay -e normal --prefix none | grep -E '^(orelay-client|orelay-loadgen|orelay-e2ee|hpke|sframe) '; then
  echo "error: orelay-relay depends on client-side code" >&2
  exit 1
fi
echo "== one TLS stack: no aws-lc, no second rustls provider, no HTTP stack in the relay"
if cargo tree --locked -p orelay-relay -e normal --prefix none | grep -E '^(aws-lc-rs|aws-lc-sys|hyper|hyper-rustls) '; then
  echo "error: orelay-relay pulls a second TLS provider or an HTTP stack" >&2
  exit 1
fi
echo "== iproute2 (ip, tc) for the network-fault tests"
if [ ! -x /usr/sbin/tc ] && [ ! -x /sbin/tc ] && ! command -v tc >/dev/null 2>&1; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast

echo "== soak: 2 minutes of churn against a relay process"
scripts/soak.sh 2

echo "== observability: rules, dashboards, exported names, every panel against a real Prometheus"
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "installing Debian's prometheus package (prometheus and promtool)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
python3 scripts/check_observability.py
