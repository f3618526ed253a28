//! Parsing any string never panics; errors point inside the input; whatever parses
//! prints to a string that parses back to the same spec (`fuzz_support::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::parse(data);
});
