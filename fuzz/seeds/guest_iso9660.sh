#!/usr/bin/env bash
# Seeds for guest_iso9660: small ISO images made by xorriso as mkisofs, each with and
# without Rock Ridge and Joliet (run in an empty directory with $corpus set; fills
# $corpus/guest_iso9660/).
set -euo pipefail
out=$corpus/guest_iso9660
mkdir -p "$out"
mkdir -p src/Sub/d2/d3/d4/d5/d6/d7/d8/d9
printf 'hello\n' >src/Hello.txt
: >src/empty
printf 'deep\n' >src/Sub/d2/d3/d4/d5/d6/d7/d8/d9/deep.txt
printf 'long\n' >"src/a name longer than the 8.3 of plain ISO 9660.txt"
ln -s Hello.txt src/link
ln -s /abs/../path src/Sub/abs
mkfifo src/fifo
mk() { xorriso -as mkisofs -quiet -no-pad -V SEED "$@" src; }
mk -R -J -o rj.iso
mk -R -o r.iso
mk --norock -J -o j.iso
mk --norock -iso-level 1 -o plain.iso
xorriso -compliance deep_paths_off -rr_reloc_dir rr_moved -as mkisofs -quiet -no-pad -R \
  -o reloc.iso src >/dev/null 2>&1
for f in *.iso; do cp "$f" "$out/seed-$f"; done
