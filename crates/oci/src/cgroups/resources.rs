//! `linux.resources` to cgroup writes: validation first (nothing is written for a config with a
//! bad value), then each controller routed to where this host has it and written there.
//!
//! Routing: a controller mounted as cgroup v1 is used there; otherwise the v2 cgroup is used
//! when it has the controller (its cgroup.controllers). The kernel binds a controller to one
//! hierarchy only, so the two never compete: on this kind of hybrid host hugetlb, not mounted
//! as v1, is the one served by the v2 hierarchy. Device rules go to the v1 devices controller,
//! else to an eBPF program on the v2 cgroup. `unified` is v2 only.

use super::devices;
use super::files::{self, CgroupDir};
use super::{v1, v2, CgroupError, Layout, Notes};
use oci_spec::runtime::LinuxResources;

/// Where the writes go: the container's directory per v1 controller, and its v2 directory.
pub struct Target<'a> {
    pub layout: Layout,
    /// (v1 controller name, the container's cgroup in that controller's hierarchy).
    pub v1: Vec<(&'a str, &'a dyn CgroupDir)>,
    pub v2: Option<&'a dyn CgroupDir>,
    /// The v2 hierarchy's mount point, for messages ("v2 at /sys/fs/cgroup/unified
    /// delegates only: hugetlb"); the v2 directory itself when None.
    pub v2_mount: Option<&'a std::path::Path>,
    /// Rootless: device rules that cannot be written are skipped, as runc does.
    pub rootless: bool,
}

enum Route<'a> {
    V1(&'a dyn CgroupDir),
    V2(&'a dyn CgroupDir),
}

impl<'a> Target<'a> {
    pub fn v1_dir(&self, controller: &str) -> Option<&'a dyn CgroupDir> {
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| *d)
    }

    /// Where controller `v1name` (`v2name` in the unified hierarchy, None if v2 has no such
    /// controller) lives.
    fn route(
        &self,
        v1name: &str,
        v2name: Option<&str>,
        v2ctrls: &[String],
    ) -> Result<Route<'a>, CgroupError> {
        let missing = |dir: &dyn CgroupDir| CgroupError::NotJoined {
            controller: v1name.into(),
            path: dir.path().to_path_buf(),
        };
        if let Some(d) = self.v1_dir(v1name) {
            if !d.is_present() {
                return Err(missing(d));
            }
            return Ok(Route::V1(d));
        }
        if let (Some(d), Some(n)) = (self.v2, v2name) {
            if v2ctrls.iter().any(|c| c == n) {
                if !d.is_present() {
                    return Err(missing(d));
                }
                return Ok(Route::V2(d));
            }
        }
        Err(self.not_available(v1name, v2name, v2ctrls))
    }

    pub fn not_available(
        &self,
        v1name: &str,
        v2name: Option<&str>,
        v2ctrls: &[String],
    ) -> CgroupError {
        let delegated = if v2ctrls.is_empty() {
            "nothing".to_string()
        } else {
            v2ctrls.join(" ")
        };
        let v2where = match (self.v2_mount, self.v2) {
            (Some(m), _) => m.display().to_string(),
            (None, Some(d)) => d.path().display().to_string(),
            (None, None) => String::new(),
        };
        let detail = match (self.layout, self.v2) {
            (Layout::V1, _) | (_, None) => "no cgroup v1 hierarchy has it mounted".to_string(),
            (Layout::Hybrid, Some(_)) if v2name.is_none() => {
                format!("not mounted as cgroup v1, and cgroup v2 has no {v1name} controller")
            }
            (Layout::Hybrid, Some(_)) => {
                format!("not mounted as cgroup v1; v2 at {v2where} delegates only: {delegated}")
            }
            (Layout::V2, Some(_)) if v2name.is_none() => {
                format!("cgroup v2 has no {v1name} controller (a cgroup v1 feature)")
            }
            (Layout::V2, Some(_)) => format!("v2 at {v2where} delegates only: {delegated}"),
        };
        CgroupError::NotAvailable {
            controller: v2name.unwrap_or(v1name).to_string(),
            detail,
        }
    }
}

