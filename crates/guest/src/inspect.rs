//! Inspection of Linux guests, as libguestfs' inspect-os and virt-inspector do it: find the
//! root filesystems, read the distribution, version, hostname, architecture, package format
//! and installed packages, and the fstab that says where everything else is mounted.
//!
//! Everything read here comes from the guest and is treated as hostile: files are read with a
//! size limit, parsed line by line, and a missing or odd file only leaves a field empty.

use crate::error::{Error, Result};
use crate::fs::{FileType, Filesystem, FsInfo};
use crate::mounts::Mounts;
use std::sync::Arc;

/// Config files larger than this are not read (an os-release of 1 GiB is an attack).
const SMALL_FILE: u64 = 1 << 20;
/// The dpkg status file of a big install is a few MiB.
const DPKG_STATUS_MAX: u64 = 256 << 20;

/// What inspection needs from the devices of a guest (implemented by `Guest`).
pub trait Devices {
    /// Every device holding a filesystem (or "unknown"), with what probing found.
    fn filesystems(&self) -> Vec<(String, FsInfo)>;
    fn open_fs(&self, name: &str) -> Result<Arc<dyn Filesystem>>;
    /// The canonical libguestfs name of a device name (aliases such as /dev/vda1 or
    /// /dev/mapper/VG-LV resolved), or NotFound.
    fn canonical_name(&self, name: &str) -> Result<String>;
}

