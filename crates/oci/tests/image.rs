//! Image import on real inputs made here by real tools: a busybox-static rootfs and a second
//! layer with whiteouts, an opaque directory, hard and symbolic links (GNU tar, --xattrs
//! --numeric-owner), assembled into a docker-archive (manifest.json, config, repositories) and
//! an OCI layout (gzip -n and zstd layers, a nested index) by the Python script below, with
//! sha256sum for the digests. Checks go through the real overlay mount. Needs root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use virtkit_oci::image::{
    self, import, import_with, list_layers, mount_rootfs, prune, resolve_user, unmount_rootfs,
    unpack_layer, ImageError, ImportOptions, Overrides, UnpackLimits,
};

const FIXTURE_SCRIPT: &str = r#####"
import json, os, shutil, struct, subprocess, sys, tarfile, io

out, busybox = sys.argv[1], sys.argv[2]
T = 981173106  # 2001-02-03 04:05:06 UTC

def run(*a, **kw):
    subprocess.run(a, check=True, **kw)

def sha(path):
    r = subprocess.run(["sha256sum", path], check=True, capture_output=True, text=True)
    return r.stdout.split()[0]

def write(path, text, mode=0o644, uid=0, gid=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)

def settimes(root):
    for d, dirs, files in os.walk(root, topdown=False):
        for n in files + dirs:
            os.utime(os.path.join(d, n), (T, T), follow_symlinks=False)
    os.utime(root, (T, T))

def gnutar(src, dst):
    run("tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--format=posix",
        "--sort=name", "-C", src, "-cf", dst, ".")

src = f"{out}/src"
# Layer 1: a busybox-static rootfs.
l1 = f"{src}/l1"
for d in ["bin", "etc", "home", "opt/data", "var/old", "srv/gone", "usr/bin", "root"]:
    os.makedirs(f"{l1}/{d}")
os.makedirs(f"{l1}/tmp")
os.chmod(f"{l1}/tmp", 0o1777)
os.chmod(f"{l1}/root", 0o700)
shutil.copy(busybox, f"{l1}/bin/busybox")
os.chmod(f"{l1}/bin/busybox", 0o755)
for a in ["sh", "ls", "cat", "id", "echo", "stat", "true"]:
    os.symlink("busybox", f"{l1}/bin/{a}")
write(f"{l1}/etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\napp:x:1000:1000:App:/home/app:/bin/sh\n")
write(f"{l1}/etc/group", "root:x:0:\ndaemon:x:1:\nwheel:x:10:app\naudio:x:29:app,daemon\napp:x:1000:\n")
os.makedirs(f"{l1}/home/app")
os.chown(f"{l1}/home/app", 1000, 1000)
os.chmod(f"{l1}/home/app", 0o750)
write(f"{l1}/home/app/.profile", "export X=1\n", 0o600, 1000, 1000)
write(f"{l1}/opt/data/a", "a\n")
write(f"{l1}/opt/data/b", "b\n")
write(f"{l1}/var/old/file", "old\n")
write(f"{l1}/var/old/keep", "keep\n")
write(f"{l1}/srv/gone/inner", "inner\n")
write(f"{l1}/usr/bin/suid", "#!/bin/sh\n", 0o4755)
write(f"{l1}/usr/bin/sgid", "#!/bin/sh\n", 0o2711, 0, 29)
write(f"{l1}/usr/bin/capped", "#!/bin/sh\n", 0o755)
# cap_net_bind_service, permitted and effective (VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE).
os.setxattr(f"{l1}/usr/bin/capped", "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0))
os.setxattr(f"{l1}/usr/bin/capped", "user.note", b"hello")
settimes(l1)
gnutar(l1, f"{out}/layer1.tar")

# Layer 2: whiteouts, an opaque directory, links.
l2 = f"{src}/l2"
os.makedirs(f"{l2}/var/old")
write(f"{l2}/var/old/.wh.file", "")
os.makedirs(f"{l2}/srv")
write(f"{l2}/srv/.wh.gone", "")
os.makedirs(f"{l2}/opt/data")
write(f"{l2}/opt/data/.wh..wh..opq", "")
write(f"{l2}/opt/data/c", "new c\n")
write(f"{l2}/usr/share/h1", "hard linked\n")
os.link(f"{l2}/usr/share/h1", f"{l2}/usr/share/h2")
os.symlink("h1", f"{l2}/usr/share/link")
os.makedirs(f"{l2}/etc")
os.symlink("/usr/share/h1", f"{l2}/etc/motd")
write(f"{l2}/etc/app.conf", "conf\n", 0o640, 1000, 29)
os.chmod(f"{l2}/usr/share", 0o751)
settimes(l2)
gnutar(l2, f"{out}/layer2.tar")

# What the merged tree must be.
exp = f"{src}/expected"
os.makedirs(exp)
run("cp", "-a", f"{l1}/.", f"{exp}/")
os.remove(f"{exp}/var/old/file")
shutil.rmtree(f"{exp}/srv/gone")
shutil.rmtree(f"{exp}/opt/data")
run("cp", "-a", f"{l2}/.", f"{exp}/")
run("find", exp, "-name", ".wh.*", "-delete")

# Layer 3 (zstd in the OCI image).
l3 = f"{src}/l3"
write(f"{l3}/etc/zstd-layer", "z\n")
settimes(l3)
gnutar(l3, f"{out}/layer3.tar")

d1, d2, d3 = sha(f"{out}/layer1.tar"), sha(f"{out}/layer2.tar"), sha(f"{out}/layer3.tar")

def config(diff_ids, cfg):
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "author": "virtkit tests", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [{"created_by": "test"} for _ in diff_ids],
    }, indent=1).encode()

