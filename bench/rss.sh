#!/usr/bin/env bash
# d. Peak RSS of virtkit convert (raw->qcow2, qcow2->raw, -c zlib, -c zstd).
# Goal: at most 64 MiB each. Under run.sh the numbers measured by convert.sh
# and compress.sh are reused; run alone, each convert runs once per tool.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_banner

# id, label, then the bench_convert arguments for a fresh measurement.
rss_row() {
  local id=$1 label=$2
  if load_result "$id" qemu && load_result "$id" vk; then
    size_note "$id"
    NOTE[$id]="measured above${NOTE[$id]:+; ${NOTE[$id]}}"
    print_row "$id" "$label"
    return
  fi
  shift 2
  BENCH_N=1 bench_convert "$id" "$label" "$@"
}

bench_header "d. peak RSS of convert (MiB columns; times from a single run)"
ensure_disk_raw
RAW=$(disk_raw)
rss_row convert.raw2qcow2 "convert raw->qcow2" qcow2 "" -- convert -f raw -O qcow2 "$RAW" @OUT@
ensure_disk_qcow2
rss_row convert.qcow22raw "convert qcow2->raw" raw "" -- convert -f qcow2 -O raw "$(disk_qcow2)" @OUT@
rss_row compress.zlib "convert -c zlib" qcow2 "" -- convert -c -f raw -O qcow2 "$RAW" @OUT@
rss_row compress.zstd "convert -c zstd" qcow2 "" -- \
  convert -c -f raw -O qcow2 -o compression_type=zstd "$RAW" @OUT@

goal_rss convert.raw2qcow2 "d. RSS convert raw->qcow2" 64
goal_rss convert.qcow22raw "d. RSS convert qcow2->raw" 64
goal_rss compress.zlib "d. RSS convert -c zlib" 64
goal_rss compress.zstd "d. RSS convert -c zstd" 64
print_goals
