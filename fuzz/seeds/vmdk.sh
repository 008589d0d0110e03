#!/usr/bin/env bash
# Seeds for vmdk_image and vmdk_descriptor: small images of every vmdk kind the reader
# handles, made by qemu-img/qemu-io where they can be, by hand (printf/dd) where not.
# Runs in an empty directory with $corpus set.
set -euo pipefail
out=$corpus/vmdk_image
dout=$corpus/vmdk_descriptor
mkdir -p "$out" "$dout"
q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f vmdk "$@" >/dev/null; }
le32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
le64() { le32 $(($1 & 0xffffffff)); le32 $((($1 >> 32) & 0xffffffff)); }
# put FILE OFFSET BYTES-FROM-STDIN
put() { dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }

# Monolithic sparse, small: data, a partial grain, zeroed grains.
q create -f vmdk sparse.vmdk 1M
io -c 'write -P 0xaa 0 1k' -c 'write -P 0x55 64k 4k' -c 'write -P 1 960k 64k' sparse.vmdk
q create -f vmdk -o zeroed_grain=on zeroed.vmdk 1M
io -c 'write -P 0x11 0 64k' -c 'write -z 64k 128k' -c 'write -P 2 300k 1k' zeroed.vmdk
q create -f vmdk -o compat6=on,adapter_type=lsilogic compat6.vmdk 512k
# streamOptimized with compressed grains (text and random), and an empty one.
head -c 20000 /dev/urandom >rand.bin
{ printf 'vmdk stream %.0s' $(seq 1 6000); cat rand.bin; } >src.raw
truncate -s 256k src.raw
q convert -O vmdk -o subformat=streamOptimized src.raw stream.vmdk
q create -f vmdk -o subformat=streamOptimized stream-empty.vmdk 128k
# A child with a parent hint (the harness does not open the parent).
q create -f vmdk base.vmdk 1M
q create -f vmdk -b base.vmdk -F vmdk child.vmdk
io -c 'write -P 3 4k 4k' child.vmdk
# Small grains make small files: granularity 8 (4 KiB grains), 16 entries per table.
q create -f vmdk grain.vmdk 256k
printf '\x08' | put grain.vmdk 20
io -c 'write -P 9 0 8k' grain.vmdk 2>/dev/null || true
# Descriptor files (their extents are absent in the fuzzer's directory).
for s in monolithicFlat twoGbMaxExtentFlat twoGbMaxExtentSparse; do
  q create -f vmdk -o subformat=$s desc-$s.vmdk 4M
  cp desc-$s.vmdk "$dout/seed-desc-$s"
done
# A COWD (VMDK3) file: header, directory at sector 4, one table at 8, one grain of 4 KiB.
{ printf 'COWD'; le32 1; le32 3; le32 2048; le32 8; le32 4; le32 1; le32 0; } >cowd.vmdk
truncate -s 2048 cowd.vmdk
le32 8 | put cowd.vmdk 2048
truncate -s $((40 * 512)) cowd.vmdk
le32 40 | put cowd.vmdk 4096
head -c 4096 /dev/urandom >>cowd.vmdk
# The same COWD bytes with a descriptor at 0x200 (QEMU reads the CID from there).
cp cowd.vmdk cowd-cid.vmdk
printf 'CID=1\nparentCID=ffffffff\n' | put cowd-cid.vmdk 512
# A seSparse extent: const header, volatile header, directory, one table, one grain.
{
  le64 0xcafebabe; le64 0x200000001; le64 2048; le64 8; le64 64; le64 0
  le64 0; le64 0; le64 0; le64 0; le64 1; le64 1; le64 0; le64 0; le64 0; le64 0
  le64 2; le64 1; le64 3; le64 64; le64 0; le64 0; le64 0; le64 0; le64 67; le64 8
} >sesparse.vmdk
truncate -s 512 sesparse.vmdk
le64 0xcafecafe | put sesparse.vmdk 512
truncate -s $((67 * 512)) sesparse.vmdk
le64 0x1000000000000000 | put sesparse.vmdk 1024
le64 0x3000000000000000 | put sesparse.vmdk 1536
le64 0x2000000000000000 | put sesparse.vmdk 1544
head -c 4096 /dev/urandom >>sesparse.vmdk
# Flat extents are plain data of the disk's size: not worth fuzzing.
rm -f desc-*-flat.vmdk desc-*-f0*.vmdk
for f in *.vmdk; do cp "$f" "$out/seed-$f"; done
printf 'RW 2048 FLAT "a.raw" 0\nRW 10 SPARSE "x"\nRDONLY 5 ZERO\nRW 1 VMFS "v"\nparentFileNameHint="p.vmdk"\nCID=12\nparentCID=ffffffff\ncreateType="vmfs"\n' >"$dout/seed-lines"
