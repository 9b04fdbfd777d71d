//! The simulated kernel text: functions laid out at real address ranges, each with a body of
//! [`Op`]s. Patches add variants (and helpers) at new ranges with bodies of their own.

use livepatch_core::shadow::ShadowId;
use livepatch_core::{CodeAddr, CodeRange, ObjectId};
use std::collections::HashMap;

/// Bytes of code per op: a frame's return address is `start + pc * OP_BYTES`.
pub const OP_BYTES: usize = 16;

/// A function of the code table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub struct FnId(pub u32);

impl FnId {
    pub(crate) fn idx(self) -> usize {
        self.0 as usize
    }
}

/// How a task sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SleepKind {
    /// A signal (or a kthread wake-up) ends the sleep early.
    Interruptible,
    /// Only the timeout ends the sleep.
    Uninterruptible,
}

/// How long a sleep lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SleepFor {
    /// A uniformly drawn duration in `[min, max]` nanoseconds.
    Between(u64, u64),
    /// Until woken (interruptible) or for ever (uninterruptible).
    Forever,
}

/// One step of a function body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Call a function (through its hook if it has one).
    Call(FnId),
    /// Call a function only while the stack holds fewer than this many frames: a recursion
    /// with its base case (a function that calls itself this way is on the stack that many
    /// times at its deepest).
    CallBelow(FnId, u16),
    /// Compute for a uniformly drawn `[min, max]` nanoseconds.
    Work(u64, u64),
    /// Call `schedule()` and block in it.
    Sleep(SleepKind, SleepFor),
    /// Only in `schedule()` and its variants: block with the caller's sleep request.
    Block,
    /// A `cond_resched()`: self-check switch point and voluntary preemption.
    CondResched,
    /// A kthread's loop top, declared free of patched frames (kGraft's safe point).
    SafePoint,
    /// Jump back to the first op (a kthread's main loop).
    Loop,
    /// The exit path unhashes the task: it leaves the task list and is flagged exiting.
    Unhash,
    /// The end of the exit path: the task is gone.
    Die,
    /// `task_work_run()` in kernel context (KVM's guest entry, an io_uring wait, an io-wq
    /// worker's loop): runs the task work a kick queued, with this function on the stack.
    TaskWork,
    /// Fork a child that starts in user mode (returning from the fork syscall).
    Fork,
    /// Allocate an object (see [`super::heap`]): the task owns it and works on it.
    ObjAlloc,
    /// Work on the task's oldest object (or on none, if it owns none).
    ObjOldest,
    /// Free the object the task works on; it owns it no more.
    ObjFree,
    /// Allocate a buffer and hold it: it leaks unless a shadow variable takes it.
    BufAlloc,
    /// `klp_shadow_alloc(object, id)`, its constructor storing the held buffer (which the
    /// shadow variable now owns); if the allocation fails, the buffer leaks.
    ShadowAttach(ShadowId),
    /// `klp_shadow_get_or_alloc(object, id)` (zeroed), then increment its word.
    ShadowCount(ShadowId),
    /// `klp_shadow_free(object, id, dtor)`; the destructor frees a leak shadow's buffer.
    ShadowFree(ShadowId),
}

/// Where a function comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Part of the machine's own code (core kernel or a module).
    Base,
    /// The variant of `of` provided by patch number `patch` (index in the scenario).
    Variant {
        /// The original function.
        of: FnId,
        /// The patch's index.
        patch: usize,
    },
    /// A new helper function that patch number `patch` brings.
    Helper {
        /// The patch's index.
        patch: usize,
    },
}

/// A function: name, object, code range, body.
#[derive(Clone, Debug)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// The object whose code it is.
    pub object: ObjectId,
    /// Where it comes from.
    pub origin: Origin,
    /// Its code.
    pub range: CodeRange,
    /// Its body.
    pub body: Vec<Op>,
}

/// Builds a [`CodeTable`]: declare functions first, then give them bodies (bodies refer to
/// other functions by id), then lay them out.
#[derive(Debug, Default)]
pub struct CodeBuilder {
    funcs: Vec<(String, ObjectId, Origin, Vec<Op>)>,
}

/// Why a code table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeError {
    /// A body refers to a function that does not exist.
    UnknownFunction(String, u32),
    /// A `Block` op outside `schedule()` or one of its variants.
    BlockOutsideSchedule(String),
    /// No `schedule` function was declared.
    NoSchedule,
    /// The code does not fit in the address space.
    Layout(String),
}

