//! The cgroup manager on this machine's real cgroups, with real processes: limits written and
//! read back, a memory hog OOM-killed, a fork bomb stopped at pids.max, a busy loop frozen and
//! thawed, /dev/null denied by v1 device rules and by the v2 eBPF program, statistics, path
//! forms, errors. Every test uses its own cgroup (/virtkit-test-<pid>-<n>) and removes it, and
//! its processes, even when it fails.
//!
//! Needs root and cgroups. The host here has the hybrid layout (v1 controllers, cgroup2 at
//! /sys/fs/cgroup/unified delegating hugetlb only); the v2 code paths run on that unified
//! hierarchy through a manager that sees only it, and against in-memory directories for the
//! controllers this host does not give v2.

use oci_spec::runtime::LinuxResources;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use virtkit_oci::cgroups::files::{CgroupDir, Dir, MemDir};
use virtkit_oci::cgroups::mounts::{Hierarchies, Mount};
use virtkit_oci::cgroups::path::Inner;
use virtkit_oci::cgroups::resources::{set_resources, Target};
use virtkit_oci::cgroups::{self, CgroupError, Layout, Manager};

static N: AtomicUsize = AtomicUsize::new(0);

fn unique() -> String {
    format!(
        "virtkit-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (with a message) where the test cannot mean anything.
macro_rules! need_root {
    () => {
        if !is_root() || !Path::new("/sys/fs/cgroup").exists() {
            eprintln!("skipped: needs root and cgroups");
            return;
        }
    };
}

fn res(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).expect("resources JSON")
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// A container stand-in: the manager, its processes; dropping it kills them and removes the
/// cgroups (also when an assertion failed).
struct Ctr {
    m: Manager,
    kids: Vec<Child>,
}

impl Ctr {
    fn new(m: Manager) -> Ctr {
        Ctr {
            m,
            kids: Vec::new(),
        }
    }

    /// A shell that waits for a line on stdin before running `script`: it is put in the
    /// cgroups first (like a container's init, which waits for the parent).
    fn spawn_held(&mut self, script: &str) -> i32 {
        let c = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = c.id() as i32;
        self.kids.push(c);
        pid
    }

    fn release(&mut self, pid: i32) {
        let c = self.kid(pid);
        c.stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("release the child");
    }

    fn kid(&mut self, pid: i32) -> &mut Child {
        self.kids
            .iter_mut()
            .find(|c| c.id() as i32 == pid)
            .expect("our child")
    }

    /// Waits for `pid` to exit (bounded), returning (status, stdout, stderr).
    fn wait(&mut self, pid: i32, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let c = self.kid(pid);
        let start = Instant::now();
        let st = loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                start.elapsed() < limit,
                "pid {pid} still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        c.stdout.take().map(|mut s| s.read_to_string(&mut out));
        c.stderr.take().map(|mut s| s.read_to_string(&mut err));
        (st, out, err)
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        // A v1-frozen task cannot die: thaw first.
        let _ = self.m.thaw();
        for p in self.m.pids().unwrap_or_default() {
            // SAFETY: kill has no pointer arguments.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for c in &mut self.kids {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.m.destroy();
    }
}

/// A manager that sees only the unified hierarchy at /sys/fs/cgroup/unified, as on a pure v2
/// host (the only v2 controller delegated here is hugetlb).
fn v2_only(name: &str) -> Option<Manager> {
    let mnt = PathBuf::from("/sys/fs/cgroup/unified");
    if !mnt.join("cgroup.controllers").exists() {
        return None;
    }
    let h = Hierarchies {
        v1: Vec::new(),
        v2: Some(Mount {
            mountpoint: mnt,
            root: "/".into(),
            v2: true,
            controllers: Vec::new(),
        }),
        own: Vec::new(),
    };
    Some(
        Manager::with_hierarchies(&h, Inner::Absolute(name.into()), name, true, false)
            .expect("v2 manager"),
    )
}

fn hybrid_host() -> bool {
    cgroups::detect().ok() == Some(Layout::Hybrid)
}

/// utime of a process, in clock ticks (/proc/PID/stat field 14).
fn utime(pid: i32) -> u64 {
    let s = read(format!("/proc/{pid}/stat"));
    let after = &s[s.rfind(')').expect("comm") + 2..];
    after
        .split(' ')
        .nth(11)
        .and_then(|v| v.parse().ok())
        .expect("utime")
}

fn block_device() -> Option<String> {
    ["vda", "sda", "nvme0n1", "xvda"]
        .iter()
        .find_map(|d| std::fs::read_to_string(format!("/sys/block/{d}/dev")).ok())
        .map(|s| s.trim().to_string())
}

#[test]
fn detect_matches_the_mounts() {
    need_root!();
    let layout = cgroups::detect().expect("detect");
    let mi = read("/proc/self/mountinfo");
    let v2 = mi.lines().any(|l| l.contains(" - cgroup2 "));
    let v1 = mi
        .lines()
        .any(|l| l.contains(" - cgroup ") && !l.ends_with("name=systemd"));
    let want = match (v1, v2) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        _ => Layout::V2,
    };
    assert_eq!(layout, want);
}

#[test]
fn v1_limits_written_and_read_back_then_updated_and_destroyed() {
    need_root!();
    if !hybrid_host() {
        eprintln!("skipped: written for the hybrid layout of this host");
        return;
    }
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("exec sleep 60");
    let dev = block_device();
    let mut r = serde_json::json!({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20,
                   "swappiness": 10, "kernel": 1 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    });
    if let Some(d) = &dev {
        let (ma, mi) = d.split_once(':').unwrap();
        r["blockIO"] = serde_json::json!({"throttleReadBpsDevice": [
            {"major": ma.parse::<i64>().unwrap(), "minor": mi.parse::<i64>().unwrap(), "rate": 1048576}]});
    }
    let notes = m.apply_noting(pid, Some(&res(r))).expect("apply");
    assert!(notes.iter().any(|n| n.contains("kernel")), "{notes:?}");

    let mem = m.v1_dir("memory").expect("memory v1");
    assert_eq!(mem, Path::new("/sys/fs/cgroup/memory").join(&name));
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")).trim(),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")).trim(),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        read(mem.join("memory.soft_limit_in_bytes")).trim(),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(mem.join("memory.swappiness")).trim(), "10");
    let cpu = m.v1_dir("cpu").unwrap();
    assert_eq!(read(cpu.join("cpu.shares")).trim(), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")).trim(), "100000");
    assert_eq!(
        read(m.v1_dir("cpuset").unwrap().join("cpuset.cpus")).trim(),
        "0"
    );
    assert_eq!(
        read(m.v1_dir("pids").unwrap().join("pids.max")).trim(),
        "42"
    );
    assert_eq!(
        read(m.v1_dir("devices").unwrap().join("devices.list")).trim(),
        "c 1:3 rwm"
    );
    if let Some(d) = &dev {
        assert_eq!(
            read(
                m.v1_dir("blkio")
                    .unwrap()
                    .join("blkio.throttle.read_bps_device")
            )
            .trim(),
            format!("{d} 1048576")
        );
    }
    // hugetlb is not mounted as v1 here: it went to the unified hierarchy.
    let v2 = m.v2_dir().expect("unified");
    assert_eq!(v2, Path::new("/sys/fs/cgroup/unified").join(&name));
    assert_eq!(
        read(v2.join("hugetlb.2MB.max")).trim(),
        (4u64 << 20).to_string()
    );

    // The process is in every hierarchy, named and unified included.
    for (ctrl, dir) in m.paths() {
        let procs = read(dir.join("cgroup.procs"));
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {ctrl:?} {}",
            dir.display()
        );
    }
    assert!(m.paths().contains_key("name=systemd"));
    assert_eq!(m.pids().unwrap(), vec![pid]);

    // runc update: memory down, pids up, quota only (the period stays).
    m.update(&res(serde_json::json!({
        "memory": {"limit": 48 << 20, "swap": 48 << 20},
        "pids": {"limit": 100},
        "cpu": {"quota": 20000}
    })))
    .expect("update");
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")).trim(),
        (48u64 << 20).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")).trim(),
        (48u64 << 20).to_string()
    );
    assert_eq!(
        read(m.v1_dir("pids").unwrap().join("pids.max")).trim(),
        "100"
    );
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "20000");
    // Growing again: swap has to go first, which the manager orders itself.
    m.update(&res(
        serde_json::json!({"memory": {"limit": 128 << 20, "swap": 256 << 20}}),
    ))
    .expect("update up");
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")).trim(),
        (128u64 << 20).to_string()
    );

    // A sub-cgroup made inside (as a container with cgroupns might) goes too.
    std::fs::create_dir(mem.join("inner")).unwrap();
    drop(c);
    for (_, dir) in m.paths() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // Destroying again is fine.
    m.destroy().expect("second destroy");
}

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    need_root!();
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("exec tail /dev/zero");
    let limit = 32i64 << 20;
    m.apply(
        pid,
        Some(&res(
            serde_json::json!({"memory": {"limit": limit, "swap": limit}}),
        )),
    )
    .expect("apply");
    assert_eq!(m.oom_kill_count().unwrap(), 0);
    let notifier = m.oom_notifier().expect("oom notifier");
    c.release(pid);
    let (st, _, _) = c.wait(pid, Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "hog ended with {st:?}");
    assert!(m.oom_kill_count().unwrap() >= 1);
    // The notifier fd is readable.
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: notifier.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(n, 1, "the OOM notifier did not fire");
    let s = m.stats().unwrap();
    // (memory.failcnt stays 0 on recent kernels' v1: the peak shows the limit was hit.)
    assert_eq!(s.memory.usage.limit, limit as u64);
    assert!(
        s.memory.usage.max >= limit as u64 / 10 * 9,
        "{:?}",
        s.memory.usage
    );
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    need_root!();
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held(
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo spawned; sleep 30",
    );
    m.apply(pid, Some(&res(serde_json::json!({"pids": {"limit": 8}}))))
        .expect("apply");
    c.release(pid);
    // Wait until the shell has tried all 40.
    let start = Instant::now();
    loop {
        let s = m.stats().unwrap();
        assert!(
            s.pids.current <= 8,
            "{} tasks with pids.max 8",
            s.pids.current
        );
        if s.pids.current == 8 && start.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {} tasks",
            s.pids.current
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = m.stats().unwrap();
    assert_eq!(s.pids.limit, 8);
    // pids.current also counts tasks on their way out: the process list is at most that.
    let n = m.pids().unwrap().len();
    assert!((1..=8).contains(&n), "{n} processes");
    for p in m.pids().unwrap() {
        // SAFETY: kill has no pointer arguments.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let (_, _, err) = c.wait(pid, Duration::from_secs(10));
    assert!(err.contains("fork"), "no fork failure reported: {err}");
}

fn freeze_busy_loop(m: Manager) {
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("while :; do :; done");
    m.apply(pid, None).expect("apply");
    c.release(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!m.is_frozen().unwrap());
    m.freeze().expect("freeze");
    assert!(m.is_frozen().unwrap());
    let u1 = utime(pid);
    std::thread::sleep(Duration::from_millis(600));
    let u2 = utime(pid);
    assert_eq!(u1, u2, "a frozen loop advanced");
    m.thaw().expect("thaw");
    assert!(!m.is_frozen().unwrap());
    std::thread::sleep(Duration::from_millis(600));
    let u3 = utime(pid);
    assert!(u3 > u2, "a thawed loop did not run ({u2} -> {u3})");
}

#[test]
fn freeze_stops_a_busy_loop_and_thaw_resumes_it_v1() {
    need_root!();
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    if m.v1_dir("freezer").is_none() {
        eprintln!("skipped: no v1 freezer");
        return;
    }
    freeze_busy_loop(m);
}

#[test]
fn freeze_stops_a_busy_loop_and_thaw_resumes_it_v2() {
    need_root!();
    let Some(m) = v2_only(&unique()) else {
        eprintln!("skipped: no cgroup2 at /sys/fs/cgroup/unified");
        return;
    };
    freeze_busy_loop(m);
}

/// Runs `sh` in the cgroup: can it open /dev/null and /dev/zero?
fn probe_devices(c: &mut Ctr, apply: impl FnOnce(i32)) -> (String, String) {
    let pid = c.spawn_held(
        "if cat /dev/null; then echo null-ok; else echo null-denied; fi; \
         if head -c 1 /dev/zero >/dev/zero; then echo zero-ok; else echo zero-denied; fi",
    );
    apply(pid);
    c.release(pid);
    let (_, out, err) = c.wait(pid, Duration::from_secs(10));
    (out, err)
}

#[test]
fn v1_device_rules_deny_dev_null() {
    need_root!();
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    if m.v1_dir("devices").is_none() {
        eprintln!("skipped: no v1 devices controller");
        return;
    }
    let mut c = Ctr::new(m.clone());
    let r = res(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rw"}
    ]}));
    let (out, err) = probe_devices(&mut c, |pid| m.apply(pid, Some(&r)).expect("apply"));
    assert!(out.contains("null-denied"), "{out}{err}");
    assert!(out.contains("zero-ok"), "{out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // runc's defaults on top of a deny-all: /dev/null comes back.
    let with = cgroups::devices::with_runc_defaults(Some(&r), &[]);
    m.update(&with).expect("update devices");
    let (out, err) = probe_devices(&mut c, |pid| m.add_pid(pid).expect("add_pid"));
    assert!(out.contains("null-ok"), "{out}{err}");
}