/// `linux.resources` from JSON (config.json's object, or `runc update -r` resources.json).
pub fn from_json(bytes: &[u8]) -> Result<LinuxResources, CgroupError> {
    serde_json::from_slice(bytes).map_err(|e| CgroupError::BadValue {
        key: "linux.resources".into(),
        value: "(JSON)".into(),
        reason: e.to_string(),
    })
}

/// Checks every value that can be checked without the host: ranges, device rules, page size
/// names, unified keys. Returns notes on what will be ignored.
pub fn validate(r: &LinuxResources) -> Result<Notes, CgroupError> {
    let notes = Notes::new();
    if let Some(m) = r.memory() {
        if let Some(s) = m.swappiness() {
            if s > 100 && s != u64::MAX {
                return Err(CgroupError::BadValue {
                    key: "linux.resources.memory.swappiness".into(),
                    value: s.to_string(),
                    reason: "out of range (0-100)".into(),
                });
            }
        }
        for (key, v) in [
            ("limit", m.limit()),
            ("reservation", m.reservation()),
            ("swap", m.swap()),
        ] {
            if let Some(v) = v {
                if v < -1 {
                    return Err(CgroupError::BadValue {
                        key: format!("linux.resources.memory.{key}"),
                        value: v.to_string(),
                        reason: "must be -1 (unlimited), 0 (unset) or a number of bytes".into(),
                    });
                }
            }
        }
        let (limit, swap) = (m.limit().unwrap_or(0), m.swap().unwrap_or(0));
        if limit > 0 && swap > 0 && swap < limit {
            return Err(CgroupError::BadValue {
                key: "linux.resources.memory.swap".into(),
                value: swap.to_string(),
                reason: format!("memory+swap must be at least the memory limit ({limit})"),
            });
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(i) = c.idle() {
            if !(0..=1).contains(&i) {
                return Err(CgroupError::BadValue {
                    key: "linux.resources.cpu.idle".into(),
                    value: i.to_string(),
                    reason: "must be 0 or 1".into(),
                });
            }
        }
        for (key, v) in [("cpus", c.cpus()), ("mems", c.mems())] {
            if let Some(v) = v {
                if !v.is_empty() && super::stats::cpuset_list(v).is_none() {
                    return Err(CgroupError::BadValue {
                        key: format!("linux.resources.cpu.{key}"),
                        value: v.escape_debug().to_string(),
                        reason: "not a list like \"0-3,7\"".into(),
                    });
                }
            }
        }
    }
    if let Some(list) = r.devices() {
        let rules = devices::parse_rules(list)?;
        devices::State::from_rules(&rules)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        check_page_size(h.page_size())?;
        if h.limit() < -1 {
            return Err(CgroupError::BadValue {
                key: format!("linux.resources.hugepageLimits[{}].limit", h.page_size()),
                value: h.limit().to_string(),
                reason: "must be -1 (unlimited) or a number of bytes".into(),
            });
        }
    }
    if let Some(n) = r.network() {
        for p in n.priorities().iter().flatten() {
            if !files::check_file_name(p.name()) || p.name().chars().any(char::is_whitespace) {
                return Err(CgroupError::BadValue {
                    key: "linux.resources.network.priorities.name".into(),
                    value: p.name().escape_debug().to_string(),
                    reason: "not an interface name".into(),
                });
            }
        }
    }
    for dev in r.rdma().iter().flat_map(|m| m.keys()) {
        if dev.is_empty()
            || dev.len() > 64
            || dev.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(CgroupError::BadValue {
                key: "linux.resources.rdma".into(),
                value: dev.escape_debug().to_string(),
                reason: "not an RDMA device name".into(),
            });
        }
    }
    for (k, v) in r.unified().iter().flatten() {
        check_unified_key(k)?;
        if v.contains('\0') {
            return Err(CgroupError::BadValue {
                key: format!("linux.resources.unified.{k}"),
                value: v.escape_debug().to_string(),
                reason: "contains a NUL byte".into(),
            });
        }
    }
    Ok(notes)
}

/// "2MB", "1GB", "64KB": digits and a unit, as runc's page size names are.
fn check_page_size(s: &str) -> Result<(), CgroupError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let ok = digits > 0
        && digits <= 10
        && matches!(&s[digits..], "KB" | "MB" | "GB" | "TB" | "PB" | "B");
    if !ok {
        return Err(CgroupError::BadValue {
            key: "linux.resources.hugepageLimits.pageSize".into(),
            value: s.escape_debug().to_string(),
            reason: "not a page size like \"2MB\" or \"1GB\"".into(),
        });
    }
    Ok(())
}

