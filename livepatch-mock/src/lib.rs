//! A deterministic simulated machine for `livepatch-core` (being built).
