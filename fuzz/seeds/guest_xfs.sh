#!/usr/bin/env bash
# Seeds for guest_xfs: small real XFS filesystems made by mkfs.xfs from a protofile (run in an
# empty directory with $corpus set; fills $corpus/guest_xfs/). One AG, 1 KiB blocks and an
# external log keep every structure the reader uses in the first ~100 KiB; the harness reads
# zeros past the input, so each seed is the image with its trailing zeros cut off.
set -euo pipefail
out=$corpus/guest_xfs
mkdir -p "$out"
# mkfs.xfs refuses filesystems under 300 MiB unless it believes it runs under fstests.
export TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1

mkdir -p src/d
for i in $(seq 1 40); do echo "$i" >"src/d/file-number-$i"; done
head -c 5000 /dev/urandom >src/f
long=$(printf 'x/%.0s' $(seq 1 300))
{
  printf 'seed\n0 0\nd--755 0 0\nd d--755 0 0\n'
  for i in $(seq 1 40); do echo "file-number-$i ---644 0 0 $PWD/src/d/file-number-$i"; done
  printf '$\nsmall d--700 1000 1000\na ---600 1000 1000 %s\n$\n' "$PWD/src/f"
  printf 'f -u-755 0 0 %s\ns l--777 0 0 target\nlong l--777 0 0 %s\n' "$PWD/src/f" "$long"
  printf 'b b--644 0 0 8 1\nc c--644 0 0 300 70000\np p--644 0 0\n$\n'
} >proto

mk() { # name, mkfs options...
  local name=$1
  shift
  truncate -s 16m "$name.img"
  truncate -s 4m "$name.log"
  mkfs.xfs -q -f -b size=1024 -d agcount=1 -l logdev="$name.log" -m reflink=0 "$@" -p proto "$name.img" >/dev/null
  # Extended attributes: short form on /f, a leaf block with a remote value on /d/file-number-1.
  local f a
  f=$(xfs_db -r -l "$name.log" -c 'ls /' "$name.img" | awk '$6 == "f" { print $2 }')
  a=$(xfs_db -r -l "$name.log" -c 'ls /d' "$name.img" | awk '$6 == "file-number-1" { print $2 }')
  # One attr_set per xfs_db run: xfs_db 6.1 sometimes crashes on a second one (1 KiB blocks),
  # and on v4 it crashes after a remote value: leaf attributes on v5 only.
  local set sets=("$f/-u one -v 5" "$f/-s sec -v 3")
  [ "$name" = v5 ] && sets+=("$a/-u big -v 3000" "$a/-u x1 -v 200" "$a/-r x2 -v 200")
  for set in "${sets[@]}"; do
    xfs_db -x -l "$name.log" -c "inode ${set%%/*}" -c "attr_set ${set#*/}" "$name.img" >/dev/null
  done
  perl -0777 -pe 's/\0+\z//' "$name.img" >"$out/seed-$name"
}
mk v5
mk v4 -m crc=0
mk v4-noftype -m crc=0 -n ftype=0
