#!/usr/bin/env bash
# e. convert raw -> each format and back (issue 3), same 2 GiB half-random input as
# convert.sh. Goals: virtkit no slower than qemu-img for every pair; streamOptimized vmdk
# (compressed) at least 1.8x faster.
#   BENCH_FORMATS  space-separated list of FMT[:subformat] (default: all writable formats)
set -euo pipefail
BENCH_N=${BENCH_N:-3}
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_banner
ensure_disk_raw
RAW=$(disk_raw)
warm "$RAW"
FORMATS=${BENCH_FORMATS:-"vmdk vmdk:monolithicFlat vmdk:streamOptimized vdi vpc vpc:fixed vhdx vhdx:fixed qed parallels"}

# The same image in FMT, made by the reference qemu-img and cached like the other inputs, in a
# directory of its own (descriptor subformats put their extents next to the descriptor).
ensure_fmt() { # fmt sub -> path
  local fmt=$1 sub=$2 d
  d="$BENCH_DIR/inputs/disk-$BENCH_SIZE-s$BENCH_SEED-v$GEN_VERSION.$fmt${sub:+-$sub}.d"
  if [ ! -d "$d" ]; then
    log "converting to $d with the reference qemu-img"
    rm -rf "$d.tmp" && mkdir -p "$d.tmp"
    "${QEMU[@]}" convert -f raw -O "$fmt" ${sub:+-o "subformat=$sub"} "$RAW" "$d.tmp/disk.$fmt" >&2
    mv "$d.tmp" "$d"
  fi
  echo "$d/disk.$fmt"
}

bench_header "e. convert between raw and every format, $BENCH_SIZE half data (best of $BENCH_N)"
ids=()
for spec in $FORMATS; do
  fmt=${spec%%:*}
  sub=""
  [ "$spec" != "$fmt" ] && sub=${spec#*:}
  tag=$fmt${sub:+-$sub}
  opts=()
  [ -n "$sub" ] && opts=(-o "subformat=$sub")
  vf="verify_to_${tag//[^a-zA-Z0-9_]/_}"
  eval "$vf() { verify_compare raw \"$RAW\" $fmt \"\$1\"; }"
  bench_convert "fmt.raw2$tag" "raw->$tag" "$tag" "$vf" -- \
    convert -f raw -O "$fmt" "${opts[@]}" "$RAW" @OUT@
  ids+=("raw2$tag")
  src=$(ensure_fmt "$fmt" "$sub")
  warm "$src"
  vb="verify_from_${tag//[^a-zA-Z0-9_]/_}"
  eval "$vb() { verify_compare raw \"$RAW\" raw \"\$1\"; }"
  bench_convert "fmt.${tag}2raw" "$tag->raw" raw "$vb" -- \
    convert -f "$fmt" -O raw "$src" @OUT@
  ids+=("${tag}2raw")
done
for id in "${ids[@]}"; do
  if [ "$id" = raw2vmdk-streamOptimized ]; then
    goal_faster "fmt.$id" "e. convert ${id/2/->} (goal 1.8x)" 1.8
  else
    goal_faster "fmt.$id" "e. convert ${id/2/->}" 1
  fi
done
print_goals
