//! From the runtime-spec seccomp object to a BPF program, with the semantics runc gives a
//! profile (runc builds a libseccomp filter, then prepends its own -ENOSYS stub):
//!
//! - A rule whose action equals the default action is dropped (runc skips it).
//! - A rule with several conditions on the same argument becomes one rule per condition
//!   (runc's "old behaviour"), so those conditions are OR-ed; otherwise conditions are AND-ed.
//! - Per syscall, the first unconditional rule wins over everything else (libseccomp keeps the
//!   first one and drops the conditional rules). Conditional rules are merged into
//!   libseccomp's decision tree ([`super::tree`]), so overlapping rules with different actions
//!   resolve as under runc, and rules libseccomp refuses to merge (the same checks ending in
//!   different actions) are refused here too. One deliberate difference: libseccomp's pruning
//!   step (up to 2.6 at least) sometimes drops a rule that is not redundant (about 1 profile
//!   in 1500 random ones with heavily overlapping rules, none of the real profiles tested);
//!   every rule of the profile counts here.
//! - `SCMP_CMP_MASKED_EQ` with a zero mask always holds (libseccomp drops the comparison).
//!   On 32-bit ABIs (x86, x32, arm, mips, ppc) only the low 32 bits are compared.
//! - On ABIs with socketcall(2)/ipc(2) (x86, ppc, s390x, mips), a rule on a socket or SysV
//!   IPC call also covers the multiplexer with argument 0 equal to the call number, as
//!   libseccomp does.
//! - Architectures: the native one is always filtered; another listed one gets its own
//!   section; a syscall from an architecture not covered gets libseccomp's "bad arch" action,
//!   SCMP_ACT_KILL (kill the thread). x86_64 and x32 share the AUDIT_ARCH value: without x32
//!   listed, x32 syscalls (bit 30) are bad-arch too, except nr -1 (what tracers use to skip).
//! - runc's -ENOSYS stub: unless the default action is ALLOW, LOG or TRACE, a syscall number
//!   above the largest one the profile names (per architecture; s390x's multiplexer 0 too)
//!   returns ENOSYS, so that programs fall back from syscalls newer than the profile. As in
//!   runc, the stub is checked first, and socket/IPC names do not count on ABIs with
//!   multiplexers (libseccomp resolves them to pseudo numbers there).

use super::arch::{self, ArchId};
use super::bpf::{self, Cmp, Code, Item, Label};
use super::tables::{self, Mux, X32_SYSCALL_BIT};
use super::tree::{Cond, Forest, Op};
use super::SeccompError;
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Act, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as SpecOp,
};
use std::collections::BTreeMap;

pub(crate) const RET_KILL_THREAD: u32 = 0x0000_0000;
pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const RET_TRAP: u32 = 0x0003_0000;
pub(crate) const RET_ERRNO: u32 = 0x0005_0000;
pub(crate) const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub(crate) const RET_TRACE: u32 = 0x7ff0_0000;
pub(crate) const RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;

pub(crate) const FLAG_TSYNC: u64 = 1;
pub(crate) const FLAG_LOG: u64 = 2;
pub(crate) const FLAG_SPEC_ALLOW: u64 = 4;
pub(crate) const FLAG_NEW_LISTENER: u64 = 8;
pub(crate) const FLAG_TSYNC_ESRCH: u64 = 16;
pub(crate) const FLAG_WAIT_KILLABLE_RECV: u64 = 32;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// The kernel clamps SECCOMP_RET_ERRNO data to MAX_ERRNO; larger values are refused here.
const MAX_ERRNO: u32 = 4095;
/// What a hostile profile may cost before it is refused (Docker's default needs about 1200).
const MAX_RULE_INSERTIONS: usize = 200_000;
/// Comparisons in one section's decision trees: far more than a program can hold (each takes
/// two instructions or more), low enough to keep merging fast.
const MAX_NODES: usize = 4 * bpf::MAX_INSNS;