impl Devices for crate::guest::Guest {
    fn filesystems(&self) -> Vec<(String, FsInfo)> {
        crate::guest::Guest::filesystems(self)
    }
    fn open_fs(&self, name: &str) -> Result<Arc<dyn Filesystem>> {
        crate::guest::Guest::open_fs(self, name)
    }
    fn canonical_name(&self, name: &str) -> Result<String> {
        crate::guest::Guest::canonical_name(self, name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Application {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub url: String,
    pub source_package: String,
    pub summary: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsInfo {
    /// The root filesystem's device.
    pub root: String,
    /// "linux" (the only type recognised so far), or "unknown".
    pub os_type: String,
    /// libguestfs' distro names: "debian", "ubuntu", "fedora", "rhel", "centos", ...
    pub distro: String,
    pub product_name: String,
    pub major_version: u32,
    pub minor_version: u32,
    pub arch: String,
    pub hostname: String,
    pub package_format: String,
    pub package_management: String,
    pub osinfo: String,
    /// (device, mountpoint) from /etc/fstab, the root first, sorted as libguestfs sorts
    /// them (shorter mountpoints first, so parents are mounted before children).
    pub mountpoints: Vec<(String, String)>,
    /// The devices of this OS: the root and everything its fstab names (swap too), sorted.
    pub filesystems: Vec<String>,
}

/// Finds every Linux root among the guest's filesystems.
pub fn inspect_os(d: &dyn Devices) -> Vec<OsInfo> {
    let mut roots = Vec::new();
    for (dev, info) in d.filesystems() {
        if matches!(info.kind.as_str(), "unknown" | "swap" | "" | "LVM2_member") {
            continue;
        }
        let Ok(fs) = d.open_fs(&dev) else { continue };
        let mut m = Mounts::new();
        if m.mount("/", &dev, fs).is_err() {
            continue;
        }
        if is_linux_root(&m) {
            roots.push(inspect_root(d, &dev, &m));
        }
    }
    roots.sort_by(|a, b| a.root.cmp(&b.root));
    roots
}

fn is_dir(m: &Mounts, p: &str) -> bool {
    m.stat(p).is_ok_and(|s| s.kind == FileType::Directory)
}

fn is_file(m: &Mounts, p: &str) -> bool {
    m.stat(p).is_ok_and(|s| s.kind == FileType::Regular)
}

/// libguestfs' test: /etc, /bin (or /bin -> usr/bin with /usr/bin), and /etc/fstab or
/// /etc/hosts.
fn is_linux_root(m: &Mounts) -> bool {
    let bin = is_dir(m, "/bin")
        || (m
            .readlink("/bin")
            .is_ok_and(|t| t == b"usr/bin" || t == b"/usr/bin")
            && is_dir(m, "/usr/bin"));
    is_dir(m, "/etc") && bin && (is_file(m, "/etc/fstab") || is_file(m, "/etc/hosts"))
}

fn read_small(m: &Mounts, p: &str) -> Option<String> {
    let b = m.read_file(p, SMALL_FILE).ok()?;
    Some(String::from_utf8_lossy(&b).into_owned())
}

fn inspect_root(d: &dyn Devices, dev: &str, m: &Mounts) -> OsInfo {
    let mut o = OsInfo {
        root: dev.to_string(),
        os_type: "linux".into(),
        distro: "unknown".into(),
        product_name: "unknown".into(),
        arch: "unknown".into(),
        hostname: "unknown".into(),
        package_format: "unknown".into(),
        package_management: "unknown".into(),
        ..Default::default()
    };
    let mut have = false;
    if let Some(t) =
        read_small(m, "/etc/os-release").or_else(|| read_small(m, "/usr/lib/os-release"))
    {
        have = parse_os_release(&t, &mut o);
    }
    if !have {
        if let Some(t) = read_small(m, "/etc/lsb-release") {
            have = parse_lsb_release(&t, &mut o);
        }
    }
    if !have {
        if let Some(t) = read_small(m, "/etc/redhat-release") {
            have = parse_redhat_release(&t, &mut o);
        }
    }
    if o.distro == "debian" || (!have && is_file(m, "/etc/debian_version")) {
        if let Some(t) = read_small(m, "/etc/debian_version") {
            parse_debian_version(&t, &mut o, have);
        }
    }
    if let Some(a) = arch_of(m) {
        o.arch = a;
    }
    if let Some(h) = hostname(m) {
        o.hostname = h;
    }
    let (pf, pm) = package_system(&o.distro, o.major_version);
    o.package_format = pf.into();
    o.package_management = pm.into();
    o.osinfo = osinfo_id(&o);
    let (mps, fss) = fstab_mounts(d, dev, m);
    o.mountpoints = mps;
    o.filesystems = fss;
    o
}

/// KEY=value / KEY="value" lines.
fn shell_vars(t: &str) -> Vec<(String, String)> {
    t.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// "12" -> (12, 0); "22.04" -> (22, 4); "8.4.1" -> (8, 4). Garbage -> None.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.trim().parse().ok()?;
    let minor = match it.next() {
        Some(m) => {
            let digits: String = m.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().unwrap_or(0)
        }
        None => 0,
    };
    Some((major, minor))
}

fn distro_of_id(id: &str) -> &'static str {
    match id {
        "alpine" => "alpinelinux",
        "altlinux" => "altlinux",
        "arch" => "archlinux",
        "centos" => "centos",
        "circle" => "circle",
        "debian" => "debian",
        "fedora" => "fedora",
        "frugalware" => "frugalware",
        "gentoo" => "gentoo",
        "kali" => "kalilinux",
        "mageia" => "mageia",
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => "opensuse",
        "ol" => "oraclelinux",
        "rhel" => "rhel",
        "rocky" => "rocky",
        "sles" | "sled" => "sles",
        "ubuntu" => "ubuntu",
        "void" => "voidlinux",
        "almalinux" => "almalinux",
        _ => "unknown",
    }
}

fn parse_os_release(t: &str, o: &mut OsInfo) -> bool {
    let mut id = None;
    for (k, v) in shell_vars(t) {
        match k.as_str() {
            "ID" => id = Some(v),
            "PRETTY_NAME" => o.product_name = v,
            "VERSION_ID" => {
                if let Some((a, b)) = parse_version(&v) {
                    o.major_version = a;
                    o.minor_version = b;
                }
            }
            _ => {}
        }
    }
    match id {
        Some(id) => {
            o.distro = distro_of_id(&id).into();
            o.distro != "unknown"
        }
        None => false,
    }
}

fn parse_lsb_release(t: &str, o: &mut OsInfo) -> bool {
    let mut ok = false;
    for (k, v) in shell_vars(t) {
        match k.as_str() {
            "DISTRIB_ID" => {
                let d = distro_of_id(&v.to_ascii_lowercase());
                if d != "unknown" {
                    o.distro = d.into();
                    ok = true;
                }
            }
            "DISTRIB_RELEASE" => {
                if let Some((a, b)) = parse_version(&v) {
                    o.major_version = a;
                    o.minor_version = b;
                }
            }
            "DISTRIB_DESCRIPTION" => o.product_name = v,
            _ => {}
        }
    }
    ok
}

/// "Fedora release 38 (Thirty Eight)", "CentOS Linux release 7.9.2009 (Core)",
/// "Red Hat Enterprise Linux release 8.4 (Ootpa)".
fn parse_redhat_release(t: &str, o: &mut OsInfo) -> bool {
    let line = t.lines().next().unwrap_or("").trim();
    let distro = if line.starts_with("Fedora") {
        "fedora"
    } else if line.starts_with("CentOS") {
        "centos"
    } else if line.starts_with("Red Hat Enterprise Linux") {
        "rhel"
    } else if line.starts_with("Rocky") {
        "rocky"
    } else if line.starts_with("AlmaLinux") {
        "almalinux"
    } else {
        return false;
    };
    o.distro = distro.into();
    o.product_name = line.to_string();
    if let Some(v) = line.split(" release ").nth(1) {
        if let Some((a, b)) = parse_version(v.split_whitespace().next().unwrap_or("")) {
            o.major_version = a;
            o.minor_version = b;
        }
    }
    true
}

/// /etc/debian_version: "12.4" gives the point release; "bookworm/sid" nothing.
fn parse_debian_version(t: &str, o: &mut OsInfo, have: bool) {
    let line = t.lines().next().unwrap_or("").trim();
    if !have {
        o.distro = "debian".into();
        o.product_name = line.to_string();
    }
    if let Some((a, b)) = parse_version(line) {
        if o.major_version == 0 || o.major_version == a {
            o.major_version = a;
            o.minor_version = b;
        }
    }
}

/// The architecture of the first ELF binary found among the usual ones, as libguestfs'
/// file-architecture names it.
fn arch_of(m: &Mounts) -> Option<String> {
    for p in [
        "/bin/bash",
        "/bin/ls",
        "/bin/echo",
        "/bin/rm",
        "/bin/sh",
        "/usr/bin/bash",
        "/usr/bin/ls",
        "/bin/busybox",
    ] {
        let Ok(n) = m.resolve(p, true) else { continue };
        let mut h = [0u8; 20];
        let Ok(got) = m.read_node(n, 0, &mut h) else {
            continue;
        };
        if got < 20 || &h[..4] != b"\x7fELF" {
            continue;
        }
        let le = h[5] == 1;
        let machine = if le {
            u16::from_le_bytes([h[18], h[19]])
        } else {
            u16::from_be_bytes([h[18], h[19]])
        };
        let class64 = h[4] == 2;
        let a = match machine {
            3 => "i386",
            62 => "x86_64",
            183 => "aarch64",
            40 => "arm",
            20 => "ppc",
            21 if le => "ppc64le",
            21 => "ppc64",
            22 if class64 => "s390x",
            22 => "s390",
            243 if class64 => "riscv64",
            243 => "riscv32",
            2 | 43 => {
                if class64 {
                    "sparc64"
                } else {
                    "sparc"
                }
            }
            8 if class64 => "mips64",
            8 => "mips",
            258 => "loongarch64",
            _ => continue,
        };
        return Some(a.to_string());
    }
    None
}

fn hostname(m: &Mounts) -> Option<String> {
    for p in ["/etc/hostname", "/etc/HOSTNAME"] {
        if let Some(t) = read_small(m, p) {
            if let Some(l) = t
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                return Some(l.to_string());
            }
        }
    }
    if let Some(t) = read_small(m, "/etc/sysconfig/network") {
        for (k, v) in shell_vars(&t) {
            if k == "HOSTNAME" && !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

fn package_system(distro: &str, major: u32) -> (&'static str, &'static str) {
    match distro {
        "debian" | "ubuntu" | "kalilinux" => ("deb", "apt"),
        "fedora" => ("rpm", "dnf"),
        "rhel" | "centos" | "oraclelinux" if major < 8 => ("rpm", "yum"),
        "rhel" | "centos" | "oraclelinux" | "rocky" | "almalinux" => ("rpm", "dnf"),
        "opensuse" | "sles" => ("rpm", "zypper"),
        "mageia" => ("rpm", "urpmi"),
        "altlinux" => ("rpm", "apt"),
        "alpinelinux" => ("apk", "apk"),
        "archlinux" => ("pacman", "pacman"),
        "voidlinux" => ("xbps", "xbps"),
        "gentoo" => ("ebuild", "portage"),
        _ => ("unknown", "unknown"),
    }
}

/// libosinfo's short id, as virt-inspector prints it.
fn osinfo_id(o: &OsInfo) -> String {
    let (ma, mi) = (o.major_version, o.minor_version);
    match o.distro.as_str() {
        "debian" if ma >= 4 => format!("debian{ma}"),
        "ubuntu" => format!("ubuntu{ma}.{mi:02}"),
        "fedora" => format!("fedora{ma}"),
        "rhel" | "centos" | "rocky" | "almalinux" | "oraclelinux" if ma >= 7 => {
            let d = if o.distro == "oraclelinux" {
                "ol"
            } else {
                o.distro.as_str()
            };
            format!("{d}{ma}.{mi}")
        }
        "alpinelinux" => format!("alpinelinux{ma}.{mi}"),
        "archlinux" => "archlinux".into(),
        "opensuse" => format!("opensuse{ma}.{mi}"),
        "sles" => format!("sles{ma}"),
        _ => String::new(),
    }
}

/// Parses /etc/fstab and resolves each filesystem's device among the guest's devices:
/// the mountpoints, and every device the OS uses (swap included).
fn fstab_mounts(d: &dyn Devices, root: &str, m: &Mounts) -> (Vec<(String, String)>, Vec<String>) {
    let mut out = vec![(root.to_string(), "/".to_string())];
    let mut devs = vec![root.to_string()];
    let Some(t) = read_small(m, "/etc/fstab") else {
        return (out, devs);
    };
    let fss = d.filesystems();
    for line in t.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let (spec, mp, vfstype) = (f[0], unescape_fstab(f[1]), f[2]);
        let Some(dev) = resolve_spec(d, &fss, spec) else {
            continue;
        };
        if !devs.contains(&dev) {
            devs.push(dev.clone());
        }
        if !mp.starts_with('/') || mp == "/" || vfstype == "swap" {
            continue;
        }
        if !out.iter().any(|(_, p)| *p == mp) {
            out.push((dev, mp));
        }
    }
    out[1..].sort_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.1.cmp(&b.1)));
    devs.sort();
    (out, devs)
}

/// fstab escapes spaces and such as \040 (octal).
fn unescape_fstab(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// UUID=, LABEL=, /dev/disk/by-uuid/..., /dev/disk/by-label/..., device names.
fn resolve_spec(d: &dyn Devices, fss: &[(String, FsInfo)], spec: &str) -> Option<String> {
    let by = |f: &dyn Fn(&FsInfo) -> bool| fss.iter().find(|(_, i)| f(i)).map(|(n, _)| n.clone());
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        let u = u.trim_matches('"');
        return by(&|i| i.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u)));
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        let l = l.trim_matches('"');
        return by(&|i| i.label.as_deref() == Some(l));
    }
    if spec.starts_with("/dev/") {
        return d.canonical_name(spec).ok();
    }
    None
}

