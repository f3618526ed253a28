//! Parsing any string never panics; errors point inside the input; whatever parses
//! prints to a string that parses back to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vq_factory::FactorySpec;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match FactorySpec::parse(s) {
        Ok(spec) => {
            let printed = spec.to_string();
            assert_eq!(FactorySpec::parse(&printed).ok(), Some(spec), "{printed}");
        }
        Err(e) => {
            assert!(e.span.start <= e.span.end && e.span.end <= s.len());
            assert!(s.is_char_boundary(e.span.start) && s.is_char_boundary(e.span.end));
            let _ = e.to_string();
        }
    }
});
