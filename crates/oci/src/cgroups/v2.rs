//! Cgroup v2 (the unified hierarchy): the OCI resources converted as runc 1.1 converts them
//! (cpu shares -> cpu.weight, quota/period -> cpu.max, swap -> memory.swap.max = swap - limit,
//! blkio weight -> io.weight or io.bfq.weight, throttles -> io.max), statistics, the freezer
//! (cgroup.freeze, settled when cgroup.events says frozen), creation with controllers enabled
//! in the ancestors.

use super::files::{self, CgroupDir};
use super::stats::{self, Stats};
use super::{CgroupError, Notes};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory};
use std::time::Duration;

/// runc's cpu.shares (2..262144) to cpu.weight (1..10000): linear, 0 stays unset.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000), runc's formula; 0 stays unset.
pub fn blkio_weight_to_io(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// The spec's swap (memory + swap) to memory.swap.max (swap alone), runc's rules: -1 is
/// "max", 0 "unset"; unlimited memory with swap unset means unlimited swap.
pub fn swap_to_v2(swap: i64, limit: i64) -> Result<i64, CgroupError> {
    let bad = |reason: &str| CgroupError::BadValue {
        key: "linux.resources.memory.swap".into(),
        value: swap.to_string(),
        reason: reason.into(),
    };
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err(bad("a swap limit needs a memory limit"));
    }
    if limit < 0 {
        return Err(CgroupError::BadValue {
            key: "linux.resources.memory.limit".into(),
            value: limit.to_string(),
            reason: "must be -1 (unlimited) or a positive number of bytes".into(),
        });
    }
    if swap < limit {
        return Err(bad(&format!(
            "memory+swap ({swap}) must be at least the memory limit ({limit})"
        )));
    }
    Ok(swap - limit)
}

/// "" for 0 (leave it), "max" for -1, the number otherwise.
fn num(v: i64) -> Option<String> {
    match v {
        0 => None,
        -1 => Some("max".into()),
        v => Some(v.to_string()),
    }
}

pub fn set_memory(
    dir: &dyn CgroupDir,
    m: &LinuxMemory,
    notes: &mut Notes,
) -> Result<(), CgroupError> {
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    let v2swap = swap_to_v2(swap, limit)?;
    let swap_str = match num(v2swap) {
        // Memory and memory+swap equal: no swap at all.
        None if swap > 0 => Some("0".to_string()),
        s => s,
    };
    if let Some(s) = swap_str {
        if dir.exists("memory.swap.max") {
            files::write(dir, "memory.swap.max", &s)?;
        } else if s != "max" {
            return Err(CgroupError::Unsupported(format!(
                "linux.resources.memory.swap: {} has no memory.swap.max (no swap accounting \
                 on this kernel)",
                dir.path().display()
            )));
        }
    }
    if let Some(v) = num(limit) {
        files::write(dir, "memory.max", &v)?;
    }
    if let Some(v) = m.reservation().and_then(num) {
        files::write(dir, "memory.low", &v)?;
    }
    #[allow(deprecated)]
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        notes.push("linux.resources.memory.kernel/kernelTCP are ignored on cgroup v2".into());
    }
    if m.swappiness().is_some_and(|s| s != u64::MAX) {
        notes.push(
            "linux.resources.memory.swappiness is ignored on cgroup v2 (no such knob)".into(),
        );
    }
    if m.disable_oom_killer() == Some(true) {
        notes.push(
            "linux.resources.memory.disableOOMKiller is ignored on cgroup v2 (no such knob)".into(),
        );
    }
    if m.use_hierarchy() == Some(false) {
        notes.push(
            "linux.resources.memory.useHierarchy false: cgroup v2 is always hierarchical".into(),
        );
    }
    Ok(())
}

