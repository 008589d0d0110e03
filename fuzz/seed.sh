#!/usr/bin/env bash
# Recreates the seed corpora under fuzz/corpus/<target>/ (gitignored): tiny valid qcow2 images
# made by qemu-img/qemu-io covering each on-disk feature the parsers handle, and size strings.
# Idempotent; files the fuzzer added to the corpora are left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
corpus=$here/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f qcow2 "$@" >/dev/null; }
pattern() { # image: a few clusters of data, a zeroed range, a partial cluster
  io -c 'write -P 0xaa 0 1k' -c 'write -P 0x55 4k 512' -c 'write -z 8k 4k' \
    -c 'write -P 0x11 64k 1536' "$1"
}

# v2 (compat 0.10), 512-byte clusters.
q create -f qcow2 -o compat=0.10,cluster_size=512 v2-512.qcow2 1M
pattern v2-512.qcow2
# v3, 512-byte clusters, 1-bit and 64-bit refcounts, lazy refcounts.
q create -f qcow2 -o compat=1.1,cluster_size=512,refcount_bits=1 v3-512-rc1.qcow2 1M
pattern v3-512-rc1.qcow2
q create -f qcow2 -o cluster_size=512,refcount_bits=64,lazy_refcounts=on v3-512-rc64.qcow2 1M
pattern v3-512-rc64.qcow2
# v3, 4 KiB clusters, zlib- and zstd-compressed clusters (convert -c).
head -c 16384 /dev/urandom >rand.raw
{ head -c 8192 /dev/zero | tr '\0' 'a'; head -c 4096 rand.raw; head -c 8192 /dev/zero; } >src.raw
truncate -s 64k src.raw
q convert -c -O qcow2 -o cluster_size=4096 src.raw zlib-4k.qcow2
q convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd src.raw zstd-4k.qcow2
q convert -c -O qcow2 -o cluster_size=512,compat=0.10 src.raw zlib-512-v2.qcow2
# Extended L2 entries (subclusters) need clusters of at least 16 KiB.
q create -f qcow2 -o cluster_size=16k,extended_l2=on extl2-16k.qcow2 256k
io -c 'write -P 0xaa 0 512' -c 'write -P 0x55 1536 1k' -c 'write -z 16k 2k' -c 'write -P 1 40k 16k' \
  extl2-16k.qcow2
# Internal snapshot, with data changed after it.
q create -f qcow2 -o cluster_size=512 snap-512.qcow2 1M
pattern snap-512.qcow2
q snapshot -c snap1 snap-512.qcow2
io -c 'write -P 0x77 0 2k' snap-512.qcow2
q snapshot -c snap2 snap-512.qcow2
# Backing file name and format extension (v3 and v2).
q create -f raw base.raw 1M
q create -f qcow2 -o cluster_size=512 -b base.raw -F raw backing-512.qcow2 1M
io -c 'write -P 0x33 1k 1k' backing-512.qcow2
q create -f qcow2 -o cluster_size=512,compat=0.10 -b base.raw -F raw backing-v2.qcow2 1M
# Persistent dirty bitmap (bitmaps extension and directory).
q create -f qcow2 -o cluster_size=512 bitmap-512.qcow2 1M
q bitmap --add -g 64k bitmap-512.qcow2 bm0
q bitmap --add -g 4k --disable bitmap-512.qcow2 bm1
io -c 'write -P 0x44 0 1k' bitmap-512.qcow2 2>/dev/null || true
q bitmap --add bitmap-512.qcow2 bm2
# Dirty bit set (lazy refcounts after a crash: a writable open repairs first), and the
# corrupt bit set (read-only opens only). The incompatible-features field ends at byte 79.
cp v3-512-rc64.qcow2 dirty-512.qcow2
printf '\001' | dd of=dirty-512.qcow2 bs=1 seek=79 conv=notrunc status=none
cp v3-512-rc1.qcow2 corrupt-512.qcow2
printf '\002' | dd of=corrupt-512.qcow2 bs=1 seek=79 conv=notrunc status=none
# Empty images: nothing allocated.
q create -f qcow2 -o cluster_size=512 empty-512.qcow2 1M
q create -f qcow2 -o cluster_size=4096 empty-4k.qcow2 0

for t in qcow2_header qcow2_image qcow2_write; do
  mkdir -p "$corpus/$t"
  for f in *.qcow2; do cp "$f" "$corpus/$t/seed-$f"; done
done
mkdir -p "$corpus/size_parse"
i=0
for s in 0 512 1G 64k 1.5M 2T 8E 1P 0.5k .5M 18446744073709551615 16E 1.K " 3 " 1b 99999999999E; do
  printf '%s' "$s" >"$corpus/size_parse/seed-$i"
  i=$((i + 1))
done

# Per-format seed scripts (fuzz/seeds/<format>.sh), each run in its own empty directory with
# $corpus set; each fills $corpus/<format>_image/.
for s in "$here"/seeds/*.sh; do
  [ -e "$s" ] || continue
  d=$(mktemp -d -p "$tmp")
  (cd "$d" && corpus=$corpus bash "$s")
done
