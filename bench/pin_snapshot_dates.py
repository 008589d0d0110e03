#!/usr/bin/env python3
"""Overwrite the creation dates of all internal snapshots of a qcow2 image.

`qemu-img snapshot -c` stamps each snapshot with the wall-clock time, which is
the only non-deterministic byte in the generated benchmark image.  This sets
snapshot i (0-based, table order) to EPOCH + i * STEP seconds, nsec 0, so the
image is byte-identical from run to run.  The snapshot table carries no
checksum, so an in-place patch of the two date fields is all that is needed.
"""

import struct
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: pin_snapshot_dates.py IMAGE EPOCH STEP")
    path, epoch, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, "r+b") as f:
        hdr = f.read(72)
        if hdr[:4] != b"QFI\xfb":
            sys.exit("%s: not a qcow2 image" % path)
        nb, off = struct.unpack(">IQ", hdr[60:72])
        for i in range(nb):
            f.seek(off)
            ent = f.read(40)
            id_len, name_len = struct.unpack(">HH", ent[12:16])
            extra = struct.unpack(">I", ent[36:40])[0]
            f.seek(off + 16)
            f.write(struct.pack(">II", epoch + i * step, 0))
            size = 40 + extra + id_len + name_len
            off += (size + 7) & ~7


if __name__ == "__main__":
    main()
