//! Reading any bytes as a Faiss index never panics nor allocates beyond the input's
//! size; whatever reads searches without panicking and writes back to bytes that read
//! to the same factory string. Seed the corpus with `../tests/faiss/fixtures/*.faiss`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vq_core::{Index, SearchParams, VectorsRef};
use vq_factory::faiss_io;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = faiss_io::read_index_bytes(data) else {
        return;
    };
    let q = vec![0.5f32; index.dim()];
    if let Ok(q) = VectorsRef::new(&q, index.dim()) {
        let _ = index.search(q, 3, &SearchParams::default());
    }
    let mut out = Vec::new();
    if faiss_io::write_index_to(&index, &mut out).is_ok() {
        let back = faiss_io::read_index_bytes(&out).expect("vq reads what it wrote");
        assert_eq!(back.spec().to_string(), index.spec().to_string());
    }
});
