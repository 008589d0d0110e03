#!/usr/bin/env bash
# a. convert raw->qcow2 and qcow2->raw of a sparse, half-filled image.
# Goal: virtkit no slower than qemu-img.
set -euo pipefail
# These runs take well under a second each, so take the best of 5 by default.
BENCH_N=${BENCH_N:-5}
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_banner
ensure_disk_raw
ensure_disk_qcow2
RAW=$(disk_raw)
QCOW2=$(disk_qcow2)
warm "$RAW" "$QCOW2"

bench_header "a. convert, $BENCH_SIZE image, half data in 1 MiB runs + unaligned fragments (best of $BENCH_N)"
bench_convert convert.raw2qcow2 "convert raw->qcow2" qcow2 verify_qcow2_of_raw -- \
  convert -f raw -O qcow2 "$RAW" @OUT@
bench_convert convert.qcow22raw "convert qcow2->raw" raw verify_raw_of_qcow2 -- \
  convert -f qcow2 -O raw "$QCOW2" @OUT@

goal_faster convert.raw2qcow2 "a. convert raw->qcow2" 1
goal_faster convert.qcow22raw "a. convert qcow2->raw" 1
print_goals
