#!/usr/bin/env bash
# Seeds for the vhdx_image fuzz target (run by fuzz/seed.sh in an empty directory with
# $corpus set). Images are made by qemu-img/qemu-io, then compacted (vhdx.py below) so that
# a seed is a few hundred KiB instead of QEMU's 8 MiB: BAT and metadata regions moved right
# after the region tables, written blocks moved next to the log. Variants: dynamic and fixed,
# several block sizes, block_state_zero on and off, no log, a dirty log (one entry to
# replay), a differencing image (parent locator, partially present block, sector bitmap).
set -euo pipefail
out=$corpus/vhdx_image
mkdir -p "$out"

q() { qemu-img "$@" >/dev/null; }
io() { qemu-io -f vhdx "$@" >/dev/null; }

cat >vhdx.py <<'EOF'
import struct, sys

def crc32c(data, crc=0):
    t = crc32c.table
    crc ^= 0xffffffff
    for b in data:
        crc = t[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff
crc32c.table = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    crc32c.table.append(c)

def seal(buf, at):
    buf[at:at + 4] = b'\0\0\0\0'
    buf[at:at + 4] = struct.pack('<I', crc32c(bytes(buf)))

K64, MIB = 0x10000, 0x100000
BAT_GUID = bytes.fromhex('6677c22d23f600429d64115e9bfd4a08')
MD_GUID = bytes.fromhex('06a27c8b90479a4bb8fe575f050f886e')
LOC_GUID = bytes.fromhex('2d5fd3a80bb34d45abf7d3d84834ab0c')
VHDX_TYPE = bytes.fromhex('b7ef4ab09ed1814ab78925b8e9445913')

def cur_header(b):
    s1 = struct.unpack_from('<Q', b, 0x10008)[0]
    s2 = struct.unpack_from('<Q', b, 0x20008)[0]
    return 0x10000 if s1 > s2 else 0x20000

def set_header(b, **kw):
    for off in (0x10000, 0x20000):
        h = bytearray(b[off:off + 4096])
        if 'log_length' in kw:
            struct.pack_into('<I', h, 68, kw['log_length'])
        if 'log_guid' in kw and off == cur_header(b):
            h[48:64] = kw['log_guid']
        seal(h, 4)
        b[off:off + 4096] = h

def compact(src, dst, keep_log=False, dirty=False, diff=False):
    s = open(src, 'rb').read()
    b = bytearray(s[:5 * K64])
    n = struct.unpack_from('<I', s, 0x30008)[0]
    reg = {}
    for i in range(n):
        e = s[0x30010 + 32 * i:0x30030 + 32 * i]
        reg[e[:16]] = struct.unpack_from('<QI', e, 16)
    bat_off, bat_len = reg[BAT_GUID]
    md_off, md_len = reg[MD_GUID]
    md = bytearray(s[md_off:md_off + K64 + 64])
    bs = struct.unpack_from('<I', md, K64)[0]
    size = struct.unpack_from('<Q', md, K64 + 8)[0]
    blocks = -(-size // bs)
    cr = (1 << 23) * 512 // bs
    nbat = (-(-blocks // cr)) * (cr + 1) if diff else blocks + (blocks - 1) // cr
    bat = bytearray(s[bat_off:bat_off + 8 * nbat])
    new_bat, new_md = 5 * K64, 6 * K64
    log_len = struct.unpack_from('<I', s, cur_header(s) + 68)[0]
    data_at = MIB + (log_len if keep_log or dirty else 0)
    data_at = -(-data_at // MIB) * MIB
    blobs = []
    if diff:
        # The sector bitmap of chunk 0 first: sectors 8..15 of each block are in this file.
        bitmap = bytearray(MIB)
        spb = bs // 512
        for blk in range(blocks):
            bitmap[(blk * spb + 8) // 8] = 0xff
        struct.pack_into('<Q', bat, 8 * cr, data_at | 6)
        blobs.append((data_at, bytes(bitmap)))
        data_at += MIB
    for i in range(len(bat) // 8):
        if i % (cr + 1) == cr:
            continue
        e = struct.unpack_from('<Q', bat, 8 * i)[0]
        if e & 7 == 6:
            blk = i - i // (cr + 1)
            old = e & ~(MIB - 1)
            length = min(bs, size - blk * bs)
            data = s[old:old + length]
            if len(data) == length and any(data) and length <= 64 * 1024:
                blobs.append((data_at, data))
                struct.pack_into('<Q', bat, 8 * i, data_at | (7 if diff else 6))
                data_at += MIB
            else:
                struct.pack_into('<Q', bat, 8 * i, 2)
    if diff:
        struct.pack_into('<I', md, K64 + 4, 2)
        loc = bytearray(20)
        loc[:16] = VHDX_TYPE
        kv = [('parent_linkage', '{00000000-0000-4000-8000-000000000000}'),
              ('relative_path', '.\\parent.vhdx'),
              ('absolute_win32_path', '\\\\?\\C:\\vms\\parent.vhdx')]
        struct.pack_into('<H', loc, 18, len(kv))
        loc += bytes(12 * len(kv))
        for j, (k, v) in enumerate(kv):
            ko = len(loc); loc += k.encode('utf-16-le')
            vo = len(loc); loc += v.encode('utf-16-le')
            struct.pack_into('<IIHH', loc, 20 + 12 * j, ko, vo, 2 * len(k), 2 * len(v))
        cnt = struct.unpack_from('<H', md, 10)[0]
        struct.pack_into('<H', md, 10, cnt + 1)
        e = 32 + 32 * cnt
        md[e:e + 16] = LOC_GUID
        struct.pack_into('<III', md, e + 16, K64 + 64, len(loc), 4)
        md += loc
    rt = bytearray(K64)
    rt[:4] = b'regi'
    struct.pack_into('<I', rt, 8, 2)
    rt[16:32] = BAT_GUID
    struct.pack_into('<QI', rt, 32, new_bat, K64)
    rt[48:64] = MD_GUID
    struct.pack_into('<QI', rt, 64, new_md, 2 * K64)
    seal(rt, 4)
    b[0x30000:0x40000] = rt
    b[0x40000:0x50000] = rt
    if not (keep_log or dirty):
        set_header(b, log_length=0)
    out = bytearray(b) + bytearray(K64)
    out[new_bat:new_bat + len(bat)] = bat
    out += md
    if dirty:
        # The BAT sector holding the first written block goes through the log: on disk the
        # entry is back to ZERO, the log holds the new sector.
        sector = bytes(out[new_bat:new_bat + 4096])
        first = next(i for i in range(len(bat) // 8)
                     if struct.unpack_from('<Q', bat, 8 * i)[0] & 7 == 6)
        struct.pack_into('<Q', out, new_bat + 8 * first, 2)
        guid = bytes(range(16))
        seq = 5
        ent = bytearray(8192)
        ent[:4] = b'loge'
        struct.pack_into('<IIQI', ent, 8, 8192, 0, seq, 1)
        ent[32:48] = guid
        flushed = max(len(out), max((o + len(d) for o, d in blobs), default=0))
        struct.pack_into('<QQ', ent, 48, flushed, flushed)
        ent[64:68] = b'desc'
        ent[68:72] = sector[4092:]
        ent[72:80] = sector[:8]
        struct.pack_into('<QQ', ent, 80, new_bat, seq)
        ent[4096:4100] = b'data'
        struct.pack_into('<I', ent, 4100, seq >> 32)
        ent[4104:8188] = sector[8:4092]
        struct.pack_into('<I', ent, 8188, seq & 0xffffffff)
        seal(ent, 4)
        out += bytes(MIB - len(out)) + ent
        set_header(out, log_guid=guid)
    for off, data in blobs:
        if len(out) < off:
            out += bytes(off - len(out))
        out[off:off + len(data)] = data
    open(dst, 'wb').write(bytes(out))

args = sys.argv[1:]
compact(args[0], args[1], keep_log='log' in args, dirty='dirty' in args, diff='diff' in args)
EOF

# Dynamic, default block size (8 MiB), nothing written.
q create -f vhdx d8.vhdx 16M
python3 vhdx.py d8.vhdx "$out/seed-dyn-8m-empty.vhdx" log
# 1 MiB blocks, a small last block with data, block_state_zero on (written block moved).
q create -f vhdx -o block_size=1M d1.vhdx 2052k
io -c 'write -P 0xaa 2M 2k' -c 'write -P 0x55 2049k 1k' d1.vhdx
python3 vhdx.py d1.vhdx "$out/seed-dyn-1m-data.vhdx"
python3 vhdx.py d1.vhdx "$out/seed-dyn-1m-dirty-log.vhdx" dirty
# block_state_zero off: unwritten blocks NOT_PRESENT.
q create -f vhdx -o block_size=1M,block_state_zero=off,log_size=2M dz.vhdx 1028k
io -c 'write -P 0x11 1M 4k' dz.vhdx
python3 vhdx.py dz.vhdx "$out/seed-dyn-zero-off.vhdx"
# Fixed, 32 MiB blocks (block_state_zero off: every entry present, most moved away).
q create -f vhdx -o subformat=fixed,block_size=32M,block_state_zero=off f32.vhdx 32772k
python3 vhdx.py f32.vhdx "$out/seed-fixed-32m.vhdx"
# 256 MiB blocks (chunk ratio 16), fixed with block_state_zero on.
q create -f vhdx -o subformat=fixed,block_size=256M f256.vhdx 4100M
python3 vhdx.py f256.vhdx "$out/seed-fixed-256m.vhdx"
# Differencing: parent locator, partially present block, sector bitmap.
q create -f vhdx -o block_size=1M df.vhdx 1032k
io -c 'write -P 0x42 1M 8k' df.vhdx
python3 vhdx.py df.vhdx "$out/seed-diff.vhdx" diff
rm -f ./*.vhdx vhdx.py