pub fn set_cpu(dir: &dyn CgroupDir, c: &LinuxCpu, notes: &mut Notes) -> Result<(), CgroupError> {
    let weight = shares_to_weight(c.shares().unwrap_or(0));
    if weight != 0 {
        files::write(dir, "cpu.weight", &weight.to_string())?;
    }
    // A 0 asks for the default: fine on kernels without the knob.
    if let Some(i) = c.idle().filter(|i| *i != 0 || dir.exists("cpu.idle")) {
        files::write(dir, "cpu.idle", &i.to_string())?;
    }
    let quota = c.quota().unwrap_or(0);
    let period = c.period().unwrap_or(0);
    if quota != 0 || period != 0 {
        let q = if quota > 0 {
            quota.to_string()
        } else {
            "max".into()
        };
        // A period left unset keeps the current one (runc 1.1 resets it to 100000; keeping
        // it is what a quota-only `runc update` means).
        let period = if period != 0 {
            period
        } else {
            files::read_opt(dir, "cpu.max")?
                .and_then(|t| t.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
                .unwrap_or(100_000)
        };
        files::write(dir, "cpu.max", &format!("{q} {period}"))?;
    }
    if let Some(b) = c.burst().filter(|b| *b != 0 || dir.exists("cpu.max.burst")) {
        files::write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if c.realtime_period().is_some_and(|v| v != 0) || c.realtime_runtime().is_some_and(|v| v != 0) {
        notes.push(
            "linux.resources.cpu.realtimePeriod/realtimeRuntime are ignored on cgroup v2 (no \
             realtime bandwidth knobs)"
                .into(),
        );
    }
    Ok(())
}

pub fn set_cpuset(
    dir: &dyn CgroupDir,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> Result<(), CgroupError> {
    super::v1::set_cpuset(dir, cpus, mems)
}

pub fn set_pids(dir: &dyn CgroupDir, limit: i64) -> Result<(), CgroupError> {
    super::v1::set_pids(dir, limit)
}

pub fn set_io(dir: &dyn CgroupDir, b: &LinuxBlockIo, notes: &mut Notes) -> Result<(), CgroupError> {
    let bfq = dir.exists("io.bfq.weight");
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if bfq {
            // BFQ takes the v1 range as is.
            files::write(dir, "io.bfq.weight", &w.to_string())?;
        } else if dir.exists("io.weight") {
            files::write(dir, "io.weight", &blkio_weight_to_io(w).to_string())?;
        } else {
            return Err(CgroupError::Unsupported(format!(
                "linux.resources.blockIO.weight: {} has neither io.bfq.weight nor io.weight \
                 (no BFQ scheduler, no io cost model)",
                dir.path().display()
            )));
        }
    }
    // Per-device weights: BFQ only, and only when its file takes "MAJ:MIN W" lines (its
    // content is then "default N", not a bare number).
    let bfq_devices = bfq
        && files::read_opt(dir, "io.bfq.weight")?.is_some_and(|t| t.trim().parse::<u64>().is_err());
    for wd in b.weight_device().iter().flatten() {
        let dev = super::v1::device(wd.major(), wd.minor(), "weightDevice")?;
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            if bfq_devices {
                files::write(dir, "io.bfq.weight", &format!("{dev} {w}"))?;
            } else {
                notes.push(format!(
                    "linux.resources.blockIO.weightDevice {dev} is ignored (per-device weights \
                     need the BFQ scheduler on cgroup v2)"
                ));
            }
        }
    }
    if b.leaf_weight().is_some_and(|w| w != 0)
        || b.weight_device()
            .iter()
            .flatten()
            .any(|w| w.leaf_weight().is_some_and(|w| w != 0))
    {
        notes.push("linux.resources.blockIO leaf weights are ignored on cgroup v2".into());
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "rbps",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "wbps",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "riops",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "wiops",
            "throttleWriteIOPSDevice",
        ),
    ];
    for (list, name, key) in throttles {
        for t in list.iter().flatten() {
            let dev = super::v1::device(t.major(), t.minor(), key)?;
            // 0 removes a v1 throttle; its v2 spelling is "max".
            let rate = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            files::write(dir, "io.max", &format!("{dev} {name}={rate}"))?;
        }
    }
    Ok(())
}

