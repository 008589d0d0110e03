//! Cgroup v1: one directory per hierarchy; the knobs of each controller, written as runc 1.1
//! writes them (same files, same order, same special cases), their statistics, the freezer.

use super::files::{self, CgroupDir};
use super::stats::{self, Stats};
use super::{CgroupError, Notes};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory};
use std::time::Duration;

/// memory: limit, swap (memsw = memory + swap, as the spec's swap is), reservation, OOM killer,
/// swappiness, hierarchy.
pub fn set_memory(
    dir: &dyn CgroupDir,
    m: &LinuxMemory,
    notes: &mut Notes,
) -> Result<(), CgroupError> {
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    let has_memsw = dir.exists("memory.memsw.limit_in_bytes");
    // "Unlimited memory" with swap unset means unlimited swap too (when there is swap
    // accounting).
    if limit == -1 && swap == 0 && has_memsw {
        swap = -1;
    }
    if swap != 0 && swap != -1 && !has_memsw {
        return Err(CgroupError::Unsupported(format!(
            "linux.resources.memory.swap: {}: this kernel has no swap accounting \
             (memory.memsw.limit_in_bytes missing; boot with swapaccount=1)",
            dir.path().display()
        )));
    }
    let swap = if has_memsw { swap } else { 0 };
    // The kernel requires memsw >= memory at every step: raise swap first when growing.
    let swap_first = if limit != 0 && swap != 0 {
        let cur = files::read(dir, "memory.limit_in_bytes")?;
        let cur = stats::parse_u64(&cur).unwrap_or(u64::MAX);
        swap == -1 || cur < swap as u64
    } else {
        false
    };
    if swap_first {
        set_swap(dir, swap)?;
        set_limit(dir, limit)?;
    } else {
        set_limit(dir, limit)?;
        set_swap(dir, swap)?;
    }
    #[allow(deprecated)]
    if m.kernel().is_some() {
        notes.push(
            "linux.resources.memory.kernel is ignored (kernel memory limits are obsolete since \
             Linux 5.4)"
                .into(),
        );
    }
    if m.kernel_tcp().is_some() {
        notes.push("linux.resources.memory.kernelTCP is ignored (as runc does)".into());
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        files::write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        files::write(dir, "memory.oom_control", "1")?;
    }
    // u64::MAX is -1 in Go's config: "unset".
    if let Some(s) = m.swappiness().filter(|s| *s != u64::MAX) {
        files::write(dir, "memory.swappiness", &s.to_string())?;
    }
    if let Some(h) = m.use_hierarchy() {
        let v = if h { "1" } else { "0" };
        dir.write("memory.use_hierarchy", v).map_err(|e| {
            if !h && e.raw_os_error() == Some(libc::EINVAL) {
                CgroupError::Unsupported(
                    "linux.resources.memory.useHierarchy false: this kernel only has \
                     hierarchical memory accounting"
                        .into(),
                )
            } else {
                CgroupError::Write {
                    path: dir.path().join("memory.use_hierarchy"),
                    value: v.into(),
                    source: e,
                }
            }
        })?;
    }
    Ok(())
}

fn set_limit(dir: &dyn CgroupDir, limit: i64) -> Result<(), CgroupError> {
    if limit == 0 {
        return Ok(());
    }
    match dir.write("memory.limit_in_bytes", &limit.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let get = |f| {
                files::read(dir, f)
                    .ok()
                    .and_then(|s| stats::parse_u64(&s))
                    .unwrap_or(0)
            };
            Err(CgroupError::MemoryBusy {
                limit,
                usage: get("memory.usage_in_bytes"),
                peak: get("memory.max_usage_in_bytes"),
            })
        }
        Err(source) => Err(CgroupError::Write {
            path: dir.path().join("memory.limit_in_bytes"),
            value: limit.to_string(),
            source,
        }),
    }
}

fn set_swap(dir: &dyn CgroupDir, swap: i64) -> Result<(), CgroupError> {
    if swap == 0 {
        return Ok(());
    }
    files::write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())
}