#[test]
fn v2_device_program_denies_dev_null_and_is_replaced_on_update() {
    need_root!();
    let name = unique();
    let Some(m) = v2_only(&name) else {
        eprintln!("skipped: no cgroup2 at /sys/fs/cgroup/unified");
        return;
    };
    let mut c = Ctr::new(m.clone());
    let deny_null = res(serde_json::json!({"devices": [
        {"allow": true, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]}));
    let (out, err) = probe_devices(&mut c, |pid| m.apply(pid, Some(&deny_null)).expect("apply"));
    assert!(out.contains("null-denied"), "{out}{err}");
    assert!(out.contains("zero-ok"), "{out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    let dir = m.v2_dir().unwrap().to_path_buf();
    assert_eq!(cgroups::devices::bpf::attached_count(&dir).unwrap(), 1);

    // Now deny /dev/zero instead: one program still, the new one.
    m.update(&res(serde_json::json!({"devices": [
        {"allow": true, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 5, "access": "rwm"}
    ]})))
    .expect("update");
    assert_eq!(cgroups::devices::bpf::attached_count(&dir).unwrap(), 1);
    let (out, err) = probe_devices(&mut c, |pid| m.add_pid(pid).expect("add_pid"));
    assert!(out.contains("null-ok"), "{out}{err}");
    assert!(out.contains("zero-denied"), "{out}{err}");
}

#[test]
fn stats_are_sane_and_shaped_like_runc() {
    need_root!();
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).expect("manager");
    let mut c = Ctr::new(m.clone());
    // Memory charged to the cgroup: a 2 MB shell variable made after joining.
    let pid = c.spawn_held("x=$(head -c 2000000 /dev/zero | tr '\\0' x); while :; do :; done");
    m.apply(
        pid,
        Some(&res(serde_json::json!({
            "memory": {"limit": 256 << 20},
            "cpu": {"quota": 50000, "period": 10000},
            "pids": {"limit": 20}
        }))),
    )
    .expect("apply");
    c.release(pid);
    std::thread::sleep(Duration::from_millis(700));
    let s = m.stats().expect("stats");
    assert!(
        s.cpu.usage.total > 10_000_000,
        "cpu total {}",
        s.cpu.usage.total
    );
    assert!(s.cpu.usage.user > 0 || s.cpu.usage.kernel > 0);
    assert!(s.memory.usage.usage > 0);
    assert_eq!(s.memory.usage.limit, 256 << 20);
    assert!(!s.memory.raw.is_empty());
    assert_eq!(s.pids.current, 1);
    assert_eq!(s.pids.limit, 20);
    if m.v1_dir("cpu").is_some() {
        assert!(s.cpu.throttling.periods > 0);
    }
    if m.v1_dir("cpuacct").is_some() {
        assert_eq!(s.cpu.usage.percpu.len(), s.cpu.usage.percpu_user.len());
        assert!(!s.cpu.usage.percpu.is_empty());
    }
    if m.v1_dir("cpuset").is_some() {
        assert!(!s.cpuset.cpus.is_empty());
    }
    if hybrid_host() {
        // hugetlb from the unified hierarchy, in runc's page size names.
        assert!(s.hugetlb.contains_key("2MB"), "{:?}", s.hugetlb);
    }
    let v = serde_json::to_value(&s).unwrap();
    for k in [
        "cpu",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "hugetlb",
        "intel_rdt",
        "network_interfaces",
    ] {
        assert!(v.get(k).is_some(), "no {k} in {v}");
    }
    assert!(v["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    assert!(v["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert_eq!(v["pids"]["current"], 1);
}

#[test]
fn v2_stats_and_hugetlb_on_the_unified_hierarchy() {
    need_root!();
    let Some(m) = v2_only(&unique()) else {
        eprintln!("skipped: no cgroup2 at /sys/fs/cgroup/unified");
        return;
    };
    let ctrls = read("/sys/fs/cgroup/unified/cgroup.controllers");
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("while :; do :; done");
    let hugetlb = ctrls.split_whitespace().any(|c| c == "hugetlb");
    let r = if hugetlb {
        res(serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}]}))
    } else {
        LinuxResources::default()
    };
    m.apply(pid, Some(&r)).expect("apply");
    c.release(pid);
    if hugetlb {
        assert_eq!(
            read(m.v2_dir().unwrap().join("hugetlb.2MB.max")).trim(),
            (2u64 << 20).to_string()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let s = m.stats().unwrap();
    // cpu.stat is kept by the v2 core even without the cpu controller.
    assert!(s.cpu.usage.total > 0);
    assert_eq!(s.pids.current, 1);
    // Limits for a controller v2 does not have here: the brief's message.
    let e = m
        .update(&res(serde_json::json!({"memory": {"limit": 1 << 30}})))
        .unwrap_err();
    let msg = e.to_string();
    if !ctrls.split_whitespace().any(|c| c == "memory") {
        assert!(
            msg.starts_with("cgroup: controller memory is not available (v2 at /sys/fs/cgroup/unified delegates only: "),
            "{msg}"
        );
    }
}

#[test]
fn slice_form_maps_onto_cgroupfs() {
    need_root!();
    let top = format!("vkt{}", std::process::id());
    let path = format!("{top}-a.slice:pfx:{}", unique());
    let m = Manager::new(Some(&path), "ignored-id", false, false).expect("manager");
    let name = path.rsplit(':').next().unwrap();
    let want = format!("{top}.slice/{top}-a.slice/pfx-{name}.scope");
    for (_, dir) in m.paths() {
        assert!(dir.ends_with(&want), "{}", dir.display());
    }
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("exec sleep 30");
    let r = m.apply(pid, None);
    drop(c);
    // Parents stay after destroy (as with runc): remove them here.
    let mut tops = Vec::new();
    for (_, dir) in m.paths() {
        let mut p = dir.as_path();
        while let Some(parent) = p.parent() {
            if p.file_name()
                .is_some_and(|n| n == format!("{top}.slice").as_str())
            {
                tops.push(p.to_path_buf());
                break;
            }
            p = parent;
        }
    }
    for t in &tops {
        let _ = std::fs::remove_dir(t.join(format!("{top}-a.slice")));
        let _ = std::fs::remove_dir(t);
    }
    r.expect("apply");
    assert!(!tops.is_empty());
    assert!(tops.iter().all(|t| !t.exists()));
}

#[test]
fn relative_and_default_paths_are_under_the_runtimes_own_cgroup() {
    need_root!();
    let name = unique();
    let own = read("/proc/self/cgroup");
    let m = Manager::new(None, &name, false, false).expect("manager");
    let Some(mem) = m.v1_dir("memory") else {
        eprintln!("skipped: no v1 memory");
        return;
    };
    let my_mem = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("own memory cgroup");
    let want = Path::new("/sys/fs/cgroup/memory")
        .join(my_mem.trim_start_matches('/'))
        .join(&name);
    assert_eq!(mem, want);
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("exec sleep 30");
    m.apply(pid, None).expect("apply");
    assert!(read(want.join("cgroup.procs")).contains(&pid.to_string()));
    drop(c);
    assert!(!want.exists());
    let rel = Manager::new(Some(&format!("sub/{name}")), &name, false, false).unwrap();
    assert!(rel
        .v1_dir("memory")
        .unwrap()
        .ends_with(format!("sub/{name}")));
}

#[test]
fn bad_paths_and_values_are_refused_with_their_own_messages() {
    need_root!();
    for p in ["/../etc", "/a/../../x", "../x"] {
        let e = Manager::new(Some(p), "x", false, false).unwrap_err();
        assert!(matches!(e, CgroupError::PathEscape { .. }), "{p}: {e}");
        assert!(e.to_string().contains("escapes"), "{e}");
    }
    if !cgroups::systemd_running() {
        let e = Manager::new(None, "x", true, false).unwrap_err();
        assert!(e.to_string().contains("systemd is not running"), "{e}");
    }
    // A bad value: refused before anything is created.
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).unwrap();
    let e = m
        .apply(
            std::process::id() as i32,
            Some(&res(serde_json::json!({"memory": {"swappiness": 150}}))),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cgroup: linux.resources.memory.swappiness: 150: out of range (0-100)"
    );
    for (_, d) in m.paths() {
        assert!(!d.exists(), "{} created for a refused config", d.display());
    }
    let e = m
        .apply(
            std::process::id() as i32,
            Some(&res(
                serde_json::json!({"devices": [{"allow": true, "type": "p", "access": "r"}]}),
            )),
        )
        .unwrap_err();
    assert!(e.to_string().contains("devices[0].type"), "{e}");
}

