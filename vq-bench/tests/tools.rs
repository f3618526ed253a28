//! End-to-end tests of `vq tune`, `vq gt` and `vq bench` sweeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;
use vq_core::io::{read_fvecs, read_ivecs};
use vq_core::synthetic::SyntheticSpec;

fn vq(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vq"))
        .args(args)
        .output()
        .expect("the vq binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let rows = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), rows, stderr)
}

const DATA: &str = "synthetic:6000,16,80,5";

#[test]
fn tune_prints_a_frontier_and_a_target_that_holds_when_rerun() {
    let (code, rows, err) = vq(&[
        "tune",
        "--data",
        DATA,
        "--index",
        "IVF64,SQ8,RFlat",
        "--criterion",
        "1-recall@1",
        "--target-recall",
        "0.9",
        "--min-test-s",
        "0",
        "--threads",
        "2",
        "--all",
    ]);
    assert_eq!(code, 0, "{err}");
    let points: Vec<&Value> = rows.iter().filter(|r| r["tune"] != "target").collect();
    let frontier: Vec<&Value> = points
        .iter()
        .copied()
        .filter(|r| r["tune"] == "frontier")
        .collect();
    assert!(frontier.len() >= 2, "{rows:?}");
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap();
    // Every frontier point is dominated by no measured point.
    for p in &frontier {
        for q in &points {
            let dom = f(q, "perf") >= f(p, "perf")
                && f(q, "search_s") <= f(p, "search_s")
                && (f(q, "perf") > f(p, "perf") || f(q, "search_s") < f(p, "search_s"));
            assert!(!dom, "{} dominated by {}", p["params"], q["params"]);
        }
        assert_eq!(p["criterion"], "1-recall@1");
        assert!(p["qps"].as_f64().unwrap() > 0.0);
    }
    // The target line: the fastest frontier point reaching 0.9, confirmed by a re-run.
    let target = rows.iter().find(|r| r["tune"] == "target").unwrap();
    assert!(f(target, "perf") >= 0.9 && f(target, "verified_perf") >= 0.9);
    let fastest = frontier
        .iter()
        .filter(|p| f(p, "perf") >= 0.9)
        .min_by(|a, b| f(a, "search_s").total_cmp(&f(b, "search_s")))
        .unwrap();
    assert_eq!(target["params"], fastest["params"]);
    // And the same setting through `vq bench` reaches it as well.
    let params = target["params"].as_str().unwrap();
    let (code, rows, err) = vq(&[
        "bench",
        "--data",
        DATA,
        "--index",
        "IVF64,SQ8,RFlat",
        "-k",
        "1",
        "--params",
        params,
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(rows[0]["recall_at_1"].as_f64().unwrap() >= 0.9);
}

#[test]
fn tune_refuses_bad_criteria_targets_and_unreachable_targets() {
    for (args, needle) in [
        (vec!["--criterion", "11-recall@10"], "--criterion"),
        (vec!["--criterion", "precision"], "--criterion"),
        (vec!["--target-recall", "1.5"], "--target-recall"),
        (vec!["--target-recall", "0"], "--target-recall"),
        (vec!["--budget-s", "-1"], "--budget-s"),
    ] {
        let mut all = vec!["tune", "--data", DATA, "--index", "IVF16,Flat"];
        all.extend(args);
        let (code, rows, err) = vq(&all);
        assert_eq!(code, 1, "{all:?}");
        assert!(rows.is_empty());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // PQ2 cannot reach a perfect 10-recall@10: a clear error after the frontier.
    let (code, _, err) = vq(&[
        "tune",
        "--data",
        DATA,
        "--index",
        "IVF16,PQ2",
        "--target-recall",
        "1.0",
        "--quiet",
        "--min-test-s",
        "0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no setting reaches"), "{err}");
}

#[test]
fn gt_equals_brute_force_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gt.ivecs");
    let out_s = out.to_str().unwrap();
    let (code, rows, err) = vq(&[
        "gt",
        "--data",
        "synthetic:3000,12,50,9",
        "-k",
        "20",
        "--out",
        out_s,
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows[0]["k"], 20);
    let ids = read_ivecs(&out).unwrap();
    let dist = read_fvecs(dir.path().join("gt.fvecs")).unwrap();
    assert_eq!((ids.len(), ids.dim()), (50, 20));
    assert_eq!((dist.len(), dist.dim()), (50, 20));
    // Brute force in f64.
    let data = SyntheticSpec::new(3000, 12, 50)
        .with_seed(9)
        .generate()
        .unwrap();
    for q in 0..50 {
        let qv = data.queries.row(q);
        let mut all: Vec<(f64, usize)> = (0..3000)
            .map(|i| {
                let b = data.base.row(i);
                let d: f64 = qv
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum();
                (d, i)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        for j in 0..20 {
            let got = ids.row(q)[j] as usize;
            let want = all[j].0;
            // Same distance (ties may swap ids).
            let gd = all.iter().find(|(_, i)| *i == got).unwrap().0;
            assert!(
                (gd - want).abs() <= 1e-3 * want.max(1.0),
                "query {q} rank {j}"
            );
            assert!((dist.row(q)[j] as f64 - want).abs() <= 1e-3 * want.max(1.0));
        }
    }
    // Refuses to overwrite without --force, then does with it.
    let (code, _, err) = vq(&["gt", "--data", "synthetic:3000,12,50,9", "--out", out_s]);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let (code, _, err) = vq(&[
        "gt",
        "--data",
        "synthetic:3000,12,50,9",
        "-k",
        "5",
        "--out",
        out_s,
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_ivecs(&out).unwrap().dim(), 5);
    // Bad k, bad out, synthetic data without --out.
    for args in [
        vec![
            "gt",
            "--data",
            "synthetic:300,4,5",
            "-k",
            "0",
            "--out",
            out_s,
        ],
        vec![
            "gt",
            "--data",
            "synthetic:300,4,5",
            "-k",
            "301",
            "--out",
            out_s,
        ],
        vec!["gt", "--data", "synthetic:300,4,5", "--out", "x.txt"],
        vec!["gt", "--data", "synthetic:300,4,5"],
    ] {
        let (code, _, err) = vq(&args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn bench_sweeps_several_indexes_with_median_and_warmup() {
    let (code, rows, err) = vq(&[
        "bench",
        "--data",
        DATA,
        "--index",
        "IVF32,Flat",
        "--index",
        "HNSW8",
        "--index",
        "Flat",
        "--params",
        "nprobe=2",
        "--params",
        "nprobe=8",
        "--params",
        "efSearch=32",
        "--repeat",
        "3",
        "--warmup",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["index"].as_str().unwrap().to_string(),
                r["params"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("IVF32,Flat".to_string(), "nprobe=2".to_string()),
            ("IVF32,Flat".to_string(), "nprobe=8".to_string()),
            ("HNSW8".to_string(), "efSearch=32".to_string()),
            ("Flat".to_string(), String::new()),
        ]
    );
    for r in &rows {
        let all: Vec<f64> = r["search_s_all"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(all.len(), 3);
        let mut s = all.clone();
        s.sort_by(f64::total_cmp);
        assert_eq!(r["search_s"].as_f64().unwrap(), s[1], "median of three");
        assert_eq!(r["search_s_min"].as_f64().unwrap(), s[0]);
        assert_eq!(r["warmup"], 1);
    }
    // A parameter no index has is an error.
    let (code, _, err) = vq(&[
        "bench", "--data", DATA, "--index", "Flat", "--index", "HNSW8", "--params", "nprobe=2",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no --index has"), "{err}");
}

#[test]
fn generate_writes_every_format_and_bench_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["fvecs", "fbin", "npy", "hdf5"] {
        let out = dir.path().join(format);
        let out_s = out.to_str().unwrap();
        let (code, _, err) = vq(&[
            "generate",
            "--data",
            "synthetic:1500,8,30,4",
            "--out",
            out_s,
            "--format",
            format,
            "--gt-k",
            "10",
        ]);
        assert_eq!(code, 0, "{format}: {err}");
        let data = if format == "hdf5" {
            out.join("syn-1500-d8-q30-s4.hdf5")
        } else {
            out.clone()
        };
        let (code, rows, err) = vq(&[
            "bench",
            "--data",
            data.to_str().unwrap(),
            "--index",
            "Flat",
            "--repeat",
            "1",
        ]);
        assert_eq!(code, 0, "{format}: {err}");
        // The written ground truth is read back (nothing recomputed) and exact search
        // matches it.
        assert!(
            !err.contains("computing exact ground truth"),
            "{format}: {err}"
        );
        assert_eq!(rows[0]["n"], 1500);
        assert_eq!(
            rows[0]["recall_10_at_10"].as_f64().unwrap(),
            1.0,
            "{format}"
        );
    }
    let (code, _, err) = vq(&[
        "generate",
        "--data",
        "synthetic:20,4,2",
        "--out",
        dir.path().to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--format"), "{err}");
}

#[test]
fn bench_gives_each_index_the_build_parameters_it_has() {
    let (code, rows, err) = vq(&[
        "bench",
        "--data",
        DATA,
        "--index",
        "IVF32,Flat",
        "--index",
        "HNSW8",
        "--build-params",
        "efConstruction=20",
        "--repeat",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows.len(), 2);
    let (code, _, err) = vq(&[
        "bench",
        "--data",
        DATA,
        "--index",
        "IVF32,Flat",
        "--index",
        "HNSW8",
        "--build-params",
        "bogus=1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no --index accepts"), "{err}");
    // One index: a parameter it lacks is its own error, as before.
    let (code, _, err) = vq(&[
        "bench",
        "--data",
        DATA,
        "--index",
        "IVF32,Flat",
        "--build-params",
        "efConstruction=20",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("efConstruction"), "{err}");
}

/// Runs vq and gives its exit code and standard error (stdout may be a table).
fn vq_err(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vq"))
        .args(args)
        .output()
        .expect("the vq binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn generate_never_mixes_datasets_and_gt_repairs_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let gen_args = |spec: &'static str| vec!["generate", "--data", spec, "--out", d];
    let mut first = gen_args("synthetic:2000,8,30,1");
    first.extend(["--learn", "500"]);
    assert_eq!(vq_err(&first).0, 0);
    // A folder holding a dataset is refused, then replaced whole with --force.
    let (code, err) = vq_err(&gen_args("synthetic:2000,8,30,2"));
    assert_eq!(code, 1);
    assert!(
        err.contains("already holds a dataset") && err.contains("learn.fvecs"),
        "{err}"
    );
    let mut forced = gen_args("synthetic:2000,8,30,2");
    forced.push("--force");
    assert_eq!(vq_err(&forced).0, 0);
    assert!(!dir.path().join("learn.fvecs").exists());
    // Empty datasets and k = 0 are refused.
    for (spec, extra) in [
        ("synthetic:0,8,5", None),
        ("synthetic:100,8,0", None),
        ("synthetic:100,8,5", Some("0")),
    ] {
        let e = tempfile::tempdir().unwrap();
        let mut args = vec![
            "generate",
            "--data",
            spec,
            "--out",
            e.path().to_str().unwrap(),
        ];
        if let Some(k) = extra {
            args.extend(["--gt-k", k]);
        }
        let (code, err) = vq_err(&args);
        assert_eq!((code, err.trim().lines().count()), (1, 1), "{spec}: {err}");
    }
    let (code, err) = vq_err(&["bench", "--data", "synthetic:100,8,0", "--index", "Flat"]);
    assert_eq!(code, 1);
    assert!(err.contains("no queries"), "{err}");
    // A broken ground-truth file: bench refuses the folder, `gt --force` repairs it.
    let gt = dir.path().join("groundtruth.ivecs");
    let whole = std::fs::read(&gt).unwrap();
    std::fs::write(&gt, &whole[..1000]).unwrap();
    let bench = ["bench", "--data", d, "--index", "Flat", "--quiet"];
    assert_eq!(vq_err(&bench).0, 1);
    let (code, err) = vq_err(&["gt", "--data", d, "-k", "100", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&gt).unwrap(), whole);
    assert_eq!(vq_err(&bench).0, 0);
    // Texmex names: `gt` writes the name bench looks for.
    for part in ["base", "query", "groundtruth"] {
        let ext = if part == "groundtruth" {
            "ivecs"
        } else {
            "fvecs"
        };
        let from = dir.path().join(format!("{part}.{ext}"));
        std::fs::rename(&from, dir.path().join(format!("sift_{part}.{ext}"))).unwrap();
    }
    std::fs::remove_file(dir.path().join("groundtruth.fvecs")).unwrap();
    let (code, err) = vq_err(&["gt", "--data", d, "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.path().join("sift_groundtruth.ivecs").is_file());
    assert_eq!(vq_err(&bench).0, 0);
    // An I/O error's cause is printed once.
    let (code, err) = vq_err(&["search", "--index-file", "/no/such.vqi", "--data", d]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn tune_takes_a_budget_past_what_a_duration_holds() {
    let (code, _, err) = vq(&[
        "tune",
        "--data",
        DATA,
        "--index",
        "IVF16,Flat",
        "--budget-s",
        "1e300",
        "--min-test-s",
        "0",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
}
