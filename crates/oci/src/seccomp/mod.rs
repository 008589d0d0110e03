//! seccomp: compiles the OCI `linux.seccomp` object into a classic BPF program and installs it.
//!
//! Written by hand rather than on libseccomp (a C library the runtime must not need) or
//! `seccompiler` (no notify, log or trace-with-data actions, no multi-architecture filters,
//! no syscall tables): the program has to behave like the one runc builds with libseccomp for
//! the same profile, down to runc's own additions. [`compiler`] says what that means rule by
//! rule. In short:
//!
//! - every action (`SCMP_ACT_KILL` = kill the thread, as libseccomp), errno and trace values
//!   (EPERM when unset), `defaultErrnoRet`;
//! - architectures: the native one is always covered, listed ones are added, others get
//!   SCMP_ACT_KILL (libseccomp's bad-arch action); x32 versus x86_64 by the syscall bit;
//!   architectures whose byte order differs from the native one are refused (libseccomp does);
//! - a name no architecture knows is an error (`seccomp: unknown syscall "foo"`), a name some
//!   listed architecture lacks is skipped there;
//! - 64-bit argument comparisons (high word, then low word), AND within a rule, first matching
//!   rule among several for one syscall, runc's OR for repeated arguments;
//! - runc's -ENOSYS for syscalls newer than the profile;
//! - flags TSYNC, LOG, SPEC_ALLOW (runc's default when `flags` is absent),
//!   WAIT_KILLABLE_RECV; NOTIFY adds NEW_LISTENER and returns the listener.
//!
//! The program fits the kernel's 4096 instructions or compiling fails with a clear error.

mod arch;
pub mod bpf;
mod compiler;
mod kernel;
mod listener;
mod tables;
mod tree;

pub use bpf::{Insn, SeccompData};
pub use listener::{process_state_json, send_listener_fd};

