#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: only what is missing is fetched.
set -euo pipefail
need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
[ -x /usr/bin/time ] || need+=(time)
# Guest-disk tests build real filesystems, partition tables and LVM volumes.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v mkfs.vfat >/dev/null 2>&1 || need+=(dosfstools)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v xorriso >/dev/null 2>&1 || need+=(xorriso)
command -v sfdisk >/dev/null 2>&1 || need+=(fdisk)
command -v sgdisk >/dev/null 2>&1 || need+=(gdisk)
command -v pvcreate >/dev/null 2>&1 || need+=(lvm2)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
command -v mkfs.ntfs >/dev/null 2>&1 || need+=(ntfs-3g)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# The OCI runtime's tests: a busybox-static rootfs, image layers (zstd), Debian's runc to
# compare with, containerd to drive us, crun for the start-up benchmark.
[ -x /bin/busybox ] || need+=(busybox-static)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
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
# The Debian root the guest inspection tests read (cached under .build/debroot).
"$(dirname "$0")/debroot.sh"
