//! `linux.cgroupsPath` to a place in the cgroup hierarchies.
//!
//! What runc 1.1 (cgroupfs driver) and crun 1.8 do, and what we do:
//! - absolute "/a/b": under the root of every hierarchy (runc, crun: same).
//! - relative "a/b": runc puts it under the runtime's *own* cgroup in each v1 hierarchy (and
//!   under the parent of its own cgroup on pure v2); crun puts it under the root. We follow
//!   runc; for a runtime in the root cgroup (the usual case for root) both are the root.
//! - absent: runc uses the container id as a relative path (so "/<id>" for a runtime in the
//!   root cgroup), crun "/<id>" always. We follow runc again.
//! - "slice:prefix:name" (systemd's form, what containerd passes with SystemdCgroup=true): with
//!   no systemd to ask, mapped onto cgroupfs at the place systemd would use:
//!   "system.slice:runc:abc" -> /system.slice/runc-abc.scope, a parent "a-b.slice" expanded to
//!   /a.slice/a-b.slice, an empty slice meaning system.slice, a name ending in ".slice" used as
//!   the unit itself.
//!
//! runc resolves ".." lexically and silently; we resolve it too but refuse a path that climbs
//! above its base (the root, or the runtime's own cgroup): that is a config trying to escape.

use super::CgroupError;
use serde::{Deserialize, Serialize};

/// Where the container's cgroup goes, relative to a base in each hierarchy. The string holds
/// clean components joined by '/', without a leading '/', never empty, never "." or "..".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Inner {
    /// Under the root of each hierarchy.
    Absolute(String),
    /// Under the runtime's own cgroup (runc's rule for relative paths and the default).
    Relative(String),
}

impl Inner {
    pub fn as_str(&self) -> &str {
        match self {
            Inner::Absolute(s) | Inner::Relative(s) => s,
        }
    }
}

impl std::fmt::Display for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Absolute(s) => write!(f, "/{s}"),
            Inner::Relative(s) => write!(f, "{s}"),
        }
    }
}

/// Resolves `linux.cgroupsPath` (None when absent) for container `id`. `systemd`: the
/// --systemd-cgroup flag was given (the caller has checked that systemd runs); then the path
/// must be in the slice:prefix:name form, as runc requires.
pub fn resolve(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Inner, CgroupError> {
    check_component("container id", id)?;
    let path = cgroups_path.filter(|p| !p.is_empty());
    if systemd {
        let Some(p) = path else {
            return slice_path("", "runc", id).map(Inner::Absolute);
        };
        let parts: Vec<&str> = p.split(':').collect();
        if parts.len() != 3 {
            return Err(CgroupError::BadValue {
                key: "linux.cgroupsPath".into(),
                value: p.into(),
                reason: "expected \"slice:prefix:name\" for systemd cgroups (--systemd-cgroup)"
                    .into(),
            });
        }
        return slice_path(parts[0], parts[1], parts[2]).map(Inner::Absolute);
    }
    let Some(p) = path else {
        return Ok(Inner::Relative(id.to_string()));
    };
    if p.contains('\0') {
        return Err(CgroupError::BadValue {
            key: "linux.cgroupsPath".into(),
            value: p.escape_debug().to_string(),
            reason: "contains a NUL byte".into(),
        });
    }
    if let Some((slice, prefix, name)) = slice_form(p) {
        return slice_path(slice, prefix, name).map(Inner::Absolute);
    }
    let clean = clean(p)?;
    if clean.is_empty() {
        return Err(CgroupError::BadValue {
            key: "linux.cgroupsPath".into(),
            value: p.into(),
            reason: "names the base cgroup itself, not a cgroup of the container's own".into(),
        });
    }
    Ok(if p.starts_with('/') {
        Inner::Absolute(clean)
    } else {
        Inner::Relative(clean)
    })
}

/// "slice:prefix:name" when `p` has that shape: no '/', three parts, the first empty or a
/// slice name. Anything else is an ordinary (relative) path, colons included.
pub fn slice_form(p: &str) -> Option<(&str, &str, &str)> {
    if p.contains('/') {
        return None;
    }
    let mut it = p.split(':');
    let (a, b, c) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    (a.is_empty() || a.ends_with(".slice")).then_some((a, b, c))
}

/// The cgroupfs path (without a leading '/') systemd uses for unit `prefix-name.scope` in
/// `slice`.
pub fn slice_path(slice: &str, prefix: &str, name: &str) -> Result<String, CgroupError> {
    let bad = |value: &str, reason: &str| CgroupError::BadValue {
        key: "linux.cgroupsPath".into(),
        value: value.into(),
        reason: reason.into(),
    };
    let whole = format!("{slice}:{prefix}:{name}");
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(bad(
            &whole,
            "the name part must be a non-empty unit name without '/'",
        ));
    }
    if prefix.contains('/') || prefix == "." || prefix == ".." {
        return Err(bad(&whole, "the prefix part must not contain '/'"));
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    check_component("systemd unit name", &unit)?;
    let parent = expand_slice(slice)?;
    Ok(if parent.is_empty() {
        unit
    } else {
        format!("{parent}/{unit}")
    })
}

/// systemd's slice nesting: "a-b-c.slice" lives in /a.slice/a-b.slice/a-b-c.slice; "-.slice"
/// is the root. Returned without a leading '/' ("" for the root).
pub fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = || CgroupError::BadValue {
        key: "linux.cgroupsPath".into(),
        value: slice.into(),
        reason: "invalid slice name (NAME.slice, dash-separated non-empty parts, no '/')".into(),
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad());
    };
    if stem.is_empty() || slice.contains('/') || slice.contains('\0') {
        return Err(bad());
    }
    if stem == "-" {
        return Ok(String::new());
    }
    let mut out: Vec<String> = Vec::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(bad());
        }
        let component = format!("{prefix}{part}.slice");
        check_component("slice name", &component)?;
        out.push(component);
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(out.join("/"))
}

