//! The argument checks of one syscall as libseccomp organises them, so that overlapping rules
//! with different actions resolve as they do under runc.
//!
//! Each rule becomes a chain of 32-bit comparisons (a 64-bit comparison is two or three of
//! them: high word, then low word), and chains are merged into one decision structure: a
//! *level* is an ordered list of comparisons tried one after the other; a comparison leads, on
//! its true and on its false side, to an action, to a nested level, or nowhere (then the next
//! comparison of the level is tried; after the last one, whatever follows the level that
//! contains it). Comparisons equal in argument, word, operator, value and mask are shared
//! between rules, even rules with different operators (`a > 5` and `a <= 3` share the
//! comparison "high word above 0"), which is what makes the outcome of overlapping rules
//! differ from "first rule wins". Levels are sorted by argument (highest first), operator
//! class and value, as libseccomp sorts them; merging two rules whose paths end in different
//! actions at the same place is a conflict (libseccomp's EEXIST).
//!
//! Nodes live in an arena (indices, no reference counting): a rule's later condition can be
//! reached from two comparisons of the previous one (high word decides, or high words equal
//! and low word decides), so the structure is a DAG.

use super::bpf::{self, Cmp, Code, Item, Label};
use std::collections::HashMap;

/// A rule's comparison operators (runtime-spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

/// One condition of a rule as an architecture compares it: `(arg & mask) op datum`, over 64
/// bits when `wide` (64-bit ABIs) and over the low 32 bits otherwise. `raw` is the value as
/// written (libseccomp breaks some ties with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cond {
    pub arg: u8,
    pub op: Op,
    pub datum: u64,
    pub mask: u64,
    pub raw: u64,
    pub wide: bool,
}

/// The comparisons BPF can make directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeOp {
    Eq,
    MaskedEq,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Branch {
    /// Nowhere: the next comparison of the level.
    Next,
    Action(u32),
    Level(NodeId),
}

type NodeId = usize;
type LevelId = usize;

#[derive(Clone, Debug)]
struct Node {
    arg: u8,
    hi: bool,
    op: NodeOp,
    orig: Op,
    datum: u32,
    mask: u32,
    datum_full: u64,
    t: Branch,
    f: Branch,
    level: LevelId,
}

/// Where a pointer to a level is kept: a syscall's root or a comparison's true/false side.
#[derive(Clone, Copy)]
enum Slot {
    Root(usize),
    T(NodeId),
    F(NodeId),
}

/// Two rules end in different actions at the same place.
#[derive(Debug)]
pub(crate) struct Conflict;

/// The argument checks of the syscalls of one filter section.
#[derive(Default)]
pub(crate) struct Forest {
    nodes: Vec<Node>,
    levels: Vec<Vec<NodeId>>,
    roots: Vec<Option<NodeId>>,
}

impl Node {
    fn arg_priority(&self) -> u32 {
        (u32::from(self.arg) << 1) | u32::from(self.hi)
    }

    fn same(&self, o: &Node) -> bool {
        self.arg_priority() == o.arg_priority()
            && self.op == o.op
            && self.datum == o.datum
            && self.mask == o.mask
    }

    /// libseccomp's order within a level: `self` sorts after `o` when this holds.
    fn below(&self, o: &Node) -> bool {
        let class = |op: Op| match op {
            Op::MaskedEq | Op::Eq | Op::Ne => 3,
            Op::Le | Op::Lt => 2,
            Op::Ge | Op::Gt => 1,
        };
        let (a, b) = (self.arg_priority(), o.arg_priority());
        if a != b {
            return a < b;
        }
        let (ca, cb) = (class(self.orig), class(o.orig));
        if ca != cb {
            return ca < cb;
        }
        match self.orig {
            Op::Le | Op::Lt => self.datum > o.datum,
            _ => self.datum < o.datum,
        }
    }

    fn is_leaf(&self) -> bool {
        !matches!(self.t, Branch::Level(_)) && !matches!(self.f, Branch::Level(_))
    }
}

