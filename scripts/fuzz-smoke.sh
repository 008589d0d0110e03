#!/usr/bin/env bash
# Short fuzz run of every target in fuzz/ (called by `make test`), after replaying the saved
# regression inputs under fuzz/regressions/<target>/. Needs cargo-fuzz (nightly if present)
# (scripts/deps.sh installs them) and qemu-img/qemu-io for the seed corpora.
#
#   FUZZ_SECONDS   time per target (default 15)
#   FUZZ_TARGETS   targets to run (default: all of `cargo fuzz list`)
#   FUZZ_TOOLCHAIN stable: use stable + RUSTC_BOOTSTRAP=1 even when nightly exists
#
# Exits non-zero when a regression input fails or the fuzzer finds a crash, timeout or
# out-of-memory; the input that triggered it is printed (under fuzz/artifacts/<target>/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${FUZZ_SECONDS:-15}
# Bounds: 10 s per input, 2 GiB RSS, and no single allocation over 512 MiB (a size taken
# from an unchecked field shows up here rather than as a slow OOM).
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512)

# cargo fuzz wants nightly; where only the stable toolchain exists (and none can be fetched),
# stable with RUSTC_BOOTSTRAP=1 builds the same sanitizer-instrumented targets.
# FUZZ_TOOLCHAIN=stable forces the fallback (to test it).
if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  tc=+nightly
else
  tc=+stable
  export RUSTC_BOOTSTRAP=1
  echo "fuzz-smoke: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
fi

fuzz/seed.sh
logs=fuzz/artifacts/logs
mkdir -p "$logs"
targets=${FUZZ_TARGETS:-$(cargo "$tc" fuzz list)}

echo "fuzz-smoke: building targets"
cargo "$tc" fuzz build

failed=()
for t in $targets; do
  regs=()
  if [ -d "fuzz/regressions/$t" ]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "fuzz/regressions/$t" -maxdepth 1 -type f ! -name '.*' -print0 | sort -z)
  fi
  # One run per input, so that every input failing again is named (libFuzzer stops at the
  # first crash).
  bad=0
  for f in "${regs[@]}"; do
    log=$logs/$t.replay-$(basename "$f").log
    if cargo "$tc" fuzz run "$t" "$f" -- "${limits[@]}" >"$log" 2>&1; then
      rm -f "$log"
    else
      grep -aE 'panicked at|ERROR:|SUMMARY:' "$log" | head -n 4
      echo "fuzz-smoke: $t: regression input $f fails again (log: $log)"
      bad=1
    fi
  done
  if [ $bad -ne 0 ]; then
    failed+=("$t(regression)")
    continue
  fi
  [ ${#regs[@]} -eq 0 ] || echo "fuzz-smoke: $t: ${#regs[@]} regression input(s) pass"
  echo "fuzz-smoke: $t: fuzzing for ${secs}s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | sort)
  if ! cargo "$tc" fuzz run "$t" -- "${limits[@]}" -max_total_time="$secs" \
    -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    tail -n 60 "$logs/$t.log"
    new=$(comm -13 <(echo "$before") <(find "fuzz/artifacts/$t" -type f | sort))
    echo "fuzz-smoke: $t: FAILED; artifact(s): ${new:-none (see $logs/$t.log)}"
    failed+=("$t")
  else
    grep -E '^stat::number_of_executed_units' "$logs/$t.log" | sed "s/^/fuzz-smoke: $t: /" || true
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: failures: ${failed[*]}"
  exit 1
fi
echo "fuzz-smoke: all targets clean"
