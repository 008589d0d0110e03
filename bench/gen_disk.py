#!/usr/bin/env python3
"""Deterministic generator for the benchmark disk image.

Writes a sparse raw image of SIZE bytes in which exactly half of every 2 MiB
period holds data and the other half is a hole (never written, so the file
is sparse there):

  * most periods are 1 MiB of data followed by a 1 MiB hole;
  * about one period in seven is "fragmented": its 1 MiB of data is cut into
    2-6 pieces on a 512-byte grid and interleaved with holes of random
    length, so runs and holes start and end at unaligned offsets.

The data itself is a deterministic mix of three kinds, so that compression
benchmarks measure something real (incompressible data alone would make
`convert -c` a pure copy):

  * random  - PRNG bytes (incompressible), ~50% of the data;
  * text    - PRNG bytes mapped onto a skewed text alphabet (~4 bits/byte),
              compresses to roughly 60%;
  * records - log-like lines drawn from a fixed pool, compresses well.

Everything derives from random.Random(SEED), so the same SIZE and SEED give
a byte-identical file on every run and machine.
"""

import argparse
import os
import random
import sys

MiB = 1 << 20
PERIOD = 2 * MiB
HALF = PERIOD // 2
SECTOR = 512


def text_table(rng):
    # 256-entry translation table with an English-ish letter distribution.
    weighted = (
        " " * 40 + "e" * 26 + "t" * 19 + "a" * 17 + "o" * 16 + "i" * 15
        + "n" * 14 + "s" * 13 + "h" * 12 + "r" * 12 + "d" * 9 + "l" * 8
        + "c" * 6 + "u" * 6 + "m" * 5 + "w" * 5 + "f" * 5 + "g" * 4
        + "y" * 4 + "p" * 4 + "b" * 3 + "v" * 2 + "k" * 2 + "\n" * 3
        + ".,;:-'0123456789xjqzETAOIN"
    )
    assert len(weighted) >= 256, len(weighted)
    chars = list(weighted[:256])
    rng.shuffle(chars)
    return bytes.maketrans(bytes(range(256)), "".join(chars).encode("ascii"))


def record_pool(rng, n=4096):
    hosts = ["web%02d" % i for i in range(12)] + ["db%d" % i for i in range(4)]
    verbs = ["GET", "PUT", "POST", "DELETE", "HEAD"]
    paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/login",
             "/metrics", "/healthz", "/images/disk.qcow2", "/var/lib/libvirt"]
    status = [b"200", b"200", b"200", b"201", b"204", b"304", b"404", b"500"]
    pool = []
    for i in range(n):
        line = "%s 2024-%02d-%02dT%02d:%02d:%02d %s %s?id=%d %s %dB %dms\n" % (
            rng.choice(hosts), rng.randint(1, 12), rng.randint(1, 28),
            rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
            rng.choice(verbs), rng.choice(paths), rng.randint(0, 99999),
            rng.choice(status).decode(), rng.randint(0, 1 << 20),
            rng.randint(0, 2000))
        pool.append(line.encode("ascii"))
    return pool


class DataSource:
    def __init__(self, rng):
        self.rng = rng
        self.table = text_table(rng)
        self.pool = record_pool(rng)

    def block(self, n):
        r = self.rng.random()
        if r < 0.5:
            return self.rng.randbytes(n)
        if r < 0.8:
            return self.rng.randbytes(n).translate(self.table)
        out = b"".join(self.rng.choices(self.pool, k=n // 40 + 1))
        return out[:n]


def cuts(rng, total, parts, grid):
    """Split total into `parts` positive lengths, each a multiple of grid."""
    units = total // grid
    points = sorted(rng.sample(range(1, units), parts - 1))
    bounds = [0] + points + [units]
    return [(b - a) * grid for a, b in zip(bounds, bounds[1:])]


def layout(rng, size):
    """Yield (offset, length) of data runs; everything else is a hole."""
    for base in range(0, size - size % PERIOD, PERIOD):
        if rng.random() < 1 / 7:
            k = rng.randint(2, 6)
            pieces = cuts(rng, HALF, k, SECTOR)
            gaps = cuts(rng, HALF, k + 1, SECTOR)
            off = base
            for gap, piece in zip(gaps, pieces):
                off += gap
                yield off, piece
                off += piece
        else:
            yield base, HALF
    tail = size % PERIOD
    if tail:  # odd sizes: data in the first half of the last partial period
        yield size - tail, min(tail, HALF)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, required=True, help="bytes")
    ap.add_argument("--seed", type=int, default=351)
    ap.add_argument("output")
    a = ap.parse_args()
    if a.size % SECTOR:
        sys.exit("size must be a multiple of 512")

    rng = random.Random(a.seed)
    src = DataSource(rng)
    tmp = a.output + ".tmp"
    written = 0
    with open(tmp, "wb") as f:
        f.truncate(a.size)
        for off, n in layout(rng, a.size):
            f.seek(off)
            f.write(src.block(n))
            written += n
    os.replace(tmp, a.output)
    print("%s: %d bytes, %d bytes of data (%.1f%%)"
          % (a.output, a.size, written, 100.0 * written / a.size),
          file=sys.stderr)


if __name__ == "__main__":
    main()
