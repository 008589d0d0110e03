//! Classic BPF as seccomp uses it: the few instructions the compiler emits, an assembler
//! from labelled code to offsets (conditional jumps only reach 255 instructions ahead, so
//! farther targets go through an inserted `ja` or a copy of the `ret` they reach, as
//! libseccomp does), a checker with the kernel's rules, and an interpreter the tests and the
//! fuzz target run programs with.

/// One `struct sock_filter`, laid out as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

pub(crate) const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
pub(crate) const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub(crate) const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub(crate) const JMP_JEQ_K: u16 = 0x15;
pub(crate) const JMP_JGT_K: u16 = 0x25;
pub(crate) const JMP_JGE_K: u16 = 0x35;
pub(crate) const JMP_JSET_K: u16 = 0x45;
pub(crate) const RET_K: u16 = 0x06;

/// `struct seccomp_data` offsets.
pub(crate) const OFF_NR: u32 = 0;
pub(crate) const OFF_ARCH: u32 = 4;
pub(crate) const OFF_ARGS: u32 = 16;
pub(crate) const DATA_LEN: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Label(u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Item {
    Label(Label),
    Ld(u32),
    And(u32),
    Jmp {
        cmp: Cmp,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Ja(Label),
    Ret(u32),
}

/// Labelled code under construction. Every jump goes forward: a label is placed after the
/// jumps that name it.
#[derive(Default)]
pub(crate) struct Code {
    items: Vec<Item>,
    labels: u32,
    insns: usize,
}

impl Code {
    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    pub fn place(&mut self, l: Label) {
        self.items.push(Item::Label(l));
    }

    pub fn push(&mut self, item: Item) {
        if !matches!(item, Item::Label(_)) {
            self.insns += 1;
        }
        self.items.push(item);
    }

    /// Instructions so far (trampolines come on top when assembling).
    pub fn len(&self) -> usize {
        self.insns
    }

    /// Offsets from labels, back to front: when an instruction is laid down everything after
    /// it is final, so each jump knows its distance and gets a trampoline when it is too far.
    pub fn assemble(&self) -> Result<Vec<Insn>, &'static str> {
        let mut at: Vec<Option<usize>> = vec![None; self.labels as usize];
        // rev[i] is the instruction i places before the end of the program.
        let mut rev: Vec<Insn> = Vec::with_capacity(self.insns + 16);
        let pos = |at: &[Option<usize>], l: Label| -> Result<usize, &'static str> {
            at.get(l.0 as usize)
                .copied()
                .flatten()
                .ok_or("jump to a label that is not placed after it")
        };
        for item in self.items.iter().rev() {
            match *item {
                Item::Label(l) => {
                    let last = rev.len().checked_sub(1).ok_or("label at the end")?;
                    if let Some(slot) = at.get_mut(l.0 as usize) {
                        *slot = Some(last);
                    }
                }
                Item::Ld(k) => rev.push(insn(LD_W_ABS, k)),
                Item::And(k) => rev.push(insn(ALU_AND_K, k)),
                Item::Ret(k) => rev.push(insn(RET_K, k)),
                Item::Ja(l) => {
                    let p = pos(&at, l)?;
                    let off = rev.len() - 1 - p;
                    rev.push(insn(JMP_JA, off as u32));
                }
                Item::Jmp { cmp, k, jt, jf } => {
                    let mut pt = pos(&at, jt)?;
                    let mut pf = pos(&at, jf)?;
                    // Room for two trampolines between this jump and what it reaches.
                    let n = rev.len();
                    if n + 1 - pt > 255 {
                        pt = trampoline(&mut rev, pt);
                    }
                    if n + 1 - pf > 255 {
                        pf = trampoline(&mut rev, pf);
                    }
                    let q = rev.len();
                    let code = match cmp {
                        Cmp::Eq => JMP_JEQ_K,
                        Cmp::Gt => JMP_JGT_K,
                        Cmp::Ge => JMP_JGE_K,
                    };
                    rev.push(Insn {
                        code,
                        jt: (q - 1 - pt) as u8,
                        jf: (q - 1 - pf) as u8,
                        k,
                    });
                }
            }
        }
        rev.reverse();
        Ok(rev)
    }
}

fn insn(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Lays down a long jump to the instruction `p` places from the end (or a copy of it when it
/// is a `ret`) and returns where the trampoline is.
fn trampoline(rev: &mut Vec<Insn>, p: usize) -> usize {
    let n = rev.len();
    let target = rev[p];
    if target.code == RET_K {
        rev.push(target);
    } else {
        rev.push(insn(JMP_JA, (n - 1 - p) as u32));
    }
    n
}

/// The kernel's checks (bpf_check_classic and seccomp_check_filter) for the instructions
/// used here: size, known opcodes, aligned loads inside `seccomp_data`, jumps that land
/// inside the program, a `ret` at the end.
pub fn verify(prog: &[Insn]) -> Result<(), String> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(format!(
            "{} instructions (1 to {MAX_INSNS} allowed)",
            prog.len()
        ));
    }
    for (i, ins) in prog.iter().enumerate() {
        let rest = prog.len() - i - 1;
        let ok = match ins.code {
            LD_W_ABS => ins.k < DATA_LEN && ins.k % 4 == 0,
            ALU_AND_K | RET_K => true,
            JMP_JA => (ins.k as usize) < rest,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                (ins.jt as usize) < rest && (ins.jf as usize) < rest
            }
            _ => false,
        };
        if !ok {
            return Err(format!("invalid instruction {i}: {ins:?}"));
        }
    }
    match prog.last() {
        Some(last) if last.code == RET_K => Ok(()),
        _ => Err("the program does not end with ret".into()),
    }
}

