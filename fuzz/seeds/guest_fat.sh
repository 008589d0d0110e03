#!/usr/bin/env bash
# Seeds for guest_fat: small vfat images made by mkfs.vfat and filled by mtools (run in an
# empty directory with $corpus set; fills $corpus/guest_fat/).
set -euo pipefail
out=$corpus/guest_fat
mkdir -p "$out"
export MTOOLS_SKIP_CHECK=1
mkdir -p src/Sub/deeper
printf 'mixed case\n' >src/Readme.txt
printf 'nt case bits\n' >src/lower.txt
printf 'upper\n' >src/UPPER.TXT
: >src/empty
printf 'x' >"src/Sub/a name long enough for two LFN slots.data"
head -c 3000 /dev/urandom >src/Sub/deeper/data.bin
fill() { mcopy -s -m -i "$1" src/* ::/; }
# FAT12 of 64 and 128 KiB (1 and 4 sectors per cluster), with a volume label.
mkfs.vfat -n SEED12 -r 64 -C fat12-64k.img 64 >/dev/null
fill fat12-64k.img
mkfs.vfat -s 4 -r 64 -C fat12-128k.img 128 >/dev/null
fill fat12-128k.img
mlabel -i fat12-128k.img ::ROOTLABEL
# FAT32 layout on 1 MiB (fewer clusters than the spec wants; Linux and our reader go by
# the layout, mtools by the count, so it stays empty but for its label).
mkfs.vfat -F 32 -s 1 -n SEED32 -C fat32-1m.img 1024 >/dev/null 2>&1
# FAT16 needs 4085 clusters: 2.1 MiB with 512-byte clusters.
mkfs.vfat -F 16 -s 1 -C fat16.img 2100 >/dev/null
fill fat16.img
for f in *.img; do cp "$f" "$out/seed-$f"; done
