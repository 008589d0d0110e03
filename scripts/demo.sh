#!/usr/bin/env bash
# `make demo`: a walk through the LPIC-3 topic 351.5 disk-image workflow
# (raw and qcow2 images, backing chains, snapshots, compression, checks), then a guest
# disk read without an appliance (virt-filesystems, virt-inspector, virt-ls, virt-cat,
# guestfish), using only virtkit on generated data, in a temporary directory.
#
#   VIRTKIT=path/to/virtkit scripts/demo.sh   (default: target/release/virtkit)
#
# Every image command runs as "$VIRTKIT img ...", which behaves like qemu-img.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VIRTKIT=${VIRTKIT:-$root/target/release/virtkit}
case $VIRTKIT in
  /*) ;;
  */*) VIRTKIT=$PWD/$VIRTKIT ;;
  *) VIRTKIT=$(command -v "$VIRTKIT" || echo "$VIRTKIT") ;;
esac
if [ ! -x "$VIRTKIT" ]; then
  echo "demo: $VIRTKIT not found or not executable (cargo build --release?)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/virtkit-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'; else bold='' dim='' off=''; fi
step=0

# explain TEXT: a numbered one-line lesson for the next command.
explain() {
  step=$((step + 1))
  printf '\n%s%2d. %s%s\n' "$bold" "$step" "$*" "$off"
}

# vk ARGS...: show and run "virtkit img ARGS"; any failure ends the demo.
vk() {
  local rc=0
  printf '%s$ virtkit img %s%s\n' "$dim" "$*" "$off"
  "$VIRTKIT" img "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "demo: 'virtkit img $*' failed with exit status $rc" >&2
    exit "$rc"
  fi
}

# vk_expect STATUS WHY ARGS...: a command whose non-zero exit is the lesson.
vk_expect() {
  local want=$1 why=$2 rc=0
  shift 2
  printf '%s$ virtkit img %s%s\n' "$dim" "$*" "$off"
  "$VIRTKIT" img "$@" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "demo: 'virtkit img $*' exited $rc, expected $want" >&2
    exit 1
  fi
  echo "[exit status $rc: $why]"
}