cfg_a = config([d1, d2], {
    "Entrypoint": ["/bin/busybox"], "Cmd": ["sh", "-c", "echo hi"],
    "Env": ["FOO=bar", "PATH=/bin:/usr/bin"], "WorkingDir": "/home/app", "User": "app",
    "Labels": {"org.opencontainers.image.title": "test-a", "com.example.x": "y",
               "org.opencontainers.image.author": "label wins"},
    "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
    "StopSignal": "SIGTERM"})
cfg_c = config([d1], {"Cmd": ["/bin/sh"], "User": "1000:29", "Env": None})

def docker_archive(dirname, images, repositories):
    """images: [(config bytes, [layer tar paths], [tags])]"""
    root = f"{out}/{dirname}"
    os.makedirs(root)
    manifest = []
    for cfg, layers, tags in images:
        ch = __import__("hashlib").sha256(cfg).hexdigest()
        with open(f"{root}/{ch}.json", "wb") as f:
            f.write(cfg)
        names = []
        for lt in layers:
            lid = sha(lt)  # legacy layer ids: any hex; the diff_id is handy
            os.makedirs(f"{root}/{lid}", exist_ok=True)
            if not os.path.exists(f"{root}/{lid}/layer.tar"):
                shutil.copy(lt, f"{root}/{lid}/layer.tar")
                with open(f"{root}/{lid}/VERSION", "w") as f:
                    f.write("1.0")
            names.append(f"{lid}/layer.tar")
        manifest.append({"Config": f"{ch}.json", "RepoTags": tags, "Layers": names})
    with open(f"{root}/manifest.json", "w") as f:
        json.dump(manifest, f)
    if repositories is not None:
        with open(f"{root}/repositories", "w") as f:
            json.dump(repositories, f)
    run("tar", "-C", root, "-cf", f"{out}/{dirname}.tar", ".")

docker_archive("docker", [
    (cfg_a, [f"{out}/layer1.tar", f"{out}/layer2.tar"], ["virtkit/test-a:latest"]),
    (cfg_c, [f"{out}/layer1.tar"], ["virtkit/test-c:1.0"]),
], {"virtkit/test-a": {"latest": d2, "legacy": d2}, "virtkit/test-c": {"1.0": d1}})
docker_archive("docker-single", [(cfg_a, [f"{out}/layer1.tar", f"{out}/layer2.tar"], [])], None)

# OCI layout: gzip layers and a zstd one, a nested index with two platforms.
oci = f"{out}/oci"
os.makedirs(f"{oci}/blobs/sha256")
def blob(data):
    h = __import__("hashlib").sha256(data).hexdigest()
    with open(f"{oci}/blobs/sha256/{h}", "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + h, "size": len(data)}
def blob_file(path):
    with open(path, "rb") as f:
        return blob(f.read())
run("sh", "-c", f"gzip -n -c {out}/layer1.tar > {out}/layer1.tar.gz")
run("sh", "-c", f"gzip -n -c {out}/layer2.tar > {out}/layer2.tar.gz")
run("zstd", "-q", "-c", f"{out}/layer3.tar", "-o", f"{out}/layer3.tar.zst")
gz = "application/vnd.oci.image.layer.v1.tar+gzip"
zst = "application/vnd.oci.image.layer.v1.tar+zstd"
cfg_b = config([d1, d2, d3], {"Cmd": ["/bin/sh", "-c", "id"], "User": "app:audio", "Env": ["LANG=C.UTF-8"]})
manifest_b = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **blob(cfg_b)),
    "layers": [dict(mediaType=gz, **blob_file(f"{out}/layer1.tar.gz")),
               dict(mediaType=gz, **blob_file(f"{out}/layer2.tar.gz")),
               dict(mediaType=zst, **blob_file(f"{out}/layer3.tar.zst"))],
}).encode()
mb = blob(manifest_b)
cfg_base = config([d1], {"Cmd": ["/bin/sh"]})
manifest_base = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **blob(cfg_base)),
    "layers": [dict(mediaType=gz, **blob_file(f"{out}/layer1.tar.gz"))],
}).encode()
mbase = blob(manifest_base)
# The arm64 manifest is not in the layout: reading it would fail the import.
missing = {"digest": "sha256:" + "0" * 64, "size": 123}
index_b = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        dict(mediaType="application/vnd.oci.image.manifest.v1+json", platform={"architecture": "arm64", "os": "linux"}, **missing),
        dict(mediaType="application/vnd.oci.image.manifest.v1+json", platform={"architecture": "amd64", "os": "linux"}, **mb),
    ]}).encode()
