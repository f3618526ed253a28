//! Reading any bytes as a Faiss index never panics nor allocates beyond the input's
//! size; whatever reads searches without panicking and writes back to bytes that read
//! to the same factory string (`fuzz_support::faiss_read`). Seed the corpus with
//! `../tests/faiss/fixtures/*.faiss` (`run.sh` does).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::faiss_read(data);
});
