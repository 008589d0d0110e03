#!/usr/bin/env bash
# Seeds for fuzz target parallels_image: tiny parallels images made by qemu-img/qemu-io
# ("WithouFreSpacExt", BAT in clusters) with data, zeroed and discarded clusters; the same
# turned into the old "WithoutFreeSpace" layout (BAT in sectors); an image left in use; one
# with space leaked at the end. Runs in an empty directory; fills $corpus/parallels_image/.
set -euo pipefail
q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f parallels "$@" >/dev/null; }
le32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($2 & 255)) $((($2 >> 8) & 255)) $((($2 >> 16) & 255)) $((($2 >> 24) & 255)))" |
  dd of="$1" bs=1 seek="$3" conv=notrunc status=none; }

q create -f parallels -o cluster_size=4k p4k.img 64k
io -c 'write -P 0xaa 0 1k' -c 'write -P 0x55 12k 512' -c 'write -P 0x11 40k 4k' -c 'write -z 40k 4k' p4k.img
q create -f parallels -o cluster_size=1k p1k.img 16k
io -c 'write -P 0x22 0 3k' -c 'write -P 0x33 9k 100' -c 'discard 0 1k' p1k.img
q create -f parallels -o cluster_size=1k empty.img 5000
# Old layout: magic "WithoutFreeSpace", BAT entries in sectors (clusters of 2 sectors).
cp p1k.img old.img
printf 'WithoutFreeSpace' | dd of=old.img bs=1 seek=0 conv=notrunc status=none
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  e=$(od -An -tu4 -j $((64 + 4 * i)) -N4 old.img | tr -d ' ')
  le32 old.img $((e * 2)) $((64 + 4 * i))
done
# In use (not closed cleanly), and with space leaked at the end.
cp p4k.img inuse.img
le32 inuse.img $((0x746F6E59)) 44
cp p1k.img leak.img
head -c 3000 /dev/zero | tr '\0' 'z' >>leak.img

mkdir -p "$corpus/parallels_image"
for f in *.img; do cp "$f" "$corpus/parallels_image/seed-$f"; done
