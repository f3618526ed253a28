//! Faiss's own index files. The fixtures under `tests/faiss/fixtures` were written by
//! Faiss (`tests/faiss/make_fixtures.py`, faiss-cpu from PyPI, seeded data) together with
//! Faiss's search results: vq reads every file and returns the same neighbours; what vq
//! writes reads back identically (and, where a Python with faiss-cpu is named by
//! `VQ_FAISS_PYTHON`, Faiss itself reads it and returns vq's neighbours); corrupt and
//! truncated files are errors, never panics.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use vq_core::{Index, Metric, SearchParams, SearchResults, Vectors, VectorsRef};
use vq_factory::{FactoryIndex, faiss_io, index_factory};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faiss/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn queries() -> Vectors {
    vq_core::io::read_fvecs(dir().join("queries.fvecs")).unwrap()
}

fn base() -> Vectors {
    vq_core::io::read_fvecs(dir().join("base.fvecs")).unwrap()
}

/// The vq factory string each fixture reads as.
const CANONICAL: &[(&str, &str)] = &[
    ("flat_l2", "Flat"),
    ("flat_ip", "Flat"),
    ("idmap_flat", "IDMap,Flat"),
    ("idmap2_flat", "IDMap2,Flat"),
    ("pq8", "PQ8"),
    ("pq4x6", "PQ4x6"),
    ("pq8_ip", "PQ8"),
    ("sq8", "SQ8"),
    ("sq4", "SQ4"),
    ("sq6", "SQ6"),
    ("sqfp16", "SQfp16"),
    ("sq8_uniform_ip", "SQ8_uniform"),
    ("ivf_flat", "IVF16,Flat"),
    ("ivf_flat_ip", "IVF16,Flat"),
    ("ivf_sq8", "IVF16,SQ8"),
    ("ivf_pq", "IVF16,PQ8"),
    ("ivf_pq_ip", "IVF16,PQ8"),
    ("ivf_pq_x4", "IVF16,PQ8x4"),
    ("imi_pq", "IMI2x4,PQ8"),
    ("ivf_hnsw_flat", "IVF16_HNSW8,Flat"),
    ("pca_flat", "PCA8,Flat"),
    ("pcaw_flat", "PCAW8,Flat"),
    ("opq_ivf_pq", "RR,IVF16,PQ4"),
    ("rr_flat", "RR,Flat"),
    ("l2norm_flat", "L2norm,Flat"),
    ("hnsw_flat", "HNSW8"),
    ("hnsw_flat_ip", "HNSW8"),
    ("hnsw_sq8", "HNSW8_SQ8"),
    ("hnsw_pq", "HNSW8_PQ4"),
    ("pq_fs", "PQ8x4fs"),
    ("pq_fs_ip", "PQ8x4fs"),
    ("ivf_pq_fs", "IVF16,PQ8x4fs"),
    ("ivf_pq_fsr", "IVF16,PQ8x4fsr"),
    ("ivf_pq_fs_bbs64", "IVF16,PQ4x4fs_64"),
    ("pq_refine_flat", "PQ8,RFlat"),
    ("ivf_pq_fs_rflat", "IVF16,PQ8x4fs,RFlat"),
    ("idmap_ivf_sq8", "IDMap,IVF16,SQ8"),
    ("ivf_flat_ondisk", "IVF16,Flat"),
];

