#!/usr/bin/env bash
# b. convert -c (compressed qcow2) with zlib and with zstd.
# Goals: virtkit >= 1.8x as fast as qemu-img; output at most 2% larger.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

verify_zstd() {
  verify_qcow2_of_raw "$1" || return 1
  if ! "${QEMU[@]}" info --output=json "$1" | grep -q '"compression-type": "zstd"'; then
    echo "output is not a zstd-compressed qcow2"
    return 1
  fi
}

bench_banner
ensure_disk_raw
RAW=$(disk_raw)
warm "$RAW"

bench_header "b. convert -c, $BENCH_SIZE image (best of $BENCH_N; out MiB = output file size qemu-img / virtkit)"
bench_convert compress.zlib "convert -c zlib" qcow2 verify_qcow2_of_raw -- \
  convert -c -f raw -O qcow2 "$RAW" @OUT@
bench_convert compress.zstd "convert -c zstd" qcow2 verify_zstd -- \
  convert -c -f raw -O qcow2 -o compression_type=zstd "$RAW" @OUT@

goal_faster compress.zlib "b. convert -c zlib time" 1.8
goal_size compress.zlib "b. convert -c zlib size" 2
goal_faster compress.zstd "b. convert -c zstd time" 1.8
goal_size compress.zstd "b. convert -c zstd size" 2
print_goals
