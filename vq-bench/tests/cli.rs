//! End-to-end tests of the `vq` binary.
#![allow(clippy::expect_used)]

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

const FIELDS: [&str; 18] = [
    "case",
    "library",
    "version",
    "index",
    "params",
    "threads",
    "n",
    "d",
    "nq",
    "k",
    "train_s",
    "add_s",
    "search_s",
    "qps",
    "recall_at_1",
    "recall_10_at_10",
    "bytes_per_vector",
    "peak_rss_mb",
];

/// A reader that stops early (`vq … | head -0`) ends `vq` quietly: no panic message.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vq"))
        .args([
            "bench",
            "--data",
            "synthetic:2000,8,20,1",
            "--index",
            "Flat",
            "--params",
            "",
            "--repeats",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vq binary runs");
    // Close the read end before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("vq ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_synthetic_prints_the_report_fields() {
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        "synthetic:3000,16,40,7",
        "--index",
        "Flat",
        "--threads",
        "2",
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1);
    let row: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for f in FIELDS {
        assert!(row.get(f).is_some(), "missing field {f}");
    }
    assert_eq!(row["library"], "vq");
    assert_eq!(row["n"], 3000);
    assert_eq!(row["threads"], 2);
    assert_eq!(row["recall_at_1"], 1.0);
    assert_eq!(row["recall_10_at_10"], 1.0);
}

#[test]
fn bench_searches_one_build_at_several_thread_counts() {
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        "synthetic:4000,16,50,3",
        "--index",
        "IVF32,SQ8",
        "--threads",
        "2",
        "--search-threads",
        "1,2",
        "--params",
        "nprobe=1",
        "--params",
        "nprobe=32",
        "--build-params",
        "seed=5,niter=4",
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["build_params"] == "seed=5,niter=4"));
    let got: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["threads"].as_u64().unwrap(),
                r["params"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "nprobe=1"),
            (1, "nprobe=32"),
            (2, "nprobe=1"),
            (2, "nprobe=32")
        ]
    );
    for r in &rows {
        assert_eq!(r["build_threads"], 2);
        // One build: the same training time on every line.
        assert_eq!(r["train_s"], rows[0]["train_s"]);
    }
    // Same index, same results at either thread count.
    assert_eq!(rows[0]["recall_at_1"], rows[2]["recall_at_1"]);
    assert_eq!(rows[1]["recall_10_at_10"], rows[3]["recall_10_at_10"]);
    let (code, _, err) = vq(&[
        "bench",
        "--data",
        "synthetic:100,4,5",
        "--index",
        "Flat",
        "--search-threads",
        "0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--search-threads"), "{err}");
}

#[test]
fn bench_hnsw_strings_sweep_ef_search() {
    for (index, params) in [
        ("HNSW16", ["efSearch=16", "efSearch=64"]),
        ("HNSW16_SQ8", ["efSearch=16", "efSearch=64"]),
        (
            "IVF32_HNSW16,Flat",
            [
                "nprobe=4,quantizer_efSearch=16",
                "nprobe=8,quantizer_efSearch=32",
            ],
        ),
    ] {
        let (code, out, err) = vq(&[
            "bench",
            "--data",
            "synthetic:3000,16,50,3",
            "--index",
            index,
            "--build-params",
            if index.starts_with("IVF") {
                "seed=5"
            } else {
                "efConstruction=80,deterministic=1"
            },
            "--params",
            params[0],
            "--params",
            params[1],
            "--repeats",
            "1",
        ]);
        assert_eq!(code, 0, "{index}: {err}");
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2, "{index}");
        let r: Vec<f64> = rows
            .iter()
            .map(|r| r["recall_10_at_10"].as_f64().unwrap())
            .collect();
        // A wider beam never loses recall on the same graph, and the graph is good.
        assert!(r[1] >= r[0] && r[1] > 0.9, "{index}: {r:?}");
    }
    let (code, _, err) = vq(&[
        "bench",
        "--data",
        "synthetic:300,8,5",
        "--index",
        "HNSW16",
        "--params",
        "nprobe=4",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("efSearch"), "{err}");
}