/// Mounts the filesystems of an inspected OS the way `guestfs -i` does: the root at /, then
/// the fstab entries, parents before children. Entries whose mountpoint does not exist are
/// skipped (libguestfs warns and goes on).
pub fn mount_os(d: &dyn Devices, os: &OsInfo) -> Result<Mounts> {
    let mut m = Mounts::new();
    let mut first = true;
    for (dev, mp) in &os.mountpoints {
        let fs = match d.open_fs(dev) {
            Ok(fs) => fs,
            Err(e) if first => return Err(e),
            Err(_) => continue,
        };
        match m.mount(mp, dev, fs) {
            Ok(()) => {}
            Err(e) if first => return Err(e),
            Err(_) => {}
        }
        first = false;
    }
    Ok(m)
}

/// Installed packages, from the package database of the mounted guest.
pub fn applications(m: &Mounts, os: &OsInfo) -> Result<Vec<Application>> {
    match os.package_format.as_str() {
        "deb" => {
            let t = match m.read_file("/var/lib/dpkg/status", DPKG_STATUS_MAX) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(Error::NotFound(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            Ok(parse_dpkg_status(&t))
        }
        _ => Ok(Vec::new()),
    }
}

/// Installed packages from dpkg's status file: paragraphs with "Status: install ok
/// installed"; versions split as libguestfs splits them ("1:2.3-4" -> epoch 1, version
/// 2.3, release 4).
pub fn parse_dpkg_status(t: &str) -> Vec<Application> {
    let mut apps = Vec::new();
    for para in t.split("\n\n") {
        let mut a = Application::default();
        let (mut ver, mut installed) = (None, false);
        let mut in_desc = false;
        let mut desc: Vec<&str> = Vec::new();
        for l in para.lines() {
            if in_desc {
                if let Some(c) = l.strip_prefix(' ') {
                    desc.push(c);
                    continue;
                }
                in_desc = false;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => a.name = v.to_string(),
                "Version" => ver = Some(v.to_string()),
                "Architecture" => a.arch = v.to_string(),
                "Status" => installed = v.ends_with(" installed"),
                "Homepage" => a.url = v.to_string(),
                "Source" => {
                    a.source_package = v.split_whitespace().next().unwrap_or("").to_string()
                }
                "Description" => {
                    a.summary = v.to_string();
                    in_desc = true;
                }
                _ => {}
            }
        }
        let (Some(ver), true) = (ver, installed && !a.name.is_empty()) else {
            continue;
        };
        a.description = desc.join("\n");
        let (epoch, rest) = match ver.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(0), r.to_string())
            }
            _ => (0, ver.clone()),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((v, r)) => (v.to_string(), r.to_string()),
            None => (rest, String::new()),
        };
        a.epoch = epoch;
        a.version = version;
        a.release = release;
        apps.push(a);
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    apps
}

