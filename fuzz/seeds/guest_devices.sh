#!/usr/bin/env bash
# Seeds for guest_partitions, guest_lvm and guest_probe: tiny partition tables (sfdisk,
# sgdisk), LVM2 PV heads and metadata texts (pvcreate/vgcreate/lvcreate on loop devices,
# without device-mapper), and filesystem heads (mkfs.*). Run in an empty directory with
# $corpus set; fills $corpus/guest_*/.
set -euo pipefail
parts=$corpus/guest_partitions
lvm=$corpus/guest_lvm
probe=$corpus/guest_probe
mkdir -p "$parts" "$lvm" "$probe"

# Partition tables on 256 KiB disks (partitions of a few sectors, alignment off).
truncate -s 256k mbr.img
printf 'label: dos\nstart=4, size=60, type=83, bootable\nstart=64, size=200, type=5\nstart=80, size=40, type=82\nstart=140, size=40, type=83\nstart=300, size=100, type=7\n' |
  sfdisk -q --no-reread --no-tell-kernel mbr.img >/dev/null 2>&1
cp mbr.img "$parts/seed-mbr-logicals"
truncate -s 256k gpt.img
sgdisk -a 1 -n 1:34:99 -t 1:ef00 -c 1:esp -n 2:100:299 -t 2:8e00 -c 2:pv -n 5:300:400 -t 5:8300 \
  gpt.img >/dev/null
cp gpt.img "$parts/seed-gpt"
cp gpt.img gpt-bad-primary.img
printf '\377\377\377\377' | dd of=gpt-bad-primary.img bs=1 seek=552 conv=notrunc status=none
cp gpt-bad-primary.img "$parts/seed-gpt-backup"

# LVM: two PVs, a linear and a striped LV; the PV heads (label, mda header, text ring) and
# the metadata text itself.
truncate -s 8M pv1.img pv2.img
lvm_seeds() {
  local l1 l2 conf vg
  l1=$(losetup -f --show pv1.img) || return 1
  l2=$(losetup -f --show pv2.img) || { losetup -d "$l1"; return 1; }
  trap 'losetup -d "$l1" "$l2" 2>/dev/null || true' EXIT
  conf="devices { filter=[\"a|^$l1\$|\",\"a|^$l2\$|\",\"r|.*|\"] use_devicesfile=0 hints=\"none\" }
    activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }
    global { activation=0 use_lvmpolld=0 }"
  vg=vkseed$$
  export LVM_SUPPRESS_FD_WARNINGS=1
  lvm pvcreate --config "$conf" -q --metadatasize 64k --dataalignment 64k "$l1" "$l2" >/dev/null 2>&1
  lvm vgcreate --config "$conf" -q -s 64k "$vg" "$l1" "$l2" >/dev/null 2>&1
  lvm lvcreate --config "$conf" -q -an -Zn -Wn -L 256k -n lin "$vg" "$l1" >/dev/null 2>&1
  lvm lvcreate --config "$conf" -q -an -Zn -Wn -i2 -I4k -L 256k -n str "$vg" >/dev/null 2>&1
  lvm vgcfgbackup --config "$conf" -f meta.txt "$vg" >/dev/null 2>&1
  lvm vgremove --config "$conf" -ff "$vg" >/dev/null 2>&1 || true
  losetup -d "$l1" "$l2"
  trap - EXIT
}
# Loop devices need root; without them the LVM seeds are skipped.
if lvm_seeds; then
  # The metadata as LVM writes it to disk has no comments; the backup form has them: both.
  cp meta.txt "$lvm/seed-meta-backup.txt"
  grep -v '^\s*#' meta.txt | sed 's/#.*//' >"$lvm/seed-meta-plain.txt"
  head -c 196608 pv1.img >"$lvm/seed-pv1-head"
  head -c 196608 pv1.img >pv-pair
  head -c 196608 pv2.img >>pv-pair
  cp pv-pair "$lvm/seed-pv-pair"
  cp "$lvm/seed-pv1-head" "$probe/seed-lvm2"
  else
  echo "guest_devices.sh: no loop devices, LVM seeds skipped" >&2
fi

# Filesystem heads: what probing reads.
mk() { # name size cmd...
  local n=$1 s=$2
  shift 2
  truncate -s "$s" "$n"
  "$@" "$n" >/dev/null 2>&1
}
mk ext2 256k mkfs.ext2 -q -L e2
mk ext4 1M mkfs.ext4 -q -L e4 -O ^has_journal
mk vfat 256k mkfs.vfat -n FATLAB
mk fat32 34M mkfs.vfat -F 32 -n F32
mk swap 64k mkswap -L sw
mk xfs 300M mkfs.xfs -q -L xf
mk btrfs 128M mkfs.btrfs -q -L bt
mk ntfs 2M mkfs.ntfs -q -F -f -L nt
mkdir isosrc && echo x >isosrc/f
xorriso -as mkisofs -quiet -V ISOLAB -J -o iso isosrc >/dev/null 2>&1
head -c 4096 ext2 >"$probe/seed-ext2"
head -c 4096 ext4 >"$probe/seed-ext4"
cp vfat "$probe/seed-vfat"
# FAT32: boot sector, FATs and the root directory cluster.
head -c 1200000 fat32 >"$probe/seed-fat32"
head -c 65536 swap >"$probe/seed-swap"
head -c 512 xfs >"$probe/seed-xfs"
head -c 73728 btrfs >"$probe/seed-btrfs"
cp ntfs "$probe/seed-ntfs"
head -c 40960 iso >"$probe/seed-iso"