pub(crate) fn no_page_size(size: &str) -> CgroupError {
    let have = super::stats::hugepage_sizes();
    CgroupError::BadValue {
        key: "linux.resources.hugepageLimits.pageSize".into(),
        value: size.into(),
        reason: format!(
            "this kernel has no such huge page size (it has: {})",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ),
    }
}

/// A `unified` key: one file name of the form controller.knob, and not one of the files that
/// move processes or reshape the tree.
fn check_unified_key(k: &str) -> Result<(), CgroupError> {
    let bad = |reason: &str| CgroupError::BadValue {
        key: "linux.resources.unified".into(),
        value: k.escape_debug().to_string(),
        reason: reason.into(),
    };
    if !files::check_file_name(k) {
        return Err(bad("must be a file name in the cgroup directory (no '/')"));
    }
    if !k.contains('.') {
        return Err(bad("must be of the form CONTROLLER.KNOB"));
    }
    if matches!(
        k,
        "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control" | "cgroup.type"
    ) {
        return Err(bad("moves processes or reshapes the tree: not a resource"));
    }
    Ok(())
}

/// Writes `r` into the target's cgroups (create and update alike). Returns notes on what was
/// ignored.
pub fn set_resources(t: &Target, r: &LinuxResources) -> Result<Notes, CgroupError> {
    let mut notes = validate(r)?;
    let v2ctrls = match t.v2 {
        Some(d) if d.is_present() => v2::controllers(d)?,
        _ => Vec::new(),
    };
    let cpu = r.cpu().as_ref();

    // runc's order: cpuset, devices, memory, cpu, pids, blkio, hugetlb, net_cls, net_prio,
    // rdma; then unified (which may override any of them).
    if let Some(c) = cpu.filter(|c| {
        c.cpus().as_deref().is_some_and(|s| !s.is_empty())
            || c.mems().as_deref().is_some_and(|s| !s.is_empty())
    }) {
        let (cpus, mems) = (c.cpus().as_deref(), c.mems().as_deref());
        match t.route("cpuset", Some("cpuset"), &v2ctrls)? {
            Route::V1(d) => v1::set_cpuset(d, cpus, mems)?,
            Route::V2(d) => v2::set_cpuset(d, cpus, mems)?,
        }
    }
    if let Some(list) = r.devices() {
        let rules = devices::parse_rules(list)?;
        let res = match (t.v1_dir("devices"), t.v2) {
            (Some(d), _) if d.is_present() => devices::set_v1(d, &rules),
            (None, Some(d)) if d.is_present() => devices::set_v2(d, &rules),
            (Some(d), _) | (None, Some(d)) => Err(CgroupError::NotJoined {
                controller: "devices".into(),
                path: d.path().to_path_buf(),
            }),
            (None, None) => Err(t.not_available("devices", None, &v2ctrls)),
        };
        match res {
            Err(e) if t.rootless => notes.push(format!("device rules not applied (rootless): {e}")),
            other => other?,
        }
    }
    if let Some(m) = r.memory() {
        let set = m.limit().is_some_and(|v| v != 0)
            || m.swap().is_some_and(|v| v != 0)
            || m.reservation().is_some_and(|v| v != 0)
            || m.disable_oom_killer() == Some(true)
            || m.swappiness().is_some_and(|v| v != u64::MAX)
            || m.use_hierarchy().is_some();
        #[allow(deprecated)]
        let ignored_only = m.kernel().is_some() || m.kernel_tcp().is_some();
        if set {
            match t.route("memory", Some("memory"), &v2ctrls)? {
                Route::V1(d) => v1::set_memory(d, m, &mut notes)?,
                Route::V2(d) => v2::set_memory(d, m, &mut notes)?,
            }
        } else if ignored_only {
            notes.push("linux.resources.memory.kernel/kernelTCP are ignored".into());
        }
    }
    if let Some(c) = cpu {
        let set = c.shares().is_some_and(|v| v != 0)
            || c.quota().is_some_and(|v| v != 0)
            || c.period().is_some_and(|v| v != 0)
            || c.burst().is_some()
            || c.idle().is_some()
            || c.realtime_period().is_some_and(|v| v != 0)
            || c.realtime_runtime().is_some_and(|v| v != 0);
        if set {
            match t.route("cpu", Some("cpu"), &v2ctrls)? {
                Route::V1(d) => v1::set_cpu(d, c)?,
                Route::V2(d) => v2::set_cpu(d, c, &mut notes)?,
            }
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        match t.route("pids", Some("pids"), &v2ctrls)? {
            Route::V1(d) => v1::set_pids(d, p.limit())?,
            Route::V2(d) => v2::set_pids(d, p.limit())?,
        }
    }
    if let Some(b) = r.block_io() {
        let set = b.weight().is_some_and(|w| w != 0)
            || b.leaf_weight().is_some_and(|w| w != 0)
            || [
                b.throttle_read_bps_device(),
                b.throttle_write_bps_device(),
                b.throttle_read_iops_device(),
                b.throttle_write_iops_device(),
            ]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
            || b.weight_device().as_ref().is_some_and(|l| !l.is_empty());
        if set {
            match t.route("blkio", Some("io"), &v2ctrls)? {
                Route::V1(d) => v1::set_blkio(d, b)?,
                Route::V2(d) => v2::set_io(d, b, &mut notes)?,
            }
        }
    }
    if let Some(list) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
        let route = t.route("hugetlb", Some("hugetlb"), &v2ctrls)?;
        for h in list {
            match route {
                Route::V1(d) => v1::set_hugetlb(d, h.page_size(), h.limit())?,
                Route::V2(d) => v2::set_hugetlb(d, h.page_size(), h.limit())?,
            }
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id().filter(|id| *id != 0) {
            match t.route("net_cls", None, &v2ctrls)? {
                Route::V1(d) | Route::V2(d) => files::write(d, "net_cls.classid", &id.to_string())?,
            }
        }
        if let Some(prios) = n.priorities().as_ref().filter(|p| !p.is_empty()) {
            match t.route("net_prio", None, &v2ctrls)? {
                Route::V1(d) | Route::V2(d) => {
                    for p in prios {
                        files::write(
                            d,
                            "net_prio.ifpriomap",
                            &format!("{} {}", p.name(), p.priority()),
                        )?;
                    }
                }
            }
        }
    }
    if let Some(map) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
        let d = match t.route("rdma", Some("rdma"), &v2ctrls)? {
            Route::V1(d) | Route::V2(d) => d,
        };
        // Sorted, for a stable order of writes.
        let mut devs: Vec<_> = map.iter().collect();
        devs.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, l) in devs {
            let mut line = dev.clone();
            if let Some(h) = l.hca_handles() {
                line.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = l.hca_objects() {
                line.push_str(&format!(" hca_object={o}"));
            }
            if line != *dev {
                files::write(d, "rdma.max", &line)?;
            }
        }
    }
    if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        let Some(d) = t.v2.filter(|_| t.layout != Layout::V1) else {
            return Err(CgroupError::Unsupported(
                "linux.resources.unified needs cgroup v2, and this host has only cgroup v1".into(),
            ));
        };
        if !d.is_present() {
            return Err(CgroupError::NotJoined {
                controller: "unified".into(),
                path: d.path().to_path_buf(),
            });
        }
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        for (k, v) in keys {
            if !d.exists(k) {
                let ctrl = k.split('.').next().unwrap_or(k);
                let v1name = if ctrl == "io" { "blkio" } else { ctrl };
                let why = if ctrl == "cgroup" || v2ctrls.iter().any(|c| c == ctrl) {
                    "no such file".to_string()
                } else if let Some(v1) = t.v1_dir(v1name) {
                    format!(
                        "controller {ctrl} is bound to cgroup v1 on this host ({}): set it \
                         through its linux.resources field",
                        v1.path().display()
                    )
                } else {
                    let e = t.not_available(ctrl, Some(ctrl), &v2ctrls);
                    e.to_string().trim_start_matches("cgroup: ").to_string()
                };
                return Err(CgroupError::BadValue {
                    key: format!("linux.resources.unified.{k}"),
                    value: v.escape_debug().to_string(),
                    reason: format!("{} has no {k} ({why})", d.path().display()),
                });
            }
            files::write(d, k, v)?;
        }
    }
    Ok(notes)
}
