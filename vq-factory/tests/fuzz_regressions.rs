//! The fuzz targets' inputs worth keeping, replayed on stable in `cargo test`.
//!
//! Each target of `fuzz/` (`parse`, `params`, `load`, `faiss_read`, `vecfiles`; run them
//! with `fuzz/run.sh`) calls one function of `tests/fuzz_support`, and so does the test of
//! the same name here, on every file under `fuzz/regressions/<target>/` (but
//! `README.md`): hand-made seeds, and the inputs fuzz runs found (crashes once fixed, new
//! coverage), minimised with `cargo fuzz tmin` / `cmin` and copied there. Every file must
//! run without a panic; a file named `valid-*` must also be accepted (parsed, loaded or
//! read without error), which keeps the seeds meaningful when a format changes.
#![allow(clippy::unwrap_used)]

mod fuzz_support;

use std::path::{Path, PathBuf};

use vq_core::{Index, Metric, VectorsRef};
use vq_factory::index_factory;

/// The regression inputs of `target`, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            p.is_file() && name != "README.md" && !name.starts_with('.')
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on every input of `target`, and reports every input that panicked or, named
/// `valid-*`, was refused (the panic messages are printed above the report).
fn replay(target: &str, check: fn(&[u8]) -> bool) {
    let files = inputs(target);
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match std::panic::catch_unwind(|| check(&data)) {
            Ok(accepted) => {
                if name.starts_with("valid-") && !accepted {
                    failed.push(format!("{name}: refused, but named valid-"));
                }
            }
            Err(_) => failed.push(format!("{name}: panicked")),
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn parse() {
    replay("parse", fuzz_support::parse);
}

#[test]
fn params() {
    replay("params", fuzz_support::params);
}

#[test]
fn load() {
    replay("load", fuzz_support::load);
}

#[test]
fn faiss_read() {
    replay("faiss_read", fuzz_support::faiss_read);
}

#[test]
fn vecfiles() {
    replay("vecfiles", fuzz_support::vecfiles);
}

/// The `load` check accepts what vq saves now, whatever the seeds under
/// `fuzz/regressions/load/` were written by.
#[test]
fn load_accepts_fresh_containers() {
    let x: Vec<f32> = (0..200 * 4)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let x = VectorsRef::new(&x, 4).unwrap();
    for spec in ["Flat", "IVF2,SQ8", "HNSW4"] {
        let mut index = index_factory(4, spec, Metric::L2).unwrap();
        if !index.is_trained() {
            index.train(x).unwrap();
        }
        index.add(x).unwrap();
        let mut bytes = Vec::new();
        index.write_to(&mut bytes).unwrap();
        assert!(fuzz_support::load(&bytes), "{spec}");
    }
}
