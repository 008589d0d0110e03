//! The architectures a filter can cover: how the kernel tags their syscalls
//! (`seccomp_data.arch`, an AUDIT_ARCH_* value), their syscall table, and the properties
//! libseccomp's code generation depends on (argument width, byte order, multiplexed calls).

use super::tables::TableId;
use super::SeccompError;
use oci_spec::runtime::Arch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ArchId {
    X86,
    X86_64,
    X32,
    Arm,
    Aarch64,
    Mips,
    Mipsel,
    Mips64,
    Mipsel64,
    Ppc,
    Ppc64,
    Ppc64le,
    S390x,
    Riscv64,
    Loongarch64,
}

pub(crate) struct ArchDef {
    pub id: ArchId,
    /// The runtime-spec / libseccomp name.
    pub name: &'static str,
    /// AUDIT_ARCH_* as the kernel puts it in `seccomp_data.arch` (x32 shares x86_64's).
    pub audit: u32,
    /// libseccomp compares all 64 bits of an argument only on 64-bit ABIs; on the others
    /// (x32 included) only the low 32 bits.
    pub bits64: bool,
    pub big_endian: bool,
    pub table: TableId,
    /// Socket and SysV IPC calls also go through socketcall(2) / ipc(2) on this ABI.
    pub mux: bool,
}

const LE: u32 = 0x4000_0000; // __AUDIT_ARCH_LE
const B64: u32 = 0x8000_0000; // __AUDIT_ARCH_64BIT

pub(crate) const ARCHES: &[ArchDef] = &[
    ArchDef {
        id: ArchId::X86,
        name: "SCMP_ARCH_X86",
        audit: 3 | LE,
        bits64: false,
        big_endian: false,
        table: TableId::X86,
        mux: true,
    },
    ArchDef {
        id: ArchId::X86_64,
        name: "SCMP_ARCH_X86_64",
        audit: 62 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::X86_64,
        mux: false,
    },
    ArchDef {
        id: ArchId::X32,
        name: "SCMP_ARCH_X32",
        audit: 62 | B64 | LE,
        bits64: false,
        big_endian: false,
        table: TableId::X32,
        mux: false,
    },
    ArchDef {
        id: ArchId::Arm,
        name: "SCMP_ARCH_ARM",
        audit: 40 | LE,
        bits64: false,
        big_endian: false,
        table: TableId::Arm,
        mux: false,
    },
    ArchDef {
        id: ArchId::Aarch64,
        name: "SCMP_ARCH_AARCH64",
        audit: 183 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::Aarch64,
        mux: false,
    },
    ArchDef {
        id: ArchId::Mips,
        name: "SCMP_ARCH_MIPS",
        audit: 8,
        bits64: false,
        big_endian: true,
        table: TableId::Mips,
        mux: true,
    },
    ArchDef {
        id: ArchId::Mipsel,
        name: "SCMP_ARCH_MIPSEL",
        audit: 8 | LE,
        bits64: false,
        big_endian: false,
        table: TableId::Mips,
        mux: true,
    },
    ArchDef {
        id: ArchId::Mips64,
        name: "SCMP_ARCH_MIPS64",
        audit: 8 | B64,
        bits64: true,
        big_endian: true,
        table: TableId::Mips64,
        mux: false,
    },
    ArchDef {
        id: ArchId::Mipsel64,
        name: "SCMP_ARCH_MIPSEL64",
        audit: 8 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::Mips64,
        mux: false,
    },
    ArchDef {
        id: ArchId::Ppc,
        name: "SCMP_ARCH_PPC",
        audit: 20,
        bits64: false,
        big_endian: true,
        table: TableId::Ppc,
        mux: true,
    },
    ArchDef {
        id: ArchId::Ppc64,
        name: "SCMP_ARCH_PPC64",
        audit: 21 | B64,
        bits64: true,
        big_endian: true,
        table: TableId::Ppc64,
        mux: true,
    },
    ArchDef {
        id: ArchId::Ppc64le,
        name: "SCMP_ARCH_PPC64LE",
        audit: 21 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::Ppc64,
        mux: true,
    },
    ArchDef {
        id: ArchId::S390x,
        name: "SCMP_ARCH_S390X",
        audit: 22 | B64,
        bits64: true,
        big_endian: true,
        table: TableId::S390x,
        mux: true,
    },
    ArchDef {
        id: ArchId::Riscv64,
        name: "SCMP_ARCH_RISCV64",
        audit: 243 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::Riscv64,
        mux: false,
    },
    ArchDef {
        id: ArchId::Loongarch64,
        name: "SCMP_ARCH_LOONGARCH64",
        audit: 258 | B64 | LE,
        bits64: true,
        big_endian: false,
        table: TableId::Loongarch64,
        mux: false,
    },
];