# Deterministic test data (seeded PRNG), so every run prints the same maps.
# base.raw, 8 MiB: 0-1M text, 1-2M random, 4-5M text, the rest holes.
# modified.raw: base.raw with 64 KiB rewritten at 1.25M and 128 KiB of new
# data in the hole at 6M.
python3 - <<'EOF'
import random
rng = random.Random(3515)
M = 1 << 20
def text(tag, n):
    lines = b"".join(b"LPIC-3 351.5 %s disk, line %06d\n" % (tag, i) for i in range(n // 30 + 1))
    return lines[:n]
with open("base.raw", "wb") as f:
    f.truncate(8 * M)
    f.write(text(b"base", M))
    f.write(rng.randbytes(M))
    f.seek(4 * M)
    f.write(text(b"base", M))
with open("base.raw", "rb") as f, open("modified.raw", "wb") as g:
    g.truncate(8 * M)
    for off in (0, M, 4 * M):
        f.seek(off); g.seek(off); g.write(f.read(M))
    g.seek(M + M // 4)
    g.write(text(b"MODIFIED", 64 * 1024))
    g.seek(6 * M)
    g.write(rng.randbytes(128 * 1024))
EOF

echo "virtkit: $VIRTKIT"
echo "work dir: $work (removed at exit)"
echo "Generated base.raw (8 MiB: text, random data, holes) and modified.raw (two changes)."

explain "A raw image is a plain byte-for-byte file; info shows its virtual size and the (smaller) space a sparse file really uses."
vk info -f raw base.raw

explain "convert -O qcow2 turns the raw disk into a qcow2 base image; holes are simply not allocated."
vk convert -f raw -O qcow2 base.raw base.qcow2

explain "info on qcow2 shows format-specific details: cluster size, compat level, refcount bits."
vk info base.qcow2

explain "create -b/-F makes an empty copy-on-write overlay; the size comes from the backing file."
vk create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2

explain "map of the fresh overlay: every allocated range is still read from base.qcow2."
vk map overlay.qcow2

explain "convert -B writes modified.raw as a qcow2 backed by base.qcow2 (re-creating overlay.qcow2; -n would reuse it)."
vk convert -f raw -O qcow2 -B base.qcow2 -F qcow2 modified.raw overlay.qcow2

explain "info --backing-chain walks overlay -> base and shows every layer."
vk info --backing-chain overlay.qcow2

explain "map now finds data at depth 0 (the overlay): a raw source has no allocation info, so all its data, and its holes as zero clusters, land in the overlay; -B stores only differences when the source is itself an overlay."
vk map --output=json overlay.qcow2

explain "snapshot -c stores an internal snapshot inside the qcow2 file; -l lists them."
vk snapshot -c before-upgrade overlay.qcow2
vk snapshot -l overlay.qcow2

explain "convert -c flattens the chain into one standalone, compressed qcow2 (-o compression_type=zstd selects zstd); snapshots are not copied."
vk convert -c -f qcow2 -O qcow2 overlay.qcow2 standalone.qcow2
vk info standalone.qcow2

explain "check verifies qcow2 metadata (refcounts, L1/L2 tables) and reports allocation and compression."
vk check standalone.qcow2

explain "compare checks guest-visible content across formats and chains: the overlay equals modified.raw."
vk compare -f qcow2 -F raw overlay.qcow2 modified.raw

explain "compare of base against modified reports the first difference and exits 1."
vk_expect 1 "the images differ, as expected" compare -f qcow2 -F raw base.qcow2 modified.raw

explain "info --output=json gives machine-readable output for scripts."
vk info --output=json standalone.qcow2

# Guest disks (LPIC-3 351.1/351.5: inspecting a guest's disk without booting it), on a small
# Linux-like tree made with mkfs.ext4 -d in an MBR partition, read as qcow2.
# vg TOOL ARGS...: show and run "virtkit guest TOOL ARGS" (the virt-TOOL link does the same).
vg() {
  local rc=0
  printf '%s$ virtkit guest %s%s\n' "$dim" "$*" "$off"
  "$VIRTKIT" guest "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "demo: 'virtkit guest $*' failed with exit status $rc" >&2
    exit "$rc"
  fi
}
if command -v mkfs.ext4 >/dev/null && command -v sfdisk >/dev/null; then
  mkdir -p tree/etc tree/bin tree/var/log
  printf 'PRETTY_NAME="Demo Linux 1.0"\nNAME="Demo"\nID=debian\nVERSION_ID="12"\n' >tree/etc/os-release
  printf 'demo-guest\n' >tree/etc/hostname
  printf 'LABEL=demoroot / ext4 defaults 0 1\n' >tree/etc/fstab
  cp "$(command -v ls)" tree/bin/ls
  printf 'boot ok\n' >tree/var/log/boot.log
  mkfs.ext4 -q -F -L demoroot -d tree root.ext4 16M >/dev/null
  truncate -s 20M guest.raw
  printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q guest.raw >/dev/null
  dd if=root.ext4 of=guest.raw bs=1M seek=1 conv=notrunc status=none
  "$VIRTKIT" img convert -f raw -O qcow2 guest.raw guest.qcow2

  explain "virt-filesystems lists partitions and filesystems with their types, labels and sizes, read in-process (no appliance VM)."
  vg filesystems -a guest.qcow2 --all --long -h
  explain "virt-inspector finds the root filesystem and reports distro, version, architecture and hostname as XML."
  vg inspector -a guest.qcow2 --no-applications
  explain "virt-ls and virt-cat mount the guest as its fstab says (LABEL=demoroot) and read files."
  vg ls -a guest.qcow2 -l /etc
  vg cat -a guest.qcow2 /var/log/boot.log
  explain "guestfish --ro runs a script of read commands against the same disk."
  printf '%s$ printf "run\\nlist-filesystems\\nmount-ro /dev/sda1 /\\nis-file /etc/hostname\\n" | virtkit guest guestfish --ro -a guest.qcow2%s\n' "$dim" "$off"
  printf 'run\nlist-filesystems\nmount-ro /dev/sda1 /\nis-file /etc/hostname\n' | "$VIRTKIT" guest guestfish --ro -a guest.qcow2
fi

printf '\n%sDemo complete: %d steps.%s\n' "$bold" "$step" "$off"