/// Lexical clean: drops empty and "." components, resolves ".." against what precedes it, and
/// refuses a ".." that would climb above the start.
fn clean(p: &str) -> Result<String, CgroupError> {
    let mut stack: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(CgroupError::PathEscape { path: p.into() });
                }
            }
            c => {
                check_component("linux.cgroupsPath component", c)?;
                stack.push(c);
            }
        }
    }
    Ok(stack.join("/"))
}

fn check_component(what: &str, c: &str) -> Result<(), CgroupError> {
    if c.is_empty() || c == "." || c == ".." || c.contains('/') || c.contains('\0') {
        return Err(CgroupError::BadValue {
            key: what.into(),
            value: c.escape_debug().to_string(),
            reason: "must be one non-empty path component (no '/', not '.' or '..')".into(),
        });
    }
    if c.len() > 255 {
        return Err(CgroupError::BadValue {
            key: what.into(),
            value: format!("{}...", &c[..c.floor_char_boundary_compat(32)]),
            reason: "longer than 255 bytes (the longest file name)".into(),
        });
    }
    Ok(())
}

/// `str::floor_char_boundary` is not stable on our MSRV.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        if i >= self.len() {
            return self.len();
        }
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let abs = |s: &str| Inner::Absolute(s.into());
        let rel = |s: &str| Inner::Relative(s.into());
        assert_eq!(resolve(Some("/a/b"), "id", false).unwrap(), abs("a/b"));
        assert_eq!(resolve(Some("//a/./b/"), "id", false).unwrap(), abs("a/b"));
        assert_eq!(resolve(Some("/a/../b"), "id", false).unwrap(), abs("b"));
        assert_eq!(resolve(Some("a/b"), "id", false).unwrap(), rel("a/b"));
        assert_eq!(resolve(None, "id", false).unwrap(), rel("id"));
        assert_eq!(resolve(Some(""), "id", false).unwrap(), rel("id"));
        assert_eq!(
            resolve(Some("system.slice:runc:abc"), "id", false).unwrap(),
            abs("system.slice/runc-abc.scope")
        );
        assert_eq!(
            resolve(Some("a-b.slice:docker:x"), "id", false).unwrap(),
            abs("a.slice/a-b.slice/docker-x.scope")
        );
        assert_eq!(
            resolve(Some(":p:n"), "id", false).unwrap(),
            abs("system.slice/p-n.scope")
        );
        assert_eq!(
            resolve(Some("-.slice::n"), "id", false).unwrap(),
            abs("n.scope")
        );
        assert_eq!(
            resolve(Some("a.slice:p:b.slice"), "id", false).unwrap(),
            abs("a.slice/b.slice")
        );
        // Not the slice form: a plain relative name with colons.
        assert_eq!(resolve(Some("x:y:z"), "id", false).unwrap(), rel("x:y:z"));
        assert_eq!(
            resolve(None, "abc", true).unwrap(),
            abs("system.slice/runc-abc.scope")
        );
    }

    #[test]
    fn refusals() {
        for p in ["/..", "/a/../..", "../x", "a/../../b", "/a/../../etc"] {
            assert!(
                matches!(
                    resolve(Some(p), "id", false),
                    Err(CgroupError::PathEscape { .. })
                ),
                "{p}"
            );
        }
        for p in ["/", ".", "/a/..", "a\0b"] {
            assert!(resolve(Some(p), "id", false).is_err(), "{p}");
        }
        for id in ["", ".", "..", "a/b"] {
            assert!(resolve(None, id, false).is_err(), "{id:?}");
        }
        for p in [
            "x.slice:p:",
            "x.slice:p:..",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            ".slice:p:n",
        ] {
            assert!(resolve(Some(p), "id", false).is_err(), "{p}");
        }
        assert!(resolve(Some("/a/b"), "id", true).is_err());
        let long = "x".repeat(300);
        assert!(resolve(Some(&long), "id", false).is_err());
    }
}