#[test]
fn bench_folder_with_idmap_one_at_a_time_and_cached_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = vq(&["generate", "--data", "synthetic:2000,8,30,3", "--out", d]);
    assert_eq!(code, 0, "{err}");
    // Without ground truth in the folder: computed, and cached only when asked.
    std::fs::remove_file(dir.path().join("groundtruth.ivecs")).unwrap();
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        d,
        "--index",
        "IDMap,Flat",
        "--metric",
        "ip",
        "-k",
        "5",
        "--one-at-a-time",
        "--repeats",
        "1",
        "--cache-gt",
        "--nq",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["mode"], "one-at-a-time");
    assert_eq!(row["nq"], 10);
    assert_eq!(row["recall_at_1"], 1.0);
    assert!(row["recall_10_at_10"].is_null(), "k = 5 < 10");
    // Ground truth of 10 of the 30 queries is not the folder's: not cached.
    assert!(err.contains("not cached"), "{err}");
    let ip_gt = dir.path().join("groundtruth.ip.ivecs");
    assert!(!ip_gt.exists());
    let args = [
        "bench",
        "--data",
        d,
        "--index",
        "Flat",
        "--metric",
        "ip",
        "--cache-gt",
    ];
    let (code, out, err) = vq(&args);
    assert_eq!(code, 0, "{err}");
    assert!(ip_gt.exists() && !dir.path().join("groundtruth.ivecs").exists());
    // Cached for inner product, it is never taken for L2: Flat stays exact either way.
    for metric in ["ip", "l2"] {
        let (code, out2, err) = vq(&["bench", "--data", d, "--index", "Flat", "--metric", metric]);
        assert_eq!(code, 0, "{err}");
        let row: serde_json::Value = serde_json::from_str(out2.trim()).unwrap();
        assert_eq!(row["recall_10_at_10"], 1.0, "{metric}: {err}");
    }
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (row["nq"].clone(), row["recall_10_at_10"].clone()),
        (30.into(), 1.0.into())
    );
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat,Bogus",
        ],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "IVF64_NSG32,Flat",
        ],
        vec!["bench", "--data", "/definitely/not/here", "--index", "Flat"],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "-k",
            "0",
        ],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "-k",
            "101",
        ],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "--params",
            "nprobe=4",
        ],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "--build-params",
            "efConstruction=40",
        ],
        vec!["bench", "--data", "synthetic:100,0,5", "--index", "Flat"],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "--metric",
            "cosine",
        ],
        vec![
            "bench",
            "--data",
            "synthetic:100,4,5",
            "--index",
            "Flat",
            "--threads",
            "0",
        ],
    ];
    for args in cases {
        let (code, out, err) = vq(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line only: {err}");
    }
    // Too few training points for the lists: a clear error after the progress line.
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        "synthetic:100,4,5",
        "--index",
        "IVF256,Flat",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("error: training: not enough training data: need at least 256"),
        "{err}"
    );
    let (_, _, err) = vq(&[
        "bench",
        "--data",
        "synthetic:100,4,5",
        "--index",
        "Flat,Bogus",
    ]);
    assert!(err.contains("`Bogus` at position 5"), "{err}");
}