fn rows_i64(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn rows_f32(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn tol(v: f32) -> f32 {
    1e-3 * v.abs().max(1.0)
}

/// Same neighbours as Faiss: equal distances rank by rank, equal ids except where
/// Faiss's own list has a tie at that distance (or the rank is the last).
fn assert_same(name: &str, got: &SearchResults, ids: &[Vec<i64>], dist: &[Vec<f32>]) {
    let k = ids[0].len();
    for (q, (fi, fd)) in ids.iter().zip(dist).enumerate() {
        for r in 0..k {
            let (gi, gd) = (got.labels()[q * k + r], got.distances()[q * k + r]);
            assert!(
                (gd - fd[r]).abs() <= tol(fd[r]),
                "{name}: query {q} rank {r}: distance {gd}, Faiss {} (ids {gi} / {})",
                fd[r],
                fi[r]
            );
            if gi != fi[r] {
                let tie = (0..k).any(|s| s != r && (fd[s] - fd[r]).abs() <= tol(fd[r]));
                assert!(
                    tie || r == k - 1,
                    "{name}: query {q} rank {r}: id {gi}, Faiss {} at distance {}",
                    fi[r],
                    fd[r]
                );
            }
        }
    }
}

fn overlap(got: &SearchResults, ids: &[Vec<i64>]) -> f64 {
    let k = ids[0].len();
    let mut hit = 0;
    for (q, fi) in ids.iter().enumerate() {
        hit += got.labels()[q * k..(q + 1) * k]
            .iter()
            .filter(|l| **l >= 0 && fi.contains(l))
            .count();
    }
    hit as f64 / (ids.len() * k) as f64
}

fn read_fixture(name: &str) -> FactoryIndex {
    faiss_io::read_index(dir().join(format!("{name}.faiss")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Searches with Faiss parameter strings set first (nothing set for `""`).
fn search(index: &mut FactoryIndex, params: &str, xq: &Vectors, k: usize) -> SearchResults {
    if !params.is_empty() {
        index.set_params(params).unwrap();
    }
    index
        .search(xq.as_ref(), k, &SearchParams::default())
        .unwrap()
}

#[test]
fn every_faiss_fixture_reads_and_returns_faiss_neighbours() {
    let exp = expected();
    let k = exp["k"].as_u64().unwrap() as usize;
    let xq = queries();
    let cases = exp["cases"].as_object().unwrap();
    assert_eq!(cases.len(), CANONICAL.len());
    for (name, canonical) in CANONICAL {
        let case = &cases[*name];
        let mut index = read_fixture(name);
        assert_eq!(index.spec().to_string(), *canonical, "{name}");
        let want_metric = if case["metric"] == "ip" {
            Metric::InnerProduct
        } else {
            Metric::L2
        };
        assert_eq!(index.metric(), want_metric, "{name}");
        assert_eq!(index.len(), 600, "{name}");
        let ids = rows_i64(&case["ids"]);
        let dist = rows_f32(&case["distances"]);
        let got = search(&mut index, case["params"].as_str().unwrap(), &xq, k);
        if name.ends_with("fs_rflat") {
            // Re-ranking candidates chosen by quantised sums (vq) or exact ADC (the
            // reference): the same final neighbours but for the odd boundary swap.
            assert!(
                overlap(&got, &ids) >= 0.95,
                "{name}: {}",
                overlap(&got, &ids)
            );
        } else {
            assert_same(name, &got, &ids, &dist);
        }
        // With the file's own settings (efSearch, nprobe, k_factor as Faiss saved
        // them), vq and Faiss's own search agree closely (graphs and fast scan are
        // approximate in different ways).
        let own = search(&mut read_fixture(name), "", &xq, k);
        let o = overlap(&own, &rows_i64(&case["own_ids"]));
        assert!(o >= 0.85, "{name}: overlap with Faiss's own results {o}");
    }
}

#[test]
fn on_disk_lists_are_read_from_their_data_file() {
    // Faiss stored the data file's name relative to the folder it was written in; vq
    // finds it beside the index (as Faiss's IO_FLAG_ONDISK_SAME_DIR).
    let xq = queries();
    let a = search(&mut read_fixture("ivf_flat_ondisk"), "", &xq, 10);
    let b = search(&mut read_fixture("ivf_flat"), "", &xq, 10);
    assert_eq!(a.labels(), b.labels());
    assert_eq!(a.distances(), b.distances());
    // Without the data file: a clear error naming it.
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("x.faiss");
    std::fs::copy(self::dir().join("ivf_flat_ondisk.faiss"), &lone).unwrap();
    let e = faiss_io::read_index(&lone).unwrap_err().to_string();
    assert!(
        e.contains("ivf_flat_ondisk.ivfdata") && e.contains("not found"),
        "{e}"
    );
    // A data file too short for the lists it should hold.
    let data = std::fs::read(self::dir().join("ivf_flat_ondisk.ivfdata")).unwrap();
    std::fs::write(dir.path().join("ivf_flat_ondisk.ivfdata"), &data[..1000]).unwrap();
    let e = faiss_io::read_index(&lone).unwrap_err().to_string();
    assert!(e.contains("exceed the file"), "{e}");
}

#[test]
fn stored_search_settings_are_kept() {
    let xq = queries();
    // nprobe = 4 in the file: the same results as asking for it.
    let own = |name: &str, params: &str, k: usize| {
        search(&mut read_fixture(name), params, &xq, k)
            .labels()
            .to_vec()
    };
    assert_eq!(own("ivf_flat", "", 5), own("ivf_flat", "nprobe=4", 5));
    assert_ne!(own("ivf_flat", "", 5), own("ivf_flat", "nprobe=1", 5));
    assert_eq!(
        own("hnsw_flat", "", 10),
        own("hnsw_flat", "efSearch=16", 10)
    );
}

fn same_results(a: &FactoryIndex, b: &FactoryIndex, xq: VectorsRef<'_>, what: &str) {
    let (ra, rb) = (
        a.search(xq, 10, &SearchParams::default()).unwrap(),
        b.search(xq, 10, &SearchParams::default()).unwrap(),
    );
    assert_eq!(ra.labels(), rb.labels(), "{what}");
    assert_eq!(ra.distances(), rb.distances(), "{what}");
}

#[test]
fn faiss_files_round_trip_through_vq() {
    let xq = queries();
    let mut identical = Vec::new();
    for (name, _) in CANONICAL {
        let path = dir().join(format!("{name}.faiss"));
        let original = std::fs::read(&path).unwrap();
        let index = read_fixture(name);
        let mut bytes = Vec::new();
        faiss_io::write_index_to(&index, &mut bytes).unwrap();
        if bytes == original {
            identical.push(*name);
        }
        let back = faiss_io::read_index_bytes(&bytes).unwrap();
        assert_eq!(back.spec().to_string(), index.spec().to_string(), "{name}");
        same_results(&index, &back, xq.as_ref(), name);
    }
    // Byte for byte what Faiss wrote, but for the OPQ matrix, which Faiss stores as a
    // plain LinearTransform and vq reads (and writes back) as a rotation, and on-disk
    // lists, which vq reads into memory (and writes in the file).
    for (name, _) in CANONICAL {
        assert_eq!(
            identical.contains(name),
            *name != "opq_ivf_pq" && *name != "ivf_flat_ondisk",
            "{name} rewritten byte for byte: {}",
            identical.contains(name)
        );
    }
}

/// Indexes vq builds (trained by vq) for the Faiss-compatible strings.
const VQ_BUILT: &[(&str, Metric)] = &[
    ("Flat", Metric::L2),
    ("IDMap2,Flat", Metric::InnerProduct),
    ("PQ8", Metric::L2),
    ("SQ8", Metric::L2),
    ("SQ4_uniform", Metric::L2),
    ("IVF8,Flat", Metric::InnerProduct),
    ("IVF8,SQ8", Metric::L2),
    ("IVF8,PQ4x6", Metric::L2),
    ("IMI2x3,PQ4", Metric::L2),
    ("IVF8_HNSW4,Flat", Metric::L2),
    ("PCAR8,IVF8,Flat", Metric::L2),
    ("OPQ4_16,IVF8,PQ4", Metric::L2),
    ("L2norm,HNSW8", Metric::InnerProduct),
    ("HNSW8_SQ8", Metric::L2),
    ("HNSW8_PQ4", Metric::L2),
    ("PQ4x4fs", Metric::InnerProduct),
    ("IVF8,PQ8x4fsr_64", Metric::L2),
    ("IVF8,PQ8x4fs,RFlat", Metric::L2),
];

fn vq_built(s: &str, metric: Metric, xb: &Vectors) -> FactoryIndex {
    let mut index = index_factory(xb.dim(), s, metric).unwrap();
    index.train(xb.as_ref()).unwrap();
    if s.starts_with("IDMap") {
        let ids: Vec<i64> = (0..xb.len() as i64).map(|i| 5_000 + 3 * i).collect();
        index.add_with_ids(xb.as_ref(), &ids).unwrap();
    } else {
        index.add(xb.as_ref()).unwrap();
    }
    index
}

#[test]
fn vq_indexes_written_for_faiss_read_back_identically() {
    let (xb, xq) = (base(), queries());
    let out = std::env::var_os("VQ_FAISS_PYTHON").map(|_| tempfile::tempdir().unwrap());
    let mut manifest = serde_json::Map::new();
    for (i, (s, metric)) in VQ_BUILT.iter().enumerate() {
        let index = vq_built(s, *metric, &xb);
        let mut bytes = Vec::new();
        faiss_io::write_index_to(&index, &mut bytes).unwrap_or_else(|e| panic!("{s}: {e}"));
        let back = faiss_io::read_index_bytes(&bytes).unwrap_or_else(|e| panic!("{s}: {e}"));
        same_results(&index, &back, xq.as_ref(), s);
        if let Some(dir) = &out {
            let file = format!("vq{i}.faiss");
            std::fs::write(dir.path().join(&file), &bytes).unwrap();
            let r = index
                .search(xq.as_ref(), 10, &SearchParams::default())
                .unwrap();
            manifest.insert(
                file,
                serde_json::json!({"factory": s, "labels": r.labels(), "distances": r.distances()}),
            );
        }
    }
    // Faiss reads what vq wrote and finds vq's neighbours (run where CI installed
    // faiss-cpu: `VQ_FAISS_PYTHON=/path/to/python`).
    if let (Some(py), Some(dir)) = (std::env::var_os("VQ_FAISS_PYTHON"), &out) {
        std::fs::write(
            dir.path().join("manifest.json"),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faiss/check_vq_files.py");
        let status = std::process::Command::new(py)
            .arg(script)
            .arg(dir.path())
            .arg(self::dir().join("queries.fvecs"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "Faiss disagrees with vq on the files vq wrote"
        );
    }
}

#[test]
fn unsupported_types_and_metrics_name_themselves() {
    let mut bytes = std::fs::read(dir().join("flat_l2.faiss")).unwrap();
    bytes[..4].copy_from_slice(b"IxHe");
    let e = faiss_io::read_index_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("\"IxHe\"") && e.contains("IndexLSH"), "{e}");
    bytes[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let e = faiss_io::read_index_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("0xefbeadde"), "{e}");
    let e = faiss_io::read_index(dir().join("expected.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("index type"), "{e}");
}

#[test]
fn truncated_faiss_files_are_errors() {
    for (name, _) in CANONICAL {
        let bytes = std::fs::read(dir().join(format!("{name}.faiss"))).unwrap();
        // Every cut point with `VQ_FUZZ_ALL_CUTS=1`; about 150 per file by default.
        let step = if std::env::var_os("VQ_FUZZ_ALL_CUTS").is_some() {
            1
        } else {
            (bytes.len() / 150).max(1)
        };
        for cut in (0..bytes.len())
            .step_by(step)
            .chain(bytes.len() - 8..bytes.len())
        {
            let r = faiss_io::read_index_bytes(&bytes[..cut]);
            assert!(r.is_err(), "{name}: {cut} of {} bytes read", bytes.len());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            faiss_io::read_index_bytes(&longer).is_err(),
            "{name}: trailing byte"
        );
    }
}

#[test]
fn corrupt_faiss_files_never_panic() {
    // Seeded byte corruption of every fixture: each is an error or a valid index,
    // never a panic nor an allocation beyond the file's size.
    let mut state = std::env::var("VQ_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64)
        | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let xq = queries();
    // More rounds, or another seeded sequence, on demand (`VQ_FUZZ_ROUNDS=5000`,
    // `VQ_FUZZ_SEED=7`).
    let rounds: usize = std::env::var("VQ_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    for (name, _) in CANONICAL {
        let bytes = std::fs::read(dir().join(format!("{name}.faiss"))).unwrap();
        // Header and structure fields are in the first bytes and around the arrays;
        // corrupt those more often than the payload.
        for round in 0..rounds {
            let mut b = bytes.clone();
            let flips = 1 + (next() % 3) as usize;
            for _ in 0..flips {
                let at = if round % 2 == 0 {
                    (next() % 160.min(b.len() as u64)) as usize
                } else {
                    (next() % b.len() as u64) as usize
                };
                b[at] = match next() % 4 {
                    0 => 0xff,
                    1 => 0,
                    2 => b[at] ^ (1 << (next() % 8)),
                    _ => next() as u8,
                };
            }
            if let Ok(index) = faiss_io::read_index_bytes(&b) {
                // Whatever loaded must search without panicking.
                let _ = index.search(xq.as_ref(), 5, &SearchParams::default());
            }
        }
    }
}

#[test]
fn hostile_counts_do_not_allocate() {
    // A flat index claiming 2^60 floats, and an IDMap claiming 2^61 ids.
    let bytes = std::fs::read(dir().join("flat_l2.faiss")).unwrap();
    // Tag (4) + header (4 + 8 + 8 + 8 + 1 + 4) = 37: the code count follows.
    let mut b = bytes.clone();
    b[37..45].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = faiss_io::read_index_bytes(&b).unwrap_err().to_string();
    assert!(e.contains("bytes are left"), "{e}");
    let idmap = std::fs::read(dir().join("idmap_flat.faiss")).unwrap();
    let mut b = idmap.clone();
    let at = idmap.len() - 600 * 8 - 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    let e = faiss_io::read_index_bytes(&b).unwrap_err().to_string();
    assert!(e.contains("bytes are left"), "{e}");
}

/// Fixtures whose inverted lists `mmap_index` leaves in the file (`ilar` / `ilod`).
const MAPPED_LISTS: &[&str] = &[
    "ivf_flat",
    "ivf_flat_ip",
    "ivf_sq8",
    "ivf_pq",
    "ivf_pq_ip",
    "ivf_pq_x4",
    "imi_pq",
    "ivf_hnsw_flat",
    "opq_ivf_pq",
    "idmap_ivf_sq8",
    "ivf_flat_ondisk",
];

#[test]
fn mapped_faiss_files_search_like_read_ones() {
    let xq = queries();
    let xb = base();
    for (name, canonical) in CANONICAL {
        let path = dir().join(format!("{name}.faiss"));
        let mut mapped = faiss_io::mmap_index(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut read = read_fixture(name);
        assert_eq!(mapped.spec().to_string(), *canonical, "{name}");
        assert_eq!(mapped.len(), read.len(), "{name}");
        same_results(&mapped, &read, xq.as_ref(), name);
        // Same with more lists probed, where that applies.
        if mapped.set_params("nprobe=16").is_ok() {
            read.set_params("nprobe=16").unwrap();
            same_results(&mapped, &read, xq.as_ref(), name);
        }
        // Lists left in the file are read-only; everything else adds as usual.
        let one = VectorsRef::new(&xb.as_slice()[..xb.dim()], xb.dim()).unwrap();
        let add = |ix: &mut FactoryIndex| {
            if canonical.starts_with("IDMap") {
                ix.add_with_ids(one, &[1_000_000])
            } else {
                ix.add(one)
            }
        };
        let added = add(&mut mapped);
        if MAPPED_LISTS.contains(name) {
            let e = added.unwrap_err();
            assert!(
                matches!(e, vq_core::Error::NotSupported { .. })
                    && e.to_string().contains("Faiss file"),
                "{name}: {e}"
            );
            assert_eq!(mapped.len(), read.len(), "{name}: nothing added");
        } else if add(&mut read).is_ok() {
            added.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // What was mapped writes back as Faiss's file, byte for byte where reading does.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let fresh_mapped = faiss_io::mmap_index(&path).unwrap();
        faiss_io::write_index_to(&fresh_mapped, &mut a).unwrap();
        faiss_io::write_index_to(&read_fixture(name), &mut b).unwrap();
        assert!(
            a == b,
            "{name}: mapped and read indexes write different files"
        );
    }
}

#[test]
fn mapped_faiss_file_changed_underneath_is_an_error() {
    let xq = queries();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ivf.faiss");
    let bytes = std::fs::read(dir().join("ivf_pq.faiss")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let index = faiss_io::mmap_index(&path).unwrap();
    let before = index
        .search(xq.as_ref(), 5, &SearchParams::default())
        .unwrap();
    // Written over itself (a temporary file renamed into place): the mapped file is
    // whole, and the index keeps answering from it.
    faiss_io::write_index(&index, &path).unwrap();
    let same = index
        .search(xq.as_ref(), 5, &SearchParams::default())
        .unwrap();
    assert_eq!(same.labels(), before.labels());
    let again = faiss_io::mmap_index(&path).unwrap();
    assert_eq!(
        again
            .search(xq.as_ref(), 5, &SearchParams::default())
            .unwrap()
            .labels(),
        before.labels()
    );
    // Replaced by another file, or removed: the map keeps the file it opened.
    let other = tmp.path().join("other.faiss");
    std::fs::write(&other, std::fs::read(dir().join("ivf_flat.faiss")).unwrap()).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let after = index
        .search(xq.as_ref(), 5, &SearchParams::default())
        .unwrap();
    assert_eq!(after.labels(), before.labels());
    // Rewritten in place (what `cp` does): noticed, an error rather than a fault.
    std::fs::copy(dir().join("ivf_pq.faiss"), &path).unwrap();
    let inplace = faiss_io::mmap_index(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = inplace
        .search(xq.as_ref(), 5, &SearchParams::default())
        .unwrap_err();
    assert!(e.to_string().contains("changed in place"), "{e}");
    std::fs::remove_file(&path).unwrap();
    // Missing file, or a truncated one: errors at opening.
    assert!(faiss_io::mmap_index(&path).is_err());
    for cut in (0..bytes.len()).step_by((bytes.len() / 60).max(1)) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(faiss_io::mmap_index(&path).is_err(), "{cut} bytes mapped");
    }
}

#[test]
fn mapped_on_disk_lists_need_their_whole_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lone = tmp.path().join("x.faiss");
    std::fs::copy(dir().join("ivf_flat_ondisk.faiss"), &lone).unwrap();
    let e = faiss_io::mmap_index(&lone).unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
    let data = std::fs::read(dir().join("ivf_flat_ondisk.ivfdata")).unwrap();
    std::fs::write(tmp.path().join("ivf_flat_ondisk.ivfdata"), &data[..1000]).unwrap();
    let e = faiss_io::mmap_index(&lone).unwrap_err().to_string();
    assert!(e.contains("exceed the file"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_faiss_file_that_cannot_be_mapped_is_read() {
    // A named pipe cannot be mapped: read_index falls back to reading it whole.
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe.faiss");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        _ => return, // no mkfifo here: nothing to check
    }
    let bytes = std::fs::read(dir().join("ivf_pq.faiss")).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
    };
    let index = faiss_io::read_index(&fifo).unwrap();
    writer.join().unwrap();
    same_results(&index, &read_fixture("ivf_pq"), queries().as_ref(), "pipe");
}