/// cpu: shares (read back: the kernel clamps), CFS period/quota/burst, idle, realtime.
pub fn set_cpu(dir: &dyn CgroupDir, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        files::write(dir, "cpu.shares", &shares.to_string())?;
        let got = files::read(dir, "cpu.shares")?;
        if let Some(got) = stats::parse_u64(&got) {
            if shares > got {
                return Err(CgroupError::BadValue {
                    key: "linux.resources.cpu.shares".into(),
                    value: shares.to_string(),
                    reason: format!("the maximum allowed cpu-shares is {got}"),
                });
            } else if shares < got {
                return Err(CgroupError::BadValue {
                    key: "linux.resources.cpu.shares".into(),
                    value: shares.to_string(),
                    reason: format!("the minimum allowed cpu-shares is {got}"),
                });
            }
        }
    }
    let quota = c.quota().unwrap_or(0);
    let mut period_pending = None;
    if let Some(period) = c.period().filter(|p| *p != 0) {
        // A smaller period can be refused (EINVAL) until the quota is lowered: retry after.
        match dir.write("cpu.cfs_period_us", &period.to_string()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota != 0 => {
                period_pending = Some(period)
            }
            Err(source) => {
                return Err(CgroupError::Write {
                    path: dir.path().join("cpu.cfs_period_us"),
                    value: period.to_string(),
                    source,
                })
            }
        }
    }
    if quota != 0 {
        files::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        if let Some(p) = period_pending {
            files::write(dir, "cpu.cfs_period_us", &p.to_string())?;
        }
    }
    // A 0 asks for the default: fine on kernels without the knob.
    if let Some(b) = c
        .burst()
        .filter(|b| *b != 0 || dir.exists("cpu.cfs_burst_us"))
    {
        files::write(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    if let Some(i) = c.idle().filter(|i| *i != 0 || dir.exists("cpu.idle")) {
        files::write(dir, "cpu.idle", &i.to_string())?;
    }
    set_rt(dir, c)
}

/// Realtime bandwidth (also written before a process joins: a SCHED_RR/FIFO process cannot
/// join a cgroup without it).
pub fn set_rt(dir: &dyn CgroupDir, c: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
        files::write(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
        files::write(dir, "cpu.rt_runtime_us", &r.to_string())?;
    }
    Ok(())
}

/// cpuset: cpus and mems (a new v1 cpuset is empty: `copy_cpuset_from_parent` fills it first).
pub fn set_cpuset(
    dir: &dyn CgroupDir,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> Result<(), CgroupError> {
    if let Some(c) = cpus.filter(|c| !c.is_empty()) {
        files::write(dir, "cpuset.cpus", c)?;
    }
    if let Some(m) = mems.filter(|m| !m.is_empty()) {
        files::write(dir, "cpuset.mems", m)?;
    }
    Ok(())
}

/// A new v1 cpuset cgroup has no cpus and no mems, and no task can join it: copies the
/// parent's when empty.
pub fn copy_cpuset_from_parent(
    dir: &dyn CgroupDir,
    parent: &dyn CgroupDir,
) -> Result<(), CgroupError> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if files::read(dir, f)?.trim().is_empty() {
            let v = files::read(parent, f)?;
            let v = v.trim();
            if !v.is_empty() {
                files::write(dir, f, v)?;
            }
        }
    }
    Ok(())
}

/// pids: 0 leaves it, negative is "max" (runc).
pub fn set_pids(dir: &dyn CgroupDir, limit: i64) -> Result<(), CgroupError> {
    if limit == 0 {
        return Ok(());
    }
    let v = if limit > 0 {
        limit.to_string()
    } else {
        "max".into()
    };
    files::write(dir, "pids.max", &v)
}