impl std::fmt::Display for CodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeError::UnknownFunction(func, id) => write!(f, "function {func} calls unknown function #{id}"),
            CodeError::BlockOutsideSchedule(func) => write!(f, "function {func} blocks outside schedule()"),
            CodeError::NoSchedule => f.write_str("no schedule() function"),
            CodeError::Layout(func) => write!(f, "function {func} does not fit in the address space"),
        }
    }
}

impl std::error::Error for CodeError {}

impl CodeBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a base function of `object`.
    pub fn declare(&mut self, name: &str, object: ObjectId) -> FnId {
        self.add(name, object, Origin::Base, Vec::new())
    }

    /// Declares and defines a base function of the core kernel.
    pub fn func(&mut self, name: &str, body: Vec<Op>) -> FnId {
        self.add(name, ObjectId::VMLINUX, Origin::Base, body)
    }

    /// Gives `id` its body.
    pub fn define(&mut self, id: FnId, body: Vec<Op>) {
        if let Some(f) = self.funcs.get_mut(id.idx()) {
            f.3 = body;
        }
    }

    /// Adds patch `patch`'s variant of `of`.
    pub fn variant(&mut self, of: FnId, patch: usize, body: Vec<Op>) -> FnId {
        let (name, object) = match self.funcs.get(of.idx()) {
            Some(f) => (format!("{}.p{patch}", f.0), f.1),
            None => (format!("?.p{patch}"), ObjectId::VMLINUX),
        };
        self.add(&name, object, Origin::Variant { of, patch }, body)
    }

    /// Adds a helper function that patch `patch` brings.
    pub fn helper(&mut self, name: &str, patch: usize, body: Vec<Op>) -> FnId {
        self.add(name, ObjectId::VMLINUX, Origin::Helper { patch }, body)
    }

    fn add(&mut self, name: &str, object: ObjectId, origin: Origin, body: Vec<Op>) -> FnId {
        self.funcs.push((name.to_string(), object, origin, body));
        FnId(self.funcs.len() as u32 - 1)
    }

    /// Lays the functions out: base code of each object in its own region, patch code above.
    pub fn build(self) -> Result<CodeTable, CodeError> {
        let n = self.funcs.len() as u32;
        let mut schedule = None;
        for (name, _, origin, body) in &self.funcs {
            if name == "schedule" && *origin == Origin::Base {
                schedule = Some(());
            }
            for op in body {
                if let Op::Call(f) | Op::CallBelow(f, _) = op {
                    if f.0 >= n {
                        return Err(CodeError::UnknownFunction(name.clone(), f.0));
                    }
                }
            }
        }
        schedule.ok_or(CodeError::NoSchedule)?;
        let schedule_id =
            self.funcs.iter().position(|f| f.0 == "schedule" && f.2 == Origin::Base).map(|i| FnId(i as u32));
        let is_schedule = |origin: Origin, i: usize| {
            Some(FnId(i as u32)) == schedule_id
                || matches!(origin, Origin::Variant { of, .. } if Some(of) == schedule_id)
        };
        for (i, (name, _, origin, body)) in self.funcs.iter().enumerate() {
            if body.contains(&Op::Block) && !is_schedule(*origin, i) {
                return Err(CodeError::BlockOutsideSchedule(name.clone()));
            }
        }
        let mut next: HashMap<u64, usize> = HashMap::new();
        let mut funcs = Vec::with_capacity(self.funcs.len());
        let mut by_entry = HashMap::new();
        for (i, (name, object, origin, body)) in self.funcs.into_iter().enumerate() {
            // Regions: 0x1000_0000 + object * 0x100_0000 for base code, 0x8000_0000 + patch *
            // 0x10_0000 for patch code; each function is 64-byte aligned with a gap.
            let region = match origin {
                Origin::Base => 0x1000_0000u64 + u64::from(object.0) * 0x100_0000,
                Origin::Variant { patch, .. } | Origin::Helper { patch } => 0x8000_0000u64 + patch as u64 * 0x10_0000,
            };
            let cursor = next.entry(region).or_insert(region as usize);
            let len = (body.len() + 1) * OP_BYTES;
            let range = CodeRange::new(*cursor, len).map_err(|_| CodeError::Layout(name.clone()))?;
            *cursor += len.div_ceil(64) * 64 + 64;
            by_entry.insert(range.start().get(), FnId(i as u32));
            funcs.push(Function { name, object, origin, range, body });
        }
        let released = vec![false; funcs.len()];
        Ok(CodeTable { funcs, by_entry, released, schedule: schedule_id.unwrap_or_default() })
    }
}