ib = blob(index_b)
with open(f"{oci}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [
        dict(mediaType="application/vnd.oci.image.index.v1+json", annotations={"org.opencontainers.image.ref.name": "v1"}, **ib),
        dict(mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": "base"}, **mbase),
    ]}, f)
with open(f"{oci}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion": "1.0.0"}')
run("tar", "-C", oci, "-cf", f"{out}/oci.tar", "oci-layout", "index.json", "blobs")

# A layer listed twice (old docker images repeat the empty layer).
docker_archive("dup", [(config([d1, d2, d1], {"Cmd": ["/bin/sh"]}),
                        [f"{out}/layer1.tar", f"{out}/layer2.tar", f"{out}/layer1.tar"], ["dup:latest"])], None)

# Many layers: the overlay option string no longer fits in a page.
many = []
for i in range(60):
    d = f"{src}/many/{i}"
    write(f"{d}/many/f{i:02}", f"{i}\n")
    settimes(d)
    gnutar(d, f"{out}/many-{i}.tar")
    many.append(f"{out}/many-{i}.tar")
diffs = [d1] + [sha(t) for t in many]
docker_archive("many", [(config(diffs, {"Cmd": ["/bin/sh"]}), [f"{out}/layer1.tar"] + many, ["many:latest"])], None)

# Hostile layer tars.
h = f"{out}/hostile"
os.makedirs(h)
outside = f"{out}/outside"
os.makedirs(outside)
def hostile(name, members):
    with tarfile.open(f"{h}/{name}.tar", "w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            ti = tarfile.TarInfo(m["name"])
            ti.mtime = T
            data = m.get("data", b"")
            if "link" in m:
                ti.type, ti.linkname = m["type"], m["link"]
            elif m.get("dir"):
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
            if "pax" in m:
                ti.pax_headers = m["pax"]
            ti.size = len(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            t.addfile(ti, io.BytesIO(data) if ti.size else None)
hostile("dotdot", [{"name": "ok"}, {"name": "../escape-marker", "data": b"x"}])
hostile("dotdot-inner", [{"name": "a/../../escape-marker", "data": b"x"}])
hostile("absolute", [{"name": "/abs-marker-virtkit-test", "data": b"contained"}])
hostile("symlink-parent", [{"name": "evil", "type": tarfile.SYMTYPE, "link": outside},
                           {"name": "evil/pwned", "data": b"x"}])
hostile("symlink-parent-rel", [{"name": "d", "dir": True},
                               {"name": "d/up", "type": tarfile.SYMTYPE, "link": "../../../../../../../.."},
                               {"name": "d/up/tmp/pwned", "data": b"x"}])
hostile("hardlink-shadow", [{"name": "shadow", "type": tarfile.LNKTYPE, "link": "/etc/shadow"}])
hostile("hardlink-dotdot", [{"name": "x", "type": tarfile.LNKTYPE, "link": "../../etc/passwd"}])
hostile("hardlink-via-symlink", [{"name": "s", "type": tarfile.SYMTYPE, "link": "/etc"},
                                 {"name": "x", "type": tarfile.LNKTYPE, "link": "s/shadow"}])
hostile("pax-bomb", [{"name": "f", "data": b"x", "pax": {"comment": "A" * (2 << 20)}}])
hostile("overlay-xattr", [{"name": "d", "dir": True, "pax": {"SCHILY.xattr.trusted.overlay.redirect": "/etc"}},
                          {"name": "d/f", "data": b"x"}])
# A header claiming 2^62 bytes (GNU base-256), and one claiming 8 GiB (octal) with 3 bytes.
ti = tarfile.TarInfo("huge")
ti.size = 1 << 62
with open(f"{h}/huge-base256.tar", "wb") as f:
    f.write(ti.tobuf(tarfile.GNU_FORMAT))
    f.write(b"abc")
ti = tarfile.TarInfo("huge")
ti.size = 0o77777777777
with open(f"{h}/huge-octal.tar", "wb") as f:
    f.write(ti.tobuf(tarfile.USTAR_FORMAT))
    f.write(b"abc")
# A docker-archive whose second layer escapes.
docker_archive("hostile-docker", [(config([d1, sha(f"{h}/dotdot.tar")], {"Cmd": ["/bin/sh"]}),
                                   [f"{out}/layer1.tar", f"{h}/dotdot.tar"], ["evil:latest"])], None)

with open(f"{out}/digests.json", "w") as f:
    json.dump({"d1": d1, "d2": d2, "d3": d3, "cfg_a": __import__("hashlib").sha256(cfg_a).hexdigest(),
               "layer2_gz": sha(f"{out}/layer2.tar.gz")}, f)
"#####;

struct Fixtures {
    dir: PathBuf,
    digests: serde_json::Value,
}

impl Fixtures {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
    fn digest(&self, k: &str) -> String {
        self.digests[k]
            .as_str()
            .expect("digest in digests.json")
            .to_string()
    }
}

fn base_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oci-image")
}

/// Unmounts whatever a previous (crashed) run left mounted below `dir`.
fn unmount_below(dir: &Path) {
    let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests need root (overlay mounts, whiteout devices, ownership)"
        );
        let dir = base_dir();
        unmount_below(&dir);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            let st = Command::new("apt-get")
                .args(["install", "-y", "busybox-static"])
                .status()
                .expect("apt-get");
            assert!(st.success(), "apt-get install busybox-static failed");
        }
        let fx = dir.join("fx");
        let out = Command::new("python3")
            .arg("-c")
            .arg(FIXTURE_SCRIPT)
            .arg(&fx)
            .arg(busybox)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "fixture script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digests = serde_json::from_slice(&fs::read(fx.join("digests.json")).unwrap()).unwrap();
        Fixtures { dir: fx, digests }
    })
}

