#!/usr/bin/env bash
# A busybox-static root filesystem for container tests, and a docker-archive image of it.
#
#   scripts/busybox-rootfs.sh                 build (once) .build/busybox-rootfs, print its path
#   scripts/busybox-rootfs.sh DIR             build the rootfs in DIR (created if missing)
#   scripts/busybox-rootfs.sh --docker-archive OUT.tar
#                                             a docker-archive tar of that rootfs (what
#                                             `docker save` writes), tagged virtkit/busybox:test
#
# The rootfs: bin/busybox (Debian's busybox-static, copied), one relative symlink per applet
# where `busybox --list-full` puts it (bin/sh, usr/bin/env...), /etc/passwd and /etc/group with
# root and nobody, /tmp (1777), /root, and empty /proc /sys /dev /run mount points.
# Idempotent: a DIR that already holds this rootfs (etc/virtkit-rootfs names the busybox
# digest and the layout version) is left as is; otherwise it is filled in place.
#
# The archive is deterministic (sorted, mtime 0, uid/gid 0): the same busybox gives the same
# layer digest. Layout: manifest.json, <config sha256>.json (rootfs.diff_ids = the layer's
# sha256), <layer sha256>/{layer.tar,VERSION,json}, repositories.
#
#   BUSYBOX        the static busybox to copy (default /bin/busybox, from busybox-static)
#   IMAGE_TAG      image name:tag in the archive (default virtkit/busybox:test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
LAYOUT=1
busybox=${BUSYBOX:-/bin/busybox}
tag=${IMAGE_TAG:-virtkit/busybox:test}

die() { echo "busybox-rootfs: $*" >&2; exit 2; }

[ -x "$busybox" ] || die "$busybox missing (apt-get install busybox-static)"
# A dynamically linked busybox would not run in the rootfs, which has no libc.
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
  die "$busybox is not statically linked (install busybox-static, not busybox)"
fi
digest=$(sha256sum "$busybox" | cut -d' ' -f1)
marker="busybox-rootfs layout $LAYOUT busybox sha256:$digest"

# fill DIR: populate a rootfs in DIR unless it already is the current one.
fill() {
  local d=$1
  if [ -f "$d/etc/virtkit-rootfs" ] && [ "$(cat "$d/etc/virtkit-rootfs")" = "$marker" ]; then
    return 0
  fi
  mkdir -p "$d"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,run,tmp,var}
  chmod 0755 "$d" "$d"/{bin,sbin,usr,usr/bin,usr/sbin,etc,proc,sys,dev,run,var}
  chmod 0700 "$d/root"
  chmod 1777 "$d/tmp"
  rm -f "$d/bin/busybox"
  cp "$busybox" "$d/bin/busybox"
  chmod 0755 "$d/bin/busybox"
  # One process for the ~270 links instead of one ln each. Relative links, so they resolve
  # the same inside the container and when the tree is read from the host.
  "$busybox" --list-full | python3 -c '
import os, sys
root = sys.argv[1]
for line in sys.stdin:
    rel = line.strip()
    if not rel or rel == "bin/busybox" or "/" not in rel:
        continue  # "linuxrc" and the like belong to an initrd, not here
    path = os.path.join(root, rel)
    target = os.path.relpath("bin/busybox", os.path.dirname(rel))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path) and os.readlink(path) == target:
        continue
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)
' "$d"
  [ -L "$d/bin/sh" ] || die "busybox has no sh applet: $busybox"
  cat >"$d/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$d/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
  chmod 0644 "$d/etc/passwd" "$d/etc/group"
  echo "$marker" >"$d/etc/virtkit-rootfs"
}

# The cached rootfs, built beside its final place and renamed in: tests may race for it.
cached() {
  local dest=$root/.build/busybox-rootfs tmp
  if [ ! -f "$dest/etc/virtkit-rootfs" ] || [ "$(cat "$dest/etc/virtkit-rootfs")" != "$marker" ]; then
    mkdir -p "$root/.build"
    tmp=$(mktemp -d "$root/.build/busybox-rootfs.XXXXXX")
    fill "$tmp"
    chmod 0755 "$tmp"
    rm -rf "$dest.old"
    if [ -e "$dest" ]; then mv "$dest" "$dest.old" 2>/dev/null || true; fi
    mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp" # another process won the race
    rm -rf "$dest.old"
  fi
  echo "$dest"
}

# tarc OUT DIR: DIR's contents, reproducibly, names relative to DIR without a "./" prefix.
tarc() {
  local names
  mapfile -t names < <(cd "$2" && ls -A)
  tar --create --file "$1" --directory "$2" --sort=name --mtime=@0 --owner=0 --group=0 \
    --numeric-owner --format=gnu -- "${names[@]}"
}

docker_archive() {
  local out=$1 rootfs tmp layer_sha
  command -v python3 >/dev/null || die "python3 is needed to write the archive's JSON"
  rootfs=$(cached)
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/vk-archive.XXXXXX")
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  # Member names without "./", as docker writes them.
  tarc "$tmp/layer.tar" "$rootfs"
  layer_sha=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  mkdir "$tmp/img" "$tmp/img/$layer_sha"
  mv "$tmp/layer.tar" "$tmp/img/$layer_sha/layer.tar"
  echo "1.0" >"$tmp/img/$layer_sha/VERSION"
  python3 - "$tmp/img" "$layer_sha" "$tag" <<'EOF'
import hashlib, json, os, sys
img, layer, tag = sys.argv[1], sys.argv[2], sys.argv[3]
repo, _, ver = tag.rpartition(":")
created = "1970-01-01T00:00:00Z"
run = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Cmd": ["/bin/sh"],
    "WorkingDir": "/",
}
config = {
    "architecture": "amd64",
    "os": "linux",
    "created": created,
    "config": run,
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer]},
    "history": [{"created": created, "created_by": "scripts/busybox-rootfs.sh"}],
}
raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
cfg = hashlib.sha256(raw).hexdigest()
with open(os.path.join(img, cfg + ".json"), "wb") as f:
    f.write(raw)
# The per-layer json of the legacy (v1) layout, which older `docker load` reads.
with open(os.path.join(img, layer, "json"), "w") as f:
    json.dump({"id": layer, "created": created, "config": run, "os": "linux"}, f, sort_keys=True)
with open(os.path.join(img, "manifest.json"), "w") as f:
    json.dump([{"Config": cfg + ".json", "RepoTags": [tag], "Layers": [layer + "/layer.tar"]}], f)
with open(os.path.join(img, "repositories"), "w") as f:
    json.dump({repo: {ver: layer}}, f)
EOF
  tarc "$tmp/out.tar" "$tmp/img"
  mkdir -p "$(dirname "$out")"
  mv "$tmp/out.tar" "$out"
}

case "${1:-}" in
  "") cached ;;
  --docker-archive)
    [ $# -eq 2 ] || die "usage: $0 --docker-archive OUT.tar"
    docker_archive "$2"
    ;;
  -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  -*) die "unknown option $1 (see --help)" ;;
  *)
    [ $# -eq 1 ] || die "usage: $0 [DIR | --docker-archive OUT.tar]"
    fill "$1"
    ;;
esac