pub(crate) struct Output {
    pub insns: Vec<bpf::Insn>,
    pub flags: u64,
    pub needs_listener: bool,
    pub big_endian: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RawCond {
    arg: u8,
    op: Op,
    value: u64,
    value_two: u64,
}

/// One syscall entry of the profile (one name of one `syscalls[]` element).
struct Entry<'a> {
    name: &'a str,
    action: u32,
    /// OR-ed alternatives, each a set of AND-ed conditions (empty: unconditional).
    alternatives: &'a [Vec<RawCond>],
}

#[derive(Default)]
struct Syscall {
    unconditional: Option<u32>,
    /// Its argument checks in the section's forest.
    root: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Ret(u32),
    Block(u32),
}

/// A function over all syscall numbers, constant on ranges: `starts[s]` holds from `s` up to
/// the next start.
struct RangeMap {
    starts: BTreeMap<u32, Target>,
}

impl RangeMap {
    fn new(t: Target) -> Self {
        RangeMap {
            starts: BTreeMap::from([(0, t)]),
        }
    }

    fn get(&self, x: u32) -> Target {
        self.starts
            .range(..=x)
            .next_back()
            .map(|(_, t)| *t)
            .unwrap_or(Target::Ret(RET_KILL_THREAD))
    }

    /// Sets `lo..=hi` to `t`.
    fn set(&mut self, lo: u32, hi: u32, t: Target) {
        if lo > hi {
            return;
        }
        if let Some(after) = hi.checked_add(1) {
            let v = self.get(after);
            self.starts.insert(after, v);
        }
        let inside: Vec<u32> = self.starts.range(lo..=hi).map(|(k, _)| *k).collect();
        for k in inside {
            self.starts.remove(&k);
        }
        self.starts.insert(lo, t);
    }

    /// The ranges with neighbours of equal value merged.
    fn ranges(&self) -> Vec<(u32, Target)> {
        let mut out: Vec<(u32, Target)> = Vec::new();
        for (&s, &t) in &self.starts {
            if out.last().map(|l| l.1) != Some(t) {
                out.push((s, t));
            }
        }
        out
    }
}

fn action_value(
    act: Act,
    ret: Option<u32>,
    what: &dyn Fn() -> String,
) -> Result<u32, SeccompError> {
    Ok(match act {
        Act::ScmpActKill | Act::ScmpActKillThread => RET_KILL_THREAD,
        Act::ScmpActKillProcess => RET_KILL_PROCESS,
        Act::ScmpActTrap => RET_TRAP,
        Act::ScmpActErrno => {
            let e = ret.unwrap_or(EPERM);
            if e > MAX_ERRNO {
                return Err(SeccompError::ReturnOutOfRange {
                    what: what(),
                    value: e,
                    max: MAX_ERRNO,
                });
            }
            RET_ERRNO | e
        }
        Act::ScmpActTrace => {
            let v = ret.unwrap_or(EPERM);
            if v > 0xffff {
                return Err(SeccompError::ReturnOutOfRange {
                    what: what(),
                    value: v,
                    max: 0xffff,
                });
            }
            RET_TRACE | v
        }
        Act::ScmpActLog => RET_LOG,
        Act::ScmpActNotify => RET_USER_NOTIF,
        Act::ScmpActAllow => RET_ALLOW,
    })
}

/// The libseccomp spelling of a filter return value, for messages.
pub(crate) fn action_name(v: u32) -> String {
    let data = v & 0xffff;
    match v & 0xffff_0000 {
        RET_KILL_PROCESS => "SCMP_ACT_KILL_PROCESS".into(),
        RET_KILL_THREAD => "SCMP_ACT_KILL".into(),
        RET_TRAP => "SCMP_ACT_TRAP".into(),
        RET_ERRNO => format!("SCMP_ACT_ERRNO({data})"),
        RET_USER_NOTIF => "SCMP_ACT_NOTIFY".into(),
        RET_TRACE => format!("SCMP_ACT_TRACE({data})"),
        RET_LOG => "SCMP_ACT_LOG".into(),
        RET_ALLOW => "SCMP_ACT_ALLOW".into(),
        _ => format!("{v:#x}"),
    }
}