/// A test's own directory; unmounts its bundles when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = base_dir().join("t").join(name);
        unmount_below(&dir);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.join(s)
    }
    fn opts(&self, store: &str, reference: Option<&str>) -> ImportOptions {
        ImportOptions {
            store: self.p(store),
            reference: reference.map(str::to_string),
            mount: true,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_below(&self.dir);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Content of files, target of symlinks, device numbers.
    data: Vec<u8>,
    /// Seconds; directories' are not compared (creating children changes them).
    mtime: i64,
}

fn walk(root: &Path) -> BTreeMap<String, Node> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_dir() {
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_file() {
                ("file", fs::read(&p).unwrap())
            } else if ft.is_char_device() {
                ("char", m.rdev().to_le_bytes().to_vec())
            } else {
                ("other", Vec::new())
            };
            out.insert(
                rel.display().to_string(),
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    data,
                    mtime: if ft.is_dir() { 0 } else { m.mtime() },
                },
            );
            if ft.is_dir() {
                go(root, &rel, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn spec_of(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn docker_archive_merged_tree_and_config() {
    let fx = fixtures();
    let s = Scratch::new("docker");
    let bundle = s.p("bundle");
    let r = import(
        &fx.path("docker.tar"),
        &bundle,
        &s.opts("store", Some("virtkit/test-a")),
    )
    .unwrap();
    assert_eq!(r.image, "virtkit/test-a:latest");
    assert_eq!(r.config_digest, format!("sha256:{}", fx.digest("cfg_a")));
    assert_eq!(r.layers.len(), 2);
    assert!(r.layers.iter().all(|l| !l.reused));
    assert_eq!(r.layers[0].diff_id, format!("sha256:{}", fx.digest("d1")));
    assert_eq!(r.layers[1].diff_id, format!("sha256:{}", fx.digest("d2")));
    assert!(
        r.layers[0].size > 1_000_000,
        "busybox counted: {}",
        r.layers[0].size
    );

    // The merged tree through the overlay equals the expected one.
    let rootfs = bundle.join("rootfs");
    assert!(image::rootfs::is_mounted(&rootfs));
    let got = walk(&rootfs);
    let want = walk(&fx.path("src/expected"));
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k} differs");
    }
    for k in got.keys() {
        assert!(want.contains_key(k), "{k} should not be there");
    }
    assert!(!rootfs.join("var/old/file").exists());
    assert!(rootfs.join("var/old/keep").exists());
    assert!(!rootfs.join("srv/gone").exists());
    let data: Vec<String> = fs::read_dir(rootfs.join("opt/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(data, vec!["c".to_string()], "opaque directory replaced");
    assert_eq!(
        fs::read_to_string(rootfs.join("usr/share/link")).unwrap(),
        "hard linked\n"
    );
    let (h1, h2) = (
        fs::metadata(rootfs.join("usr/share/h1")).unwrap(),
        fs::metadata(rootfs.join("usr/share/h2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino(), "hard link kept");
    assert_eq!(h1.nlink(), 2);
    let suid = fs::metadata(rootfs.join("usr/bin/suid")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    let sgid = fs::metadata(rootfs.join("usr/bin/sgid")).unwrap();
    assert_eq!((sgid.mode() & 0o7777, sgid.gid()), (0o2711, 29));
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let home = fs::metadata(rootfs.join("home/app")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o777),
        (1000, 1000, 0o750)
    );
    assert_eq!(
        xattr(&rootfs.join("usr/bin/capped"), "security.capability"),
        Some([0x01, 0, 0, 0x02, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec())
    );
    assert_eq!(
        xattr(&rootfs.join("usr/bin/capped"), "user.note"),
        Some(b"hello".to_vec())
    );
    // The busybox really runs there, and the absolute symlink resolves inside the root.
    let out = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "cat /etc/motd; id -u app"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hard linked\n1000\n");

    // The layer directories are in overlayfs format.
    let l2 = &r.layers[1].dir;
    let wh = fs::symlink_metadata(l2.join("var/old/file")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout device"
    );
    assert!(fs::symlink_metadata(l2.join("var/old/.wh.file")).is_err());
    assert!(fs::symlink_metadata(l2.join("srv/gone"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        xattr(&l2.join("opt/data"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(fs::symlink_metadata(l2.join("opt/data/.wh..wh..opq")).is_err());
    assert_eq!(l2, &s.p("store").join(fx.digest("d2")).join("diff"));

    // config.json.
    let spec = spec_of(&bundle);
    let p = &spec["process"];
    assert_eq!(strs(&p["args"]), ["/bin/busybox", "sh", "-c", "echo hi"]);
    assert_eq!(
        strs(&p["env"]),
        ["FOO=bar", "PATH=/bin:/usr/bin", "HOME=/home/app"]
    );
    assert_eq!(p["cwd"], "/home/app");
    assert_eq!(p["terminal"], false);
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["gid"], 1000);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([10, 29]));
    assert_eq!(spec["root"]["path"], "rootfs");
    let a = &spec["annotations"];
    assert_eq!(a["org.opencontainers.image.title"], "test-a");
    assert_eq!(a["com.example.x"], "y");
    assert_eq!(a["org.opencontainers.image.author"], "label wins");
    assert_eq!(
        a["org.opencontainers.image.created"],
        "2024-01-02T03:04:05Z"
    );
    assert_eq!(a["org.opencontainers.image.os"], "linux");
    assert_eq!(a["org.opencontainers.image.architecture"], "amd64");
    assert_eq!(a["org.opencontainers.image.stopSignal"], "SIGTERM");
    assert_eq!(a["org.opencontainers.image.exposedPorts"], "53/udp,80/tcp");
    assert_eq!(a["io.virtkit.image.volumes"], "/data");

    // The rootfs record, and unmount / mount again with the upper layer kept.
    let rec = image::rootfs::read_record(&bundle).unwrap();
    assert_eq!(
        rec.lowerdirs,
        vec![r.layers[1].dir.clone(), r.layers[0].dir.clone()]
    );
    fs::write(rootfs.join("tmp/persist"), "kept").unwrap();
    unmount_rootfs(&bundle).unwrap();
    assert!(!image::rootfs::is_mounted(&rootfs));
    assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 0);
    unmount_rootfs(&bundle).unwrap();
    mount_rootfs(&bundle).unwrap();
    mount_rootfs(&bundle).unwrap();
    assert_eq!(
        fs::read_to_string(rootfs.join("tmp/persist")).unwrap(),
        "kept"
    );
    assert!(rootfs.join("bin/busybox").exists());
    unmount_rootfs(&bundle).unwrap();

    // Importing again into the same bundle is refused.
    let e = import(
        &fx.path("docker.tar"),
        &bundle,
        &s.opts("store", Some("virtkit/test-a")),
    );
    assert!(matches!(e, Err(ImageError::Invalid(m)) if m.contains("already a bundle")));
}

#[test]
fn docker_archive_choice_by_tag() {
    let fx = fixtures();
    let s = Scratch::new("docker-choice");
    let e = import(&fx.path("docker.tar"), &s.p("b0"), &s.opts("store", None)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("several images")
            && msg.contains("virtkit/test-a:latest")
            && msg.contains("virtkit/test-c:1.0"),
        "{msg}"
    );
    let e = import(
        &fx.path("docker.tar"),
        &s.p("b1"),
        &s.opts("store", Some("nope:1")),
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e}");

    // test-c: only layer 1, "1000:29" numeric, no Env.
    let mut o = s.opts("store", Some("docker.io/virtkit/test-c:1.0"));
    o.mount = false;
    let r = import(&fx.path("docker.tar"), &s.p("c"), &o).unwrap();
    assert_eq!(r.layers.len(), 1);
    assert!(!image::rootfs::is_mounted(&s.p("c/rootfs")));
    let spec = spec_of(&s.p("c"));
    let p = &spec["process"];
    assert_eq!(strs(&p["args"]), ["/bin/sh"]);
    assert_eq!(
        (p["user"]["uid"].as_u64(), p["user"]["gid"].as_u64()),
        (Some(1000), Some(29))
    );
    assert!(p["user"].get("additionalGids").is_none());
    assert_eq!(
        strs(&p["env"]),
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/home/app"
        ]
    );
    assert_eq!(p["cwd"], "/");

    // A tag only the legacy `repositories` file knows.
    let mut o = s.opts("store", Some("virtkit/test-a:legacy"));
    o.mount = false;
    let r = import(&fx.path("docker.tar"), &s.p("legacy"), &o).unwrap();
    assert_eq!(r.layers.len(), 2);
    assert!(r.layers[0].reused, "layer 1 shared with test-c");

    // By image id (prefix), and a single untagged image without --ref.
    let mut o = s.opts("store", Some(&fx.digest("cfg_a")[..12]));
    o.mount = false;
    import(&fx.path("docker.tar"), &s.p("byid"), &o).unwrap();
    let mut o = s.opts("store", None);
    o.mount = false;
    let r = import(&fx.path("docker-single.tar"), &s.p("single"), &o).unwrap();
    assert_eq!(r.image, format!("sha256:{}", fx.digest("cfg_a")));
    // An unpacked docker-archive directory works too.
    let r = import(&fx.path("docker-single"), &s.p("single-dir"), &o).unwrap();
    assert!(r.layers.iter().all(|l| l.reused));

    // Overrides: Docker's --entrypoint drops Cmd; -u, -e, -w.
    let ov = Overrides {
        entrypoint: Some(vec!["/bin/echo".into()]),
        env: vec!["FOO=baz".into(), "NEW=1".into()],
        user: Some("daemon".into()),
        cwd: Some("/tmp".into()),
        ..Default::default()
    };
    let mut o = s.opts("store", Some("virtkit/test-a"));
    o.mount = false;
    import_with(&fx.path("docker.tar"), &s.p("ov"), &o, &ov).unwrap();
    let p = spec_of(&s.p("ov"))["process"].clone();
    assert_eq!(strs(&p["args"]), ["/bin/echo"]);
    assert_eq!(
        strs(&p["env"]),
        ["FOO=baz", "PATH=/bin:/usr/bin", "NEW=1", "HOME=/usr/sbin"]
    );
    assert_eq!(
        (p["user"]["uid"].as_u64(), p["user"]["gid"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([29]));
    assert_eq!(p["cwd"], "/tmp");
    let ov = Overrides {
        user: Some("ghost".into()),
        ..Default::default()
    };
    let e = import_with(&fx.path("docker.tar"), &s.p("ghost"), &o, &ov).unwrap_err();
    assert!(e.to_string().contains("no user \"ghost\""), "{e}");
}

#[test]
fn oci_layout_nested_index_zstd_and_shared_layers() {
    let fx = fixtures();
    let s = Scratch::new("oci");
    // Docker image first, then the OCI one sharing its bottom layer (gzip there).
    let ra = import(
        &fx.path("docker.tar"),
        &s.p("a"),
        &s.opts("store", Some("virtkit/test-a")),
    )
    .unwrap();
    let e = import(&fx.path("oci"), &s.p("b0"), &s.opts("store", None)).unwrap_err();
    assert!(matches!(e, ImageError::Ambiguous { .. }), "{e}");
    let rb = import(&fx.path("oci"), &s.p("b"), &s.opts("store", Some("v1"))).unwrap();
    assert_eq!(rb.image, "v1");
    assert_eq!(rb.layers.len(), 3);
    assert!(rb.layers[0].reused && rb.layers[1].reused && !rb.layers[2].reused);
    assert_eq!(rb.layers[0].dir, ra.layers[0].dir);
    assert_eq!(rb.layers[2].diff_id, format!("sha256:{}", fx.digest("d3")));
    let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
    let store_ino = ino(ra.layers[0].dir.join("bin/busybox"));
    assert_eq!(ino(s.p("a/rootfs/bin/busybox")), store_ino);
    assert_eq!(ino(s.p("b/rootfs/bin/busybox")), store_ino);
    assert_eq!(
        fs::read_to_string(s.p("b/rootfs/etc/zstd-layer")).unwrap(),
        "z\n"
    );
    assert!(!s.p("a/rootfs/etc/zstd-layer").exists());
    // Writes go to each bundle's own upper layer.
    fs::write(s.p("b/rootfs/etc/passwd"), "changed\n").unwrap();
    assert!(fs::read_to_string(s.p("a/rootfs/etc/passwd"))
        .unwrap()
        .starts_with("root:"));
    assert!(fs::read_to_string(ra.layers[0].dir.join("etc/passwd"))
        .unwrap()
        .starts_with("root:"));

    let p = spec_of(&s.p("b"))["process"].clone();
    assert_eq!(strs(&p["args"]), ["/bin/sh", "-c", "id"]);
    assert_eq!(
        (p["user"]["uid"].as_u64(), p["user"]["gid"].as_u64()),
        (Some(1000), Some(29))
    );
    assert!(
        p["user"].get("additionalGids").is_none(),
        "a group was given"
    );
    assert_eq!(
        strs(&p["env"]),
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "HOME=/home/app"
        ]
    );

    // The same layout packed as a tar; the other image by its ref name.
    let mut o = s.opts("store", Some("base"));
    o.mount = false;
    let rc = import(&fx.path("oci.tar"), &s.p("c"), &o).unwrap();
    assert_eq!(rc.layers.len(), 1);
    assert!(rc.layers[0].reused);
    let mut o = s.opts("store", Some("v1"));
    o.mount = false;
    import(&fx.path("oci.tar"), &s.p("d"), &o).unwrap();

    // Store listing and garbage collection.
    let all = list_layers(&s.p("store")).unwrap();
    assert_eq!(all.len(), 3);
    unmount_rootfs(&s.p("b")).unwrap();
    let removed = prune(&s.p("store"), &[s.p("a"), s.p("c")]).unwrap();
    assert_eq!(removed, vec![format!("sha256:{}", fx.digest("d3"))]);
    assert_eq!(list_layers(&s.p("store")).unwrap().len(), 2);
    let e = mount_rootfs(&s.p("b")).unwrap_err();
    assert!(e.to_string().contains("missing from the store"), "{e}");
    // Bundle a still mounted and whole.
    assert!(s.p("a/rootfs/usr/share/h1").exists());
}

#[test]
fn user_resolution_through_layers() {
    let fx = fixtures();
    let s = Scratch::new("users");
    let mut o = s.opts("store", Some("virtkit/test-a"));
    o.mount = false;
    let r = import(&fx.path("docker.tar"), &s.p("a"), &o).unwrap();
    let dirs: Vec<PathBuf> = r.layers.iter().rev().map(|l| l.dir.clone()).collect();
    let u = resolve_user(&dirs, "app").unwrap();
    assert_eq!(
        (u.uid, u.gid, u.additional_gids.clone()),
        (1000, 1000, vec![10, 29])
    );
    let u = resolve_user(&dirs, "app:wheel").unwrap();
    assert_eq!((u.uid, u.gid, u.additional_gids.len()), (1000, 10, 0));
    let u = resolve_user(&dirs, "daemon:1000").unwrap();
    assert_eq!((u.uid, u.gid), (1, 1000));
    let u = resolve_user(&dirs, "7").unwrap();
    assert_eq!((u.uid, u.gid), (7, 0));
    assert!(resolve_user(&dirs, "nobody").is_err());
    assert!(resolve_user(&dirs, "app:nogroup").is_err());
}

fn unpack_file(tar: &Path, dest: &Path) -> Result<image::UnpackStats, ImageError> {
    fs::create_dir_all(dest).unwrap();
    let mut f = fs::File::open(tar).unwrap();
    unpack_layer(
        &mut f,
        dest,
        &[] as &[PathBuf],
        &UnpackLimits::default(),
        "test layer",
    )
}

#[test]
fn hostile_layers_refused_or_contained() {
    let fx = fixtures();
    let s = Scratch::new("hostile");
    let h = |n: &str| fx.path(&format!("hostile/{n}.tar"));
    let outside_before: Vec<_> = fs::read_dir(fx.path("outside")).unwrap().collect();
    assert!(outside_before.is_empty());
    let shadow_links = fs::metadata("/etc/shadow").map(|m| m.nlink()).ok();

    for (name, want) in [
        ("dotdot", "contains '..'"),
        ("dotdot-inner", "contains '..'"),
        ("symlink-parent", "parent /evil is a symlink"),
        ("symlink-parent-rel", "parent /d/up is a symlink"),
        ("hardlink-shadow", "not a file of this layer"),
        ("hardlink-dotdot", "contains '..'"),
        ("hardlink-via-symlink", "parent /s is a symlink"),
    ] {
        let dest = s.p(&format!("{name}/layer"));
        let e = unpack_file(&h(name), &dest).unwrap_err();
        assert!(matches!(&e, ImageError::UnsafeEntry { .. }), "{name}: {e}");
        assert!(e.to_string().contains(want), "{name}: {e}");
        assert!(!s.p(&format!("{name}/escape-marker")).exists());
        assert!(!s.p("escape-marker").exists());
    }
    assert_eq!(
        fs::read_dir(fx.path("outside")).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!Path::new("/tmp/pwned").exists());
    assert_eq!(
        fs::metadata("/etc/shadow").map(|m| m.nlink()).ok(),
        shadow_links
    );

    // An absolute path lands inside the layer.
    let dest = s.p("absolute/layer");
    unpack_file(&h("absolute"), &dest).unwrap();
    assert_eq!(
        fs::read_to_string(dest.join("abs-marker-virtkit-test")).unwrap(),
        "contained"
    );
    assert!(!Path::new("/abs-marker-virtkit-test").exists());

    // Bounds.
    for (name, want) in [
        ("huge-base256", "bytes (limit"),
        ("huge-octal", "archive ends inside"),
        ("pax-bomb", "PAX header of"),
    ] {
        let e = unpack_file(&h(name), &s.p(&format!("{name}/layer"))).unwrap_err();
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
    let lim = UnpackLimits {
        max_entries: 3,
        ..Default::default()
    };
    fs::create_dir_all(s.p("count/layer")).unwrap();
    let mut f = fs::File::open(fx.path("layer1.tar")).unwrap();
    let e = unpack_layer(&mut f, &s.p("count/layer"), &[] as &[PathBuf], &lim, "l1").unwrap_err();
    assert!(e.to_string().contains("more than 3 members"), "{e}");

    // overlayfs attributes in a tar are dropped (they would redirect lookups).
    let dest = s.p("xattr/layer");
    let st = unpack_file(&h("overlay-xattr"), &dest).unwrap();
    assert!(xattr(&dest.join("d"), "trusted.overlay.redirect").is_none());
    assert!(
        st.notes
            .iter()
            .any(|n| n.contains("trusted.overlay.redirect")),
        "{:?}",
        st.notes
    );

    // Through a whole import: refused, and nothing left in the store but the good layer.
    let e = import(
        &fx.path("hostile-docker.tar"),
        &s.p("bundle"),
        &s.opts("store", None),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ImageError::UnsafeEntry { blob, .. } if blob.contains("layer 2/2")),
        "{e}"
    );
    let entries: Vec<String> = fs::read_dir(s.p("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(
        entries,
        vec![".lock".to_string(), ".tmp".into(), fx.digest("d1")]
    );
    assert_eq!(fs::read_dir(s.p("store/.tmp")).unwrap().count(), 0);
    assert!(!s.p("store/escape-marker").exists());
    assert!(!s.p("bundle/config.json").exists());
}

#[test]
fn digest_mismatches_name_the_blob() {
    let fx = fixtures();
    let s = Scratch::new("digests");
    // A flipped byte in a gzip layer of the OCI layout.
    let oci = s.p("oci");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fx.path("oci"))
        .arg(&oci)
        .status()
        .unwrap();
    assert!(st.success());
    let gz = fx.digest("layer2_gz");
    let blob = oci.join("blobs/sha256").join(&gz);
    let mut b = fs::read(&blob).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(&blob, &b).unwrap();
    let e = import(&oci, &s.p("b1"), &s.opts("store", Some("v1"))).unwrap_err();
    match &e {
        ImageError::DigestMismatch { blob, expected, .. } => {
            assert!(blob.contains(&format!("blobs/sha256/{gz}")), "{e}");
            assert_eq!(expected, &format!("sha256:{gz}"));
        }
        _ => panic!("{e}"),
    }
    assert!(e.to_string().contains(&gz));
    assert!(
        !s.p("store").join(fx.digest("d2")).exists(),
        "no layer under its final name"
    );
    assert_eq!(fs::read_dir(s.p("store/.tmp")).unwrap().count(), 0);

    // Changed file data in an uncompressed docker layer: its diff_id no longer matches.
    let dir = s.p("docker");
    let st = Command::new("cp")
        .arg("-a")
        .arg(fx.path("docker"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let layer = dir.join(fx.digest("d2")).join("layer.tar");
    let mut b = fs::read(&layer).unwrap();
    let at = b.windows(11).position(|w| w == b"hard linked").unwrap();
    b[at] = b'H';
    fs::write(&layer, &b).unwrap();
    let e = import(&dir, &s.p("b2"), &s.opts("store2", Some("virtkit/test-a"))).unwrap_err();
    assert!(
        matches!(&e, ImageError::DiffIdMismatch { blob, .. } if blob.contains(&format!("{}/layer.tar", fx.digest("d2")))),
        "{e}"
    );

    // A changed config: refused before any layer is read.
    let cfg = dir.join(format!("{}.json", fx.digest("cfg_a")));
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("echo hi", "echo HI");
    fs::write(&cfg, text).unwrap();
    let e = import(&dir, &s.p("b3"), &s.opts("store3", Some("virtkit/test-a"))).unwrap_err();
    assert!(
        matches!(&e, ImageError::DigestMismatch { blob, .. } if blob.contains(&format!("{}.json", fx.digest("cfg_a")))),
        "{e}"
    );
    assert_eq!(list_layers(&s.p("store3")).unwrap().len(), 0);
}

#[test]
fn many_layers_mount_past_the_option_page() {
    let fx = fixtures();
    let s = Scratch::new("many");
    let r = import(&fx.path("many.tar"), &s.p("bundle"), &s.opts("store", None)).unwrap();
    assert_eq!(r.layers.len(), 61);
    let rec = image::rootfs::read_record(&s.p("bundle")).unwrap();
    assert!(
        image::rootfs::legacy_options(
            &rec.lowerdirs,
            &s.p("bundle/.virtkit/upper"),
            &s.p("bundle/.virtkit/work")
        )
        .is_none(),
        "the option string must not fit in a page for this test"
    );
    for i in 0..60 {
        let f = s.p(&format!("bundle/rootfs/many/f{i:02}"));
        assert_eq!(fs::read_to_string(&f).unwrap(), format!("{i}\n"));
    }
    assert!(s.p("bundle/rootfs/bin/busybox").exists());
    unmount_rootfs(&s.p("bundle")).unwrap();
    mount_rootfs(&s.p("bundle")).unwrap();
    assert!(s.p("bundle/rootfs/many/f59").exists());
}

#[test]
fn layer_listed_twice_is_mounted_once_at_its_top_place() {
    let fx = fixtures();
    let s = Scratch::new("dup");
    let r = import(&fx.path("dup.tar"), &s.p("bundle"), &s.opts("store", None)).unwrap();
    assert_eq!(r.layers.len(), 3);
    assert!(!r.layers[0].reused && !r.layers[1].reused && r.layers[2].reused);
    let rec = image::rootfs::read_record(&s.p("bundle")).unwrap();
    assert_eq!(
        rec.lowerdirs,
        vec![r.layers[0].dir.clone(), r.layers[1].dir.clone()]
    );
    assert_eq!(rec.layers.len(), 3);
    // Layer 1 on top again: what layer 2 deleted is back, its opaque directory merges below.
    let rootfs = s.p("bundle/rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("var/old/file")).unwrap(),
        "old\n"
    );
    assert!(rootfs.join("srv/gone/inner").exists());
    let mut data: Vec<String> = fs::read_dir(rootfs.join("opt/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    data.sort();
    assert_eq!(data, ["a", "b", "c"]);
}