/// Every parser of guest-supplied text inspection uses (os-release, lsb-release,
/// redhat-release, debian_version, fstab escapes, dpkg status, versions), for the fuzz target:
/// none may panic or loop on any input.
#[doc(hidden)]
pub fn fuzz_parsers(text: &str) -> usize {
    let mut o = OsInfo::default();
    parse_os_release(text, &mut o);
    parse_lsb_release(text, &mut o);
    parse_redhat_release(text, &mut o);
    parse_debian_version(text, &mut o, false);
    let _ = osinfo_id(&o);
    let _ = package_system(&o.distro, o.major_version);
    let _ = unescape_fstab(text);
    let _ = parse_version(text);
    parse_dpkg_status(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_release_files() {
        assert_eq!(parse_version("12"), Some((12, 0)));
        assert_eq!(parse_version("22.04"), Some((22, 4)));
        assert_eq!(parse_version("bookworm/sid"), None);
        let mut o = OsInfo::default();
        assert!(parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
            &mut o
        ));
        assert_eq!((o.distro.as_str(), o.major_version), ("debian", 12));
        parse_debian_version("12.4\n", &mut o, true);
        assert_eq!((o.major_version, o.minor_version), (12, 4));
        assert_eq!(osinfo_id(&o), "debian12");
        let mut o = OsInfo::default();
        assert!(parse_redhat_release(
            "CentOS Linux release 7.9.2009 (Core)\n",
            &mut o
        ));
        assert_eq!(
            (o.distro.as_str(), o.major_version, o.minor_version),
            ("centos", 7, 9)
        );
        assert_eq!(package_system("centos", 7), ("rpm", "yum"));
        assert_eq!(unescape_fstab("/mnt/a\\040b"), "/mnt/a b");
    }

    #[test]
    fn dpkg_status() {
        let t = "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.3-4\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: c\nStatus: install ok installed\nArchitecture: all\nVersion: 3.134\n";
        let a = parse_dpkg_status(t);
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].epoch, a[0].version.as_str(), a[0].release.as_str()),
            (1, "2.3", "4")
        );
        assert_eq!(
            (
                a[1].name.as_str(),
                a[1].version.as_str(),
                a[1].release.as_str()
            ),
            ("c", "3.134", "")
        );
    }
}