/// blkio: weights (CFQ's blkio.weight, else BFQ's blkio.bfq.weight) and throttles.
pub fn set_blkio(dir: &dyn CgroupDir, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let (weight_file, weight_device_file) = if dir.exists("blkio.weight") {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    let no_weight = |what: &str| {
        CgroupError::Unsupported(format!(
            "linux.resources.blockIO.{what}: {} has neither blkio.weight nor blkio.bfq.weight \
             (no CFQ or BFQ I/O scheduler on this kernel's disks)",
            dir.path().display()
        ))
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if !dir.exists(weight_file) {
            return Err(no_weight("weight"));
        }
        files::write(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        files::write(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        let dev = device(wd.major(), wd.minor(), "weightDevice")?;
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            if !dir.exists(weight_device_file) {
                return Err(no_weight("weightDevice"));
            }
            files::write(dir, weight_device_file, &format!("{dev} {w}"))?;
        }
        if let Some(w) = wd.leaf_weight().filter(|w| *w != 0) {
            files::write(dir, "blkio.leaf_weight_device", &format!("{dev} {w}"))?;
        }
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "throttleWriteIOPSDevice",
        ),
    ];
    for (list, file, key) in throttles {
        for t in list.iter().flatten() {
            let dev = device(t.major(), t.minor(), key)?;
            files::write(dir, file, &format!("{dev} {}", t.rate()))?;
        }
    }
    Ok(())
}

/// "major:minor" of a block device in blockIO.
pub fn device(major: i64, minor: i64, key: &str) -> Result<String, CgroupError> {
    let ok = |v: i64| (0..=i64::from(u32::MAX)).contains(&v);
    if !ok(major) || !ok(minor) {
        return Err(CgroupError::BadValue {
            key: format!("linux.resources.blockIO.{key}"),
            value: format!("{major}:{minor}"),
            reason: "major and minor must be device numbers (0..4294967295)".into(),
        });
    }
    Ok(format!("{major}:{minor}"))
}

/// hugetlb: hugetlb.<size>.limit_in_bytes.
pub fn set_hugetlb(dir: &dyn CgroupDir, size: &str, limit: i64) -> Result<(), CgroupError> {
    let file = format!("hugetlb.{size}.limit_in_bytes");
    if !dir.exists(&file) {
        return Err(super::resources::no_page_size(size));
    }
    files::write(dir, &file, &limit.to_string())
}

/// The v1 statistics of the controllers `ctrl` (names of one hierarchy) found in `dir`.
pub fn stats(ctrl: &str, dir: &dyn CgroupDir, s: &mut Stats) -> Result<(), CgroupError> {
    match ctrl {
        "cpuacct" => cpuacct_stats(dir, s),
        "cpu" => {
            if let Some(t) = files::read_opt(dir, "cpu.stat")? {
                let m = stats::flat_keyed(&t);
                s.cpu.throttling.periods = m.get("nr_periods").copied().unwrap_or(0);
                s.cpu.throttling.throttled_periods = m.get("nr_throttled").copied().unwrap_or(0);
                s.cpu.throttling.throttled_time = m.get("throttled_time").copied().unwrap_or(0);
            }
            Ok(())
        }
        "cpuset" => {
            let list = |f: &str| -> Result<Vec<u16>, CgroupError> {
                Ok(files::read_opt(dir, f)?
                    .and_then(|t| stats::cpuset_list(&t))
                    .unwrap_or_default())
            };
            let num = |f: &str| -> Result<u64, CgroupError> {
                Ok(files::read_opt(dir, f)?
                    .and_then(|t| stats::parse_u64(&t))
                    .unwrap_or(0))
            };
            let c = &mut s.cpuset;
            c.cpus = list("cpuset.cpus")?;
            c.mems = list("cpuset.mems")?;
            c.cpu_exclusive = num("cpuset.cpu_exclusive")?;
            c.mem_hardwall = num("cpuset.mem_hardwall")?;
            c.mem_exclusive = num("cpuset.mem_exclusive")?;
            c.memory_migrate = num("cpuset.memory_migrate")?;
            c.memory_spread_page = num("cpuset.memory_spread_page")?;
            c.memory_spread_slab = num("cpuset.memory_spread_slab")?;
            c.memory_pressure = num("cpuset.memory_pressure")?;
            c.sched_load_balance = num("cpuset.sched_load_balance")?;
            c.sched_relax_domain_level = files::read_opt(dir, "cpuset.sched_relax_domain_level")?
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            Ok(())
        }
        "memory" => memory_stats(dir, s),
        "pids" => {
            let cur = files::read_opt(dir, "pids.current")?;
            let max = files::read_opt(dir, "pids.max")?;
            s.pids.current = cur.and_then(|t| stats::parse_u64(&t)).unwrap_or(0);
            s.pids.limit = max
                .and_then(|t| stats::parse_u64(&t))
                .filter(|m| *m != u64::MAX)
                .unwrap_or(0);
            Ok(())
        }
        "blkio" => blkio_stats(dir, s),
        "hugetlb" => {
            for size in stats::hugepage_sizes() {
                let get = |f: String| -> Result<u64, CgroupError> {
                    Ok(files::read_opt(dir, &f)?
                        .and_then(|t| stats::parse_u64(&t))
                        .unwrap_or(0))
                };
                let h = stats::Hugetlb {
                    usage: get(format!("hugetlb.{size}.usage_in_bytes"))?,
                    max: get(format!("hugetlb.{size}.max_usage_in_bytes"))?,
                    failcnt: get(format!("hugetlb.{size}.failcnt"))?,
                };
                s.hugetlb.insert(size, h);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn cpuacct_stats(dir: &dyn CgroupDir, s: &mut Stats) -> Result<(), CgroupError> {
    // cpuacct.stat counts USER_HZ ticks (100 per second on Linux).
    const NS_PER_TICK: u64 = 1_000_000_000 / 100;
    if let Some(t) = files::read_opt(dir, "cpuacct.stat")? {
        let m = stats::flat_keyed(&t);
        s.cpu.usage.user = m
            .get("user")
            .copied()
            .unwrap_or(0)
            .saturating_mul(NS_PER_TICK);
        s.cpu.usage.kernel = m
            .get("system")
            .copied()
            .unwrap_or(0)
            .saturating_mul(NS_PER_TICK);
    }
    if let Some(t) = files::read_opt(dir, "cpuacct.usage")? {
        s.cpu.usage.total = stats::parse_u64(&t).unwrap_or(0);
    }
    if let Some(t) = files::read_opt(dir, "cpuacct.usage_percpu")? {
        s.cpu.usage.percpu = t
            .split_whitespace()
            .take(1 << 16)
            .filter_map(stats::parse_u64)
            .collect();
    }
    // "cpu user system" per line after a header.
    if let Some(t) = files::read_opt(dir, "cpuacct.usage_all")? {
        for line in t.lines().skip(1).take(1 << 16) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_, user, system] = f[..] {
                if let (Some(u), Some(k)) = (stats::parse_u64(user), stats::parse_u64(system)) {
                    s.cpu.usage.percpu_user.push(u);
                    s.cpu.usage.percpu_kernel.push(k);
                }
            }
        }
    }
    Ok(())
}

fn memory_stats(dir: &dyn CgroupDir, s: &mut Stats) -> Result<(), CgroupError> {
    let Some(t) = files::read_opt(dir, "memory.stat")? else {
        return Ok(());
    };
    s.memory.raw = stats::flat_keyed(&t);
    s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    let entry = |prefix: &str| -> Result<stats::MemoryEntry, CgroupError> {
        let get = |f: &str| -> Result<u64, CgroupError> {
            Ok(files::read_opt(dir, &format!("{prefix}.{f}"))?
                .and_then(|t| stats::parse_u64(&t))
                .unwrap_or(0))
        };
        if !dir.exists(&format!("{prefix}.usage_in_bytes")) {
            return Ok(stats::MemoryEntry::default());
        }
        Ok(stats::MemoryEntry {
            limit: get("limit_in_bytes")?,
            usage: get("usage_in_bytes")?,
            max: get("max_usage_in_bytes")?,
            failcnt: get("failcnt")?,
        })
    };
    s.memory.usage = entry("memory")?;
    s.memory.swap = entry("memory.memsw")?;
    s.memory.kernel = entry("memory.kmem")?;
    s.memory.kernel_tcp = entry("memory.kmem.tcp")?;
    Ok(())
}

fn blkio_stats(dir: &dyn CgroupDir, s: &mut Stats) -> Result<(), CgroupError> {
    // The first family of files this kernel has wins (runc's order): BFQ with debug stats,
    // BFQ, CFQ, throttling (recursive), throttling.
    type Field = fn(&mut stats::Blkio) -> &mut Vec<stats::BlkioEntry>;
    let families: [&[(&str, Field)]; 5] = [
        &[
            ("blkio.bfq.sectors_recursive", |b| &mut b.sectors_recursive),
            ("blkio.bfq.io_service_time_recursive", |b| {
                &mut b.io_service_time_recursive
            }),
            ("blkio.bfq.io_wait_time_recursive", |b| {
                &mut b.io_wait_time_recursive
            }),
            ("blkio.bfq.io_merged_recursive", |b| {
                &mut b.io_merged_recursive
            }),
            ("blkio.bfq.io_queued_recursive", |b| {
                &mut b.io_queued_recursive
            }),
            ("blkio.bfq.time_recursive", |b| &mut b.io_time_recursive),
            ("blkio.bfq.io_serviced_recursive", |b| {
                &mut b.io_serviced_recursive
            }),
            ("blkio.bfq.io_service_bytes_recursive", |b| {
                &mut b.io_service_bytes_recursive
            }),
        ],
        &[
            ("blkio.bfq.io_serviced_recursive", |b| {
                &mut b.io_serviced_recursive
            }),
            ("blkio.bfq.io_service_bytes_recursive", |b| {
                &mut b.io_service_bytes_recursive
            }),
        ],
        &[
            ("blkio.sectors_recursive", |b| &mut b.sectors_recursive),
            ("blkio.io_service_time_recursive", |b| {
                &mut b.io_service_time_recursive
            }),
            ("blkio.io_wait_time_recursive", |b| {
                &mut b.io_wait_time_recursive
            }),
            ("blkio.io_merged_recursive", |b| &mut b.io_merged_recursive),
            ("blkio.io_queued_recursive", |b| &mut b.io_queued_recursive),
            ("blkio.time_recursive", |b| &mut b.io_time_recursive),
            ("blkio.io_serviced_recursive", |b| {
                &mut b.io_serviced_recursive
            }),
            ("blkio.io_service_bytes_recursive", |b| {
                &mut b.io_service_bytes_recursive
            }),
        ],
        &[
            ("blkio.throttle.io_serviced_recursive", |b| {
                &mut b.io_serviced_recursive
            }),
            ("blkio.throttle.io_service_bytes_recursive", |b| {
                &mut b.io_service_bytes_recursive
            }),
        ],
        &[
            ("blkio.throttle.io_serviced", |b| {
                &mut b.io_serviced_recursive
            }),
            ("blkio.throttle.io_service_bytes", |b| {
                &mut b.io_service_bytes_recursive
            }),
        ],
    ];
    for family in families {
        if !dir.exists(family[0].0) {
            continue;
        }
        let mut b = stats::Blkio::default();
        for (file, field) in family {
            let t = files::read(dir, file)?;
            *field(&mut b) = stats::blkio_entries(&t).ok_or_else(|| CgroupError::Parse {
                path: dir.path().join(file),
                detail: "not \"MAJOR:MINOR [OP] VALUE\" lines".into(),
            })?;
        }
        s.blkio = b;
        return Ok(());
    }
    Ok(())
}

/// OOM kills so far (memory.oom_control's oom_kill, Linux 4.13+).
pub fn oom_kill_count(memory: &dyn CgroupDir) -> Result<u64, CgroupError> {
    let t = files::read(memory, "memory.oom_control")?;
    Ok(stats::keyed_value(&t, "oom_kill").unwrap_or(0))
}

/// Freezes the v1 freezer cgroup and waits until it is FROZEN (runc's loop: retry the write
/// while FREEZING, now and then thaw briefly so that processes racing with it settle).
pub fn freeze(dir: &dyn CgroupDir) -> Result<(), CgroupError> {
    for i in 0..1000u32 {
        if i % 50 == 49 {
            let _ = dir.write("freezer.state", "THAWED");
            std::thread::sleep(Duration::from_millis(10));
        }
        files::write(dir, "freezer.state", "FROZEN")?;
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_micros(10));
        }
        let state = files::read(dir, "freezer.state")?;
        match state.trim() {
            "FREEZING" => continue,
            "FROZEN" => return Ok(()),
            other => {
                let _ = dir.write("freezer.state", "THAWED");
                return Err(CgroupError::Freeze(format!(
                    "{}: unexpected state {other:?} while freezing",
                    dir.path().join("freezer.state").display()
                )));
            }
        }
    }
    // Stuck in FREEZING: leaving it half-frozen is worse than not pausing.
    let _ = dir.write("freezer.state", "THAWED");
    Err(CgroupError::Freeze(format!(
        "{}: the cgroup did not freeze (stuck in FREEZING)",
        dir.path().join("freezer.state").display()
    )))
}

pub fn thaw(dir: &dyn CgroupDir) -> Result<(), CgroupError> {
    for _ in 0..1000 {
        files::write(dir, "freezer.state", "THAWED")?;
        if files::read(dir, "freezer.state")?.trim() == "THAWED" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(CgroupError::Freeze(format!(
        "{}: the cgroup did not thaw",
        dir.path().join("freezer.state").display()
    )))
}

/// FROZEN (FREEZING settles to one or the other first).
pub fn is_frozen(dir: &dyn CgroupDir) -> Result<bool, CgroupError> {
    for _ in 0..1000 {
        match files::read(dir, "freezer.state")?.trim() {
            "FROZEN" => return Ok(true),
            "THAWED" => return Ok(false),
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok(false)
}
