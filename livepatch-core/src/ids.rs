//! Identifier newtypes for patches, objects, tasks, CPUs and function slots.

macro_rules! id {
    ($(#[$meta:meta])* $name:ident($ty:ty)) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $ty);

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// A patch, as its author numbers it (unique among the patches an engine has seen).
    PatchId(u32)
);
id!(
    /// A code object that functions live in: `ObjectId::VMLINUX` or a module.
    ObjectId(u32)
);
id!(
    /// A task (thread) of the backend, like a pid.
    TaskId(u32)
);
id!(
    /// A CPU.
    CpuId(u32)
);
id!(
    /// The engine's per-original-function slot (the kernel's `klp_ops`); a hook carries it.
    SlotId(u32)
);

impl ObjectId {
    /// The core kernel (always loaded).
    pub const VMLINUX: ObjectId = ObjectId(0);
}
