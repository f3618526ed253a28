//! Loading arbitrary bytes as an index file never panics (and never allocates without
//! bound): every malformed file is an `Err`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vq_factory::Factory::new().load_bytes(data.to_vec());
});
