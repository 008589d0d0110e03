#!/usr/bin/env bash
# Runs the Rust test suites and records one summary line for the end of `make test`
# (cargo prints a result line per test binary; the last is often an empty doc-test run).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p .build
cargo test --profile ci --workspace --locked 2>&1 | tee .build/unit.log
rc=${PIPESTATUS[0]}
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' .build/unit.log)
echo "${passed:-0} passed, ${failed:-0} failed" > .build/test-summary
exit "$rc"