/// The input of a filter: `struct seccomp_data`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    /// A 32-bit word of the structure as a machine of that byte order stores it.
    fn word(&self, off: u32, big_endian: bool) -> Option<u32> {
        let mut bytes = [0u8; DATA_LEN as usize];
        if big_endian {
            bytes[0..4].copy_from_slice(&self.nr.to_be_bytes());
            bytes[4..8].copy_from_slice(&self.arch.to_be_bytes());
            bytes[8..16].copy_from_slice(&self.instruction_pointer.to_be_bytes());
            for (i, a) in self.args.iter().enumerate() {
                bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_be_bytes());
            }
        } else {
            bytes[0..4].copy_from_slice(&self.nr.to_le_bytes());
            bytes[4..8].copy_from_slice(&self.arch.to_le_bytes());
            bytes[8..16].copy_from_slice(&self.instruction_pointer.to_le_bytes());
            for (i, a) in self.args.iter().enumerate() {
                bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
            }
        }
        let off = off as usize;
        let w = bytes.get(off..off + 4)?;
        let w = [w[0], w[1], w[2], w[3]];
        Some(if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        })
    }
}

/// Runs a program the way the kernel of a machine with that byte order does; `None` when
/// the program is malformed.
pub fn run(prog: &[Insn], data: &SeccompData, big_endian: bool) -> Option<u32> {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = prog.get(pc)?;
        pc += 1;
        match ins.code {
            LD_W_ABS => a = data.word(ins.k, big_endian)?,
            ALU_AND_K => a &= ins.k,
            RET_K => return Some(ins.k),
            JMP_JA => pc = pc.checked_add(ins.k as usize)?,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                let taken = match ins.code {
                    JMP_JEQ_K => a == ins.k,
                    JMP_JGT_K => a > ins.k,
                    JMP_JGE_K => a >= ins.k,
                    _ => a & ins.k != 0,
                };
                pc += if taken { ins.jt } else { ins.jf } as usize;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_jumps_get_trampolines() {
        let mut c = Code::default();
        let far = c.label();
        let near = c.label();
        c.push(Item::Ld(OFF_NR));
        c.push(Item::Jmp {
            cmp: Cmp::Eq,
            k: 7,
            jt: far,
            jf: near,
        });
        c.place(near);
        for _ in 0..600 {
            c.push(Item::Ld(OFF_ARCH));
        }
        c.push(Item::Ret(1));
        c.place(far);
        c.push(Item::Ret(2));
        let prog = c.assemble().unwrap();
        verify(&prog).unwrap();
        let mut d = SeccompData {
            nr: 7,
            ..Default::default()
        };
        assert_eq!(run(&prog, &d, false), Some(2));
        d.nr = 8;
        assert_eq!(run(&prog, &d, false), Some(1));
        // The far target is a ret: copied next to the jump instead of a ja.
        assert_eq!(prog.len(), 605);
    }

    #[test]
    fn far_jump_to_code_uses_ja() {
        let mut c = Code::default();
        let far = c.label();
        let near = c.label();
        c.push(Item::Ld(OFF_NR));
        c.push(Item::Jmp {
            cmp: Cmp::Gt,
            k: 7,
            jt: near,
            jf: far,
        });
        c.place(near);
        for _ in 0..300 {
            c.push(Item::Ld(OFF_ARCH));
        }
        c.push(Item::Ret(1));
        c.place(far);
        c.push(Item::Ld(OFF_NR));
        c.push(Item::Ret(2));
        let prog = c.assemble().unwrap();
        verify(&prog).unwrap();
        assert!(prog.iter().any(|i| i.code == JMP_JA));
        let d = SeccompData {
            nr: 3,
            ..Default::default()
        };
        assert_eq!(run(&prog, &d, false), Some(2));
    }

    #[test]
    fn verify_rejects_bad_programs() {
        assert!(verify(&[]).is_err());
        assert!(verify(&[insn(LD_W_ABS, 0)]).is_err());
        assert!(verify(&[insn(LD_W_ABS, 2), insn(RET_K, 0)]).is_err());
        assert!(verify(&[insn(LD_W_ABS, 64), insn(RET_K, 0)]).is_err());
        assert!(verify(&[insn(JMP_JA, 1), insn(RET_K, 0)]).is_err());
        assert!(verify(&[insn(0xffff, 0), insn(RET_K, 0)]).is_err());
        assert!(verify(&[insn(LD_W_ABS, 4), insn(RET_K, 0)]).is_ok());
    }
}