/// hugetlb.<size>.max, and .rsvd.max where the kernel has reservation accounting.
pub fn set_hugetlb(dir: &dyn CgroupDir, size: &str, limit: i64) -> Result<(), CgroupError> {
    let file = format!("hugetlb.{size}.max");
    if !dir.exists(&file) {
        return Err(super::resources::no_page_size(size));
    }
    let v = if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    };
    files::write(dir, &file, &v)?;
    let rsvd = format!("hugetlb.{size}.rsvd.max");
    if dir.exists(&rsvd) {
        files::write(dir, &rsvd, &v)?;
    }
    Ok(())
}

/// The controllers a v2 cgroup has (its cgroup.controllers).
pub fn controllers(dir: &dyn CgroupDir) -> Result<Vec<String>, CgroupError> {
    Ok(files::read_opt(dir, "cgroup.controllers")?
        .map(|t| t.split_whitespace().take(64).map(String::from).collect())
        .unwrap_or_default())
}

/// Enables, in `parent`, every controller it has for its children (best effort, one by one
/// when the whole set is refused: a parent with processes of its own cannot delegate domain
/// controllers; what is missing shows up later as "controller X is not available").
pub fn enable_controllers(parent: &dyn CgroupDir) -> Result<(), CgroupError> {
    let have = controllers(parent)?;
    if have.is_empty() {
        return Ok(());
    }
    let enabled: Vec<String> = files::read_opt(parent, "cgroup.subtree_control")?
        .map(|t| t.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let missing: Vec<&String> = have.iter().filter(|c| !enabled.contains(c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if parent.write("cgroup.subtree_control", &all).is_err() {
        for c in missing {
            let _ = parent.write("cgroup.subtree_control", &format!("+{c}"));
        }
    }
    Ok(())
}

/// Statistics from a v2 cgroup: `has` tells which controllers to read (the rest is filled
/// from v1 hierarchies in the hybrid layout).
pub fn stats(
    dir: &dyn CgroupDir,
    has: &dyn Fn(&str) -> bool,
    s: &mut Stats,
) -> Result<(), CgroupError> {
    if has("cpu") {
        if let Some(t) = files::read_opt(dir, "cpu.stat")? {
            let m = stats::flat_keyed(&t);
            let us = |k: &str| m.get(k).copied().unwrap_or(0).saturating_mul(1000);
            s.cpu.usage.total = us("usage_usec");
            s.cpu.usage.user = us("user_usec");
            s.cpu.usage.kernel = us("system_usec");
            s.cpu.throttling.periods = m.get("nr_periods").copied().unwrap_or(0);
            s.cpu.throttling.throttled_periods = m.get("nr_throttled").copied().unwrap_or(0);
            s.cpu.throttling.throttled_time = us("throttled_usec");
        }
    }
    if has("cpuset") {
        let list = |f: &str| -> Result<Vec<u16>, CgroupError> {
            Ok(files::read_opt(dir, f)?
                .and_then(|t| stats::cpuset_list(&t))
                .unwrap_or_default())
        };
        s.cpuset.cpus = list("cpuset.cpus.effective")?;
        s.cpuset.mems = list("cpuset.mems.effective")?;
    }
    if has("memory") {
        if let Some(t) = files::read_opt(dir, "memory.stat")? {
            s.memory.raw = stats::flat_keyed(&t);
            s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
        }
        let get = |f: &str| -> Result<Option<u64>, CgroupError> {
            Ok(files::read_opt(dir, f)?.and_then(|t| stats::parse_u64(&t)))
        };
        let events = files::read_opt(dir, "memory.events")?.unwrap_or_default();
        s.memory.usage = stats::MemoryEntry {
            limit: get("memory.max")?.unwrap_or(u64::MAX),
            usage: get("memory.current")?.unwrap_or(0),
            max: get("memory.peak")?.unwrap_or(0),
            failcnt: stats::keyed_value(&events, "max").unwrap_or(0),
        };
        // runc reports swap as memory + swap, like v1's memsw.
        if let Some(swap) = get("memory.swap.current")? {
            let limit = get("memory.swap.max")?.unwrap_or(u64::MAX);
            s.memory.swap = stats::MemoryEntry {
                usage: swap.saturating_add(s.memory.usage.usage),
                limit: if limit == u64::MAX {
                    u64::MAX
                } else {
                    limit.saturating_add(s.memory.usage.limit)
                },
                max: 0,
                failcnt: 0,
            };
        }
    }
    if has("pids") {
        let get = |f: &str| -> Result<Option<u64>, CgroupError> {
            Ok(files::read_opt(dir, f)?.and_then(|t| stats::parse_u64(&t)))
        };
        s.pids.current = get("pids.current")?.unwrap_or(0);
        s.pids.limit = get("pids.max")?.filter(|m| *m != u64::MAX).unwrap_or(0);
    } else if s.pids.current == 0 {
        // No pids controller: count the processes, as runc does.
        if let Some(t) = files::read_opt(dir, "cgroup.procs")? {
            s.pids.current = t.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
    }
    if has("io") {
        if let Some(t) = files::read_opt(dir, "io.stat")? {
            let mut b = stats::Blkio::default();
            stats::io_stat(&t, &mut b);
            s.blkio = b;
        }
    }
    if has("hugetlb") {
        for size in stats::hugepage_sizes() {
            let usage = files::read_opt(dir, &format!("hugetlb.{size}.current"))?
                .and_then(|t| stats::parse_u64(&t))
                .unwrap_or(0);
            let failcnt = files::read_opt(dir, &format!("hugetlb.{size}.events"))?
                .and_then(|t| stats::keyed_value(&t, "max"))
                .unwrap_or(0);
            s.hugetlb.insert(
                size,
                stats::Hugetlb {
                    usage,
                    max: 0,
                    failcnt,
                },
            );
        }
    }
    Ok(())
}

/// OOM kills so far (memory.events' oom_kill).
pub fn oom_kill_count(dir: &dyn CgroupDir) -> Result<u64, CgroupError> {
    let t = files::read(dir, "memory.events")?;
    Ok(stats::keyed_value(&t, "oom_kill").unwrap_or(0))
}

/// Writes cgroup.freeze and waits (up to 10 s, like runc) for cgroup.events to agree.
pub fn set_frozen(dir: &dyn CgroupDir, frozen: bool) -> Result<(), CgroupError> {
    let want = if frozen { "1" } else { "0" };
    files::write(dir, "cgroup.freeze", want)?;
    for _ in 0..1000 {
        let events = files::read(dir, "cgroup.events")?;
        match stats::keyed_value(&events, "frozen") {
            Some(v) if (v == 1) == frozen => return Ok(()),
            // A kernel without the key: trust the write.
            None => return Ok(()),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    if frozen {
        let _ = dir.write("cgroup.freeze", "0");
    }
    Err(CgroupError::Freeze(format!(
        "{}: the cgroup did not {} within 10 s",
        dir.path().display(),
        if frozen { "freeze" } else { "thaw" }
    )))
}

pub fn is_frozen(dir: &dyn CgroupDir) -> Result<bool, CgroupError> {
    Ok(files::read(dir, "cgroup.freeze")?.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_as_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(500), 4950);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
        assert_eq!(swap_to_v2(0, -1).unwrap(), -1);
        assert_eq!(swap_to_v2(-1, 100).unwrap(), -1);
        assert_eq!(swap_to_v2(0, 100).unwrap(), 0);
        assert_eq!(swap_to_v2(300, 100).unwrap(), 200);
        assert_eq!(swap_to_v2(100, 100).unwrap(), 0);
        assert!(swap_to_v2(50, 100).is_err());
        assert!(swap_to_v2(50, 0).is_err());
        assert!(swap_to_v2(50, -1).is_err());
        assert!(swap_to_v2(50, -7).is_err());
    }
}
