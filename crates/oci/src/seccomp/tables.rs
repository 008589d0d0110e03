//! Syscall name -> number tables, one per syscall ABI.
//!
//! The numbers come from the `syscalls` crate (generated from the kernel's tables). Its tables
//! differ from libseccomp's in a few places, and libseccomp is what runc resolves names with, so
//! the differences are corrected here (checked against libseccomp's `syscalls.csv`):
//! - aarch64 and loongarch64 list the 32-bit-only `*_time64` calls of the generic table and
//!   call 79 `fstatat`; the kernel (and libseccomp) only has them on 32-bit ABIs and names 79
//!   `newfstatat`. loongarch64 also has no getrlimit, setrlimit, renameat or memfd_secret.
//! - arm lacks the ARM-private calls (`breakpoint`, `cacheflush`, `set_tls`... at 0x0f0001+).
//! - mips lists placeholder names (`reserved82`, `unused18`...) that are no syscalls.
//! - x86, mips and ppc lack the historic `break`; mips64 lacks `set_mempolicy_home_node`;
//!   every table predates `listns` and `rseq_slice_yield` (Linux 6.18 / 7.0).
//!
//! x32 has no table in the crate: it is the x86_64 one with the x32 syscall bit, minus the
//! calls x32 does not have, with the 36 calls that take structures with pointers at 512-547.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The x32 ABI marks its syscall numbers with this bit (`__X32_SYSCALL_BIT`).
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub(crate) type Table = HashMap<&'static str, u32>;

/// One table per syscall numbering; several architectures can share one (mips and mipsel,
/// ppc64 and ppc64le).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TableId {
    X86,
    X86_64,
    X32,
    Arm,
    Aarch64,
    Mips,
    Mips64,
    Ppc,
    Ppc64,
    S390x,
    Riscv64,
    Loongarch64,
}

const ALL_TABLES: [TableId; 12] = [
    TableId::X86,
    TableId::X86_64,
    TableId::X32,
    TableId::Arm,
    TableId::Aarch64,
    TableId::Mips,
    TableId::Mips64,
    TableId::Ppc,
    TableId::Ppc64,
    TableId::S390x,
    TableId::Riscv64,
    TableId::Loongarch64,
];

/// Every valid number of a `syscalls` crate table, with its name.
macro_rules! crate_table {
    ($arch:ident) => {{
        use syscalls::$arch::Sysno;
        let mut t = Table::new();
        for id in Sysno::first().id()..=Sysno::last().id() {
            if let Some(s) = usize::try_from(id).ok().and_then(Sysno::new) {
                t.insert(s.name(), s.id() as u32);
            }
        }
        t
    }};
}

/// Calls the generic (asm-generic) table lists but only 32-bit ABIs have.
const TIME64_ONLY_32BIT: &[&str] = &[
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "clock_settime64",
    "futex_time64",
    "io_pgetevents_time64",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "utimensat_time64",
];

/// x86_64 calls that x32 does not have.
const NOT_ON_X32: &[&str] = &[
    "_sysctl",
    "create_module",
    "epoll_ctl_old",
    "epoll_wait_old",
    "get_kernel_syms",
    "get_thread_area",
    "nfsservctl",
    "query_module",
    "set_thread_area",
    "uselib",
    "vserver",
];

/// x32's own entries (compat structure layouts), numbered from 512 in the kernel's table.
const X32_SPECIFIC: &[(&str, u32)] = &[
    ("rt_sigaction", 512),
    ("rt_sigreturn", 513),
    ("ioctl", 514),
    ("readv", 515),
    ("writev", 516),
    ("recvfrom", 517),
    ("sendmsg", 518),
    ("recvmsg", 519),
    ("execve", 520),
    ("ptrace", 521),
    ("rt_sigpending", 522),
    ("rt_sigtimedwait", 523),
    ("rt_sigqueueinfo", 524),
    ("sigaltstack", 525),
    ("timer_create", 526),
    ("mq_notify", 527),
    ("kexec_load", 528),
    ("waitid", 529),
    ("set_robust_list", 530),
    ("get_robust_list", 531),
    ("vmsplice", 532),
    ("move_pages", 533),
    ("preadv", 534),
    ("pwritev", 535),
    ("rt_tgsigqueueinfo", 536),
    ("recvmmsg", 537),
    ("sendmmsg", 538),
    ("process_vm_readv", 539),
    ("process_vm_writev", 540),
    ("setsockopt", 541),
    ("getsockopt", 542),
    ("io_setup", 543),
    ("io_submit", 544),
    ("execveat", 545),
    ("preadv2", 546),
    ("pwritev2", 547),
];

