#!/usr/bin/env bash
# f. Guest disks (issue 4): virt-cat of one file, virt-ls -R of the whole root and
# virt-inspector on a Debian root (debootstrap minbase, scripts/debroot.sh) in an MBR disk.
# Goals: virt-cat under 20 ms; virt-ls -R and virt-inspector under 100 ms each (wall time,
# best of BENCH_N x BENCH_REPS runs, peak RSS of one run). Where libguestfs-tools is
# installed (apt-get install libguestfs-tools; here it needs
# LIBGUESTFS_BACKEND_SETTINGS=force_tcg), the same commands run through it once each and the
# ratio is printed.
#   VK_BIN   virtkit binary (default target/release/virtkit)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VK_BIN=${VK_BIN:-target/release/virtkit}
[ -x "$VK_BIN" ] || die "virtkit binary not found: $VK_BIN (cargo build --release?)"
bench_banner

ensure_debian_disk() {
  local f=$BENCH_DIR/inputs/debian-v1.raw root=.build/debroot tmp
  if [ ! -f "$f" ]; then
    scripts/debroot.sh >&2
    log "building $f from $root"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/vk-bench-deb.XXXXXX")
    mkfs.ext4 -q -F -L debroot -d "$root" "$tmp/root.ext4" 400M >&2
    truncate -s 402M "$tmp/disk.raw"
    printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q "$tmp/disk.raw"
    dd if="$tmp/root.ext4" of="$tmp/disk.raw" bs=1M seek=1 conv=notrunc status=none
    mv "$tmp/disk.raw" "$f"
    rm -rf "$tmp"
  fi
  echo "$f"
}

DISK=$(ensure_debian_disk)
warm "$DISK"

# best_ms CMD...: the fastest of BENCH_N x BENCH_REPS runs, in milliseconds (3 decimals).
best_ms() {
  local best="" i t0 t1 us
  for ((i = 0; i < BENCH_N * BENCH_REPS; i++)); do
    t0=${EPOCHREALTIME/./}
    "$@" >/dev/null 2>&1 || { echo "ERR"; return; }
    t1=${EPOCHREALTIME/./}
    us=$((t1 - t0))
    if [ -z "$best" ] || [ "$us" -lt "$best" ]; then best=$us; fi
  done
  awk -v u="$best" 'BEGIN { printf "%.3f", u / 1000 }'
}

rss_mib() {
  /usr/bin/time -f '%M' -o "$BENCH_TMP/rss" "$@" >/dev/null 2>&1 || true
  awk '{ printf "%.1f", $1 / 1024 }' "$BENCH_TMP/rss"
}

# The real libguestfs tools, if installed (and not virtkit links).
lg() { # tool -> path or empty
  local p=/usr/bin/$1
  if [ -x "$p" ] && ! "$p" --version 2>/dev/null | grep -q virtkit; then echo "$p"; fi
}

echo
echo "== f. guest disks without an appliance (Debian minbase root, $(du -h --apparent-size "$DISK" | cut -f1) disk)"
printf '%-34s %12s %12s %10s %9s\n' BENCHMARK "VIRTKIT ms" "LIBGUESTFS ms" RATIO "VK MiB"
run_case() { # id label goal_ms tool args...
  local id=$1 label=$2 goal_ms=$3 tool=$4 v l r rss
  shift 4
  v=$(best_ms "$VK_BIN" guest "${tool#virt-}" "$@")
  rss=$(rss_mib "$VK_BIN" guest "${tool#virt-}" "$@")
  l="-" r="-"
  if [ -n "$(lg "$tool")" ]; then
    t0=${EPOCHREALTIME/./}
    if LIBGUESTFS_BACKEND_SETTINGS=force_tcg "$(lg "$tool")" "$@" >/dev/null 2>&1; then
      t1=${EPOCHREALTIME/./}
      l=$(awk -v u=$((t1 - t0)) 'BEGIN { printf "%.1f", u / 1000 }')
      r=$(awk -v l="$l" -v v="$v" 'BEGIN { printf "%.0fx", l / v }')
    else
      l="failed"
    fi
  fi
  printf '%-34s %12s %12s %10s %9s\n' "$label" "$v" "$l" "$r" "$rss"
  if [ "$v" = ERR ]; then
    goal ERROR "f. $label: virtkit failed"
  else
    goal "$(awk -v v="$v" -v g="$goal_ms" 'BEGIN { print (v < g) ? "PASS" : "FAIL" }')" \
      "f. $label: virtkit $v ms (goal < $goal_ms ms)$([ "$l" = - ] || echo ", libguestfs $l ms, ratio $r")"
  fi
}
run_case cat "virt-cat /etc/os-release" 20 virt-cat -a "$DISK" /etc/os-release
run_case lsR "virt-ls -R /" 100 virt-ls -a "$DISK" -R /
run_case insp "virt-inspector" 100 virt-inspector -a "$DISK"
[ -n "$(lg virt-cat)" ] || echo "(libguestfs-tools not installed: no libguestfs column)"
print_goals
