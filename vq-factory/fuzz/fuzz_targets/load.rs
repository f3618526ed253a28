//! Loading arbitrary bytes as an index file never panics (and never allocates without
//! bound): every malformed file is an `Err`; what loads searches and saves to bytes that
//! load to the same index (`fuzz_support::load`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::load(data);
});
