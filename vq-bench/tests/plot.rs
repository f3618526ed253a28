//! End-to-end tests of `vq plot` (SVG and PNG charts from JSON lines).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use resvg::usvg::roxmltree;

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Lines as `vq bench` prints them (one meta-less HNSW sweep), plus a k-means-like row
/// without qps that must be skipped.
const VQ_LINES: &str = r#"
{"case":"index","library":"vq","version":"0.1.0","index":"HNSW32","params":"efSearch=16","threads":1,"n":100000,"d":128,"nq":1000,"k":10,"qps":21000.5,"recall_at_1":0.81,"recall_10_at_10":0.78,"dataset":"syn-100k-d128-q1k-s12345"}
{"case":"index","library":"vq","version":"0.1.0","index":"HNSW32","params":"efSearch=32","threads":1,"n":100000,"d":128,"nq":1000,"k":10,"qps":13500.0,"recall_at_1":0.90,"recall_10_at_10":0.88,"dataset":"syn-100k-d128-q1k-s12345"}

{"case":"index","library":"vq","version":"0.1.0","index":"HNSW32","params":"efSearch=64","threads":1,"n":100000,"d":128,"nq":1000,"k":10,"qps":8100.0,"recall_at_1":0.96,"recall_10_at_10":0.95,"dataset":"syn-100k-d128-q1k-s12345"}
{"case":"index","library":"vq","version":"0.1.0","index":"HNSW32","params":"efSearch=128","threads":1,"n":100000,"d":128,"nq":1000,"k":10,"qps":4600.0,"recall_at_1":0.99,"recall_10_at_10":0.985,"dataset":"syn-100k-d128-q1k-s12345"}
{"case":"kmeans","library":"vq","index":"Kmeans(k=1024)","qps":null,"recall_at_1":null,"recall_10_at_10":null}
"#;

/// Lines as peers.py prints them: a meta row (skipped) and an IVF sweep.
const FAISS_LINES: &str = r#"{"case": "meta", "dataset": "syn-100k-d128-q1k-s12345", "n": 100000, "d": 128, "nq": 1000, "k": 10, "threads": 1}
{"case": "ivf-flat", "dataset": "syn-100k-d128-q1k-s12345", "n": 100000, "d": 128, "nq": 1000, "k": 10, "threads": 1, "library": "faiss", "version": "1.15.1", "index": "IVF1024,Flat", "params": {"nlist": 1024}, "search_params": {"nprobe": 1}, "qps": 30500.2, "recall_at_1": 0.45, "recall_10_at_10": 0.41}
{"case": "ivf-flat", "dataset": "syn-100k-d128-q1k-s12345", "n": 100000, "d": 128, "nq": 1000, "k": 10, "threads": 1, "library": "faiss", "version": "1.15.1", "index": "IVF1024,Flat", "params": {"nlist": 1024}, "search_params": {"nprobe": 4}, "qps": 9800.0, "recall_at_1": 0.74, "recall_10_at_10": 0.71}
{"case": "ivf-flat", "dataset": "syn-100k-d128-q1k-s12345", "n": 100000, "d": 128, "nq": 1000, "k": 10, "threads": 1, "library": "faiss", "version": "1.15.1", "index": "IVF1024,Flat", "params": {"nlist": 1024}, "search_params": {"nprobe": 16}, "qps": 2700.0, "recall_at_1": 0.93, "recall_10_at_10": 0.92}
{"case": "ivf-flat", "dataset": "syn-100k-d128-q1k-s12345", "n": 100000, "d": 128, "nq": 1000, "k": 10, "threads": 1, "library": "faiss", "version": "1.15.1", "index": "IVF1024,Flat", "params": {"nlist": 1024}, "search_params": {"nprobe": 64}, "qps": 760.0, "recall_at_1": 0.995, "recall_10_at_10": 0.99}
{"case": "meta_end", "dataset": "syn-100k-d128-q1k-s12345", "threads": 1}
"#;

fn inputs(dir: &Path) -> (String, String) {
    let a = dir.join("vq.jsonl");
    let b = dir.join("faiss.jsonl");
    std::fs::write(&a, VQ_LINES).unwrap();
    std::fs::write(&b, FAISS_LINES).unwrap();
    (s(&a).to_string(), s(&b).to_string())
}