#[test]
fn hybrid_controllers_without_a_home_are_named() {
    need_root!();
    if !hybrid_host() {
        eprintln!("skipped: hybrid layout only");
        return;
    }
    let name = unique();
    let m = Manager::new(Some(&format!("/{name}")), &name, false, false).unwrap();
    let mut c = Ctr::new(m.clone());
    let pid = c.spawn_held("exec sleep 30");
    m.apply(pid, None).expect("apply");
    let mounted = |c: &str| m.v1_dir(c).is_some();
    if !mounted("net_cls") {
        let e = m
            .update(&res(serde_json::json!({"network": {"classID": 42}})))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cgroup: controller net_cls is not available"),
            "{e}"
        );
    }
    // unified: a v2 file this host's unified hierarchy has...
    let v2 = m.v2_dir().unwrap().to_path_buf();
    if v2.join("hugetlb.2MB.max").exists() {
        m.update(&res(
            serde_json::json!({"unified": {"hugetlb.2MB.max": "6291456"}}),
        ))
        .expect("unified hugetlb");
        assert_eq!(read(v2.join("hugetlb.2MB.max")).trim(), "6291456");
    }
    // ...and one it does not (memory is bound to v1 here).
    let e = m
        .update(&res(serde_json::json!({"unified": {"memory.max": "1G"}})))
        .unwrap_err();
    assert!(e.to_string().contains("memory.max"), "{e}");
    assert!(e.to_string().contains("cgroup v1"), "{e}");
    drop(c);
}

