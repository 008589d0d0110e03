//! Fuzz harness for the cgroup code of virtkit-oci (targets oci_cgroup_resources and
//! oci_cgroup_files), shared with the stable replay in crates/oci/tests/cgroups.rs. Kept apart
//! from harness.rs so that the crates including harness.rs need not depend on virtkit-oci.
//!
//! Contract: no panic, no hang, no unbounded allocation; errors are fine. Nothing on the host
//! is written: the writes go to in-memory cgroup directories (`MemDir`).

#![allow(dead_code)]

use std::path::Path;
use virtkit_oci::cgroups::devices::{self, Node};
use virtkit_oci::cgroups::files::{CgroupDir, MemDir};
use virtkit_oci::cgroups::resources::{self, Target};
use virtkit_oci::cgroups::{mounts, path, stats, v1, v2, Layout};

/// Files of a v1 hierarchy directory and of a v2 directory with every knob the manager may
/// write, so that the input reaches as far as it can.
const V1_FILES: &[(&str, &str)] = &[
    ("memory.limit_in_bytes", "9223372036854771712\n"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
    ("memory.soft_limit_in_bytes", "0\n"),
    (
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    ),
    ("memory.swappiness", "60\n"),
    ("memory.use_hierarchy", "1\n"),
    ("memory.usage_in_bytes", "0\n"),
    ("memory.max_usage_in_bytes", "0\n"),
    ("cpu.shares", "1024\n"),
    ("cpu.cfs_period_us", "100000\n"),
    ("cpu.cfs_quota_us", "-1\n"),
    ("cpu.cfs_burst_us", "0\n"),
    ("cpu.idle", "0\n"),
    ("cpu.rt_period_us", "1000000\n"),
    ("cpu.rt_runtime_us", "0\n"),
    ("cpuset.cpus", "0-1\n"),
    ("cpuset.mems", "0\n"),
    ("pids.max", "max\n"),
    ("blkio.weight", "500\n"),
    ("blkio.weight_device", ""),
    ("blkio.leaf_weight", "500\n"),
    ("blkio.leaf_weight_device", ""),
    ("blkio.throttle.read_bps_device", ""),
    ("blkio.throttle.write_bps_device", ""),
    ("blkio.throttle.read_iops_device", ""),
    ("blkio.throttle.write_iops_device", ""),
    ("hugetlb.2MB.limit_in_bytes", "9223372036854771712\n"),
    ("hugetlb.1GB.limit_in_bytes", "9223372036854771712\n"),
    ("devices.list", "a *:* rwm\n"),
    ("devices.allow", ""),
    ("devices.deny", ""),
    ("net_cls.classid", "0\n"),
    ("net_prio.ifpriomap", "lo 0\n"),
    ("rdma.max", ""),
];

const V2_FILES: &[(&str, &str)] = &[
    (
        "cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    ),
    ("cgroup.freeze", "0\n"),
    ("cpu.weight", "100\n"),
    ("cpu.max", "max 100000\n"),
    ("cpu.max.burst", "0\n"),
    ("cpu.idle", "0\n"),
    ("cpuset.cpus", "\n"),
    ("cpuset.mems", "\n"),
    ("memory.max", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.low", "0\n"),
    ("memory.high", "max\n"),
    ("memory.oom.group", "0\n"),
    ("pids.max", "max\n"),
    ("io.weight", "default 100\n"),
    ("io.bfq.weight", "default 100\n"),
    ("io.max", ""),
    ("hugetlb.2MB.max", "max\n"),
    ("hugetlb.2MB.rsvd.max", "max\n"),
    ("hugetlb.1GB.max", "max\n"),
    ("rdma.max", ""),
];

const V1_CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
    "net_cls", "net_prio", "rdma",
];

/// The input as `linux.resources` JSON: validation, then the writes on a v1, a v2 and a
/// hybrid host made of in-memory directories; the device program checked against the rules.
pub fn oci_cgroup_resources(data: &[u8]) {
    let Ok(r) = resources::from_json(data) else {
        return;
    };
    let _ = resources::validate(&r);
    for layout in [Layout::V1, Layout::V2, Layout::Hybrid] {
        let v1dirs: Vec<MemDir> = V1_CONTROLLERS
            .iter()
            .map(|c| MemDir::new(&format!("/fuzz/{c}/ctr"), V1_FILES))
            .collect();
        let v2dir = MemDir::new("/fuzz/unified/ctr", V2_FILES);
        let v1: Vec<(&str, &dyn CgroupDir)> = match layout {
            Layout::V2 => Vec::new(),
            // Hybrid: hugetlb and rdma left to v2, as on hosts that do not mount them.
            Layout::Hybrid => V1_CONTROLLERS
                .iter()
                .zip(&v1dirs)
                .filter(|(c, _)| !matches!(**c, "hugetlb" | "rdma"))
                .map(|(c, d)| (*c, d as &dyn CgroupDir))
                .collect(),
            Layout::V1 => V1_CONTROLLERS
                .iter()
                .zip(&v1dirs)
                .map(|(c, d)| (*c, d as &dyn CgroupDir))
                .collect(),
        };
        let t = Target {
            layout,
            v1,
            v2: (layout != Layout::V1).then_some(&v2dir as &dyn CgroupDir),
            v2_mount: Some(Path::new("/fuzz/unified")),
            rootless: false,
        };
        let _ = resources::set_resources(&t, &r);
    }
    if let Some(list) = r.devices() {
        let Ok(rules) = devices::parse_rules(list) else {
            return;
        };
        let Ok(state) = devices::State::from_rules(&rules) else {
            return;
        };
        let prog = devices::program(&state);
        assert!(
            prog.len() <= 8 + 8 * state.exceptions.len(),
            "program of {} instructions for {} exceptions",
            prog.len(),
            state.exceptions.len()
        );
        // Every rule's device, and neighbours, with every access: the program decides as the
        // folded state does.
        for r in rules.iter().take(64) {
            let ma = r.major.unwrap_or(7);
            let mi = r.minor.unwrap_or(9);
            for (node, ma, mi) in [
                (r.node.unwrap_or(Node::Char), ma, mi),
                (Node::Block, ma, mi.wrapping_add(1)),
                (Node::Char, ma.wrapping_add(1), mi),
            ] {
                for acc in 1..=devices::ACC_ALL {
                    let want = devices::decide(&state, node, ma, mi, acc);
                    let got = devices::interpret(&prog, node, ma, mi, acc);
                    assert_eq!(got, Some(want), "{node:?} {ma}:{mi} access {acc}");
                }
            }
        }
        // From a fresh (allow-all) v1 cgroup the transition is the disruptive rule plus one
        // write per exception.
        let fresh = devices::State::from_list("a *:* rwm\n").expect("the root's list");
        let writes = fresh.transition(&state);
        assert_eq!(writes.len(), 1 + state.exceptions.len());
        // What devices.list would then show parses back to the state (deny-all case).
        if !state.default_allow {
            let list: String = state
                .exceptions
                .iter()
                .map(|((n, ma, mi), a)| {
                    devices::Rule {
                        node: Some(*n),
                        major: *ma,
                        minor: *mi,
                        access: *a,
                        allow: true,
                    }
                    .v1_string()
                        + "\n"
                })
                .collect();
            assert_eq!(devices::State::from_list(&list).as_ref(), Ok(&state));
        }
    }
}

/// The input as the text of cgroup files: mountinfo and /proc/self/cgroup, devices.list, the
/// statistics files (every file of a fake cgroup holds the input), and as a cgroupsPath.
pub fn oci_cgroup_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = mounts::Hierarchies::from_texts(text, text);
    if let Ok(layout) = h.layout() {
        for m in h.v1.iter().chain(h.v2.iter()) {
            if let Some(d) = h.own_dir(m) {
                assert!(d.starts_with(&m.mountpoint), "own cgroup outside its mount");
            }
        }
        let _ = layout;
    }
    let _ = mounts::parse_proc_cgroup(text);
    let _ = devices::State::from_list(text);
    let _ = stats::flat_keyed(text);
    let _ = stats::cpuset_list(text);
    let _ = stats::blkio_entries(text);
    let mut b = stats::Blkio::default();
    stats::io_stat(text, &mut b);
    for systemd in [false, true] {
        if let Ok(inner) = path::resolve(Some(text), "id", systemd) {
            let s = inner.as_str();
            assert!(
                !s.is_empty()
                    && !s.starts_with('/')
                    && s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
                "unclean cgroup path {s:?} from {text:?}"
            );
        }
    }
    // Statistics and state readers over a directory whose every file holds the input.
    let names = [
        "cpuacct.stat",
        "cpuacct.usage",
        "cpuacct.usage_percpu",
        "cpuacct.usage_all",
        "cpu.stat",
        "cpuset.cpus",
        "cpuset.mems",
        "cpuset.sched_relax_domain_level",
        "memory.stat",
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.oom_control",
        "memory.events",
        "memory.current",
        "memory.max",
        "memory.swap.current",
        "memory.swap.max",
        "pids.current",
        "pids.max",
        "blkio.throttle.io_serviced_recursive",
        "blkio.throttle.io_service_bytes_recursive",
        "io.stat",
        "cgroup.controllers",
        "cgroup.procs",
        "cgroup.events",
        "cgroup.freeze",
        "freezer.state",
    ];
    let files: Vec<(&str, &str)> = names.iter().map(|n| (*n, text)).collect();
    let d = MemDir::new("/fuzz/stats", &files);
    let mut s = stats::Stats::default();
    for c in V1_CONTROLLERS {
        let _ = v1::stats(c, &d, &mut s);
    }
    let _ = v2::stats(&d, &|_| true, &mut s);
    let _ = serde_json::to_string(&s);
    let _ = v1::oom_kill_count(&d);
    let _ = v2::oom_kill_count(&d);
    let _ = v2::controllers(&d);
    let _ = v2::is_frozen(&d);
}