impl Forest {
    /// A new syscall without checks yet; returns its index.
    pub fn new_root(&mut self) -> usize {
        self.roots.push(None);
        self.roots.len() - 1
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn node(&mut self, arg: u8, hi: bool, op: NodeOp, c: &Cond) -> NodeId {
        let (datum, mask) = if hi {
            ((c.datum >> 32) as u32, (c.mask >> 32) as u32)
        } else {
            (c.datum as u32, c.mask as u32)
        };
        let id = self.nodes.len();
        self.levels.push(vec![id]);
        self.nodes.push(Node {
            arg,
            hi,
            op,
            orig: c.op,
            datum: datum & mask,
            mask,
            datum_full: c.raw,
            t: Branch::Next,
            f: Branch::Next,
            level: self.levels.len() - 1,
        });
        id
    }

    /// The chain of one rule (conditions sorted by argument, at least one).
    fn chain(&mut self, conds: &[Cond], action: u32) -> Option<NodeId> {
        let mut head = None;
        // Where the previous condition continues when it holds: (node, true side?).
        let mut pending: Vec<(NodeId, bool)> = Vec::new();
        for c in conds {
            let first;
            let mut holds: Vec<(NodeId, bool)> = Vec::new();
            if !c.wide {
                let (op, side) = match c.op {
                    Op::Eq => (NodeOp::Eq, true),
                    Op::MaskedEq => (NodeOp::MaskedEq, true),
                    Op::Gt => (NodeOp::Gt, true),
                    Op::Ge => (NodeOp::Ge, true),
                    Op::Ne => (NodeOp::Eq, false),
                    Op::Lt => (NodeOp::Ge, false),
                    Op::Le => (NodeOp::Gt, false),
                };
                let n = self.node(c.arg, false, op, c);
                first = n;
                holds.push((n, side));
            } else {
                match c.op {
                    Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                        // high > : decides; high == : the low word decides.
                        let n0 = self.node(c.arg, true, NodeOp::Gt, c);
                        let n1 = self.node(c.arg, true, NodeOp::Eq, c);
                        let lo_op = if matches!(c.op, Op::Gt | Op::Le) {
                            NodeOp::Gt
                        } else {
                            NodeOp::Ge
                        };
                        let n2 = self.node(c.arg, false, lo_op, c);
                        self.nodes[n0].f = Branch::Level(n1);
                        self.nodes[n1].t = Branch::Level(n2);
                        first = n0;
                        if matches!(c.op, Op::Gt | Op::Ge) {
                            holds.extend([(n0, true), (n2, true)]);
                        } else {
                            holds.extend([(n1, false), (n2, false)]);
                        }
                    }
                    Op::Eq | Op::MaskedEq | Op::Ne => {
                        let op = if c.op == Op::MaskedEq {
                            NodeOp::MaskedEq
                        } else {
                            NodeOp::Eq
                        };
                        let n0 = self.node(c.arg, true, op, c);
                        let n1 = self.node(c.arg, false, op, c);
                        self.nodes[n0].t = Branch::Level(n1);
                        first = n0;
                        if c.op == Op::Ne {
                            holds.extend([(n0, false), (n1, false)]);
                        } else {
                            holds.push((n1, true));
                        }
                    }
                }
            }
            for (n, side) in pending.drain(..) {
                self.set(n, side, Branch::Level(first));
            }
            head.get_or_insert(first);
            pending = holds;
        }
        for (n, side) in pending {
            self.set(n, side, Branch::Action(action));
        }
        head
    }

    fn set(&mut self, n: NodeId, side: bool, b: Branch) {
        if side {
            self.nodes[n].t = b;
        } else {
            self.nodes[n].f = b;
        }
    }

    fn get_slot(&self, s: Slot) -> Option<NodeId> {
        match s {
            Slot::Root(r) => self.roots[r],
            Slot::T(n) => match self.nodes[n].t {
                Branch::Level(l) => Some(l),
                _ => None,
            },
            Slot::F(n) => match self.nodes[n].f {
                Branch::Level(l) => Some(l),
                _ => None,
            },
        }
    }

    fn set_slot(&mut self, s: Slot, id: NodeId) {
        match s {
            Slot::Root(r) => self.roots[r] = Some(id),
            Slot::T(n) => self.nodes[n].t = Branch::Level(id),
            Slot::F(n) => self.nodes[n].f = Branch::Level(id),
        }
    }

    /// Adds a rule with conditions to syscall `root`.
    pub fn add_rule(&mut self, root: usize, conds: &[Cond], action: u32) -> Result<(), Conflict> {
        let Some(head) = self.chain(conds, action) else {
            return Ok(());
        };
        if self.roots[root].is_none() {
            self.roots[root] = Some(head);
            return Ok(());
        }
        self.add(Slot::Root(root), head)
    }