#[test]
fn manager_state_round_trips_and_mount_sources_name_the_hierarchies() {
    need_root!();
    let m = Manager::new(Some("/virtkit-test-state"), "state", false, false).unwrap();
    let json = serde_json::to_string(&m).unwrap();
    let back: Manager = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    let src = m.mount_sources();
    assert_eq!(
        src.len(),
        m.paths()
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for (name, dir) in &src {
        match m.layout() {
            Layout::V2 => assert_eq!(name, ""),
            _ => assert!(
                Path::new("/sys/fs/cgroup")
                    .join(name)
                    .join("virtkit-test-state")
                    == *dir
                    || !dir.starts_with("/sys/fs/cgroup"),
                "{name} {}",
                dir.display()
            ),
        }
    }
    if hybrid_host() {
        assert!(src.iter().any(|(n, _)| n == "unified"));
        assert!(src.iter().any(|(n, _)| n == "systemd"));
    }
}

/// The v2 writes, checked against an in-memory directory (this host delegates only hugetlb
/// to v2, so the cpu/memory/io/pids conversions cannot run on real files here).
#[test]
fn v2_writes_as_runc_converts() {
    let files: &[(&str, &str)] = &[
        (
            "cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        ),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.max.burst", "0\n"),
        ("cpu.idle", "0\n"),
        ("cpuset.cpus", "\n"),
        ("cpuset.mems", "\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("memory.low", "0\n"),
        ("memory.oom.group", "0\n"),
        ("pids.max", "max\n"),
        ("io.weight", "default 100\n"),
        ("io.max", ""),
        ("hugetlb.2MB.max", "max\n"),
        ("hugetlb.2MB.rsvd.max", "max\n"),
        ("rdma.max", ""),
    ];
    let d = MemDir::new("/fake/v2/ctr", files);
    let t = Target {
        layout: Layout::V2,
        v1: Vec::new(),
        v2: Some(&d),
        v2_mount: None,
        rootless: false,
    };
    let r = res(serde_json::json!({
        "cpu": {"shares": 1024, "quota": 50000, "cpus": "0-1", "mems": "0", "burst": 1000,
                "realtimeRuntime": 1000},
        "memory": {"limit": 1 << 30, "swap": 3 << 29, "reservation": 1 << 29, "swappiness": 5},
        "pids": {"limit": -1},
        "blockIO": {"weight": 500,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 1000}},
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
        "unified": {"memory.oom.group": "1"}
    }));
    let notes = set_resources(&t, &r).expect("v2 writes");
    assert_eq!(d.written("cpu.weight"), ["39"]);
    assert_eq!(d.written("cpu.max"), ["50000 100000"]);
    assert_eq!(d.written("cpu.max.burst"), ["1000"]);
    assert_eq!(d.written("cpuset.cpus"), ["0-1"]);
    assert_eq!(d.written("memory.max"), [(1u64 << 30).to_string()]);
    assert_eq!(d.written("memory.swap.max"), [(1u64 << 29).to_string()]);
    assert_eq!(d.written("memory.low"), [(1u64 << 29).to_string()]);
    assert_eq!(d.written("pids.max"), ["max"]);
    assert_eq!(d.written("io.weight"), ["4950"]);
    assert_eq!(d.written("io.max"), ["8:0 rbps=1000", "8:0 wiops=max"]);
    assert_eq!(d.written("hugetlb.2MB.max"), ["4194304"]);
    assert_eq!(d.written("hugetlb.2MB.rsvd.max"), ["4194304"]);
    assert_eq!(
        d.written("rdma.max"),
        ["mlx5_0 hca_handle=3 hca_object=1000"]
    );
    assert_eq!(d.written("memory.oom.group"), ["1"]);
    assert_eq!(d.device_programs.borrow().len(), 1);
    assert!(notes.iter().any(|n| n.contains("swappiness")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("realtime")), "{notes:?}");
    // The program behaves as the rules say.
    use cgroups::devices::{interpret, Node, ACC_READ};
    let prog = d.device_programs.borrow()[0].clone();
    assert_eq!(interpret(&prog, Node::Char, 1, 3, ACC_READ), Some(true));
    assert_eq!(interpret(&prog, Node::Char, 1, 5, ACC_READ), Some(false));

    // A quota-only update keeps the period there is.
    d.files
        .borrow_mut()
        .insert("cpu.max".into(), "50000 20000\n".into());
    set_resources(&t, &res(serde_json::json!({"cpu": {"quota": -1}}))).unwrap();
    assert_eq!(d.written("cpu.max").last().unwrap(), "max 20000");
    // Swap below the limit: refused.
    let e = set_resources(
        &t,
        &res(serde_json::json!({"memory": {"limit": 100, "swap": 50}})),
    );
    assert!(e.is_err());
    // A unified key this cgroup does not have.
    let e = set_resources(
        &t,
        &res(serde_json::json!({"unified": {"cpu.nonesuch": "1"}})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cpu.nonesuch"), "{e}");
    let e = set_resources(
        &t,
        &res(serde_json::json!({"unified": {"cgroup.procs": "1"}})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("moves processes"), "{e}");
    let e =
        set_resources(&t, &res(serde_json::json!({"unified": {"../../x.y": "1"}}))).unwrap_err();
    assert!(e.to_string().contains("file name"), "{e}");
}

/// The hybrid routing: v1 controllers on their hierarchies, hugetlb on v2, unified on v2.
#[test]
fn hybrid_routing_against_fake_directories() {
    let mem = MemDir::new(
        "/fake/memory/c",
        &[
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            ("memory.soft_limit_in_bytes", "0\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
        ],
    );
    let v2 = MemDir::new(
        "/fake/unified/c",
        &[
            ("cgroup.controllers", "hugetlb\n"),
            ("hugetlb.2MB.max", "max\n"),
        ],
    );
    let t = Target {
        layout: Layout::Hybrid,
        v1: vec![("memory", &mem as &dyn CgroupDir)],
        v2: Some(&v2),
        v2_mount: Some(Path::new("/fake/unified")),
        rootless: false,
    };
    set_resources(
        &t,
        &res(serde_json::json!({
            "memory": {"limit": 1 << 20, "swap": 2 << 20, "disableOOMKiller": true},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]
        })),
    )
    .unwrap();
    // Growing from unlimited: memsw first is not needed (current limit is huge), so the
    // limit goes first, then memsw.
    let order: Vec<String> = mem.writes.borrow().iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        order,
        [
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.oom_control"
        ]
    );
    assert_eq!(v2.written("hugetlb.2MB.max"), ["2097152"]);
    // pids: mounted nowhere in this fake host.
    let e = set_resources(&t, &res(serde_json::json!({"pids": {"limit": 5}}))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cgroup: controller pids is not available (not mounted as cgroup v1; v2 at \
         /fake/unified delegates only: hugetlb)"
    );
    // Pure v1: unified refused.
    let t1 = Target {
        layout: Layout::V1,
        v1: vec![("memory", &mem as &dyn CgroupDir)],
        v2: None,
        v2_mount: None,
        rootless: false,
    };
    let e = set_resources(
        &t1,
        &res(serde_json::json!({"unified": {"memory.max": "1"}})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("only cgroup v1"), "{e}");
}

/// The same v2 logic through real files in a temporary directory (`Dir`), as the host's
/// cgroupfs is reached.
#[test]
fn v2_writes_through_real_files_in_a_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, c) in [
        ("cgroup.controllers", "cpu memory pids\n"),
        ("cpu.weight", ""),
        ("cpu.max", "max 100000\n"),
        ("memory.max", ""),
        ("memory.swap.max", ""),
        ("pids.max", ""),
    ] {
        std::fs::write(tmp.path().join(f), c).unwrap();
    }
    let d = Dir::new(tmp.path());
    let t = Target {
        layout: Layout::V2,
        v1: Vec::new(),
        v2: Some(&d),
        v2_mount: None,
        rootless: false,
    };
    set_resources(
        &t,
        &res(serde_json::json!({
            "cpu": {"shares": 2048, "quota": 25000, "period": 50000},
            "memory": {"limit": 1048576, "swap": 1048576},
            "pids": {"limit": 7}
        })),
    )
    .unwrap();
    let rd = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap();
    assert_eq!(rd("cpu.weight"), "79");
    assert_eq!(rd("cpu.max"), "25000 50000");
    assert_eq!(rd("memory.max"), "1048576");
    assert_eq!(rd("memory.swap.max"), "0");
    assert_eq!(rd("pids.max"), "7");
    // io is not among the controllers: named.
    let e = set_resources(&t, &res(serde_json::json!({"blockIO": {"weight": 100}}))).unwrap_err();
    assert!(
        e.to_string().contains("controller io is not available"),
        "{e}"
    );
    // Files are never created, and names never leave the directory.
    assert!(d.write("nonesuch", "1").is_err());
    assert!(!tmp.path().join("nonesuch").exists());
    assert!(d.write("../escape", "1").is_err());
}

#[path = "../../../fuzz/harness_cgroups.rs"]
mod harness_cgroups;

/// The fuzz harness on stable: on the saved regression inputs (fuzz/regressions/<target>/)
/// and on a few inputs written here, so that `cargo test` runs the harness' own checks.
#[test]
fn fuzz_harness_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    type Run = fn(&[u8]);
    let targets: [(&str, Run); 2] = [
        (
            "oci_cgroup_resources",
            harness_cgroups::oci_cgroup_resources,
        ),
        ("oci_cgroup_files", harness_cgroups::oci_cgroup_files),
    ];
    for (t, run) in targets {
        if let Ok(rd) = std::fs::read_dir(root.join(t)) {
            for e in rd.flatten() {
                run(&std::fs::read(e.path()).unwrap());
            }
        }
    }
    harness_cgroups::oci_cgroup_resources(
        br#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"},
            {"allow":true,"type":"b","access":"m"},{"allow":false,"type":"c","major":1,"minor":3,"access":"w"}],
            "memory":{"limit":1048576,"swap":2097152},"cpu":{"shares":2,"cpus":"0"},
            "hugepageLimits":[{"pageSize":"2MB","limit":1}],"unified":{"memory.high":"1"}}"#,
    );
    harness_cgroups::oci_cgroup_resources(
        br#"{"devices":[{"allow":true,"access":"rwm"},{"allow":false,"type":"c","major":4294967295,"access":"m"}]}"#,
    );
    harness_cgroups::oci_cgroup_files(
        b"31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n1:cpu:/x/../../y\n0::/\n",
    );
    harness_cgroups::oci_cgroup_files(b"system.slice:p:n");
    harness_cgroups::oci_cgroup_files(b"0-65535,7\nfrozen 1\n");
}

