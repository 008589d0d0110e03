//! Device access rules (`linux.resources.devices`).
//!
//! The rules are first folded into the state the v1 devices controller would end up in (a
//! default, allow or deny, and exceptions keyed by type/major/minor), as runc's emulator does:
//! a rule of type "a" resets the default and drops the exceptions; another rule adds an
//! exception when its action differs from the default, and removes permissions from the
//! exception with the same key otherwise.
//! - cgroup v1: the state is written as runc writes it: when the default changes (or the
//!   current state is allow-by-default, whose deny exceptions devices.list cannot show) a
//!   disruptive "a" rule first (so "deny a" then the allow list), then only the exceptions that
//!   differ from what devices.list shows; then devices.list is read back and must match.
//! - cgroup v2: an eBPF BPF_PROG_TYPE_CGROUP_DEVICE program that checks the exceptions in order
//!   and returns the default, attached to the cgroup with bpf(BPF_PROG_ATTACH), replacing the
//!   previous program. Assembled by hand: the program is a dozen instruction shapes, and no
//!   crate assembles cgroup device programs without pulling in a whole BPF loader.

use super::files::{self, CgroupDir};
use super::CgroupError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::collections::BTreeMap;

/// Permission bits, as the BPF context encodes them (BPF_DEVCG_ACC_*).
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// More rules than this in one config is not a device policy.
pub const MAX_RULES: usize = 65_536;

/// Device type of an exception: block or char ("a" only ever resets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Block,
    Char,
}

impl Node {
    fn letter(self) -> char {
        match self {
            Node::Block => 'b',
            Node::Char => 'c',
        }
    }
}

/// One validated rule. `major`/`minor`: None is the wildcard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// None: type "a" (all devices).
    pub node: Option<Node>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
    pub allow: bool,
}

impl Rule {
    /// As devices.allow / devices.deny take it: "c 1:3 rwm", "a *:* rwm".
    pub fn v1_string(&self) -> String {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.node.map_or('a', Node::letter),
            n(self.major),
            n(self.minor),
            access_string(self.access)
        )
    }
}

pub fn access_string(a: u8) -> String {
    let mut s = String::new();
    if a & ACC_READ != 0 {
        s.push('r');
    }
    if a & ACC_WRITE != 0 {
        s.push('w');
    }
    if a & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

/// Validates the OCI rules (index `i` names the rule in messages).
pub fn parse_rules(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>, CgroupError> {
    if rules.len() > MAX_RULES {
        return Err(CgroupError::BadValue {
            key: "linux.resources.devices".into(),
            value: format!("{} rules", rules.len()),
            reason: format!("more than {MAX_RULES} rules"),
        });
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_rule(i, r))
        .collect()
}

fn parse_rule(i: usize, r: &LinuxDeviceCgroup) -> Result<Rule, CgroupError> {
    let bad = |field: &str, value: String, reason: &str| CgroupError::BadValue {
        key: format!("linux.resources.devices[{i}].{field}"),
        value,
        reason: reason.into(),
    };
    let node = match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(Node::Block),
        LinuxDeviceType::C => Some(Node::Char),
        t => {
            return Err(bad(
                "type",
                t.as_str().into(),
                "cgroup device rules take \"a\", \"b\" or \"c\"",
            ))
        }
    };
    let num = |field: &str, v: Option<i64>| -> Result<Option<u32>, CgroupError> {
        match v {
            None | Some(-1) => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                bad(
                    field,
                    v.to_string(),
                    "must be -1 (any) or a device number 0..4294967295",
                )
            }),
        }
    };
    let major = num("major", r.major())?;
    let minor = num("minor", r.minor())?;
    // Absent access: all of rwm (the spec makes it optional); present it must be a
    // composition of r, w and m (runc refuses the empty string too).
    let access = match r.access().as_deref() {
        None => ACC_ALL,
        Some(s) => {
            let mut a = 0;
            for c in s.chars() {
                a |= match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    _ => {
                        return Err(bad(
                            "access",
                            s.escape_debug().to_string(),
                            "must be made of r, w and m",
                        ))
                    }
                };
            }
            if a == 0 {
                return Err(bad("access", "\"\"".into(), "must not be empty"));
            }
            a
        }
    };
    Ok(Rule {
        node,
        major,
        minor,
        access,
        allow: r.allow(),
    })
}