#[test]
fn malformed_data_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x_base.fvecs"), [4u8, 0, 0, 0, 1, 2]).unwrap();
    std::fs::write(dir.path().join("x_query.fvecs"), [1u8, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    let (code, _, err) = vq(&[
        "bench",
        "--data",
        dir.path().to_str().unwrap(),
        "--index",
        "Flat",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("x_base.fvecs"), "{err}");
}

#[test]
fn kmeans_prints_one_line_and_refuses_bad_input() {
    let (code, out, err) = vq(&[
        "kmeans",
        "--data",
        "synthetic:4000,8,0,2",
        "--k",
        "16",
        "--niter",
        "4",
        "--init",
        "kmeans++",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for f in [
        "train_s",
        "objective",
        "n_train",
        "mse_full_base",
        "imbalance_factor",
        "n",
        "d",
        "k",
        "niter",
        "objectives",
    ] {
        assert!(row.get(f).is_some(), "missing {f}");
    }
    assert_eq!(row["objectives"].as_array().unwrap().len(), 4);
    assert_eq!(row["n_train"], 4000);
    // Spherical: still a mean squared error (‖x − c‖², the centroids unit vectors), not
    // the mean similarity the assignment ranks by; at least the plain clustering's.
    let plain = row["mse_full_base"].as_f64().unwrap();
    let args = [
        "kmeans",
        "--data",
        "synthetic:4000,8,0,2",
        "--k",
        "16",
        "--niter",
        "4",
    ];
    let (code, out, err) = vq(&[&args[..], &["--spherical"]].concat());
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let sph = row["mse_full_base"].as_f64().unwrap();
    assert!(sph >= plain * 0.99, "spherical {sph} vs {plain}");
    for args in [
        vec!["kmeans", "--data", "synthetic:100,4,0", "--k", "0"],
        vec!["kmeans", "--data", "synthetic:100,4,0", "--k", "101"],
        vec![
            "kmeans",
            "--data",
            "synthetic:100,4,0",
            "--k",
            "4",
            "--init",
            "best",
        ],
    ] {
        let (code, _, err) = vq(&args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn describe_prints_the_canonical_string_and_tree_or_the_marker() {
    let (code, out, err) = vq(&[
        "describe",
        "--dim",
        "128",
        "OPQ16_64, IVF1k(HNSW16), PQ16, RFlat",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("OPQ16_64,IVF1024(HNSW16),PQ16,RFlat"));
    assert!(out.contains("IndexRefine"), "{out}");
    assert!(
        out.contains("OPQ rotation for 16 sub-quantizers, to 64 dimensions"),
        "{out}"
    );
    assert!(out.contains("quantizer_efSearch"), "{out}");
    let (code, out, err) = vq(&["describe", "--dim", "128", "IVF1k,PQ16,Bogus"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("unknown token `Bogus` at position 11"),
        "{err}"
    );
    assert!(
        err.contains(&format!("\n  {}^^^^^", " ".repeat(11))),
        "{err}"
    );
    let (code, _, err) = vq(&["describe", "--dim", "128", "PQ7"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not divide"), "{err}");
    let (code, _, err) = vq(&["describe", "--dim", "64", "--metric", "ip", "IMI2x4,Flat"]);
    assert_eq!(code, 1);
    assert!(err.contains("L2 only"), "{err}");
}

#[test]
fn build_then_search_a_saved_index_read_or_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ivf.vqi");
    let file = file.to_str().unwrap();
    let data = "synthetic:4000,16,50,3";
    let (code, out, err) = vq(&[
        "build",
        "--data",
        data,
        "--index",
        "IVF32,SQ8",
        "--threads",
        "2",
        "--out",
        file,
    ]);
    assert_eq!(code, 0, "{err}");
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["index"], "IVF32,SQ8");
    assert_eq!(row["n"], 4000);
    let mut ids = Vec::new();
    for mmap in [false, true] {
        let out_ids = dir.path().join(format!("ids{mmap}.ivecs"));
        let mut args = vec![
            "search",
            "--index-file",
            file,
            "--data",
            data,
            "--params",
            "nprobe=32",
            "--repeats",
            "1",
            "--out",
            out_ids.to_str().unwrap(),
        ];
        if mmap {
            args.push("--mmap");
        }
        let (code, out, err) = vq(&args);
        assert_eq!(code, 0, "{err}");
        let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        for f in FIELDS
            .iter()
            .filter(|f| !f.ends_with("_s") || **f == "search_s")
        {
            assert!(row.get(f).is_some(), "missing field {f}");
        }
        assert_eq!(row["mmap"], mmap);
        assert!(row["recall_10_at_10"].as_f64().unwrap() > 0.9, "{row}");
        let m = vq_core::io::read_ivecs(&out_ids).unwrap();
        assert_eq!((m.len(), m.dim()), (50, 10));
        ids.push(m.into_vec());
    }
    assert_eq!(
        ids[0], ids[1],
        "loaded and mapped indexes answer differently"
    );
    let (code, out, err) = vq(&["info", file]);
    assert_eq!(code, 0, "{err}");
    let info: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(info["index"], "IVF32,SQ8");
    assert_eq!(info["n"], 4000);
    assert_eq!(info["d"], 16);
    assert_eq!(info["is_trained"], true);
    assert_eq!(info["format_version"], 1);
    assert!(info["bytes_inverted_lists"].as_u64().unwrap() >= 4000 * (16 + 8));
    // Bad input: a parameter the index does not have, a corrupt file, a missing file.
    let (code, _, err) = vq(&[
        "search",
        "--index-file",
        file,
        "--data",
        data,
        "--params",
        "efSearch=8",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("efSearch"), "{err}");
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = dir.path().join("bad.vqi");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, _, _) = vq(&["info", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let (code, _, err) = vq(&[
        "search",
        "--index-file",
        bad.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt") || err.contains("section"), "{err}");
    let (code, _, _) = vq(&["search", "--index-file", "/nonexistent.vqi", "--data", data]);
    assert_eq!(code, 1);
}

/// A Faiss file (written by Faiss: `vq-factory/tests/faiss/make_fixtures.py`).
fn faiss_fixture(name: &str) -> String {
    format!(
        "{}/../vq-factory/tests/faiss/fixtures/{name}.faiss",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn faiss_files_search_and_convert_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let faiss = faiss_fixture("ivf_pq_fs");
    let (code, out, err) = vq(&[
        "search",
        "--faiss-index",
        &faiss,
        "--data",
        "synthetic:600,16,8",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(line["file_format"], "faiss");
    assert_eq!(line["index"], "IVF16,PQ8x4fs");
    assert_eq!(line["n"], 600);
    // Faiss → vq container → Faiss gives Faiss's bytes back.
    let vqi = dir.path().join("a.vqi");
    let back = dir.path().join("b.faiss");
    let (code, out, err) = vq(&["convert", &faiss, vqi.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"from\":\"faiss\"") && out.contains("\"to\":\"vq\""),
        "{out}"
    );
    let (code, _, err) = vq(&["convert", vqi.to_str().unwrap(), back.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&faiss).unwrap()
    );
    // The container is a normal vq index.
    let (code, _, err) = vq(&[
        "search",
        "--index-file",
        vqi.to_str().unwrap(),
        "--data",
        "synthetic:600,16,8",
        "--mmap",
    ]);
    assert_eq!(code, 0, "{err}");
    // A Faiss file mapped (its lists stay in the file): the same ids as read.
    let ivf = faiss_fixture("ivf_pq");
    let ids = |mmap: bool| {
        let out = dir.path().join(format!("faiss{mmap}.ivecs"));
        let mut args = vec![
            "search",
            "--json",
            "--faiss-index",
            &ivf,
            "--data",
            "synthetic:600,16,8",
            "--out",
            out.to_str().unwrap(),
        ];
        if mmap {
            args.push("--mmap");
        }
        let (code, line, err) = vq(&args);
        assert_eq!(code, 0, "{err}");
        assert!(line.contains(&format!("\"mmap\":{mmap}")), "{line}");
        std::fs::read(&out).unwrap()
    };
    assert_eq!(ids(true), ids(false));
    // Bad requests are clear errors.
    let (code, _, err) = vq(&["search", "--data", "synthetic:600,16,8"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--index-file") || err.contains("faiss-index"),
        "{err}"
    );
    let (code, _, err) = vq(&["convert", &faiss, back.to_str().unwrap(), "--to", "onnx"]);
    assert_ne!(code, 0);
    assert!(err.contains("onnx"), "{err}");
    let bogus = dir.path().join("bogus.faiss");
    std::fs::write(&bogus, b"IxHe\x01\x02").unwrap();
    let (code, _, err) = vq(&["convert", bogus.to_str().unwrap(), vqi.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("IndexLSH"), "{err}");
}

/// `--gpu` on a machine without a usable GPU: a one-line error naming the cause, exit
/// status 1, no panic. With an unsupported string on a GPU machine: an error naming
/// what the GPU builds.
#[test]
fn gpu_flags_fail_cleanly() {
    let has_gpu = vq_gpu::probe().is_ok();
    let cases: [&[&str]; 3] = [
        &[
            "bench",
            "--data",
            "synthetic:500,8,5",
            "--index",
            "Flat",
            "--gpu",
        ],
        &[
            "bench",
            "--data",
            "synthetic:500,8,5",
            "--index",
            "HNSW16",
            "--gpu",
            "0",
        ],
        &["kmeans", "--data", "synthetic:500,8,5", "--k", "4", "--gpu"],
    ];
    for args in cases {
        let (code, _out, err) = vq(args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if !has_gpu {
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains("GPU unavailable"), "{args:?}: {err}");
        } else if args.contains(&"HNSW16") {
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains("IVF<n>,PQ<m>"), "{args:?}: {err}");
        } else {
            assert_eq!(code, 0, "{args:?}: {err}");
        }
    }
}

/// `--radius`: range search lines with hits and range recall and precision (exact for
/// Flat, probes lost with IVF at `nprobe=1`), through `vq bench` (two radii, inner
/// product too) and `vq search` of a saved index; bad combinations are errors.
#[test]
fn range_search_through_bench_and_search() {
    let data = "synthetic:3000,16,30,5";
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        data,
        "--index",
        "Flat",
        "--index",
        "IVF16,Flat",
        "--params",
        "nprobe=1",
        "--radius",
        "8",
        "--radius",
        "16",
        "--repeats",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    let mut true_hits = Vec::new();
    for r in &rows {
        for f in [
            "radius",
            "hits",
            "hits_per_query",
            "true_hits",
            "range_recall",
            "range_precision",
            "qps",
        ] {
            assert!(r.get(f).is_some(), "missing field {f}: {r}");
        }
        assert!(r.get("recall_10_at_10").is_none(), "{r}");
        let hits = r["hits"].as_u64().unwrap();
        assert!((r["hits_per_query"].as_f64().unwrap() - hits as f64 / 30.0).abs() < 1e-9);
        if r["index"] == "Flat" {
            assert_eq!(r["range_recall"], 1.0, "{r}");
            assert_eq!(r["range_precision"], 1.0, "{r}");
            assert_eq!(r["hits"], r["true_hits"]);
            true_hits.push(hits);
        } else {
            assert_eq!(r["range_precision"], 1.0, "{r}");
            let recall = r["range_recall"].as_f64().unwrap();
            assert!(recall < 1.0 || r["radius"] == 8.0, "{r}");
        }
    }
    assert!(
        true_hits[0] > 0 && true_hits[1] > true_hits[0],
        "{true_hits:?}"
    );
    // Inner product: a similarity above the radius.
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        data,
        "--index",
        "Flat",
        "--metric",
        "ip",
        "--radius",
        "-1",
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (r["metric"].as_str(), r["range_recall"].as_f64()),
        (Some("ip"), Some(1.0))
    );
    assert!(r["hits"].as_u64().unwrap() > 0, "{r}");
    // A saved index through `vq search`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hnsw.vq");
    let file = file.to_str().unwrap();
    let (code, _, err) = vq(&["build", "--data", data, "--index", "HNSW8", "--out", file]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = vq(&[
        "search",
        "--index-file",
        file,
        "--data",
        data,
        "--radius",
        "8",
        "--params",
        "efSearch=64",
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["radius"], 8.0);
    assert!(r["range_recall"].as_f64().unwrap() > 0.9, "{r}");
    assert_eq!(r["range_precision"], 1.0, "{r}");
    for bad in [
        vec!["--radius", "NaN"],
        vec!["--radius", "8", "--out", "x.ivecs"],
    ] {
        let mut args = vec!["search", "--index-file", file, "--data", data];
        args.extend(bad);
        let (code, _, err) = vq(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
    }
    // Infinite radii (written as strings: JSON numbers cannot hold them), k unused.
    let (code, out, err) = vq(&[
        "bench",
        "--data",
        data,
        "--index",
        "Flat",
        "--radius",
        "-inf",
        "--radius",
        "inf",
        "--radius",
        "0.1",
        "-k",
        "0",
        "--repeats",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let radii: Vec<String> = rows.iter().map(|r| r["radius"].to_string()).collect();
    assert_eq!(radii, ["\"-inf\"", "\"inf\"", "0.1"]);
    assert_eq!(
        (rows[0]["hits"].as_u64(), rows[1]["hits"].as_u64()),
        (Some(0), Some(90_000))
    );
    let (code, _, err) = vq(&[
        "bench", "--data", data, "--index", "Flat", "--radius", "nan",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("radius"), "{err}");
}
