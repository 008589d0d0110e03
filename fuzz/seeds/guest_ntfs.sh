#!/usr/bin/env bash
# Seeds for guest_ntfs: small NTFS images made by mkntfs and filled by ntfscp (run in an
# empty directory with $corpus set; fills $corpus/guest_ntfs/). ntfscp copies files only
# (no directories: those would need an ntfs-3g FUSE mount, not available everywhere).
set -euo pipefail
out=$corpus/guest_ntfs
mkdir -p "$out"
printf 'small resident file\n' >small.txt
head -c 20000 /dev/urandom >data.bin
: >empty
# 2 MiB with 512-byte clusters, and 4 MiB with the default 4 KiB clusters.
for spec in "2:512" "4:4096"; do
    mib=${spec%%:*}
    cs=${spec##*:}
    img=ntfs-${mib}m.img
    truncate -s "${mib}M" "$img"
    mkntfs -F -f -q -c "$cs" -L SEED "$img" >/dev/null 2>&1
    for f in small.txt data.bin empty; do ntfscp "$img" "$f" "$f" >/dev/null 2>&1; done
    cp "$img" "$out/seed-$img"
done
