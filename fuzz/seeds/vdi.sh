#!/usr/bin/env bash
# Seeds for vdi_image: small vdi images made by qemu-img/qemu-io (run in an empty directory
# with $corpus set; fills $corpus/vdi_image/).
set -euo pipefail
out=$corpus/vdi_image
mkdir -p "$out"
q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f vdi "$@" >/dev/null; }

q create -f vdi empty.vdi 4M
q create -f vdi zero.vdi 0
q create -f vdi odd.vdi 1000
q create -f vdi written.vdi 4M
io -c 'write -P 0xaa 0 512' -c 'write -P 0x55 3M 4k' written.vdi
q create -f vdi -o static=on static-written.vdi 1M
io -c 'write -P 0x11 4k 4k' static-written.vdi
for f in empty.vdi zero.vdi odd.vdi; do cp "$f" "$out/seed-$f"; done
# The written ones (1 MiB per block) cut after the block map (entries past the end) and
# inside the first data block, to keep the inputs small.
head -c 2048 written.vdi >"$out/seed-cut-map.vdi"
head -c 8192 written.vdi >"$out/seed-cut-block.vdi"
head -c 8192 static-written.vdi >"$out/seed-cut-static.vdi"
