#!/usr/bin/env bash
# c. info and check on a 1 TiB sparse qcow2 with 100 internal snapshots.
# Goal: virtkit no slower than qemu-img. These commands take milliseconds:
# each tool runs BENCH_N x BENCH_REPS times, interleaved, fastest one counts.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_banner
ensure_snap_qcow2
SNAP=$(snap_qcow2)
warm "$SNAP"

bench_header "c. 1 TiB qcow2, $BENCH_SNAPSHOTS snapshots (fastest of $BENCH_N x $BENCH_REPS invocations)"
bench_fast snap.info "info" -- info "$SNAP"
bench_fast snap.check "check" -- check "$SNAP"
bench_fast snap.json "info --output=json" -- info --output=json "$SNAP"
bench_fast snap.list "snapshot -l" -- snapshot -l "$SNAP"

goal_faster snap.info "c. info, $BENCH_SNAPSHOTS snapshots" 1
goal_faster snap.check "c. check, $BENCH_SNAPSHOTS snapshots" 1
print_goals
