//! The statistics `runc events --stats` prints, in runc's JSON shape (runc 1.1 types/events.go:
//! the same names, and the same omitempty choices, so tools parsing runc's output parse ours),
//! and the parsers of the cgroup files they come from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub cpu: Cpu,
    pub cpuset: CpuSet,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    /// Page size ("2MB", "1GB") -> usage.
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT is not a cgroup: always empty here (runc prints {} without it).
    pub intel_rdt: serde_json::Map<String, serde_json::Value>,
    /// runc fills this only for containers in their own network namespace it can enter;
    /// null otherwise (Go's nil slice).
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Hugetlb {
    #[serde(default, skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub value: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
    /// (sic: runc's key)
    #[serde(
        default,
        rename = "ioQueueRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_queued_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_merged_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_time_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Pids {
    #[serde(default, skip_serializing_if = "zero")]
    pub current: u64,
    /// 0: no limit.
    #[serde(default, skip_serializing_if = "zero")]
    pub limit: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "zero")]
    pub throttled_time: u64,
}

/// Nanoseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    #[serde(default)]
    pub kernel: u64,
    #[serde(default)]
    pub user: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Cpu {
    #[serde(default)]
    pub usage: CpuUsage,
    #[serde(default)]
    pub throttling: Throttling,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CpuSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    #[serde(default)]
    pub cpu_exclusive: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
    #[serde(default)]
    pub mem_hardwall: u64,
    #[serde(default)]
    pub mem_exclusive: u64,
    #[serde(default)]
    pub memory_migrate: u64,
    #[serde(default)]
    pub memory_spread_page: u64,
    #[serde(default)]
    pub memory_spread_slab: u64,
    #[serde(default)]
    pub memory_pressure: u64,
    #[serde(default)]
    pub sched_load_balance: u64,
    #[serde(default)]
    pub sched_relax_domain_level: i64,
}

/// Bytes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MemoryEntry {
    #[serde(default)]
    pub limit: u64,
    #[serde(default, skip_serializing_if = "zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "zero")]
    pub max: u64,
    #[serde(default)]
    pub failcnt: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "zero")]
    pub cache: u64,
    #[serde(default)]
    pub usage: MemoryEntry,
    #[serde(default)]
    pub swap: MemoryEntry,
    #[serde(default)]
    pub kernel: MemoryEntry,
    #[serde(default, rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Most keys one flat-keyed file may contribute (memory.stat has ~60).
const MAX_KEYS: usize = 4096;

/// A cgroup number: "max" is u64::MAX, a negative number 0 (runc's reading of both).
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    // Negative, possibly below i64::MIN: all digits after the '-'.
    let d = s.strip_prefix('-')?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).then_some(0)
}

/// "key value" lines (memory.stat, cpu.stat, memory.events...): the pairs that parse.
pub fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if m.len() >= MAX_KEYS {
            break;
        }
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) {
            if let Some(v) = parse_u64(v) {
                m.insert(k.to_string(), v);
            }
        }
    }
    m
}

/// The value of `key` in a flat-keyed file.
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next().and_then(parse_u64))?
    })
}

/// A cpuset list ("0-3,7") as runc reports it (u16 ids); None when malformed. Bounded: ids
/// are u16, so at most 65536 entries.
pub fn cpuset_list(text: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    let t = text.trim();
    if t.is_empty() {
        return Some(out);
    }
    for part in t.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
        if out.len() > 65_536 {
            return None;
        }
    }
    Some(out)
}

/// v1 blkio stat lines: "8:0 Read 1282048" (or "8:0 1282048"), a trailing "Total N" skipped.
pub fn blkio_entries(text: &str) -> Option<Vec<BlkioEntry>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split([' ', ':']).filter(|s| !s.is_empty()).collect();
        match f.len() {
            0 => continue,
            2 if f[0] == "Total" => continue,
            3 | 4 => {}
            _ => return None,
        }
        let (op, value) = if f.len() == 4 {
            (f[2].to_string(), f[3])
        } else {
            (String::new(), f[2])
        };
        out.push(BlkioEntry {
            major: f[0].parse().ok()?,
            minor: f[1].parse().ok()?,
            op,
            value: value.parse().ok()?,
        });
        if out.len() > 1 << 16 {
            return None;
        }
    }
    Some(out)
}

/// v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" into runc's two tables
/// (bytes and ios, op "Read"/"Write").
pub fn io_stat(text: &str, blkio: &mut Blkio) {
    for line in text.lines().take(1 << 12) {
        let mut it = line.split_whitespace();
        let Some((ma, mi)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let (op, table) = match k {
                "rbytes" => ("Read", &mut blkio.io_service_bytes_recursive),
                "wbytes" => ("Write", &mut blkio.io_service_bytes_recursive),
                "rios" => ("Read", &mut blkio.io_serviced_recursive),
                "wios" => ("Write", &mut blkio.io_serviced_recursive),
                _ => continue,
            };
            table.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
}

/// The huge page sizes of this kernel as runc names them ("2MB", "1GB"), from
/// /sys/kernel/mm/hugepages/hugepages-<N>kB.
pub fn hugepage_sizes() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut v: Vec<(u64, String)> = rd
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kb, page_size_name(kb)))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// 2048 (kB) -> "2MB", 1048576 -> "1GB", 64 -> "64KB" (runc's unit names).
pub fn page_size_name(kb: u64) -> String {
    let units = ["KB", "MB", "GB", "TB", "PB"];
    let mut v = kb;
    let mut i = 0;
    while v >= 1024 && v.is_multiple_of(1024) && i + 1 < units.len() {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_runc() {
        let s = Stats::default();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
                "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
                    "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
                    "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0},
                "memory": {"usage": {"limit": 0, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                    "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0}},
                "pids": {},
                "blkio": {},
                "hugetlb": {},
                "intel_rdt": {},
                "network_interfaces": null
            })
        );
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64("-1"), Some(0));
        assert_eq!(parse_u64("-99999999999999999999999"), Some(0));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(cpuset_list("0-2,5\n"), Some(vec![0, 1, 2, 5]));
        assert_eq!(cpuset_list("3-1"), None);
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1048576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        let e = blkio_entries("8:0 Read 10\n8:0 Write 5\nTotal 15\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].op, "Write");
        let mut b = Blkio::default();
        io_stat(
            "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
            &mut b,
        );
        assert_eq!(b.io_service_bytes_recursive.len(), 2);
        assert_eq!(b.io_serviced_recursive[1].value, 4);
        assert_eq!(keyed_value("low 0\noom_kill 3\n", "oom_kill"), Some(3));
    }
}