/// Names libseccomp knows only on architectures without a table here (m68k): a profile may
/// name them; they are skipped like any call the target architectures lack.
const KNOWN_ELSEWHERE: &[&str] = &["atomic_barrier", "atomic_cmpxchg_32", "getpagesize"];

/// Calls the newest kernels added on every architecture, at the same offset from the table's
/// base, that the crate's tables predate.
const NEWEST: &[(&str, u32)] = &[("listns", 470), ("rseq_slice_yield", 471)];

fn add_missing(t: &mut Table, base: u32, extra: &[(&'static str, u32)]) {
    for &(name, nr) in extra {
        t.entry(name).or_insert(base + nr);
    }
}

fn build(id: TableId) -> Table {
    let mut t = match id {
        TableId::X86 => crate_table!(x86),
        TableId::X86_64 | TableId::X32 => crate_table!(x86_64),
        TableId::Arm => crate_table!(arm),
        TableId::Aarch64 => crate_table!(aarch64),
        TableId::Mips => crate_table!(mips),
        TableId::Mips64 => crate_table!(mips64),
        TableId::Ppc => crate_table!(powerpc),
        TableId::Ppc64 => crate_table!(powerpc64),
        TableId::S390x => crate_table!(s390x),
        TableId::Riscv64 => crate_table!(riscv64),
        TableId::Loongarch64 => crate_table!(loongarch64),
    };
    let base = match id {
        TableId::Mips => 4000,
        TableId::Mips64 => 5000,
        _ => 0,
    };
    add_missing(&mut t, base, NEWEST);
    match id {
        TableId::X86 | TableId::Ppc | TableId::Ppc64 => add_missing(&mut t, 0, &[("break", 17)]),
        TableId::Mips => {
            t.retain(|name, _| !name.starts_with("reserved") && !name.starts_with("unused"));
            add_missing(&mut t, 4000, &[("break", 17)]);
        }
        TableId::Mips64 => {
            t.retain(|name, _| !name.starts_with("reserved"));
            add_missing(&mut t, 5000, &[("set_mempolicy_home_node", 450)]);
        }
        TableId::Arm => add_missing(
            &mut t,
            0x0f_0000,
            &[
                ("breakpoint", 1),
                ("cacheflush", 2),
                ("usr26", 3),
                ("usr32", 4),
                ("set_tls", 5),
                ("get_tls", 6),
            ],
        ),
        TableId::Aarch64 | TableId::Loongarch64 => {
            t.retain(|name, _| !TIME64_ONLY_32BIT.contains(name));
            if let Some(nr) = t.remove("fstatat") {
                t.insert("newfstatat", nr);
            }
            if id == TableId::Loongarch64 {
                for name in ["getrlimit", "setrlimit", "renameat", "memfd_secret"] {
                    t.remove(name);
                }
            }
        }
        TableId::X32 => {
            t.retain(|name, _| !NOT_ON_X32.contains(name));
            for &(name, nr) in X32_SPECIFIC {
                t.insert(name, nr);
            }
            for nr in t.values_mut() {
                *nr |= X32_SYSCALL_BIT;
            }
        }
        _ => {}
    }
    t
}

/// The table of one ABI, built on first use.
pub(crate) fn table(id: TableId) -> &'static Table {
    static TABLES: [OnceLock<Table>; 12] = [const { OnceLock::new() }; 12];
    let idx = ALL_TABLES.iter().position(|t| *t == id).unwrap_or(0);
    TABLES[idx].get_or_init(|| build(id))
}

/// Whether `name` is a syscall on any architecture libseccomp (and so runc) knows.
pub(crate) fn known_anywhere(name: &str) -> bool {
    KNOWN_ELSEWHERE.contains(&name)
        || mux_call(name).is_some()
        || ALL_TABLES.iter().any(|&id| table(id).contains_key(name))
}

/// Which multiplexer a call goes through on ABIs that have socketcall(2) and ipc(2) (x86,
/// ppc, s390x, mips o32), and its call number there (SYS_SOCKET..., SEMOP...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mux {
    Socketcall(u32),
    Ipc(u32),
}

