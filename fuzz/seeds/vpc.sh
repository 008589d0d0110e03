#!/usr/bin/env bash
# Seeds for vpc_image: small VHDs (run in an empty directory with $corpus set; fills
# $corpus/vpc_image/). qemu-img's dynamic disks use 2 MiB blocks, so a hand-made dynamic disk
# with 4 KiB blocks (valid checksums, blocks in the BAT) keeps a written image small.
set -euo pipefail
out=$corpus/vpc_image
mkdir -p "$out"
q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f vpc "$@" >/dev/null; }

q create -f vpc empty.vhd 4M
q create -f vpc zero.vhd 0
q create -f vpc -o force_size=on forced.vhd 3M
q create -f vpc -o subformat=fixed fixed.vhd 32k
io -c 'write -P 0x33 1k 2k' fixed.vhd
q create -f vpc written.vhd 4M
io -c 'write -P 0xaa 0 512' -c 'write -P 0x55 2M 4k' written.vhd
for f in empty.vhd zero.vhd forced.vhd fixed.vhd; do cp "$f" "$out/seed-$f"; done
head -c 4096 written.vhd >"$out/seed-cut-written.vhd"

python3 - "$out/seed-small-blocks.vhd" <<'PY'
import struct, sys, time, uuid

def csum(b, at):
    b = bytearray(b)
    b[at:at + 4] = b"\0\0\0\0"
    return (~sum(b)) & 0xffffffff

bs, entries = 4096, 8
size = bs * entries
footer = bytearray(512)
footer[0:8] = b"conectix"
struct.pack_into(">IIQI", footer, 8, 2, 0x10000, 512, int(time.time()) - 946684800)
footer[28:32] = b"qem2"
struct.pack_into(">HH", footer, 32, 5, 3)
footer[36:40] = b"Wi2k"
struct.pack_into(">QQHBBI", footer, 40, size, size, 65535, 16, 255, 3)
footer[68:84] = uuid.uuid4().bytes
struct.pack_into(">I", footer, 64, csum(footer, 64))
dyn = bytearray(1024)
dyn[0:8] = b"cxsparse"
struct.pack_into(">QQIII", dyn, 8, 2**64 - 1, 1536, 0x10000, entries, bs)
struct.pack_into(">I", dyn, 36, csum(dyn, 36))
bat = bytearray(b"\xff" * 512)
blocks = b""
pos = 2048
for i in (0, 3, 5):
    struct.pack_into(">I", bat, 4 * i, pos // 512)
    blocks += b"\xff" * 512 + bytes([0x40 + i]) * bs
    pos += 512 + bs
open(sys.argv[1], "wb").write(bytes(footer) + bytes(dyn) + bytes(bat) + blocks + bytes(footer))
PY
