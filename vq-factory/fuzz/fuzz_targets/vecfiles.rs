//! Vector files (`.fvecs`, `.ivecs`, `.bvecs`, `.fbin`, `.ibin`, `.u8bin`): every reader
//! of `vq_core::io` (whole file, streamed, memory-mapped) on any bytes never panics, opens
//! and reads exactly the well-formed files, and returns `n × d` values that are the
//! file's (`fuzz_support::vecfiles`; the bytes go through a temporary file, as the readers
//! take paths).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::vecfiles(data);
});
