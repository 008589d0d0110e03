#!/usr/bin/env bash
# Seeds for oci_image_tar and oci_image_manifest: small layer tars made by GNU tar (posix and
# gnu formats: whiteouts, an opaque directory, hard and symbolic links, long names, xattrs,
# a device node and a fifo), a docker-archive and an OCI layout tar (gzip and zstd layers)
# built from them, and their JSON documents (run in an empty directory with $corpus set).
set -euo pipefail
tarc=$corpus/oci_image_tar
jsonc=$corpus/oci_image_manifest
mkdir -p "$tarc" "$jsonc"

mkdir -p l1/etc l1/bin l1/opt/data l1/var/old
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' >l1/etc/passwd
printf 'root:x:0:\nwheel:x:10:app\napp:x:1000:\n' >l1/etc/group
printf 'a\n' >l1/opt/data/a
printf 'old\n' >l1/var/old/file
printf '#!/bin/sh\n' >l1/bin/tool
chmod 4755 l1/bin/tool
ln -s tool l1/bin/alias
ln l1/opt/data/a l1/opt/data/a-hard
long=l1/$(printf 'd%.0s' $(seq 1 60))/$(printf 'f%.0s' $(seq 1 80))
mkdir -p "$(dirname "$long")"
printf 'long\n' >"$long"
setfattr -n user.seed -v hello l1/bin/tool 2>/dev/null \
  || python3 -c 'import os; os.setxattr("l1/bin/tool", "user.seed", b"hello")' 2>/dev/null || true
mknod l1/etc/null c 1 3 2>/dev/null || true
mkfifo l1/etc/fifo
mkdir -p l2/var/old l2/opt/data l2/srv
: >l2/var/old/.wh.file
: >l2/opt/data/.wh..wh..opq
printf 'c\n' >l2/opt/data/c
: >l2/srv/.wh.gone
tar --xattrs --xattrs-include='*' --numeric-owner --format=posix --sort=name -C l1 -cf l1-posix.tar .
for fmt in posix gnu; do
  [ $fmt = gnu ] && tar --numeric-owner --format=gnu --sort=name -C l1 -cf l1-gnu.tar .
  tar --numeric-owner --format=$fmt --sort=name -C l2 -cf l2-$fmt.tar .
done
tar --format=ustar -C l2 -cf l2-ustar.tar .

python3 - <<'EOF'
import hashlib, json, os, subprocess
def sha(b): return hashlib.sha256(b).hexdigest()
l1, l2 = open("l1-posix.tar", "rb").read(), open("l2-posix.tar", "rb").read()
gz = subprocess.run(["gzip", "-n", "-c", "l1-posix.tar"], check=True, capture_output=True).stdout
zs = subprocess.run(["zstd", "-q", "-c", "l2-posix.tar"], check=True, capture_output=True).stdout
cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
    "config": {"Entrypoint": ["/bin/tool"], "Cmd": ["-x"], "Env": ["A=b"], "User": "app",
               "WorkingDir": "/opt", "Labels": {"l": "v"}, "ExposedPorts": {"80/tcp": {}},
               "Volumes": {"/data": {}}, "StopSignal": "SIGINT"},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l1), "sha256:" + sha(l2)]}}).encode()
# docker-archive
os.makedirs("dock/l1"); os.makedirs("dock/l2")
open("dock/l1/layer.tar", "wb").write(l1); open("dock/l2/layer.tar", "wb").write(l2)
open(f"dock/{sha(cfg)}.json", "wb").write(cfg)
dm = json.dumps([{"Config": f"{sha(cfg)}.json", "RepoTags": ["seed:latest"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode()
open("dock/manifest.json", "wb").write(dm)
repos = json.dumps({"seed": {"latest": "l2"}}).encode()
open("dock/repositories", "wb").write(repos)
subprocess.run(["tar", "--format=gnu", "-C", "dock", "-cf", "docker-archive.tar", "."], check=True)
# OCI layout
os.makedirs("oci/blobs/sha256")
def blob(b, mt):
    open(f"oci/blobs/sha256/{sha(b)}", "wb").write(b)
    return {"mediaType": mt, "digest": "sha256:" + sha(b), "size": len(b)}
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": blob(cfg, "application/vnd.oci.image.config.v1+json"),
    "layers": [blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
               blob(zs, "application/vnd.oci.image.layer.v1.tar+zstd")]}).encode()
md = blob(man, "application/vnd.oci.image.manifest.v1+json")
md["platform"] = {"architecture": "amd64", "os": "linux"}
nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [md]}).encode()
nd = blob(nested, "application/vnd.oci.image.index.v1+json")
nd["annotations"] = {"org.opencontainers.image.ref.name": "seed"}
index = json.dumps({"schemaVersion": 2, "manifests": [nd]}).encode()
open("oci/index.json", "wb").write(index)
open("oci/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
subprocess.run(["tar", "--format=posix", "-C", "oci", "-cf", "oci-layout.tar", "oci-layout", "index.json", "blobs"], check=True)
for name, b in [("config.json", cfg), ("manifest.json", man), ("index.json", index), ("nested-index.json", nested),
                ("docker-manifest.json", dm), ("repositories.json", repos)]:
    open(f"json-{name}", "wb").write(b)
EOF

for f in l1-*.tar l2-*.tar docker-archive.tar oci-layout.tar; do cp "$f" "$tarc/seed-$f"; done
for f in json-*; do cp "$f" "$jsonc/seed-$f"; done
cp l1/etc/passwd "$jsonc/seed-passwd"
cp l1/etc/group "$jsonc/seed-group"
printf 'app\n1000:10\napp:wheel\nbusybox\ndocker.io/library/busybox:1.36\nlocalhost:5000/a/b@sha256:00\n' \
  >"$jsonc/seed-users-refs"
