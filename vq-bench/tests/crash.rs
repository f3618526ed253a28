//! Crash safety of `save`: a process killed while it writes an index leaves the previous
//! file intact and loadable (the write goes to a temporary file that is renamed over the
//! old one only once complete and synced).
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vq"))
}

/// `n` of the index file at `path`, through `vq info` (which verifies every checksum
/// the header and section table carry, and maps the file).
fn stored_n(path: &Path) -> Result<u64, String> {
    let out = vq()
        .args(["info", "--json"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["n"].as_u64().ok_or_else(|| format!("no n in {v}"))
}

fn temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".idx.vq.tmp"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Saves a 1,000-vector flat index at `path`.
fn build_small(path: &Path) {
    let st = vq()
        .args([
            "build",
            "--data",
            "synthetic:1000,16,10",
            "--index",
            "Flat",
            "--quiet",
            "--out",
        ])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("vq runs");
    assert!(st.success());
}

#[test]
fn killing_a_save_leaves_the_old_file_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("idx.vq");
    build_small(&path);
    assert_eq!(stored_n(&path), Ok(1000));

    let mut interrupted = 0;
    for trial in 0..8u64 {
        // A 77 MB index (300k × 64 floats) over the same path, killed while its
        // temporary file is being written, a little later at each trial.
        let mut child = vq()
            .args(["build", "--data"])
            .arg(format!("synthetic:300000,64,1,{trial}"))
            .args(["--index", "Flat", "--quiet", "--threads", "1", "--out"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vq runs");
        let t0 = Instant::now();
        let mut saw_tmp = false;
        while t0.elapsed() < Duration::from_secs(60) {
            if !temporaries(dir.path()).is_empty() {
                saw_tmp = true;
                break;
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        std::thread::sleep(Duration::from_millis(2 * trial));
        let _ = child.kill();
        let _ = child.wait();
        let left = temporaries(dir.path());
        if saw_tmp && !left.is_empty() {
            interrupted += 1;
        }
        // The old index, or the new one if the save finished first: never a broken file.
        let n = stored_n(&path).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        assert!(n == 1000 || n == 300_000, "trial {trial}: n = {n}");
        if n == 300_000 {
            // A completed save: start again from a small file.
            build_small(&path);
        }
        // A killed save leaves its temporary file (nothing can remove it); the next
        // save does not reuse its name.
        for t in left {
            let _ = std::fs::remove_file(t);
        }
    }
    eprintln!("{interrupted} of 8 kills landed inside a save; the old file was intact each time");
    assert!(
        interrupted >= 4,
        "only {interrupted} of 8 kills landed inside a save"
    );
}