#[test]
fn plot_svg_has_one_group_per_series() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = inputs(dir.path());
    let out = dir.path().join("plot.svg");
    let (code, stdout, err) = vq(&["plot", &a, &b, "--out", s(&out), "--title", "A & <B>"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.is_empty(), "plot prints nothing on stdout: {stdout}");
    assert!(!err.contains("panicked"), "{err}");
    // kmeans, meta and meta_end rows are skipped and reported once.
    assert_eq!(err.matches("skipped 3 line").count(), 1, "{err}");

    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some("800"));
    assert_eq!(root.attribute("height"), Some("600"));
    let title = root.children().find(|n| n.has_tag_name("title")).unwrap();
    assert_eq!(title.text(), Some("A & <B>"));
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .map(|n| n.attribute("data-label").unwrap())
        .collect();
    assert_eq!(labels, ["vq HNSW32", "faiss IVF1024,Flat"]);
    assert_eq!(text.matches(r#"class="series""#).count(), 2);
    // Every point of these sweeps is on its frontier: 4 markers with tooltips each.
    for g in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
    {
        let markers = g
            .children()
            .filter(|n| n.is_element() && !n.has_tag_name("polyline") && !n.has_tag_name("title"))
            .count();
        assert_eq!(markers, 4, "{:?}", g.attribute("data-label"));
    }
    assert!(text.contains("Recall (10-R@10)"));
    assert!(text.contains("Queries per second (log scale)"));
    // The same chart parses for resvg too.
    resvg::usvg::Tree::from_str(&text, &resvg::usvg::Options::default()).unwrap();
}

#[test]
fn plot_splits_series_by_threads_and_uses_recall_at_1() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    let mut lines = String::new();
    for (t, qps) in [(1, 1000.0), (2, 1900.0)] {
        for (r, f) in [(0.5, 4.0), (0.8, 2.0), (0.95, 1.0)] {
            lines.push_str(&format!(
                "{{\"library\":\"vq\",\"index\":\"IVF64,Flat\",\"threads\":{t},\"k\":1,\"qps\":{},\"recall_at_1\":{r},\"recall_10_at_10\":null}}\n",
                qps * f
            ));
        }
    }
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("t.svg");
    let (code, _, err) = vq(&["plot", s(&input), "--out", s(&out), "--all-points"]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .map(|n| n.attribute("data-label").unwrap())
        .collect();
    assert_eq!(
        labels,
        ["vq IVF64,Flat (1 thread)", "vq IVF64,Flat (2 threads)"]
    );
    assert!(text.contains("Recall (1-R@1)"));
}

#[test]
fn plot_png_has_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = inputs(dir.path());
    let out = dir.path().join("plot.png");
    let (code, _, err) = vq(&[
        "plot",
        &a,
        &b,
        "--out",
        s(&out),
        "--width",
        "640",
        "--height",
        "480",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let png = std::fs::read(&out).unwrap();
    assert!(png.len() > 24);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), (640, 480));
}

fn assert_one_line_error(code: i32, err: &str) {
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
}

#[test]
fn plot_bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = inputs(dir.path());
    let out = dir.path().join("x.svg");

    // A line that is not JSON: the error names file:line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"qps\": 1, \"recall_at_1\": 0.5}\n\nnot json\n").unwrap();
    let (code, _, err) = vq(&["plot", &a, s(&bad), "--out", s(&out)]);
    assert_one_line_error(code, &err);
    assert!(err.contains(&format!("{}:3", bad.display())), "{err}");
    assert!(!out.exists());

    // No plottable point.
    let empty = dir.path().join("meta.jsonl");
    std::fs::write(
        &empty,
        "{\"case\":\"meta\"}\n{\"case\":\"kmeans\",\"qps\":null}\n",
    )
    .unwrap();
    let (code, _, err) = vq(&["plot", s(&empty), "--out", s(&out)]);
    assert_one_line_error(code, &err);
    assert!(err.contains("no plottable point"), "{err}");

    // An explicit recall field that no line has.
    let (code, _, err) = vq(&["plot", &a, "--out", s(&out), "--x", "recall_at_1"]);
    assert_eq!(code, 0, "{err}");
    let only_r10 = dir.path().join("r10.jsonl");
    std::fs::write(&only_r10, "{\"qps\": 10, \"recall_10_at_10\": 0.5}\n").unwrap();
    let (code, _, err) = vq(&["plot", s(&only_r10), "--out", s(&out), "--x", "recall_at_1"]);
    assert_one_line_error(code, &err);

    // Unsupported output format.
    let jpg = dir.path().join("x.jpg");
    let (code, _, err) = vq(&["plot", &a, "--out", s(&jpg)]);
    assert_one_line_error(code, &err);
    assert!(err.contains(".svg or .png"), "{err}");
    assert!(!jpg.exists());

    // A missing input file: the error names it.
    let missing = dir.path().join("missing.jsonl");
    let (code, _, err) = vq(&["plot", s(&missing), "--out", s(&out)]);
    assert_one_line_error(code, &err);
    assert!(err.contains("missing.jsonl"), "{err}");

    // An output folder that does not exist: the error names the path.
    let nowhere = dir.path().join("no/such/dir/x.svg");
    let (code, _, err) = vq(&["plot", &a, "--out", s(&nowhere)]);
    assert_one_line_error(code, &err);
    assert!(err.contains("no/such/dir/x.svg"), "{err}");
}