type Key = (Node, Option<u32>, Option<u32>);

/// The state of a v1 devices cgroup: a default and exceptions to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub default_allow: bool,
    pub exceptions: BTreeMap<Key, u8>,
}

impl State {
    /// Folds `rules` into a state, starting from deny-all (runc's starting point).
    pub fn from_rules(rules: &[Rule]) -> Result<State, CgroupError> {
        let mut s = State::default();
        for r in rules {
            s.apply(r)?;
        }
        Ok(s)
    }

    pub fn apply(&mut self, r: &Rule) -> Result<(), CgroupError> {
        let Some(node) = r.node else {
            self.default_allow = r.allow;
            self.exceptions.clear();
            return Ok(());
        };
        let key = (node, r.major, r.minor);
        if r.allow != self.default_allow {
            *self.exceptions.entry(key).or_insert(0) |= r.access;
            return Ok(());
        }
        // Removing permissions: v1 only removes from the exception with the very same key,
        // and silently ignores a hole punched into a wildcard exception. Refuse that rather
        // than leave the device reachable (runc does the same).
        for wider in [
            (node, None, r.minor),
            (node, r.major, None),
            (node, None, None),
        ] {
            if wider != key {
                if let Some(p) = self.exceptions.get(&wider) {
                    if p & r.access != 0 {
                        return Err(CgroupError::BadValue {
                            key: "linux.resources.devices".into(),
                            value: r.v1_string(),
                            reason: format!(
                                "cannot punch a hole in the wider rule {} {} set before \
                                 (cgroup v1 would ignore it)",
                                if self.default_allow { "deny" } else { "allow" },
                                Rule {
                                    node: Some(wider.0),
                                    major: wider.1,
                                    minor: wider.2,
                                    access: *p,
                                    allow: !self.default_allow,
                                }
                                .v1_string()
                            ),
                        });
                    }
                }
            }
        }
        if let Some(p) = self.exceptions.get_mut(&key) {
            *p &= !r.access;
            if *p == 0 {
                self.exceptions.remove(&key);
            }
        }
        Ok(())
    }

    /// The state devices.list describes: "a *:* rwm" is allow-all (whose deny exceptions the
    /// file cannot show), anything else the allow exceptions of a deny-all cgroup.
    pub fn from_list(list: &str) -> Result<State, String> {
        let mut s = State::default();
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let r = parse_list_line(line).ok_or_else(|| format!("bad line {line:?}"))?;
            match r.node {
                None => {
                    s.default_allow = true;
                    s.exceptions.clear();
                }
                Some(n) => {
                    *s.exceptions.entry((n, r.major, r.minor)).or_insert(0) |= r.access;
                }
            }
        }
        Ok(s)
    }

    /// The writes that take a cgroup in state `self` to `target` (runc's transition).
    pub fn transition(&self, target: &State) -> Vec<Rule> {
        let mut out = Vec::new();
        let mut old = &self.exceptions;
        let empty = BTreeMap::new();
        if self.default_allow || self.default_allow != target.default_allow {
            out.push(Rule {
                node: None,
                major: None,
                minor: None,
                access: ACC_ALL,
                allow: target.default_allow,
            });
            old = &empty;
        }
        for (k, p) in old {
            let dropped = p & !target.exceptions.get(k).copied().unwrap_or(0);
            if dropped != 0 {
                out.push(Rule {
                    node: Some(k.0),
                    major: k.1,
                    minor: k.2,
                    access: dropped,
                    allow: target.default_allow,
                });
            }
        }
        for (k, p) in &target.exceptions {
            let gained = p & !old.get(k).copied().unwrap_or(0);
            if gained != 0 {
                out.push(Rule {
                    node: Some(k.0),
                    major: k.1,
                    minor: k.2,
                    access: gained,
                    allow: !target.default_allow,
                });
            }
        }
        out
    }
}