/// The laid-out code.
#[derive(Debug, Clone)]
pub struct CodeTable {
    funcs: Vec<Function>,
    by_entry: HashMap<usize, FnId>,
    pub(crate) released: Vec<bool>,
    schedule: FnId,
}

impl CodeTable {
    /// Replaces the body of `id` (for experiments on a built scenario). The new body must fit
    /// the function's laid-out range (at most as many ops), call only known functions, and
    /// block only in `schedule()` and its variants.
    pub fn replace_body(&mut self, id: FnId, body: Vec<Op>) -> Result<(), CodeError> {
        let n = self.funcs.len() as u32;
        let f = self.funcs.get(id.idx()).ok_or(CodeError::UnknownFunction(String::new(), id.0))?;
        if let Some(Op::Call(g) | Op::CallBelow(g, _)) =
            body.iter().find(|op| matches!(op, Op::Call(g) | Op::CallBelow(g, _) if g.0 >= n))
        {
            return Err(CodeError::UnknownFunction(f.name.clone(), g.0));
        }
        let schedule = self.schedule;
        let is_schedule = id == schedule || matches!(f.origin, Origin::Variant { of, .. } if of == schedule);
        if body.contains(&Op::Block) && !is_schedule {
            return Err(CodeError::BlockOutsideSchedule(f.name.clone()));
        }
        if (body.len() + 1) * OP_BYTES > f.range.len() {
            return Err(CodeError::Layout(f.name.clone()));
        }
        self.funcs[id.idx()].body = body;
        Ok(())
    }

    /// The function `id`.
    pub fn get(&self, id: FnId) -> &Function {
        &self.funcs[id.idx()]
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }

    /// All functions with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (FnId, &Function)> {
        self.funcs.iter().enumerate().map(|(i, f)| (FnId(i as u32), f))
    }

    /// The function whose entry is `addr`.
    pub fn at_entry(&self, addr: CodeAddr) -> Option<FnId> {
        self.by_entry.get(&addr.get()).copied()
    }

    /// The function containing `addr` (linear; for reports).
    pub fn containing(&self, addr: CodeAddr) -> Option<FnId> {
        self.iter().find(|(_, f)| f.range.contains(addr)).map(|(id, _)| id)
    }

    /// The function by name (first match; for scenario building).
    pub fn by_name(&self, name: &str) -> Option<FnId> {
        self.iter().find(|(_, f)| f.name == name).map(|(id, _)| id)
    }

    /// `schedule()`.
    pub fn schedule(&self) -> FnId {
        self.schedule
    }

    /// Whether `id`'s code was released (its module freed).
    pub fn is_released(&self, id: FnId) -> bool {
        self.released[id.idx()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_disjoint_and_entries_resolve() {
        let mut b = CodeBuilder::new();
        let sched = b.func("schedule", vec![Op::Block]);
        let f = b.func("f", vec![Op::Work(1, 2), Op::Call(sched)]);
        let v = b.variant(f, 0, vec![Op::Call(sched)]);
        let t = b.build().unwrap();
        assert_eq!(t.schedule(), sched);
        assert!(!t.get(f).range.overlaps(t.get(v).range));
        assert_eq!(t.at_entry(t.get(v).range.start()), Some(v));
        assert_eq!(t.get(v).name, "f.p0");
        assert_eq!(t.containing(CodeAddr(t.get(f).range.start().get() + 20)), Some(f));
    }

    #[test]
    fn bad_code_is_a_typed_error() {
        let mut b = CodeBuilder::new();
        b.func("f", vec![Op::Call(FnId(7))]);
        b.func("schedule", vec![Op::Block]);
        assert!(matches!(b.build(), Err(CodeError::UnknownFunction(..))));
        let mut b = CodeBuilder::new();
        b.func("f", vec![Op::Block]);
        b.func("schedule", vec![Op::Block]);
        assert_eq!(b.build().unwrap_err(), CodeError::BlockOutsideSchedule("f".into()));
        assert_eq!(CodeBuilder::new().build().unwrap_err(), CodeError::NoSchedule);
    }
}
