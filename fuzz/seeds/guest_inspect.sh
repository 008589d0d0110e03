#!/usr/bin/env bash
# Seeds for guest_inspect: the host's own release files, an fstab and a slice of dpkg's
# status (the formats inspection parses). Run with $corpus set; fills $corpus/guest_inspect/.
set -euo pipefail
out=$corpus/guest_inspect
mkdir -p "$out"
for f in /etc/os-release /etc/debian_version /etc/lsb-release /etc/redhat-release; do
  [ -f "$f" ] && cp "$f" "$out/seed-$(basename "$f")"
done
printf 'UUID=0a1b / ext4 errors=remount-ro 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n/dev/vg/x /mnt/a\\040b xfs ro 0 0\n' >"$out/seed-fstab"
printf 'CentOS Linux release 7.9.2009 (Core)\n' >"$out/seed-centos"
head -c 4000 /var/lib/dpkg/status >"$out/seed-dpkg-status" 2>/dev/null || true