fn parse_list_line(line: &str) -> Option<Rule> {
    let mut it = line.split_whitespace();
    let (t, mm, acc) = (it.next()?, it.next()?, it.next()?);
    let node = match t {
        "a" => None,
        "b" => Some(Node::Block),
        "c" => Some(Node::Char),
        _ => return None,
    };
    let (ma, mi) = mm.split_once(':')?;
    let num = |s: &str| -> Option<Option<u32>> {
        if s == "*" {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    let mut access = 0;
    for c in acc.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(Rule {
        node,
        major: num(ma)?,
        minor: num(mi)?,
        access,
        allow: true,
    })
}

/// Cgroup v1: takes the devices cgroup `dir` to the state the rules describe.
pub fn set_v1(dir: &dyn CgroupDir, rules: &[Rule]) -> Result<(), CgroupError> {
    let target = State::from_rules(rules)?;
    let list = files::read(dir, "devices.list")?;
    let current = State::from_list(&list).map_err(|detail| CgroupError::Parse {
        path: dir.path().join("devices.list"),
        detail,
    })?;
    for r in current.transition(&target) {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        files::write(dir, file, &r.v1_string())?;
    }
    // The kernel may refuse silently what the parent does not allow: check the result.
    let list = files::read(dir, "devices.list")?;
    let now = State::from_list(&list).map_err(|detail| CgroupError::Parse {
        path: dir.path().join("devices.list"),
        detail,
    })?;
    // An allow-all cgroup cannot be checked further than its default (devices.list does not
    // show deny exceptions).
    let matches = if target.default_allow {
        now.default_allow
    } else {
        now == target
    };
    if !matches {
        return Err(CgroupError::Unsupported(format!(
            "{}: the devices cgroup did not take the rules (devices.list now: {:?}); \
             does the parent cgroup allow them?",
            dir.path().display(),
            list.lines().take(8).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Cgroup v2: assembles the device program and attaches it to `dir`.
pub fn set_v2(dir: &dyn CgroupDir, rules: &[Rule]) -> Result<(), CgroupError> {
    let prog = program(&State::from_rules(rules)?);
    dir.attach_device_program(&prog)
}

/// One eBPF instruction (struct bpf_insn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU_MOV_X: u8 = 0xbc; // 32-bit mov, register
const ALU_AND_K: u8 = 0x54; // 32-bit and, immediate
const ALU_MOV_K: u8 = 0xb4; // 32-bit mov, immediate
const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
const JMP32_JNE_X: u8 = 0x5e; // BPF_JMP32 | BPF_JNE | BPF_X
const EXIT: u8 = 0x95;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The device program for `state`. Registers after the prologue: r2 = device type
/// (BPF_DEVCG_DEV_BLOCK 1 / CHAR 2), r3 = requested access bits, r4 = major, r5 = minor
/// (struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type =
/// access << 16 | type). Each exception is a block that jumps to the next block on any
/// mismatch and otherwise returns the exception's verdict; the end returns the default.
pub fn program(state: &State) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let verdict = i32::from(!state.default_allow);
    for ((node, major, minor), access) in &state.exceptions {
        // Checks first with a placeholder offset, then patched to jump past the block.
        let mut block: Vec<Insn> = Vec::with_capacity(8);
        let ty = match node {
            Node::Block => 1,
            Node::Char => 2,
        };
        block.push(insn(JMP32_JNE_K, 2, 0, 0, ty));
        if *access != ACC_ALL {
            // Every requested bit must be in the rule's set: (r3 & access) == r3.
            block.push(insn(ALU_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU_AND_K, 1, 0, 0, i32::from(*access)));
            block.push(insn(JMP32_JNE_X, 1, 3, 0, 0));
        }
        if let Some(m) = major {
            // JMP32 compares the low 32 bits: the immediate's bit pattern is the u32.
            block.push(insn(JMP32_JNE_K, 4, 0, 0, *m as i32));
        }
        if let Some(m) = minor {
            block.push(insn(JMP32_JNE_K, 5, 0, 0, *m as i32));
        }
        block.push(insn(ALU_MOV_K, 0, 0, 0, verdict));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JMP32_JNE_K || ins.code == JMP32_JNE_X {
                // The block is at most 8 long: the offset fits.
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU_MOV_K, 0, 0, 0, i32::from(state.default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Runs `prog` on one access, as the kernel would (the instruction shapes `program` emits,
/// nothing more): for tests and the fuzz target, to check the program against the state.
pub fn interpret(prog: &[Insn], node: Node, major: u32, minor: u32, access: u8) -> Option<bool> {
    let ty: u64 = match node {
        Node::Block => 1,
        Node::Char => 2,
    };
    let ctx = [(u32::from(access) << 16) | ty as u32, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    for _ in 0..prog.len() + 1 {
        let i = prog.get(pc)?;
        let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
        if dst > 10 || src > 10 {
            return None;
        }
        pc += 1;
        match i.code {
            LDX_MEM_W => r[dst] = u64::from(*ctx.get(usize::try_from(i.off / 4).ok()?)?),
            ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
            ALU64_RSH_K => r[dst] >>= i.imm as u32 & 63,
            ALU_MOV_X => r[dst] = r[src] & 0xffff_ffff,
            ALU_AND_K => r[dst] = (r[dst] & i.imm as u32 as u64) & 0xffff_ffff,
            ALU_MOV_K => r[dst] = u64::from(i.imm as u32),
            JMP32_JNE_K | JMP32_JNE_X => {
                let rhs = if i.code == JMP32_JNE_K {
                    i.imm as u32
                } else {
                    r[src] as u32
                };
                if r[dst] as u32 != rhs {
                    pc = pc.checked_add_signed(isize::from(i.off))?;
                }
            }
            EXIT => return Some(r[0] != 0),
            _ => return None,
        }
    }
    None
}

/// What the state says about one access (the reference `interpret` is checked against).
pub fn decide(state: &State, node: Node, major: u32, minor: u32, access: u8) -> bool {
    for ((n, ma, mi), a) in &state.exceptions {
        if *n == node
            && access & !a == 0
            && ma.is_none_or(|m| m == major)
            && mi.is_none_or(|m| m == minor)
        {
            return !state.default_allow;
        }
    }
    state.default_allow
}

/// The device rules runc appends to every container's list (after the config's own), minus
/// the device nodes the config defines itself (by path, as runc dedups): mknod of anything,
/// and rwm on /dev/null, random, full, tty, zero, urandom, the pty slaves (136:*), /dev/ptmx
/// and /dev/net/tun. `with_runc_defaults` gives the full list the coordinator passes.
pub fn runc_default_rules(
    spec_device_paths: &[&std::path::Path],
) -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    let defaults: [(LinuxDeviceType, i64, i64, &str, Option<&str>); 11] = [
        (LinuxDeviceType::C, -1, -1, "m", None),
        (LinuxDeviceType::B, -1, -1, "m", None),
        (LinuxDeviceType::C, 1, 3, "rwm", Some("/dev/null")),
        (LinuxDeviceType::C, 1, 8, "rwm", Some("/dev/random")),
        (LinuxDeviceType::C, 1, 7, "rwm", Some("/dev/full")),
        (LinuxDeviceType::C, 5, 0, "rwm", Some("/dev/tty")),
        (LinuxDeviceType::C, 1, 5, "rwm", Some("/dev/zero")),
        (LinuxDeviceType::C, 1, 9, "rwm", Some("/dev/urandom")),
        (LinuxDeviceType::C, 136, -1, "rwm", None),
        (LinuxDeviceType::C, 5, 2, "rwm", None),
        (LinuxDeviceType::C, 10, 200, "rwm", None),
    ];
    defaults
        .iter()
        .filter(|(_, _, _, _, path)| {
            path.is_none_or(|p| {
                !spec_device_paths
                    .iter()
                    .any(|s| *s == std::path::Path::new(p))
            })
        })
        .map(|(t, ma, mi, acc, _)| {
            let mut r = oci_spec::runtime::LinuxDeviceCgroup::default();
            r.set_allow(true);
            r.set_typ(Some(*t));
            r.set_major((*ma != -1).then_some(*ma));
            r.set_minor((*mi != -1).then_some(*mi));
            r.set_access(Some((*acc).to_string()));
            r
        })
        .collect()
}

/// `resources` with runc's device list: the config's rules followed by `runc_default_rules`
/// (what runc enforces whatever the config says). `spec_devices`: `linux.devices`.
pub fn with_runc_defaults(
    resources: Option<&oci_spec::runtime::LinuxResources>,
    spec_devices: &[oci_spec::runtime::LinuxDevice],
) -> oci_spec::runtime::LinuxResources {
    let mut r = resources.cloned().unwrap_or_default();
    let paths: Vec<&std::path::Path> = spec_devices.iter().map(|d| d.path().as_path()).collect();
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.extend(runc_default_rules(&paths));
    r.set_devices(Some(rules));
    r
}

/// bpf(2) for the device program: load, attach, query, detach.
pub mod bpf {
    use super::{CgroupError, Insn};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_DETACH: libc::c_long = 9;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    const BPF_F_REPLACE: u32 = 4;

    /// union bpf_attr, as the fields of the commands used here lay it out; the rest is zero
    /// (the kernel requires unknown tail bytes to be zero).
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Attr {
            Attr([0; 128])
        }
        fn u32(&mut self, off: usize, v: u32) -> &mut Self {
            self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64(&mut self, off: usize, v: u64) -> &mut Self {
            self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn get_u32(&self, off: usize) -> u32 {
            let mut b = [0; 4];
            b.copy_from_slice(&self.0[off..off + 4]);
            u32::from_ne_bytes(b)
        }
    }

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
        // SAFETY: `attr` is a valid, writable 128-byte bpf_attr for the duration of the call,
        // and every pointer stored in it (set by the callers) outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.0.as_mut_ptr(),
                std::mem::size_of::<Attr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn err(op: &'static str, path: &Path, source: std::io::Error) -> CgroupError {
        CgroupError::Bpf {
            op,
            path: path.to_path_buf(),
            source,
            log: String::new(),
        }
    }

    fn fd(r: libc::c_long) -> OwnedFd {
        // SAFETY: a successful bpf() that returns a file descriptor hands us its ownership.
        unsafe { OwnedFd::from_raw_fd(r as i32) }
    }

    /// Loads the program; on a verifier refusal, loads again with the log to say why.
    pub fn load(prog: &[Insn], path: &Path) -> Result<OwnedFd, CgroupError> {
        let license = c"Apache";
        let name = b"virtkit_dev";
        let mut a = Attr::new();
        a.u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
            .u32(4, prog.len() as u32)
            .u64(8, prog.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64);
        a.0[48..48 + name.len()].copy_from_slice(name);
        match bpf(BPF_PROG_LOAD, &mut a) {
            Ok(r) => Ok(fd(r)),
            Err(source) => {
                let mut log = vec![0u8; 1 << 16];
                a.u32(24, 1)
                    .u32(28, log.len() as u32)
                    .u64(32, log.as_mut_ptr() as u64);
                let _ = bpf(BPF_PROG_LOAD, &mut a);
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                Err(CgroupError::Bpf {
                    op: "loading the device program for",
                    path: path.to_path_buf(),
                    source,
                    log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
                })
            }
        }
    }

    /// The device programs attached to the cgroup `cg` now, and the flags they were attached
    /// with.
    fn attached(cg: &OwnedFd, path: &Path) -> Result<(Vec<OwnedFd>, u32), CgroupError> {
        let mut ids = [0u32; 64];
        let mut a = Attr::new();
        a.u32(0, cg.as_raw_fd() as u32)
            .u32(4, BPF_CGROUP_DEVICE)
            .u64(16, ids.as_mut_ptr() as u64)
            .u32(24, ids.len() as u32);
        bpf(BPF_PROG_QUERY, &mut a).map_err(|e| err("querying the device programs of", path, e))?;
        let flags = a.get_u32(12);
        let n = (a.get_u32(24) as usize).min(ids.len());
        let mut fds = Vec::with_capacity(n);
        for id in &ids[..n] {
            let mut g = Attr::new();
            g.u32(0, *id);
            match bpf(BPF_PROG_GET_FD_BY_ID, &mut g) {
                Ok(r) => fds.push(fd(r)),
                // Detached meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(err("opening an attached device program of", path, e)),
            }
        }
        Ok((fds, flags))
    }

    fn attach_raw(
        cg: &OwnedFd,
        prog: &OwnedFd,
        flags: u32,
        replace: Option<&OwnedFd>,
    ) -> std::io::Result<()> {
        let mut a = Attr::new();
        a.u32(0, cg.as_raw_fd() as u32)
            .u32(4, prog.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE)
            .u32(12, flags);
        if let Some(r) = replace {
            a.u32(16, r.as_raw_fd() as u32);
        }
        bpf(BPF_PROG_ATTACH, &mut a).map(|_| ())
    }

    fn detach(cg: &OwnedFd, prog: &OwnedFd) -> std::io::Result<()> {
        let mut a = Attr::new();
        a.u32(0, cg.as_raw_fd() as u32)
            .u32(4, prog.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut a).map(|_| ())
    }

    /// Loads `prog` and attaches it to the cgroup directory `path`, replacing what was
    /// attached before (atomically with BPF_F_REPLACE when there was one program, otherwise
    /// attach then detach the old ones, so there is no moment without a program).
    pub fn attach(path: &Path, prog: &[Insn]) -> Result<(), CgroupError> {
        let cg: OwnedFd = std::fs::File::open(path)
            .map_err(|e| err("opening", path, e))?
            .into();
        let new = load(prog, path)?;
        let (old, old_flags) = attached(&cg, path)?;
        if old.len() == 1 && old_flags & BPF_F_ALLOW_MULTI != 0 {
            match attach_raw(&cg, &new, BPF_F_ALLOW_MULTI | BPF_F_REPLACE, Some(&old[0])) {
                Ok(()) => return Ok(()),
                // Older kernels without BPF_F_REPLACE: fall through.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(err("replacing the device program of", path, e)),
            }
        }
        if !old.is_empty() && old_flags & BPF_F_ALLOW_MULTI == 0 {
            // Attached exclusively by someone else (flags 0 or OVERRIDE): a multi attach
            // would be refused; swap them (override semantics).
            for o in &old {
                detach(&cg, o).map_err(|e| err("detaching the device program of", path, e))?;
            }
            return attach_raw(&cg, &new, BPF_F_ALLOW_MULTI, None)
                .map_err(|e| err("attaching the device program to", path, e));
        }
        attach_raw(&cg, &new, BPF_F_ALLOW_MULTI, None)
            .map_err(|e| err("attaching the device program to", path, e))?;
        for o in &old {
            detach(&cg, o).map_err(|e| err("detaching the old device program of", path, e))?;
        }
        Ok(())
    }

    /// How many device programs are attached to `path` (tests).
    pub fn attached_count(path: &Path) -> Result<usize, CgroupError> {
        let cg: OwnedFd = std::fs::File::open(path)
            .map_err(|e| err("opening", path, e))?
            .into();
        Ok(attached(&cg, path)?.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, t: Option<Node>, ma: Option<u32>, mi: Option<u32>, a: u8) -> Rule {
        Rule {
            node: t,
            major: ma,
            minor: mi,
            access: a,
            allow,
        }
    }

    #[test]
    fn deny_all_then_allow_list() {
        let rules = [
            rule(false, None, None, None, ACC_ALL),
            rule(true, Some(Node::Char), Some(1), Some(3), ACC_ALL),
            rule(true, Some(Node::Char), None, None, ACC_MKNOD),
        ];
        let target = State::from_rules(&rules).unwrap();
        let root = State::from_list("a *:* rwm\n").unwrap();
        let writes: Vec<String> = root
            .transition(&target)
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    if r.allow { "allow" } else { "deny" },
                    r.v1_string()
                )
            })
            .collect();
        assert_eq!(
            writes,
            ["deny a *:* rwm", "allow c *:* m", "allow c 1:3 rwm"]
        );
        // Already there: nothing to write.
        let now = State::from_list("c *:* m\nc 1:3 rwm\n").unwrap();
        assert!(now.transition(&target).is_empty());
        // Dropping one: only that.
        let fewer = State::from_rules(&rules[..2]).unwrap();
        let w = now.transition(&fewer);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].v1_string(), "c *:* m");
        assert!(!w[0].allow);
    }

    #[test]
    fn program_matches_state() {
        let rules = [
            rule(false, None, None, None, ACC_ALL),
            rule(
                true,
                Some(Node::Char),
                Some(1),
                Some(3),
                ACC_READ | ACC_WRITE,
            ),
            rule(true, Some(Node::Char), Some(136), None, ACC_ALL),
            rule(true, Some(Node::Block), None, None, ACC_MKNOD),
            rule(
                true,
                Some(Node::Char),
                Some(4_000_000_000),
                Some(7),
                ACC_ALL,
            ),
        ];
        let st = State::from_rules(&rules).unwrap();
        let p = program(&st);
        for node in [Node::Block, Node::Char] {
            for (ma, mi) in [
                (1, 3),
                (1, 5),
                (136, 0),
                (136, 99),
                (8, 0),
                (4_000_000_000, 7),
            ] {
                for a in 1..=ACC_ALL {
                    assert_eq!(
                        interpret(&p, node, ma, mi, a),
                        Some(decide(&st, node, ma, mi, a)),
                        "{node:?} {ma}:{mi} {a}"
                    );
                }
            }
        }
        assert!(decide(&st, Node::Char, 1, 3, ACC_READ));
        assert!(!decide(&st, Node::Char, 1, 3, ACC_MKNOD));
        assert!(!decide(&st, Node::Char, 1, 5, ACC_READ));
        // Allow-all with one deny.
        let st = State::from_rules(&[
            rule(true, None, None, None, ACC_ALL),
            rule(false, Some(Node::Char), Some(1), Some(3), ACC_ALL),
        ])
        .unwrap();
        let p = program(&st);
        assert_eq!(interpret(&p, Node::Char, 1, 3, ACC_READ), Some(false));
        assert_eq!(interpret(&p, Node::Char, 1, 5, ACC_READ), Some(true));
    }

    #[test]
    fn hole_in_wildcard_refused() {
        let rules = [
            rule(false, None, None, None, ACC_ALL),
            rule(true, Some(Node::Char), None, None, ACC_ALL),
            rule(false, Some(Node::Char), Some(1), Some(3), ACC_READ),
        ];
        assert!(State::from_rules(&rules).is_err());
    }

    #[test]
    fn defaults() {
        let d = runc_default_rules(&[std::path::Path::new("/dev/null")]);
        assert_eq!(d.len(), 10);
        let parsed = parse_rules(&d).unwrap();
        assert!(parsed.iter().all(|r| r.allow));
        assert_eq!(parsed[0].v1_string(), "c *:* m");
    }
}
