//! What runc prints: the list table (Go's tabwriter with runc's settings), ps filtered to the
//! container's processes, events as JSON lines, features, and `update`'s flags as resources.

use super::flags::Parsed;
use std::io::Write;
use std::time::Duration;
use virtkit_oci::container::Runtime;
use virtkit_oci::state::{Public, Status};

/// Go's text/tabwriter as runc configures it (minwidth 12, padding 3, spaces); the last cell
/// of a line is not padded.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                width[i] = width[i].max((c.chars().count() + 3).max(12));
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(width[i] - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

pub fn list(list: &[Public], format: &str, quiet: bool) -> Result<(), String> {
    if quiet {
        for c in list {
            println!("{}", c.id);
        }
        return Ok(());
    }
    match format {
        "table" => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()];
            for c in list {
                rows.push(vec![
                    c.id.clone(),
                    c.pid.to_string(),
                    c.status.clone(),
                    c.bundle.display().to_string(),
                    c.created.clone(),
                    c.owner.clone(),
                ]);
            }
            print!("{}", tabwrite(&rows));
        }
        "json" => {
            if list.is_empty() {
                println!("null");
            } else {
                println!("{}", serde_json::to_string(list).unwrap_or_default());
            }
        }
        other => return Err(format!("invalid format option {other:?}")),
    }
    Ok(())
}

/// `ps`: the host's `ps` output (default -ef) limited to the container's processes.
pub fn ps(pids: &[i32], format: &str, ps_args: &[String]) -> Result<(), String> {
    match format {
        "json" => {
            println!("{}", serde_json::to_string(pids).unwrap_or_default());
            Ok(())
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .map_err(|e| format!("running ps: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or("couldn't find PID field in ps output")?;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{header}");
            for l in lines {
                let pid = l
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    let _ = writeln!(stdout, "{l}");
                }
            }
            Ok(())
        }
        other => Err(format!("invalid format option {other:?}")),
    }
}

/// Go durations as runc takes them: "5s", "100ms", "1m30s", "2h".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let v: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += v * mult;
        rest = &rest[u..];
    }
    if total <= 0.0 {
        return Err("duration must be greater than 0".into());
    }
    Ok(Duration::from_secs_f64(total))
}

/// `events`: a stats line per interval (one with --stats) and an "oom" line whenever the
/// kernel OOM-killed in the container; ends when the container stops.
pub fn events(rt: &Runtime, id: &str, once: bool, interval: Duration) -> Result<i32, String> {
    let mut last_oom = None;
    loop {
        let (st, stats, oom) = rt.stats(id).map_err(|e| e.to_string())?;
        if st == Status::Stopped {
            if once {
                return Err(format!("container with id {id} is not running"));
            }
            return Ok(0);
        }
        let mut out = std::io::stdout().lock();
        if last_oom.is_some_and(|l| oom > l) {
            let _ = writeln!(out, "{}", serde_json::json!({"type": "oom", "id": id}));
        }
        last_oom = Some(oom);
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"type": "stats", "id": id, "data": stats})
        );
        let _ = out.flush();
        drop(out);
        if once {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}

/// Sizes as runc's --memory takes them (docker/go-units RAMInBytes: binary k, m, g, t, p;
/// optional "b"/"ib").
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let n = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let v: f64 = t[..n].parse().map_err(|_| format!("invalid size: {s:?}"))?;
    let unit = t[n..].trim_end_matches('b').trim_end_matches('i');
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid size: {s:?}")),
    };
    Ok((v * mult) as i64)
}

fn num<T: std::str::FromStr>(p: &Parsed, name: &str) -> Result<Option<T>, String> {
    p.get(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("invalid value {v:?} for --{name}"))
        })
        .transpose()
}

/// `update`'s flags (or -r FILE / -r - for JSON on stdin) as LinuxResources.
pub fn resources_from_flags(p: &Parsed) -> Result<oci_spec::runtime::LinuxResources, String> {
    use oci_spec::runtime::*;
    if let Some(r) = p.get("resources") {
        let data = if r == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                .map_err(|e| format!("reading resources from stdin: {e}"))?;
            v
        } else {
            std::fs::read(r).map_err(|e| format!("{r}: {e}"))?
        };
        return serde_json::from_slice(&data).map_err(|e| format!("{r}: {e}"));
    }
    let mut res = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    let mut mem_set = false;
    for (flag, which) in [
        ("memory", 0),
        ("memory-reservation", 1),
        ("memory-swap", 2),
        ("kernel-memory", 3),
        ("kernel-memory-tcp", 4),
    ] {
        if let Some(v) = p.get(flag) {
            let b = ram_in_bytes(v)?;
            mem_set = true;
            match which {
                0 => mem.set_limit(Some(b)),
                1 => mem.set_reservation(Some(b)),
                2 => mem.set_swap(Some(b)),
                3 => mem.set_kernel(Some(b)),
                _ => mem.set_kernel_tcp(Some(b)),
            };
        }
    }
    if mem_set {
        res.set_memory(Some(mem));
    }
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(v) = num::<u64>(p, "cpu-period")? {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = num::<i64>(p, "cpu-quota")? {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = num::<u64>(p, "cpu-share")? {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = num::<u64>(p, "cpu-rt-period")? {
        cpu.set_realtime_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = num::<i64>(p, "cpu-rt-runtime")? {
        cpu.set_realtime_runtime(Some(v));
        cpu_set = true;
    }
    if let Some(v) = p.get("cpuset-cpus") {
        cpu.set_cpus(Some(v.to_string()));
        cpu_set = true;
    }
    if let Some(v) = p.get("cpuset-mems") {
        cpu.set_mems(Some(v.to_string()));
        cpu_set = true;
    }
    if cpu_set {
        res.set_cpu(Some(cpu));
    }
    if let Some(v) = num::<i64>(p, "pids-limit")? {
        let mut pids = LinuxPids::default();
        pids.set_limit(v);
        res.set_pids(Some(pids));
    }
    if let Some(v) = num::<u16>(p, "blkio-weight")? {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(v));
        res.set_block_io(Some(b));
    }
    if p.get("l3-cache-schema").is_some() || p.get("mem-bw-schema").is_some() {
        return Err("Intel RDT is not available on this host".into());
    }
    Ok(res)
}

/// `features`: runc's JSON, with what this build supports.
pub fn features() -> String {
    let caps: Vec<String> = virtkit_oci::process::CAP_NAMES
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.0.2-dev",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec", "nolazytime",
            "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime",
            "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared",
            "silent", "slave", "strictatime", "suid", "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": virtkit_oci::seccomp::supported_actions(),
                "operators": virtkit_oci::seccomp::supported_operators(),
                "archs": virtkit_oci::seccomp::supported_archs(),
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "org.opencontainers.runc.version": "1.1.5+virtkit",
            "io.github.virtkit.seccomp": "compiled in Rust, no libseccomp"
        }
    });
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(&v, &mut ser);
    buf.push(b'\n');
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_like_runc() {
        let rows = vec![
            vec!["ID".to_string(), "PID".into(), "OWNER".into()],
            vec!["t1".to_string(), "21011".into(), "root".into()],
        ];
        assert_eq!(
            tabwrite(&rows),
            "ID          PID         OWNER\nt1          21011       root\n"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5").is_err());
        assert_eq!(ram_in_bytes("100M").unwrap(), 100 << 20);
        assert_eq!(ram_in_bytes("1gb").unwrap(), 1 << 30);
        assert_eq!(ram_in_bytes("4096").unwrap(), 4096);
        assert!(ram_in_bytes("12x").is_err());
    }
}