    /// Merges node `n` (with what hangs from it) into the level `slot` points into, starting
    /// the search at the node the slot points at, as libseccomp does.
    fn add(&mut self, slot: Slot, n: NodeId) -> Result<(), Conflict> {
        let Some(start) = self.get_slot(slot) else {
            self.set_slot(slot, n);
            return Ok(());
        };
        let level = self.nodes[start].level;
        let mut i = self.levels[level]
            .iter()
            .position(|&x| x == start)
            .unwrap_or(0);
        loop {
            let Some(&x) = self.levels[level].get(i) else {
                self.levels[level].push(n);
                self.nodes[n].level = level;
                return Ok(());
            };
            if self.nodes[x].same(&self.nodes[n]) {
                return self.merge(x, n);
            }
            if !self.nodes[x].below(&self.nodes[n]) {
                i += 1;
                continue;
            }
            self.levels[level].insert(i, n);
            self.nodes[n].level = level;
            if x == start {
                self.set_slot(slot, n);
            }
            return Ok(());
        }
    }

    fn merge(&mut self, x: NodeId, n: NodeId) -> Result<(), Conflict> {
        for side in [true, false] {
            let nb = if side {
                self.nodes[n].t
            } else {
                self.nodes[n].f
            };
            let xb = if side {
                self.nodes[x].t
            } else {
                self.nodes[x].f
            };
            let Branch::Action(a) = nb else { continue };
            match xb {
                Branch::Action(b) if b == a => {}
                Branch::Action(_) => {
                    // A high-word comparison shared by 64-bit GT/GE rules: the larger value's
                    // action stands. (libseccomp means the same for the false side, but every
                    // release up to 2.6 sets the true side there by a typo, which changes
                    // nothing: those nodes never have a true action. Released behaviour it is.)
                    let (nd, xd) = (self.nodes[n].datum_full, self.nodes[x].datum_full);
                    if side && self.nodes[n].hi && nd > xd {
                        self.set(x, side, Branch::Action(a));
                    }
                    if self.nodes[x].is_leaf() || self.nodes[n].is_leaf() {
                        return Err(Conflict);
                    }
                }
                Branch::Level(sub) => {
                    self.same_action(sub, a)?;
                    self.set(x, side, Branch::Action(a));
                }
                Branch::Next => self.set(x, side, Branch::Action(a)),
            }
        }
        for side in [true, false] {
            let nb = if side {
                self.nodes[n].t
            } else {
                self.nodes[n].f
            };
            let Branch::Level(sub) = nb else { continue };
            let xb = if side {
                self.nodes[x].t
            } else {
                self.nodes[x].f
            };
            match xb {
                Branch::Level(_) => {
                    let slot = if side { Slot::T(x) } else { Slot::F(x) };
                    self.add(slot, sub)?;
                }
                Branch::Next => self.set(x, side, Branch::Level(sub)),
                // The existing rule is shorter: it already decides.
                Branch::Action(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Every action in the level of `start` and below is `a`.
    fn same_action(&self, start: NodeId, a: u32) -> Result<(), Conflict> {
        let mut stack = vec![self.nodes[start].level];
        let mut seen = vec![false; self.levels.len()];
        while let Some(l) = stack.pop() {
            if std::mem::replace(&mut seen[l], true) {
                continue;
            }
            for &id in &self.levels[l] {
                for b in [self.nodes[id].t, self.nodes[id].f] {
                    match b {
                        Branch::Action(x) if x != a => return Err(Conflict),
                        Branch::Level(sub) => stack.push(self.nodes[sub].level),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Emits the checks of syscall `root` at `entry`; falling through all of them goes to
    /// `otherwise`. `ret` gives the label of a return instruction. A level reached from
    /// several places with the same continuation is emitted once, after all of them (jumps
    /// only go forward). Fails when the code grows far beyond what a program can hold.
    pub fn emit(
        &self,
        code: &mut Code,
        root: usize,
        entry: Label,
        otherwise: Label,
        big_endian: bool,
        ret: &mut dyn FnMut(&mut Code, u32) -> Label,
    ) -> Result<(), usize> {
        // Beyond this the program cannot fit anyway.
        let limit = 2 * bpf::MAX_INSNS;
        let Some(head) = self.roots[root] else {
            code.place(entry);
            code.push(Item::Ja(otherwise));
            return Ok(());
        };
        // Instances: a level with its continuation, with labels for its comparisons.
        struct Instance {
            level: LevelId,
            fall: Label,
            labels: Vec<Label>,
        }
        let mut instances: Vec<Instance> = Vec::new();
        let mut index: HashMap<(LevelId, Label), usize> = HashMap::new();
        let mut todo = vec![0usize];
        let root_level = self.nodes[head].level;
        let mut labels: Vec<Label> = (0..self.levels[root_level].len())
            .map(|_| code.label())
            .collect();
        labels[0] = entry;
        instances.push(Instance {
            level: root_level,
            fall: otherwise,
            labels,
        });
        index.insert((root_level, otherwise), 0);
        let mut branch_label: HashMap<(usize, usize, bool), Label> = HashMap::new();
        while let Some(i) = todo.pop() {
            let level = instances[i].level;
            for (k, &id) in self.levels[level].iter().enumerate() {
                let next = instances[i]
                    .labels
                    .get(k + 1)
                    .copied()
                    .unwrap_or(instances[i].fall);
                for (side, b) in [(true, self.nodes[id].t), (false, self.nodes[id].f)] {
                    let Branch::Level(sub) = b else { continue };
                    let key = (self.nodes[sub].level, next);
                    let child = match index.get(&key) {
                        Some(&c) => c,
                        None => {
                            if instances.len() > limit {
                                return Err(instances.len());
                            }
                            let n = self.levels[key.0].len();
                            instances.push(Instance {
                                level: key.0,
                                fall: next,
                                labels: (0..n).map(|_| code.label()).collect(),
                            });
                            let c = instances.len() - 1;
                            index.insert(key, c);
                            todo.push(c);
                            c
                        }
                    };
                    branch_label.insert((i, k, side), instances[child].labels[0]);
                }
            }
        }
        // Each comparison is a block of its own (load, mask, jump with both targets), so
        // blocks can go in any order in which every jump goes forward: a topological order
        // of the comparisons, found as the reverse post-order of a depth-first walk.
        let mut vertex_of_label: HashMap<Label, usize> = HashMap::new();
        let mut vertices: Vec<(usize, usize)> = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            for (k, &l) in inst.labels.iter().enumerate() {
                vertex_of_label.insert(l, vertices.len());
                vertices.push((i, k));
            }
        }
        let successors = |v: usize| -> Vec<usize> {
            let (i, k) = vertices[v];
            let inst = &instances[i];
            let id = self.levels[inst.level][k];
            let next = inst.labels.get(k + 1).copied().unwrap_or(inst.fall);
            let mut out = Vec::new();
            for (side, b) in [(true, self.nodes[id].t), (false, self.nodes[id].f)] {
                let l = match b {
                    Branch::Next => next,
                    Branch::Level(_) => branch_label[&(i, k, side)],
                    Branch::Action(_) => continue,
                };
                out.extend(vertex_of_label.get(&l).copied());
            }
            out
        };
        let mut order = Vec::with_capacity(vertices.len());
        let mut state = vec![0u8; vertices.len()];
        let mut stack: Vec<(usize, Vec<usize>)> = vec![(0, successors(0))];
        state[0] = 1;
        while let Some((v, succ)) = stack.last_mut() {
            if let Some(w) = succ.pop() {
                match state[w] {
                    0 => {
                        state[w] = 1;
                        let s = successors(w);
                        stack.push((w, s));
                    }
                    1 => return Err(usize::MAX), // a cycle: cannot happen
                    _ => {}
                }
            } else {
                state[*v] = 2;
                order.push(*v);
                stack.pop();
            }
        }
        order.reverse();

        for v in order {
            let (i, k) = vertices[v];
            let inst = &instances[i];
            let id = self.levels[inst.level][k];
            let n = &self.nodes[id];
            let next = inst.labels.get(k + 1).copied().unwrap_or(inst.fall);
            let mut target = |side: bool, b: Branch, code: &mut Code| match b {
                Branch::Next => next,
                Branch::Action(a) => ret(code, a),
                Branch::Level(_) => branch_label[&(i, k, side)],
            };
            let jt = target(true, n.t, code);
            let jf = target(false, n.f, code);
            code.place(inst.labels[k]);
            let base = bpf::OFF_ARGS + 8 * u32::from(n.arg);
            let off = if n.hi != big_endian { base + 4 } else { base };
            code.push(Item::Ld(off));
            if n.mask != u32::MAX {
                code.push(Item::And(n.mask));
            }
            let cmp = match n.op {
                NodeOp::Eq | NodeOp::MaskedEq => Cmp::Eq,
                NodeOp::Gt => Cmp::Gt,
                NodeOp::Ge => Cmp::Ge,
            };
            code.push(Item::Jmp {
                cmp,
                k: n.datum,
                jt,
                jf,
            });
            if code.len() > limit {
                return Err(code.len());
            }
        }
        Ok(())
    }
}
