#!/usr/bin/env bash
# Seeds for guest_ext4: tiny ext2/3/4 filesystems made by mke2fs -d and debugfs (run in an
# empty directory with $corpus set; fills $corpus/guest_ext4/). Each covers a layout the
# reader handles: block maps, extents (with an extent block), inline data, htree, xattrs,
# 1 KiB blocks, metadata_csum, a journal.
set -euo pipefail
out=$corpus/guest_ext4
mkdir -p "$out"
mkdir -p src/d/e
printf 'hello\n' >src/small
head -c 3000 /dev/urandom >src/d/e/mid
for i in $(seq 0 7); do printf 'x' | dd of=src/frag bs=1 seek=$((i * 8192)) conv=notrunc status=none; done
for i in $(seq 1 120); do : >"src/d/name-$i"; done
ln -s small src/fast
ln -s "/$(printf 'y%.0s' $(seq 1 80))" src/slow
ln src/small src/d/hard
mkfifo src/fifo
mk() { # name size options...
  local n=$1 s=$2
  shift 2
  mke2fs -q -F -N 160 "$@" -d src "$n.img" "$s" >/dev/null
  debugfs -w -R "ea_set /small user.k value" "$n.img" >/dev/null 2>&1 || true
  cp "$n.img" "$out/seed-$n"
}
mk ext2-1k 200k -t ext2 -b 1024
mk ext4-1k 200k -t ext4 -b 1024 -O ^has_journal
mk ext4-nocsum 200k -t ext4 -b 1024 -O ^has_journal,^metadata_csum,^64bit -I 128
mk ext4-inline 200k -t ext4 -b 1024 -O ^has_journal,inline_data
mk ext3-1k 2500k -t ext3 -b 1024 -J size=1
# A journal holding committed transactions (needs a loop mount; skipped without one).
mkdir -p mnt
if mount -o loop,commit=60 ext3-1k.img mnt 2>/dev/null; then
  mkdir mnt/new && printf 'journaled\n' >mnt/new/f && rm mnt/small
  sync mnt/new/f && cp ext3-1k.img "$out/seed-ext3-dirty"
  umount mnt
fi
e2fsck -fyD ext4-1k.img >/dev/null 2>&1 || true
cp ext4-1k.img "$out/seed-ext4-1k-htree"