/// Rootless without a cgroupsPath: a hierarchy where the cgroup cannot be created (here a
/// read-only mount standing in for an undelegated v1 hierarchy) is skipped, as runc does;
/// limits for it are then an error naming the directory; with a cgroupsPath, or as root, the
/// same failure is an error.
#[test]
fn rootless_tolerates_cgroups_it_cannot_create() {
    need_root!();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("memory");
    std::fs::create_dir(&mnt).unwrap();
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let target = c(mnt.to_str().unwrap());
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c("tmpfs").as_ptr(),
            target.as_ptr(),
            c("tmpfs").as_ptr(),
            libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    struct Umount(std::ffi::CString);
    impl Drop for Umount {
        fn drop(&mut self) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let _u = Umount(target.clone());
    let h = Hierarchies {
        v1: vec![Mount {
            mountpoint: mnt.clone(),
            root: "/".into(),
            v2: false,
            controllers: vec!["memory".into()],
        }],
        v2: None,
        own: Vec::new(),
    };
    let me = std::process::id() as i32;
    let rootless =
        Manager::with_hierarchies(&h, Inner::Relative("ctr".into()), "ctr", false, true).unwrap();
    rootless
        .apply(me, None)
        .expect("rootless, no path: tolerated");
    assert_eq!(rootless.oom_kill_count().unwrap(), 0);
    let e = rootless
        .apply(
            me,
            Some(&res(serde_json::json!({"memory": {"limit": 1 << 20}}))),
        )
        .unwrap_err();
    assert!(
        matches!(e, CgroupError::NotJoined { .. }) && e.to_string().contains("memory"),
        "{e}"
    );
    rootless.destroy().expect("nothing to remove");
    for (explicit, rl) in [(true, true), (false, false)] {
        let m = Manager::with_hierarchies(&h, Inner::Absolute("ctr".into()), "ctr", explicit, rl)
            .unwrap();
        let e = m.apply(me, None).unwrap_err();
        assert!(e.to_string().contains("Read-only file system"), "{e}");
    }
}
