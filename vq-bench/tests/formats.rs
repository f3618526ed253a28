//! End-to-end tests of the data formats `vq bench --data` reads: NumPy folders (`.npy`
//! written by hand here), ann-benchmarks HDF5 files (written with `hdf5-pure`),
//! `--max-base` and `--learn`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn vq(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vq"))
        .args(args)
        .output()
        .expect("the vq binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes an `.npy` file (format 1.0, C order) of the NumPy dtype `descr`.
fn npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}").into_bytes();
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn f32_npy(path: &Path, v: &[f32], d: usize) {
    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy(path, "<f4", &[v.len() / d, d], &data);
}

/// Deterministic values in [-5, 5).
fn values(n: usize, d: usize, seed: u32) -> Vec<f32> {
    (0..n * d)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (x % 1000) as f32 / 100.0 - 5.0
        })
        .collect()
}

/// The exact `k` nearest base vectors (L2) of each query.
fn exact_knn(base: &[f32], queries: &[f32], d: usize, k: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for q in queries.chunks_exact(d) {
        let mut dist: Vec<(f32, i64)> = base
            .chunks_exact(d)
            .enumerate()
            .map(|(i, b)| {
                (
                    q.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
                    i as i64,
                )
            })
            .collect();
        dist.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out.extend(dist[..k].iter().map(|p| p.1));
    }
    out
}

const N: usize = 300;
const D: usize = 8;
const NQ: usize = 20;

/// A folder with `base.npy` (float32, N × D) and `query.npy` (NQ × D).
fn npy_folder() -> (tempfile::TempDir, Vec<f32>, Vec<f32>) {
    let dir = tempfile::tempdir().unwrap();
    let base = values(N, D, 1);
    let queries = values(NQ, D, 2);
    f32_npy(&dir.path().join("base.npy"), &base, D);
    f32_npy(&dir.path().join("query.npy"), &queries, D);
    (dir, base, queries)
}

fn bench(data: &Path, extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let mut args = vec![
        "bench",
        "--data",
        data.to_str().unwrap(),
        "--index",
        "Flat",
        "-k",
        "5",
        "--threads",
        "1",
        "--repeats",
        "1",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = vq(&args);
    let rows = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, rows, err)
}

#[test]
fn bench_reads_a_numpy_folder() {
    let (dir, _, _) = npy_folder();
    let (code, rows, err) = bench(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["n"], N);
    assert_eq!(rows[0]["d"], D);
    assert_eq!(rows[0]["nq"], NQ);
    assert_eq!(rows[0]["recall_at_1"], 1.0);
}

#[test]
fn bench_uses_numpy_ground_truth() {
    let (dir, base, queries) = npy_folder();
    let gt = exact_knn(&base, &queries, D, 10);
    let bytes: Vec<u8> = gt.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy(
        &dir.path().join("groundtruth.npy"),
        "<i8",
        &[NQ, 10],
        &bytes,
    );
    let (code, rows, err) = bench(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("computing exact ground truth"), "{err}");
    assert_eq!(rows[0]["recall_at_1"], 1.0);

    // Wrong ground truth (every id shifted) is used as given: recall drops.
    let shifted: Vec<u8> = gt
        .iter()
        .map(|&x| (x + 1) % N as i64)
        .flat_map(|x| (x as i32).to_le_bytes())
        .collect();
    npy(
        &dir.path().join("groundtruth.npy"),
        "<i4",
        &[NQ, 10],
        &shifted,
    );
    let (code, rows, err) = bench(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(rows[0]["recall_at_1"].as_f64().unwrap() < 0.5);
}

#[test]
fn bench_reads_float64_and_uint8_numpy_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let base: Vec<u8> = (0..N * D).map(|i| (i * 37 % 251) as u8).collect();
    let queries: Vec<f64> = (0..NQ * D).map(|i| (i * 11 % 200) as f64 + 0.5).collect();
    npy(&dir.path().join("base.npy"), "|u1", &[N, D], &base);
    let q: Vec<u8> = queries.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy(&dir.path().join("query.npy"), "<f8", &[NQ, D], &q);
    let (code, rows, err) = bench(dir.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0]["n"], N);
    assert_eq!(rows[0]["recall_at_1"], 1.0);
}

#[test]
fn bench_max_base_recomputes_ground_truth_for_the_prefix() {
    let (dir, base, queries) = npy_folder();
    let gt = exact_knn(&base, &queries, D, 10);
    let bytes: Vec<u8> = gt.iter().flat_map(|x| x.to_le_bytes()).collect();
    npy(
        &dir.path().join("groundtruth.npy"),
        "<i8",
        &[NQ, 10],
        &bytes,
    );
    let (code, rows, err) = bench(dir.path(), &["--max-base", "100", "--cache-gt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0]["n"], 100);
    assert_eq!(rows[0]["recall_at_1"], 1.0);
    assert!(err.contains("--max-base 100"), "{err}");
    // Cached under a name of its own, never as the full data's ground truth.
    assert!(dir.path().join("groundtruth.max100.ivecs").is_file());
    assert!(!dir.path().join("groundtruth.ivecs").exists());

    for bad in ["0", "301"] {
        let (code, _, err) = bench(dir.path(), &["--max-base", bad]);
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!("--max-base {bad}")) && err.contains("300"),
            "{err}"
        );
    }
}