fn op_of(op: SpecOp) -> Op {
    match op {
        SpecOp::ScmpCmpNe => Op::Ne,
        SpecOp::ScmpCmpLt => Op::Lt,
        SpecOp::ScmpCmpLe => Op::Le,
        SpecOp::ScmpCmpEq => Op::Eq,
        SpecOp::ScmpCmpGe => Op::Ge,
        SpecOp::ScmpCmpGt => Op::Gt,
        SpecOp::ScmpCmpMaskedEq => Op::MaskedEq,
    }
}

/// `syscalls[i] ("a", "b", ...)` for messages, with a bounded number of names.
fn rule_context(i: usize, names: &[String]) -> String {
    let mut s = format!("linux.seccomp.syscalls[{i}]");
    if !names.is_empty() {
        let shown: Vec<String> = names.iter().take(3).map(|n| format!("{n:?}")).collect();
        let more = if names.len() > 3 { ", ..." } else { "" };
        s.push_str(&format!(" ({}{more})", shown.join(", ")));
    }
    s
}

/// The conditions as one architecture compares them, sorted by argument (the order of
/// libseccomp's chains); `None` parts (masked with 0) are dropped.
fn normalize(raw: &[RawCond], wide: bool) -> Vec<Cond> {
    let full = if wide { u64::MAX } else { u64::from(u32::MAX) };
    let mut out: Vec<Cond> = raw
        .iter()
        .filter_map(|r| match r.op {
            Op::MaskedEq => {
                let mask = r.value & full;
                (mask != 0).then_some(Cond {
                    arg: r.arg,
                    op: r.op,
                    datum: r.value_two & mask,
                    mask,
                    raw: r.value_two,
                    wide,
                })
            }
            op => Some(Cond {
                arg: r.arg,
                op,
                datum: r.value & full,
                mask: full,
                raw: r.value,
                wide,
            }),
        })
        .collect();
    out.sort_by_key(|c| c.arg);
    out
}

