//! The bundle's `config.json`: loading with errors that name the file, the checks runc makes
//! before it forks anything, and the template `spec` writes.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

/// What `runc spec` writes (runc 1.1's template, byte for byte).
pub const DEFAULT_SPEC: &str = include_str!("spec_default.json");
/// What `runc spec --rootless` writes; the uid/gid of the caller are filled in.
const ROOTLESS_SPEC: &str = include_str!("spec_rootless.json");

/// The largest config.json we read: real ones are a few KiB; this bounds a hostile one.
const MAX_CONFIG: u64 = 16 << 20;

pub fn template(rootless: bool, uid: u32, gid: u32) -> String {
    if !rootless {
        return DEFAULT_SPEC.to_string();
    }
    // The template holds hostID 0 in both mappings; the only "hostID" keys in it.
    let mut out = String::new();
    let mut n = 0;
    for line in ROOTLESS_SPEC.split_inclusive('\n') {
        if line.contains("\"hostID\": 0") {
            let id = if n == 0 { uid } else { gid };
            n += 1;
            out.push_str(&line.replace("\"hostID\": 0", &format!("\"hostID\": {id}")));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Reads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    load_with_text(bundle).map(|(s, _)| s)
}

/// Reads `<bundle>/config.json`, also returning its text (saved with the state).
pub fn load_with_text(bundle: &Path) -> Result<(Spec, String)> {
    let path = bundle.join("config.json");
    let meta = std::fs::metadata(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    if meta.len() > MAX_CONFIG {
        return Err(Error::Config {
            path,
            msg: format!("{} bytes is too large for a config", meta.len()),
        });
    }
    let data = std::fs::read(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let spec = parse(&data).map_err(|msg| Error::Config {
        path: path.clone(),
        msg,
    })?;
    let text = String::from_utf8(data).map_err(|_| Error::Config {
        path,
        msg: "not UTF-8".into(),
    })?;
    Ok((spec, text))
}

/// Parses and checks a config; the error is the problem without the file name.
pub fn parse(data: &[u8]) -> std::result::Result<Spec, String> {
    let spec: Spec = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    validate(&spec)?;
    Ok(spec)
}

/// The checks that must fail before anything is forked or created.
pub fn validate(spec: &Spec) -> std::result::Result<(), String> {
    let Some(root) = spec.root() else {
        return Err("root must be specified".into());
    };
    if root.path().as_os_str().is_empty() {
        return Err("root.path is empty".into());
    }
    let linux = spec.linux().as_ref();
    let nss = linux.and_then(|l| l.namespaces().as_ref());
    let has_ns = |t: LinuxNamespaceType| nss.is_some_and(|v| v.iter().any(|n| n.typ() == t));
    if let Some(nss) = nss {
        let mut seen = Vec::new();
        for ns in nss {
            if seen.contains(&ns.typ()) {
                return Err(format!("duplicate namespace type {}", ns.typ()));
            }
            seen.push(ns.typ());
        }
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has_ns(LinuxNamespaceType::Uts) {
        return Err("unable to set hostname without a private UTS namespace".into());
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has_ns(LinuxNamespaceType::Uts)
    {
        return Err("unable to set domainname without a private UTS namespace".into());
    }
    if let Some(l) = linux {
        let maps = l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || l.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        let user_ns = nss.and_then(|v| v.iter().find(|n| n.typ() == LinuxNamespaceType::User));
        match user_ns {
            Some(ns) if ns.path().is_none() => {
                if l.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
                    return Err("user namespaces enabled, but no uid mappings found".into());
                }
                if l.gid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
                    return Err("user namespaces enabled, but no gid mappings found".into());
                }
            }
            None if maps => {
                return Err("uid/gid mappings given but no user namespace is configured".into())
            }
            _ => {}
        }
        if l.time_offsets().as_ref().is_some_and(|t| !t.is_empty())
            && !has_ns(LinuxNamespaceType::Time)
        {
            return Err("time offsets given but no time namespace is configured".into());
        }
        if let Some(sysctl) = l.sysctl() {
            for key in sysctl.keys() {
                if key.is_empty() || key.contains("..") || key.starts_with('/') {
                    return Err(format!("sysctl {key:?} is not a valid key"));
                }
            }
        }
    }
    if let Some(p) = spec.process() {
        if p.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err("args must not be empty".into());
        }
        if !p.cwd().is_absolute() {
            return Err(format!("cwd {:?} is not an absolute path", p.cwd()));
        }
    }
    if let Some(mounts) = spec.mounts() {
        for m in mounts {
            if !m.destination().is_absolute() {
                return Err(format!(
                    "mount destination {} is not absolute",
                    m.destination().display()
                ));
            }
        }
    }
    Ok(())
}

/// `root.path` made absolute against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    if p.is_absolute() {
        p
    } else {
        bundle.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        let s = parse(DEFAULT_SPEC.as_bytes()).unwrap();
        assert_eq!(s.hostname().as_deref(), Some("runc"));
        let r = template(true, 1000, 1001);
        assert!(r.contains("\"hostID\": 1000") && r.contains("\"hostID\": 1001"));
        parse(r.as_bytes()).unwrap();
    }

    #[test]
    fn rejects() {
        for (bad, why) in [
            (r#"{"ociVersion":"1.0.2"}"#, "root must be specified"),
            (
                r#"{"ociVersion":"1.0.2","root":{"path":"r"},"hostname":"h"}"#,
                "UTS",
            ),
            (
                r#"{"ociVersion":"1.0.2","root":{"path":"r"},"linux":{"namespaces":[{"type":"user"}]}}"#,
                "no uid mappings",
            ),
            (r#"{"ociVersion":1}"#, "invalid type"),
        ] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