pub(crate) fn mux_call(name: &str) -> Option<Mux> {
    const SOCKET: &[&str] = &[
        "socket",
        "bind",
        "connect",
        "listen",
        "accept",
        "getsockname",
        "getpeername",
        "socketpair",
        "send",
        "recv",
        "sendto",
        "recvfrom",
        "shutdown",
        "setsockopt",
        "getsockopt",
        "sendmsg",
        "recvmsg",
        "accept4",
        "recvmmsg",
        "sendmmsg",
    ];
    const IPC: &[(&str, u32)] = &[
        ("semop", 1),
        ("semget", 2),
        ("semctl", 3),
        ("semtimedop", 4),
        ("msgsnd", 11),
        ("msgrcv", 12),
        ("msgget", 13),
        ("msgctl", 14),
        ("shmat", 21),
        ("shmdt", 22),
        ("shmget", 23),
        ("shmctl", 24),
    ];
    if let Some(i) = SOCKET.iter().position(|n| *n == name) {
        return Some(Mux::Socketcall(i as u32 + 1));
    }
    IPC.iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, call)| Mux::Ipc(call))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_agree_with_the_kernel_tables() {
        assert_eq!(table(TableId::X86_64)["mkdir"], 83);
        assert_eq!(table(TableId::X86_64)["file_setattr"], 469);
        assert_eq!(table(TableId::X86_64)["listns"], 470);
        assert_eq!(table(TableId::X86)["mkdir"], 39);
        assert_eq!(table(TableId::X86)["socketcall"], 102);
        assert_eq!(table(TableId::X86)["break"], 17);
        assert_eq!(table(TableId::X32)["mkdir"], 83 | X32_SYSCALL_BIT);
        assert_eq!(table(TableId::X32)["execve"], 520 | X32_SYSCALL_BIT);
        assert!(!table(TableId::X32).contains_key("uselib"));
        assert_eq!(table(TableId::Aarch64)["mkdirat"], 34);
        assert!(!table(TableId::Aarch64).contains_key("mkdir"));
        assert!(!table(TableId::Aarch64).contains_key("clock_gettime64"));
        assert_eq!(table(TableId::Aarch64)["newfstatat"], 79);
        assert_eq!(table(TableId::Arm)["set_tls"], 0x0f_0005);
        assert_eq!(table(TableId::Arm)["clock_gettime64"], 403);
        assert_eq!(table(TableId::Mips)["mkdir"], 4039);
        assert!(!table(TableId::Mips).contains_key("unused18"));
        assert_eq!(table(TableId::Mips64)["read"], 5000);
        assert_eq!(table(TableId::Ppc64)["mkdir"], 39);
        assert_eq!(table(TableId::S390x)["mkdir"], 39);
        assert_eq!(table(TableId::Riscv64)["openat"], 56);
        assert!(!table(TableId::Loongarch64).contains_key("getrlimit"));
    }

    #[test]
    fn names_known_somewhere() {
        assert!(known_anywhere("mkdir"));
        assert!(known_anywhere("socketcall"));
        assert!(known_anywhere("breakpoint"));
        assert!(known_anywhere("getpagesize"));
        assert!(!known_anywhere("foo"));
        assert!(!known_anywhere(""));
        assert_eq!(mux_call("socket"), Some(Mux::Socketcall(1)));
        assert_eq!(mux_call("sendmmsg"), Some(Mux::Socketcall(20)));
        assert_eq!(mux_call("shmctl"), Some(Mux::Ipc(24)));
        assert_eq!(mux_call("mkdir"), None);
    }
}
