#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: only what is missing is fetched.
set -euo pipefail
need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# cargo-fuzz prefers the nightly toolchain; when it cannot be installed (no toolchain
# downloads on some machines), fuzz-smoke.sh falls back to stable with RUSTC_BOOTSTRAP=1.
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal \
    || echo "deps: nightly unavailable; fuzzing will use the stable toolchain"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "deps: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
