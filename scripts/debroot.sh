#!/usr/bin/env bash
# A minimal Debian root (debootstrap --variant=minbase), cached under .build/debroot, for the
# guest inspection tests (virt-inspector, guestfish -i). Built once per machine (~1-2 min,
# ~50 MB download from the Debian mirror apt uses); reused while it exists.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.build/debroot
[ -f "$dest/etc/os-release" ] && exit 0
command -v debootstrap >/dev/null || { echo "debroot: debootstrap missing (scripts/deps.sh)" >&2; exit 1; }
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
suite=${DEBROOT_SUITE:-bookworm}
rm -rf "$dest.tmp"
mkdir -p "$root/.build"
echo "debroot: debootstrap $suite from $mirror into $dest"
debootstrap --variant=minbase "$suite" "$dest.tmp" "$mirror" >"$root/.build/debroot.log" 2>&1 \
  || { tail -20 "$root/.build/debroot.log" >&2; exit 1; }
# Inspection reads a hostname and an fstab, as on an installed system.
echo virtkit-test >"$dest.tmp/etc/hostname"
rm -rf "$dest.tmp/var/cache/apt/archives/"*.deb
mv "$dest.tmp" "$dest"