pub(crate) fn def(id: ArchId) -> &'static ArchDef {
    // ARCHES lists every ArchId once, in declaration order.
    &ARCHES[id as usize]
}

pub(crate) fn by_name(name: &str) -> Option<ArchId> {
    ARCHES.iter().find(|a| a.name == name).map(|a| a.id)
}

/// The architecture this program runs on: its syscalls always go through the filter, as
/// libseccomp always includes the native architecture.
pub(crate) fn native() -> Option<ArchId> {
    if cfg!(all(target_arch = "x86_64", target_pointer_width = "64")) {
        Some(ArchId::X86_64)
    } else if cfg!(target_arch = "x86_64") {
        Some(ArchId::X32)
    } else if cfg!(target_arch = "x86") {
        Some(ArchId::X86)
    } else if cfg!(target_arch = "aarch64") {
        Some(ArchId::Aarch64)
    } else if cfg!(target_arch = "arm") {
        Some(ArchId::Arm)
    } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
        Some(ArchId::Ppc64le)
    } else if cfg!(target_arch = "powerpc64") {
        Some(ArchId::Ppc64)
    } else if cfg!(target_arch = "powerpc") {
        Some(ArchId::Ppc)
    } else if cfg!(target_arch = "s390x") {
        Some(ArchId::S390x)
    } else if cfg!(target_arch = "riscv64") {
        Some(ArchId::Riscv64)
    } else if cfg!(target_arch = "loongarch64") {
        Some(ArchId::Loongarch64)
    } else if cfg!(all(target_arch = "mips64", target_endian = "little")) {
        Some(ArchId::Mipsel64)
    } else if cfg!(target_arch = "mips64") {
        Some(ArchId::Mips64)
    } else if cfg!(all(target_arch = "mips", target_endian = "little")) {
        Some(ArchId::Mipsel)
    } else if cfg!(target_arch = "mips") {
        Some(ArchId::Mips)
    } else {
        None
    }
}

/// The architecture a runtime-spec name means; `native` stands for SCMP_ARCH_NATIVE.
pub(crate) fn from_spec(arch: Arch, native: ArchId) -> Result<ArchId, SeccompError> {
    Ok(match arch {
        Arch::ScmpArchNative => native,
        Arch::ScmpArchX86 => ArchId::X86,
        Arch::ScmpArchX86_64 => ArchId::X86_64,
        Arch::ScmpArchX32 => ArchId::X32,
        Arch::ScmpArchArm => ArchId::Arm,
        Arch::ScmpArchAarch64 => ArchId::Aarch64,
        Arch::ScmpArchMips => ArchId::Mips,
        Arch::ScmpArchMipsel => ArchId::Mipsel,
        Arch::ScmpArchMips64 => ArchId::Mips64,
        Arch::ScmpArchMipsel64 => ArchId::Mipsel64,
        Arch::ScmpArchPpc => ArchId::Ppc,
        Arch::ScmpArchPpc64 => ArchId::Ppc64,
        Arch::ScmpArchPpc64le => ArchId::Ppc64le,
        Arch::ScmpArchS390x => ArchId::S390x,
        Arch::ScmpArchRiscv64 => ArchId::Riscv64,
        Arch::ScmpArchLoongarch64 => ArchId::Loongarch64,
        other => {
            let name = match other {
                Arch::ScmpArchMips64n32 => "SCMP_ARCH_MIPS64N32",
                Arch::ScmpArchMipsel64n32 => "SCMP_ARCH_MIPSEL64N32",
                Arch::ScmpArchS390 => "SCMP_ARCH_S390",
                Arch::ScmpArchParisc => "SCMP_ARCH_PARISC",
                Arch::ScmpArchParisc64 => "SCMP_ARCH_PARISC64",
                Arch::ScmpArchM68k => "SCMP_ARCH_M68K",
                Arch::ScmpArchSh => "SCMP_ARCH_SH",
                Arch::ScmpArchSheb => "SCMP_ARCH_SHEB",
                _ => "this architecture",
            };
            return Err(SeccompError::UnsupportedArch(name));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_id() {
        for (i, a) in ARCHES.iter().enumerate() {
            assert_eq!(a.id as usize, i, "{}", a.name);
            assert_eq!(by_name(a.name), Some(a.id));
        }
        assert_eq!(def(ArchId::X86_64).audit, 0xc000_003e);
        assert_eq!(def(ArchId::X86).audit, 0x4000_0003);
        assert_eq!(def(ArchId::Aarch64).audit, 0xc000_00b7);
        assert_eq!(def(ArchId::Riscv64).audit, 0xc000_00f3);
        assert_eq!(def(ArchId::S390x).audit, 0x8000_0016);
    }
}
