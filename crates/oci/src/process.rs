//! The container process's own attributes, applied by the init (or the exec'd process) right
//! before execve: rlimits, user and groups, capabilities (all five sets), no_new_privs,
//! personality, scheduling, and finding the program on the container's PATH.

use crate::sys;
use oci_spec::runtime::{Capabilities, LinuxCapabilities, PosixRlimitType, Process};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub type Res<T> = std::result::Result<T, String>;

/// Capability names in kernel order (capability.h); the index is the capability's number.
pub const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The highest capability this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_NAMES.len() as u32 - 1)
}

pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.trim_start_matches("CAP_");
    CAP_NAMES.iter().position(|c| *c == n).map(|i| i as u32)
}

/// A capability set as a 64-bit mask; names the kernel does not know are left out (runc
/// warns and goes on, so that one config serves several kernels).
pub fn mask(set: Option<&Capabilities>, last: u32) -> u64 {
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        if let Some(n) = cap_number(&c.to_string()) {
            if n <= last {
                m |= 1 << n;
            }
        }
    }
    m
}

/// The five sets resolved to masks, computed before fork (no allocation after).
#[derive(Debug, Clone, Copy, Default)]
pub struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last: u32,
}

impl CapMasks {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> CapMasks {
        let last = last_cap();
        match c {
            None => CapMasks {
                last,
                ..Default::default()
            },
            Some(c) => CapMasks {
                bounding: mask(c.bounding().as_ref(), last),
                effective: mask(c.effective().as_ref(), last),
                permitted: mask(c.permitted().as_ref(), last),
                inheritable: mask(c.inheritable().as_ref(), last),
                ambient: mask(c.ambient().as_ref(), last),
                last,
            },
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset(eff: u64, perm: u64, inh: u64) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and a two-element data array of the v3 layout, as capset(2) expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drops from the bounding set what is not in it; needs CAP_SETPCAP, so before setuid.
pub fn apply_bounding(c: &CapMasks) -> Res<()> {
    for n in 0..=c.last {
        if c.bounding & (1 << n) == 0 {
            match sys::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => {
                    return Err(format!(
                        "dropping capability {n} from the bounding set: {e}"
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Sets effective/permitted/inheritable, then raises the ambient ones.
pub fn apply_caps(c: &CapMasks) -> Res<()> {
    capset(c.effective, c.permitted, c.inheritable)
        .map_err(|e| format!("setting capabilities: {e}"))?;
    // Clear the ambient set then raise what is asked (each must be permitted and inheritable).
    let _ = sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    // Each ambient capability must also be permitted and inheritable; runc only warns when
    // one cannot be raised (its default spec asks for ambient capabilities that are not
    // inheritable), so do the same: raise what the kernel accepts.
    for n in 0..=c.last {
        if c.ambient & (1 << n) != 0 {
            // SAFETY: prctl with integer arguments.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    n as libc::c_ulong,
                    0,
                    0,
                )
            };
        }
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

pub fn apply_rlimits(p: &Process) -> Res<()> {
    for r in p.rlimits().iter().flatten() {
        if r.soft() > r.hard() {
            return Err(format!(
                "rlimit {:?}: soft limit {} above hard limit {}",
                r.typ(),
                r.soft(),
                r.hard()
            ));
        }
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: valid rlimit struct.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } != 0 {
            return Err(format!(
                "setting rlimit {}: {}",
                r.typ(),
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// setgroups, setresgid, setresuid with the capabilities kept across the change, as the
/// capability sets are applied after it.
pub fn apply_user(p: &Process, setgroups_allowed: bool) -> Res<()> {
    let u = p.user();
    let groups: Vec<libc::gid_t> = u.additional_gids().clone().unwrap_or_default();
    sys::prctl(libc::PR_SET_KEEPCAPS, 1).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    if setgroups_allowed {
        // SAFETY: pointer and length of a live vector.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(format!("setgroups: {}", io::Error::last_os_error()));
        }
    } else if !groups.is_empty() {
        return Err("additionalGids given, but setgroups is denied in this user namespace".into());
    }
    // SAFETY: plain syscalls with integer arguments.
    if unsafe { libc::setresgid(u.gid(), u.gid(), u.gid()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "setting gid {}: {e}{}",
            u.gid(),
            map_hint(&e, "gid")
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(u.uid(), u.uid(), u.uid()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "setting uid {}: {e}{}",
            u.uid(),
            map_hint(&e, "uid")
        ));
    }
    sys::prctl(libc::PR_SET_KEEPCAPS, 0).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    if let Some(m) = u.umask() {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(m & 0o777) };
    }
    Ok(())
}

fn map_hint(e: &io::Error, what: &str) -> String {
    if e.raw_os_error() == Some(libc::EINVAL) {
        format!(" (the {what} has no mapping in the user namespace: add it to {what}Mappings)")
    } else {
        String::new()
    }
}

pub fn apply_personality(linux: Option<&oci_spec::runtime::Linux>) -> Res<()> {
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        let dom = match p.domain() {
            oci_spec::runtime::LinuxPersonalityDomain::PerLinux => 0x0000,
            oci_spec::runtime::LinuxPersonalityDomain::PerLinux32 => 0x0008,
        };
        // SAFETY: personality with an integer argument.
        if unsafe { libc::personality(dom) } < 0 {
            return Err(format!("personality: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

pub fn apply_io_priority(p: &Process) -> Res<()> {
    if let Some(io) = p.io_priority() {
        use oci_spec::runtime::IOPriorityClass as C;
        let class = match io.class() {
            C::IoprioClassRt => 1,
            C::IoprioClassBe => 2,
            C::IoprioClassIdle => 3,
        };
        if !(0..=7).contains(&io.priority()) {
            return Err(format!(
                "ioPriority.priority {} is not in 0..7",
                io.priority()
            ));
        }
        let prio = (class << 13) | io.priority() as libc::c_long;
        // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, self, prio).
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) } != 0 {
            return Err(format!("ioprio_set: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

pub fn apply_scheduler(p: &Process) -> Res<()> {
    use oci_spec::runtime::LinuxSchedulerPolicy as P;
    let Some(s) = p.scheduler() else {
        return Ok(());
    };
    let policy = match s.policy() {
        P::SchedOther => libc::SCHED_OTHER,
        P::SchedFifo => libc::SCHED_FIFO,
        P::SchedRr => libc::SCHED_RR,
        P::SchedBatch => libc::SCHED_BATCH,
        P::SchedIso => return Err("scheduler policy SCHED_ISO is not supported by Linux".into()),
        P::SchedIdle => libc::SCHED_IDLE,
        P::SchedDeadline => 6,
    };
    if policy == 6 {
        return Err("scheduler policy SCHED_DEADLINE is not supported yet".into());
    }
    let param = libc::sched_param {
        sched_priority: s.priority().unwrap_or(0),
    };
    // SAFETY: valid sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(format!(
            "sched_setscheduler: {}",
            io::Error::last_os_error()
        ));
    }
    if let Some(n) = s.nice() {
        // SAFETY: setpriority with integer arguments.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, *n) } != 0 {
            return Err(format!("setpriority: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `args[0]` found as execve will run it: a path with a slash as given, else the first
/// executable regular file on the process's PATH (as runc resolves it before it waits to be
/// started, so that `create` reports a missing program).
pub fn find_program(arg0: &str, env: &[String], cwd: &Path) -> Res<PathBuf> {
    let executable = |p: &Path| -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.contains('/') {
        let p = if Path::new(arg0).is_absolute() {
            PathBuf::from(arg0)
        } else {
            cwd.join(arg0)
        };
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => Err(format!("exec: \"{arg0}\": is a directory")),
            Ok(_) => Ok(PathBuf::from(arg0)),
            Err(e) => Err(format!("exec: \"{arg0}\": stat {arg0}: {e}")),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if executable(&cand) {
            return Ok(cand);
        }
    }
    Err(format!(
        "exec: \"{arg0}\": executable file not found in $PATH"
    ))
}

/// HOME from the container's /etc/passwd when the config does not set it (runc does the same).
pub fn with_home(env: &[String], uid: u32) -> Vec<String> {
    let mut out = env.to_vec();
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return out;
    }
    let home = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".to_string());
    out.push(format!("HOME={home}"));
    out
}

pub fn cstrings(v: &[String]) -> Res<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte")))
        .collect()
}

pub fn path_cstring(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{p:?} contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_numbers() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("NET_ADMIN"), Some(12));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(cap_number("CAP_NOPE"), None);
        let caps: Capabilities = [
            oci_spec::runtime::Capability::Kill,
            oci_spec::runtime::Capability::NetAdmin,
        ]
        .into_iter()
        .collect();
        assert_eq!(mask(Some(&caps), 40), (1 << 5) | (1 << 12));
    }

    #[test]
    fn program_lookup() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(
            find_program("sh", &env, Path::new("/")).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let e = find_program("no-such-prog-xyz", &env, Path::new("/")).unwrap_err();
        assert!(e.contains("executable file not found in $PATH"), "{e}");
        assert!(find_program("/etc", &env, Path::new("/"))
            .unwrap_err()
            .contains("is a directory"));
    }
}
