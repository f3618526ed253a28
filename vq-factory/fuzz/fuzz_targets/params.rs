//! Parameter strings (`"nprobe=16,efSearch=64,k_factor_rf=4"`) and recall criteria never
//! panic: `SearchParams::parse` prints back what it parses; `set_params` on small built
//! indexes (IVF, HNSW, IVF-HNSW, refinement, a transform) refuses what does not parse and
//! changes nothing then, and what it takes searches exactly as the same string passed per
//! call (`fuzz_support::params`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::params(data);
});
