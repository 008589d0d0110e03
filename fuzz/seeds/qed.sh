#!/usr/bin/env bash
# Seeds for fuzz target qed_image: tiny qed images made by qemu-img/qemu-io covering data,
# zero and partial clusters, several cluster/table sizes, a backing file name (raw: no
# probing), the need-check flag, a leaked cluster. Runs in an empty directory; fills
# $corpus/qed_image/.
set -euo pipefail
q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f qed "$@" >/dev/null; }
pattern() { io -c 'write -P 0xaa 0 1k' -c 'write -P 0x55 5k 512' -c 'write -z 8k 4k' -c 'write -P 0x11 20k 1536' "$1"; }

q create -f qed -o cluster_size=4k,table_size=2 c4k-t2.qed 64k
pattern c4k-t2.qed
q create -f qed -o cluster_size=4k,table_size=4 c4k-t4.qed 33k
pattern c4k-t4.qed
q create -f qed -o cluster_size=8k,table_size=2 c8k.qed 1M
pattern c8k.qed
q create -f qed -o cluster_size=4k,table_size=2 empty.qed 16k
q create -f raw base.raw 64k
q create -f qed -o cluster_size=4k,table_size=2 -b base.raw -F raw backing-raw.qed
io -c 'write -P 0x33 1k 1k' backing-raw.qed
q create -f qed -o cluster_size=4k,table_size=2 -b c4k-t2.qed -F qed backing-qed.qed
# Need-check flag set (byte 16 holds the feature bits), and a cluster nobody references.
cp c4k-t2.qed need-check.qed
printf '\002' | dd of=need-check.qed bs=1 seek=16 conv=notrunc status=none
head -c 4096 /dev/zero | tr '\0' 'x' >>need-check.qed

mkdir -p "$corpus/qed_image"
for f in *.qed; do cp "$f" "$corpus/qed_image/seed-$f"; done