#[test]
fn bench_learn_file_must_match_the_dimension() {
    let (dir, _, _) = npy_folder();
    let learn = dir.path().join("train-elsewhere.npy");
    f32_npy(&learn, &values(64, D, 3), D);
    let (code, rows, err) = bench(
        dir.path(),
        &["--learn", learn.to_str().unwrap(), "--index", "IVF4,Flat"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0]["n"], N);
    f32_npy(&learn, &values(64, 4, 3), 4);
    let (code, _, err) = bench(dir.path(), &["--learn", learn.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("dimension 4"), "{err}");
}

#[test]
fn bench_reports_bad_numpy_files() {
    let (dir, _, _) = npy_folder();
    let q = dir.path().join("query.npy");
    npy(&q, "<f4", &[2, 2, D], &[0; 2 * 2 * D * 4]);
    let (code, _, err) = bench(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("query.npy") && err.contains("3-D"), "{err}");

    npy(&q, "<i2", &[NQ, D], &[0; NQ * D * 2]);
    let (code, _, err) = bench(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("int16"), "{err}");

    f32_npy(&q, &values(NQ, D, 2), D);
    let full = std::fs::read(&q).unwrap();
    std::fs::write(&q, &full[..full.len() - 3]).unwrap();
    let (code, _, err) = bench(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("truncated"), "{err}");

    let mut v = values(NQ, D, 2);
    v[17] = f32::NAN;
    f32_npy(&q, &v, D);
    let (code, _, err) = bench(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("non-finite"), "{err}");

    let lone = dir.path().join("base.npy");
    let (code, _, err) = bench(&lone, &[]);
    assert_eq!(code, 1);
    assert!(err.contains(".hdf5"), "{err}");
    let (code, _, err) = bench(&dir.path().join("absent.hdf5"), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no such"), "{err}");
}

/// Writes an ann-benchmarks file with `hdf5-pure` (a dependency of the tool).
fn ann_hdf5(path: &Path, train: &[f32], test: &[f32], neighbors: &[i64], distance: &str) {
    let mut b = hdf5_pure::FileBuilder::new();
    b.create_dataset("train")
        .with_f32_data(train)
        .with_shape(&[(train.len() / D) as u64, D as u64]);
    b.create_dataset("test")
        .with_f32_data(test)
        .with_shape(&[(test.len() / D) as u64, D as u64])
        .with_chunks(&[7, D as u64])
        .with_deflate(4);
    let nb: Vec<i32> = neighbors.iter().map(|&x| x as i32).collect();
    b.create_dataset("neighbors")
        .with_i32_data(&nb)
        .with_shape(&[NQ as u64, 10]);
    b.set_attr(
        "distance",
        hdf5_pure::AttrValue::VarLenString(distance.to_string()),
    );
    b.write(path).unwrap();
}

#[test]
fn bench_reads_an_ann_benchmarks_hdf5_file() {
    let dir = tempfile::tempdir().unwrap();
    let (base, queries) = (values(N, D, 1), values(NQ, D, 2));
    let p = dir.path().join("tiny-8-euclidean.hdf5");
    ann_hdf5(
        &p,
        &base,
        &queries,
        &exact_knn(&base, &queries, D, 10),
        "euclidean",
    );
    let (code, rows, err) = bench(&p, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("computing exact ground truth"), "{err}");
    assert_eq!(rows[0]["n"], N);
    assert_eq!(rows[0]["dataset"], "tiny-8-euclidean");
    assert_eq!(rows[0]["metric"], "l2");
    assert_eq!(rows[0]["recall_at_1"], 1.0);

    // Angular: vectors normalised, searched with inner product; the file's neighbours
    // (by cosine) are the inner-product neighbours of the unit vectors.
    let unit = |v: &[f32]| -> Vec<f32> {
        v.chunks_exact(D)
            .flat_map(|r| {
                let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                r.iter().map(move |x| x / n)
            })
            .collect()
    };
    let (ub, uq) = (unit(&base), unit(&queries));
    let mut cosine = Vec::new();
    for q in uq.chunks_exact(D) {
        let mut s: Vec<(f32, i64)> = ub
            .chunks_exact(D)
            .enumerate()
            .map(|(i, b)| (-q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(), i as i64))
            .collect();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        cosine.extend(s[..10].iter().map(|p| p.1));
    }
    let p = dir.path().join("tiny-8-angular.hdf5");
    ann_hdf5(&p, &base, &queries, &cosine, "angular");
    let (code, rows, err) = bench(&p, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0]["metric"], "ip");
    assert_eq!(rows[0]["recall_at_1"], 1.0);

    ann_hdf5(&p, &base, &queries, &cosine, "jaccard");
    let (code, _, err) = bench(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("jaccard"), "{err}");
    std::fs::write(&p, b"\x89HDF\r\n\x1a\n but not really").unwrap();
    let (code, _, err) = bench(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("tiny-8-angular.hdf5"), "{err}");
}