use oci_spec::runtime::LinuxSeccomp;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unknown syscall {0:?}")]
    UnknownSyscall(String),
    #[error("seccomp: {rule}: empty syscall name")]
    EmptyName { rule: String },
    #[error("seccomp: {rule}: argument index {index} is out of range (0-5)")]
    ArgIndex { rule: String, index: usize },
    #[error("seccomp: {what} {value} is out of range (0-{max})")]
    ReturnOutOfRange { what: String, value: u32, max: u32 },
    #[error("seccomp: architecture {0} is not supported (no syscall table for it)")]
    UnsupportedArch(&'static str),
    #[error("seccomp: architecture {arch} has another byte order than the native {native}; one filter cannot cover both")]
    ArchEndianness {
        arch: &'static str,
        native: &'static str,
    },
    #[error("seccomp: no syscall tables for the architecture this runtime was built for")]
    UnsupportedHost,
    #[error("seccomp: SCMP_ACT_NOTIFY cannot be the default action")]
    NotifyDefault,
    #[error("seccomp: SCMP_ACT_NOTIFY cannot be used for the write syscall (the runtime needs write to hand the listener over)")]
    NotifyWrite,
    #[error("seccomp: SCMP_ACT_NOTIFY is used but linux.seccomp.listenerPath is not set")]
    NotifyWithoutListenerPath,
    #[error("seccomp: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs an SCMP_ACT_NOTIFY rule (the kernel refuses it without a listener)")]
    WaitKillableWithoutNotify,
    #[error("seccomp: conflicting rules for syscall {name:?}: the rule with {action} ends where another rule with the same conditions has another action (libseccomp refuses this too)")]
    ConflictingRules { name: String, action: String },
    #[error("seccomp: the filter needs {0} BPF instructions, more than the kernel's limit of 4096 (too many rules with argument conditions)")]
    TooLarge(usize),
    #[error("seccomp: the profile expands to more than {0} syscall rules")]
    TooComplex(usize),
    #[error("seccomp: loading the filter needs no_new_privileges or CAP_SYS_ADMIN (EACCES)")]
    NeedsNoNewPrivs,
    #[error("seccomp: the kernel does not support {0}")]
    FlagUnsupported(&'static str),
    #[error("seccomp: SECCOMP_FILTER_FLAG_TSYNC: another thread could not be synchronized{}", .0.map(|t| format!(" (thread {t})")).unwrap_or_default())]
    Tsync(Option<libc::c_long>),
    #[error("seccomp: a notify listener is already installed for this process (EBUSY)")]
    ListenerBusy,
    #[error("seccomp: loading the filter: {0}")]
    Load(std::io::Error),
    #[error("seccomp: connecting to the seccomp agent at {path}: {source}")]
    ListenerConnect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp: sending the listener to the seccomp agent at {path}: {source}")]
    ListenerSend {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp: internal error in the filter compiler: {0}")]
    Internal(String),
    #[error("seccomp: {0}")]
    Invalid(String),
}

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Program {
    insns: Vec<Insn>,
    flags: u64,
    needs_listener: bool,
    /// Byte order of the machine it is for (it decides where the halves of arguments are).
    big_endian: bool,
}

/// Compiles the profile for this machine (the native architecture plus the listed ones). All
/// errors in the profile surface here; `install` only fails on what the kernel refuses.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let native = arch::native().ok_or(SeccompError::UnsupportedHost)?;
    compile_with(seccomp, native, &|| {
        kernel::flag_supported(compiler::FLAG_SPEC_ALLOW)
    })
}

/// Compiles as if the native architecture were `native` (a runtime-spec name such as
/// `SCMP_ARCH_AARCH64`), for tools and tests that look at programs for other machines.
/// SPEC_ALLOW is not added by default here: the running kernel says nothing about theirs.
pub fn compile_for_arch(seccomp: &LinuxSeccomp, native: &str) -> Result<Program, SeccompError> {
    let native = arch::by_name(native)
        .ok_or_else(|| SeccompError::Invalid(format!("unknown architecture {native:?}")))?;
    compile_with(seccomp, native, &|| false)
}

fn compile_with(
    seccomp: &LinuxSeccomp,
    native: arch::ArchId,
    spec_allow: &dyn Fn() -> bool,
) -> Result<Program, SeccompError> {
    let out = compiler::compile(seccomp, native, spec_allow)?;
    Ok(Program {
        insns: out.insns,
        flags: out.flags,
        needs_listener: out.needs_listener,
        big_endian: out.big_endian,
    })
}

impl Program {
    /// Whether the profile uses SCMP_ACT_NOTIFY: `install` then returns the listener, which
    /// goes to the agent at `listenerPath` (see [`send_listener_fd`]).
    pub fn needs_listener(&self) -> bool {
        self.needs_listener
    }

    /// Installs the filter on the calling thread (all threads with TSYNC). Makes system calls
    /// only, no allocation: fit for a child right after fork. Needs no_new_privileges or
    /// CAP_SYS_ADMIN. Returns the notify listener when the profile uses SCMP_ACT_NOTIFY.
    pub fn install(&self) -> Result<Option<OwnedFd>, SeccompError> {
        kernel::load(&self.insns, self.flags)
    }

    /// The BPF instructions, as the kernel gets them.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The seccomp(2) flags `install` passes (SECCOMP_FILTER_FLAG_* bits).
    pub fn flags(&self) -> u64 {
        self.flags
    }

    /// The runtime-spec names of the flags `install` passes.
    pub fn flag_names(&self) -> Vec<&'static str> {
        kernel::FLAG_NAMES
            .iter()
            .filter(|(_, bit)| self.flags & bit != 0)
            .map(|(name, _)| *name)
            .collect()
    }

    /// What the filter returns for one syscall (SECCOMP_RET_* with its data), computed by
    /// running the program as the kernel would.
    pub fn evaluate(&self, data: &SeccompData) -> u32 {
        // A compiled program passed `bpf::verify`, so it always ends in a ret.
        bpf::run(&self.insns, data, self.big_endian).unwrap_or(compiler::RET_KILL_THREAD)
    }
}

/// The number of syscall `name` on architecture `arch` (a runtime-spec name such as
/// `SCMP_ARCH_X86`) as filters see it (x32 numbers carry the x32 bit); `None` when that
/// architecture has no such call (socket calls reached only through socketcall included).
pub fn resolve_syscall(arch: &str, name: &str) -> Option<u32> {
    let a = arch::by_name(arch)?;
    tables::table(arch::def(a).table).get(name).copied()
}

/// For `runc features`: the actions, operators, architectures and flags this compiler knows.
pub fn supported_actions() -> &'static [&'static str] {
    &[
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ]
}

pub fn supported_operators() -> &'static [&'static str] {
    &[
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ]
}

pub fn supported_archs() -> &'static [&'static str] {
    &[
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_LOONGARCH64",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
    ]
}

/// The flags a profile may set (runc's `knownFlags`).
pub fn supported_flags() -> &'static [&'static str] {
    &[
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ]
}

/// The flags of [`supported_flags`] the running kernel accepts (runc's `supportedFlags`).
pub fn kernel_supported_flags() -> Vec<&'static str> {
    supported_flags()
        .iter()
        .copied()
        .filter(|name| {
            kernel::FLAG_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .is_some_and(|(_, bit)| kernel::flag_supported(*bit))
        })
        .collect()
}

#[cfg(test)]
mod tests;
