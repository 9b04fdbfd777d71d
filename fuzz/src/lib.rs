//! Shared pieces of the fuzz targets: a single-threaded backend with fault injection
//! ([`backend`]), patch descriptors built from fuzz input ([`patches`]) and the brute-force
//! reference the targets compare the core against ([`reference`]).

pub mod backend;
pub mod patches;
pub mod reference;