#[test]
fn plot_survives_extreme_and_degenerate_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.jsonl");
    // One point only, an extreme QPS range, a recall outside [0, 1] (skipped), equal points.
    std::fs::write(
        &input,
        concat!(
            r#"{"library":"a","index":"X","qps":1e-300,"recall_10_at_10":0.5}"#,
            "\n",
            r#"{"library":"a","index":"X","qps":1e300,"recall_10_at_10":0.6}"#,
            "\n",
            r#"{"library":"b","index":"Y","qps":5.0,"recall_10_at_10":1e300}"#,
            "\n",
            r#"{"library":"c","index":"Z","qps":7.0,"recall_10_at_10":0.9}"#,
            "\n",
            r#"{"library":"c","index":"Z","qps":7.0,"recall_10_at_10":0.9}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("odd.svg");
    let (code, _, err) = vq(&["plot", s(&input), "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let svg = std::fs::read_to_string(&out).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(
        svg.matches(r#"class="series""#).count(),
        2,
        "a and c; b skipped"
    );
}

/// Range-search lines (`vq bench --radius`) plot on range recall, chosen when no line has
/// a k-NN recall, and their radius shows beside the parameters.
#[test]
fn plot_range_lines_use_range_recall() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("r.jsonl");
    let mut lines = String::new();
    for (nprobe, rr, qps) in [(1, 0.6, 9000.0), (4, 0.9, 4000.0), (16, 0.99, 1500.0)] {
        lines.push_str(&format!(
            "{{\"library\":\"vq\",\"index\":\"IVF64,Flat\",\"threads\":2,\"params\":\"nprobe={nprobe}\",\"radius\":16.0,\"qps\":{qps},\"range_recall\":{rr},\"range_precision\":1.0}}\n"
        ));
    }
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("r.svg");
    let (code, _, err) = vq(&["plot", s(&input), "--out", s(&out), "--all-points"]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("Range recall"), "the axis title");
    assert!(text.contains("nprobe=4, radius=16"), "a point's note");
    // Two radii: one series each (one radius's frontier would hide the other's points).
    let mut two = std::fs::read_to_string(&input).unwrap();
    for (nprobe, rr, qps) in [(1, 0.4, 8000.0), (4, 0.7, 3500.0)] {
        two.push_str(&format!(
            "{{\"library\":\"vq\",\"index\":\"IVF64,Flat\",\"threads\":2,\"params\":\"nprobe={nprobe}\",\"radius\":\"inf\",\"qps\":{qps},\"range_recall\":{rr}}}\n"
        ));
    }
    std::fs::write(&input, two).unwrap();
    let (code, _, err) = vq(&["plot", s(&input), "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .map(|n| n.attribute("data-label").unwrap())
        .collect();
    assert_eq!(
        labels,
        ["vq IVF64,Flat (radius=16)", "vq IVF64,Flat (radius=inf)"]
    );
    // Asked for a k-NN recall, the same lines have nothing to plot.
    let (code, _, err) = vq(&["plot", s(&input), "--out", s(&out), "--x", "recall_at_1"]);
    assert_eq!(code, 1, "{err}");
}
