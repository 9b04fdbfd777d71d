//! Host-testable parts of the kernel module (being built; the module itself is built by kbuild).