pub(crate) fn compile(
    seccomp: &LinuxSeccomp,
    native: ArchId,
    spec_allow_supported: &dyn Fn() -> bool,
) -> Result<Output, SeccompError> {
    let default = action_value(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        &|| "linux.seccomp.defaultErrnoRet".into(),
    )?;
    if default == RET_USER_NOTIF {
        return Err(SeccompError::NotifyDefault);
    }

    // Architectures, native first; x86_64 and x32 end up in one section.
    let mut archs = vec![native];
    for &a in seccomp.architectures().iter().flatten() {
        let id = arch::from_spec(a, native)?;
        let (d, n) = (arch::def(id), arch::def(native));
        if d.big_endian != n.big_endian {
            return Err(SeccompError::ArchEndianness {
                arch: d.name,
                native: n.name,
            });
        }
        if !archs.contains(&id) {
            archs.push(id);
        }
    }

    // Validate every rule and expand it into entries.
    let mut needs_listener = false;
    let rules = seccomp.syscalls().as_deref().unwrap_or(&[]);
    let mut expanded: Vec<(usize, u32, Vec<Vec<RawCond>>)> = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let what = || rule_context(i, r.names());
        let action = action_value(r.action(), r.errno_ret(), &|| {
            format!("errnoRet of {}", what())
        })?;
        let mut conds = Vec::new();
        for a in r.args().iter().flatten() {
            let arg = u8::try_from(a.index())
                .ok()
                .filter(|&x| x < 6)
                .ok_or_else(|| SeccompError::ArgIndex {
                    rule: what(),
                    index: a.index(),
                })?;
            conds.push(RawCond {
                arg,
                op: op_of(a.op()),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        for name in r.names() {
            if name.is_empty() {
                return Err(SeccompError::EmptyName { rule: what() });
            }
            if !tables::known_anywhere(name) {
                return Err(SeccompError::UnknownSyscall(name.clone()));
            }
            if action == RET_USER_NOTIF && name == "write" {
                return Err(SeccompError::NotifyWrite);
            }
        }
        if action == RET_USER_NOTIF && !r.names().is_empty() {
            needs_listener = true;
        }
        // runc: conditions sharing an argument become separate (OR-ed) rules.
        let mut seen_args = [false; 6];
        let repeated = conds
            .iter()
            .any(|c| std::mem::replace(&mut seen_args[c.arg as usize], true));
        let mut alternatives = if repeated {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        alternatives.dedup();
        expanded.push((i, action, alternatives));
    }

    // Flags. No "flags" key at all means SPEC_ALLOW when the kernel has it, as runc does.
    let mut flags = 0u64;
    match seccomp.flags() {
        None => {
            if spec_allow_supported() {
                flags |= FLAG_SPEC_ALLOW;
            }
        }
        Some(list) => {
            for f in list {
                flags |= match f {
                    Flag::SeccompFilterFlagTsync => FLAG_TSYNC,
                    Flag::SeccompFilterFlagLog => FLAG_LOG,
                    Flag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
                    Flag::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
                };
            }
        }
    }
    if needs_listener {
        let has_path = seccomp
            .listener_path()
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty());
        if !has_path {
            return Err(SeccompError::NotifyWithoutListenerPath);
        }
        flags |= FLAG_NEW_LISTENER;
        if flags & FLAG_TSYNC != 0 {
            flags |= FLAG_TSYNC_ESRCH;
        }
    } else if flags & FLAG_WAIT_KILLABLE_RECV != 0 {
        return Err(SeccompError::WaitKillableWithoutNotify);
    }

    // Group architectures by the AUDIT_ARCH value the kernel reports.
    let mut sections: Vec<(u32, Vec<ArchId>)> = Vec::new();
    for &a in &archs {
        let audit = arch::def(a).audit;
        match sections.iter_mut().find(|s| s.0 == audit) {
            Some(s) => s.1.push(a),
            None => sections.push((audit, vec![a])),
        }
    }

    let stub = !matches!(
        seccomp.default_action(),
        Act::ScmpActAllow | Act::ScmpActLog | Act::ScmpActTrace
    );
    let big_endian = arch::def(native).big_endian;

    let mut budget = MAX_RULE_INSERTIONS;
    let mut code = Code::default();
    let section_labels: Vec<Label> = sections.iter().map(|_| code.label()).collect();
    code.push(Item::Ld(bpf::OFF_ARCH));
    for ((audit, _), &l) in sections.iter().zip(&section_labels) {
        let next = code.label();
        code.push(Item::Jmp {
            cmp: Cmp::Eq,
            k: *audit,
            jt: l,
            jf: next,
        });
        code.place(next);
    }
    // libseccomp's bad-arch action: SCMP_ACT_KILL.
    code.push(Item::Ret(RET_KILL_THREAD));

    for ((_, members), &label) in sections.iter().zip(&section_labels) {
        let mut syscalls: BTreeMap<u32, Syscall> = BTreeMap::new();
        let mut forest = Forest::default();
        for (i, action, alternatives) in &expanded {
            if *action == default {
                continue;
            }
            let r = &rules[*i];
            for name in dedup_names(r.names()) {
                let entry = Entry {
                    name,
                    action: *action,
                    alternatives,
                };
                for &a in members {
                    add_entry(&mut syscalls, &mut forest, a, &entry, &mut budget)?;
                }
            }
        }

        let mut map = RangeMap::new(Target::Ret(default));
        let mut blocks: Vec<(u32, usize)> = Vec::new();
        for (nr, s) in syscalls {
            if let Some(act) = s.unconditional {
                map.set(nr, nr, Target::Ret(act));
            } else if let Some(root) = s.root {
                map.set(nr, nr, Target::Block(nr));
                blocks.push((nr, root));
            }
        }

        // libseccomp's extra ABI checks on x86_64 / x32.
        let has = |id| members.contains(&id);
        if has(ArchId::X86_64) && !has(ArchId::X32) {
            map.set(X32_SYSCALL_BIT, u32::MAX - 1, Target::Ret(RET_KILL_THREAD));
        }
        if has(ArchId::X32) && !has(ArchId::X86_64) {
            map.set(0, X32_SYSCALL_BIT - 1, Target::Ret(RET_KILL_THREAD));
        }
        // runc's -ENOSYS stub comes before everything else, so it is laid over last.
        if stub {
            let enosys = Target::Ret(RET_ERRNO | ENOSYS);
            for &a in members {
                let d = arch::def(a);
                let table = tables::table(d.table);
                // libseccomp resolves socket and IPC calls to pseudo numbers on ABIs with
                // multiplexers, so runc's maximum leaves them out there.
                let max = rules
                    .iter()
                    .flat_map(|r| r.names())
                    .filter(|n| !(d.mux && tables::mux_call(n).is_some()))
                    .filter_map(|n| table.get(n.as_str()).copied())
                    .max()
                    .unwrap_or(0);
                if max == 0 {
                    continue;
                }
                match a {
                    ArchId::X86_64 => {
                        map.set(max.saturating_add(1), 0x3fff_ffff, enosys);
                        map.set(0x8000_0000, 0xbfff_ffff, enosys);
                    }
                    ArchId::X32 => {
                        map.set(max.saturating_add(1), 0x7fff_ffff, enosys);
                        map.set(0xc000_0000, u32::MAX, enosys);
                    }
                    _ => {
                        if let Some(above) = max.checked_add(1) {
                            map.set(above, u32::MAX, enosys);
                        }
                        if a == ArchId::S390x {
                            map.set(0, 0, enosys);
                        }
                    }
                }
            }
        }

        emit_section(
            &mut code,
            label,
            &map.ranges(),
            &forest,
            &blocks,
            default,
            big_endian,
        )?;
    }

    let insns = code
        .assemble()
        .map_err(|e| SeccompError::Internal(e.to_string()))?;
    if insns.len() > bpf::MAX_INSNS {
        return Err(SeccompError::TooLarge(insns.len()));
    }
    bpf::verify(&insns).map_err(SeccompError::Internal)?;
    Ok(Output {
        insns,
        flags,
        needs_listener,
        big_endian,
    })
}

fn dedup_names(names: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names
        .iter()
        .map(String::as_str)
        .filter(|n| seen.insert(*n))
        .collect()
}

/// Adds one profile entry to the syscalls of one architecture (skipped where the
/// architecture has no such call).
fn add_entry(
    syscalls: &mut BTreeMap<u32, Syscall>,
    forest: &mut Forest,
    a: ArchId,
    entry: &Entry,
    budget: &mut usize,
) -> Result<(), SeccompError> {
    let d = arch::def(a);
    let table = tables::table(d.table);
    let mux = if d.mux {
        tables::mux_call(entry.name)
    } else {
        None
    };
    for alt in entry.alternatives {
        if let Some(m) = mux {
            let (mux_name, call) = match m {
                Mux::Socketcall(c) => ("socketcall", c),
                Mux::Ipc(c) => ("ipc", c),
            };
            if let Some(&nr) = table.get(mux_name) {
                // libseccomp overwrites argument 0 with the call number.
                let mut conds: Vec<RawCond> = alt.iter().filter(|c| c.arg != 0).copied().collect();
                conds.push(RawCond {
                    arg: 0,
                    op: Op::Eq,
                    value: u64::from(call),
                    value_two: 0,
                });
                insert(
                    syscalls,
                    forest,
                    nr,
                    entry,
                    &normalize(&conds, d.bits64),
                    budget,
                )?;
            }
        }
        if let Some(&nr) = table.get(entry.name) {
            insert(
                syscalls,
                forest,
                nr,
                entry,
                &normalize(alt, d.bits64),
                budget,
            )?;
        }
    }
    Ok(())
}

/// libseccomp's per-syscall bookkeeping: the first unconditional rule decides and drops the
/// conditional ones, before or after it; conditional rules merge into the syscall's checks.
fn insert(
    syscalls: &mut BTreeMap<u32, Syscall>,
    forest: &mut Forest,
    nr: u32,
    entry: &Entry,
    conds: &[Cond],
    budget: &mut usize,
) -> Result<(), SeccompError> {
    *budget = budget
        .checked_sub(1 + conds.len())
        .ok_or(SeccompError::TooComplex(MAX_RULE_INSERTIONS))?;
    let s = syscalls.entry(nr).or_default();
    if s.unconditional.is_some() {
        return Ok(());
    }
    if conds.is_empty() {
        s.unconditional = Some(entry.action);
        return Ok(());
    }
    if forest.node_count() > MAX_NODES {
        return Err(SeccompError::TooLarge(2 * forest.node_count()));
    }
    let root = *s.root.get_or_insert_with(|| forest.new_root());
    forest
        .add_rule(root, conds, entry.action)
        .map_err(|_| SeccompError::ConflictingRules {
            name: entry.name.to_string(),
            action: action_name(entry.action),
        })
}

/// One architecture section: a binary search over the syscall number ranges, the argument
/// checks of the syscalls that have conditional rules, and the returns they jump to.
fn emit_section(
    code: &mut Code,
    label: Label,
    ranges: &[(u32, Target)],
    forest: &Forest,
    blocks: &[(u32, usize)],
    default: u32,
    big_endian: bool,
) -> Result<(), SeccompError> {
    let mut rets: Vec<(u32, Label)> = Vec::new();
    let mut ret = |code: &mut Code, v: u32| -> Label {
        if let Some(&(_, l)) = rets.iter().find(|(x, _)| *x == v) {
            return l;
        }
        let l = code.label();
        rets.push((v, l));
        l
    };
    let block_labels: Vec<Label> = blocks.iter().map(|_| code.label()).collect();
    let leaves: Vec<(u32, Label)> = ranges
        .iter()
        .map(|&(start, t)| {
            let l = match t {
                Target::Ret(v) => ret(code, v),
                Target::Block(nr) => match blocks.iter().position(|(n, _)| *n == nr) {
                    Some(i) => block_labels[i],
                    None => ret(code, default),
                },
            };
            (start, l)
        })
        .collect();

    code.place(label);
    code.push(Item::Ld(bpf::OFF_NR));
    let root = subtree_label(code, &leaves);
    if leaves.len() == 1 {
        code.push(Item::Ja(root));
    }
    emit_tree(code, &leaves, root);

    let otherwise = ret(code, default);
    for (&(_, root), &bl) in blocks.iter().zip(&block_labels) {
        forest
            .emit(code, root, bl, otherwise, big_endian, &mut ret)
            .map_err(SeccompError::TooLarge)?;
    }

    for (v, l) in rets {
        code.place(l);
        code.push(Item::Ret(v));
    }
    Ok(())
}

fn subtree_label(code: &mut Code, leaves: &[(u32, Label)]) -> Label {
    match leaves {
        [(_, l)] => *l,
        _ => code.label(),
    }
}

/// A balanced `jge` tree over the range starts; leaves are the ranges' labels.
fn emit_tree(code: &mut Code, leaves: &[(u32, Label)], here: Label) {
    if leaves.len() < 2 {
        return;
    }
    code.place(here);
    let (left, right) = leaves.split_at(leaves.len() / 2);
    let ll = subtree_label(code, left);
    let rl = subtree_label(code, right);
    code.push(Item::Jmp {
        cmp: Cmp::Ge,
        k: right[0].0,
        jt: rl,
        jf: ll,
    });
    emit_tree(code, left, ll);
    emit_tree(code, right, rl);
}
