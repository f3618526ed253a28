//! `vq plot`: recall-vs-QPS charts in the style of ann-benchmarks, from the JSON lines
//! of `vq bench`, `vq tune` and the Python peers harness.
//!
//! The SVG is written by hand; a PNG is that same SVG rendered with resvg.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// The recall drawn on the x axis.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecallField {
    /// 10-recall@10: the share of the 10 true neighbours among the 10 found.
    #[value(name = "recall_10_at_10")]
    Recall10At10,
    /// 1-recall@1: the share of queries whose first result is the true nearest.
    #[value(name = "recall_at_1")]
    RecallAt1,
    /// Range recall (`--radius` lines): the share of the exact range hits found.
    #[value(name = "range_recall")]
    RangeRecall,
}

impl RecallField {
    /// The JSON field holding this recall.
    fn key(self) -> &'static str {
        match self {
            RecallField::Recall10At10 => "recall_10_at_10",
            RecallField::RecallAt1 => "recall_at_1",
            RecallField::RangeRecall => "range_recall",
        }
    }

    /// The x axis title.
    fn axis_title(self) -> &'static str {
        match self {
            RecallField::Recall10At10 => "Recall (10-R@10)",
            RecallField::RecallAt1 => "Recall (1-R@1)",
            RecallField::RangeRecall => "Range recall",
        }
    }
}

/// Arguments of `vq plot`.
#[derive(Args, Debug)]
pub(crate) struct PlotArgs {
    /// Files of JSON lines from `vq bench`, `vq tune` or peers.py.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The chart to write: `*.svg` or `*.png`.
    #[arg(short, long)]
    out: PathBuf,
    /// Recall on the x axis (default: `recall_10_at_10` if any line has it, else
    /// `recall_at_1` if any has it, else `range_recall`).
    #[arg(long, value_enum)]
    x: Option<RecallField>,
    /// Chart title (default: the dataset name(s), k and the thread count if common).
    #[arg(long)]
    title: Option<String>,
    /// Width in pixels.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(200..=10_000))]
    width: u32,
    /// Height in pixels.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(150..=10_000))]
    height: u32,
    /// Also draw every measured point (small crosses), not only each series' Pareto
    /// frontier (as ann-benchmarks' `--raw`).
    #[arg(long)]
    all_points: bool,
}

/// One measured setting: a recall and its throughput.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    /// Recall (the x value).
    pub(crate) recall: f64,
    /// Queries per second (the y value, > 0).
    pub(crate) qps: f64,
    /// The search parameters, shown as a tooltip in the SVG.
    pub(crate) note: String,
}

/// A named curve: one (library, index[, threads][, dataset]).
#[derive(Clone, Debug)]
pub(crate) struct Series {
    /// Legend label.
    pub(crate) label: String,
    /// Its points, in input order.
    pub(crate) points: Vec<Point>,
}

/// What the chart looks like, besides its data.
#[derive(Clone, Debug)]
pub(crate) struct PlotOptions {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// Chart title.
    pub(crate) title: String,
    /// x axis title.
    pub(crate) x_title: String,
    /// Draw every point besides the frontiers.
    pub(crate) all_points: bool,
}

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

/// One input line with a numeric `qps`.
#[derive(Debug)]
struct Row {
    library: String,
    index: String,
    threads: Option<u64>,
    mode: Option<String>,
    dataset: Option<String>,
    k: Option<u64>,
    qps: f64,
    recall_at_1: Option<f64>,
    recall_10_at_10: Option<f64>,
    range_recall: Option<f64>,
    /// The radius of a range-search line.
    radius: Option<f64>,
    note: String,
}

impl Row {
    fn recall(&self, f: RecallField) -> Option<f64> {
        match f {
            RecallField::Recall10At10 => self.recall_10_at_10,
            RecallField::RecallAt1 => self.recall_at_1,
            RecallField::RangeRecall => self.range_recall,
        }
    }
}

/// Runs `vq plot`.
pub(crate) fn run(a: &PlotArgs) -> Result<()> {
    let format = output_format(&a.out)?;
    let mut skipped = 0usize;
    let mut rows = Vec::new();
    for path in &a.files {
        skipped += read_rows(path, &mut rows)?;
    }
    let field = match a.x {
        Some(f) => f,
        None if rows.iter().any(|r| r.recall_10_at_10.is_some()) => RecallField::Recall10At10,
        None if rows.iter().all(|r| r.recall_at_1.is_none())
            && rows.iter().any(|r| r.range_recall.is_some()) =>
        {
            RecallField::RangeRecall
        }
        None => RecallField::RecallAt1,
    };
    let before = rows.len();
    rows.retain(|r| r.recall(field).is_some());
    skipped += before - rows.len();
    if skipped > 0 {
        crate::progress::note(format!(
            "vq plot: skipped {skipped} line(s) without a numeric qps and {} (meta, k-means, ...)",
            field.key()
        ));
    }
    if rows.is_empty() {
        bail!(
            "no plottable point in {}: no line has a positive numeric qps and a numeric {}",
            a.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            field.key()
        );
    }
    let series = group(&rows, field);
    let opts = PlotOptions {
        width: a.width,
        height: a.height,
        title: a.title.clone().unwrap_or_else(|| default_title(&rows)),
        x_title: field.axis_title().to_string(),
        all_points: a.all_points,
    };
    let svg = render_svg(&series, &opts);
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => render_png(&svg, a.width, a.height)?,
    };
    write_file(&a.out, &bytes)
}

fn output_format(out: &Path) -> Result<Format> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => Ok(Format::Svg),
        Some("png") => Ok(Format::Png),
        _ => bail!(
            "--out {}: the file name must end in .svg or .png",
            out.display()
        ),
    }
}

/// Appends the rows of `path` with a positive numeric `qps`; returns how many JSON
/// lines were skipped for lacking one.
fn read_rows(path: &Path, rows: &mut Vec<Row>) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", path.display(), i + 1))?;
        match parse_row(&v) {
            Some(r) => rows.push(r),
            None => skipped += 1,
        }
    }
    Ok(skipped)
}

fn parse_row(v: &Value) -> Option<Row> {
    let o = v.as_object()?;
    let qps = o
        .get("qps")?
        .as_f64()
        .filter(|q| q.is_finite() && *q > 0.0)?;
    let num = |k: &str| o.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
    let text = |k: &str| match o.get(k) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let library = text("library").unwrap_or_else(|| "?".to_string());
    let index = text("index")
        .or_else(|| text("case"))
        .unwrap_or_else(|| "?".to_string());
    // peers.py keeps build parameters in `params` and search parameters apart.
    let mut note = [text("search_params"), text("params")]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty() && s != "{}")
        .unwrap_or_default();
    // `vq bench` writes an infinite radius as "inf" / "-inf".
    let radius = num("radius").or_else(|| text("radius").and_then(|t| t.parse::<f64>().ok()));
    if let Some(r) = radius {
        if !note.is_empty() {
            note.push_str(", ");
        }
        note.push_str(&format!("radius={r}"));
    }
    Some(Row {
        library,
        index,
        threads: o.get("threads").and_then(Value::as_u64),
        mode: text("mode"),
        dataset: text("dataset"),
        k: o.get("k").and_then(Value::as_u64),
        qps,
        // A recall outside [0, 1] is not one (and would stretch the axis without bound).
        recall_at_1: num("recall_at_1").filter(|r| (0.0..=1.0).contains(r)),
        recall_10_at_10: num("recall_10_at_10").filter(|r| (0.0..=1.0).contains(r)),
        range_recall: num("range_recall").filter(|r| (0.0..=1.0).contains(r)),
        radius,
        note,
    })
}

/// Distinct values in first-appearance order.
fn distinct<T: PartialEq + Clone>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// The distinct thread counts, search modes and radii seen for each (library, index).
type Variants<'a> =
    HashMap<(&'a str, &'a str), (Vec<Option<u64>>, Vec<Option<&'a str>>, Vec<Option<f64>>)>;

/// One series per (library, index), split by thread count, search mode, radius (range
/// search) and dataset where those vary; first-appearance order.
fn group(rows: &[Row], field: RecallField) -> Vec<Series> {
    let datasets = distinct(rows.iter().filter_map(|r| r.dataset.clone()));
    let several_datasets = datasets.len() > 1;
    // (library, index) -> distinct threads / modes.
    let mut variants: Variants<'_> = HashMap::new();
    for r in rows {
        let e = variants.entry((&r.library, &r.index)).or_default();
        if !e.0.contains(&r.threads) {
            e.0.push(r.threads);
        }
        if !e.1.contains(&r.mode.as_deref()) {
            e.1.push(r.mode.as_deref());
        }
        if !e.2.contains(&r.radius) {
            e.2.push(r.radius);
        }
    }
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let (threads, modes, radii) = &variants[&(r.library.as_str(), r.index.as_str())];
        let mut label = base_label(&r.library, &r.index);
        let mut extra = Vec::new();
        if threads.len() > 1 {
            extra.push(match r.threads {
                Some(1) => "1 thread".to_string(),
                Some(t) => format!("{t} threads"),
                None => "threads ?".to_string(),
            });
        }
        if modes.len() > 1 {
            extra.push(r.mode.clone().unwrap_or_else(|| "mode ?".to_string()));
        }
        if radii.len() > 1 {
            extra.push(
                r.radius
                    .map_or_else(|| "k-NN".to_string(), |v| format!("radius={v}")),
            );
        }
        if !extra.is_empty() {
            let _ = write!(label, " ({})", extra.join(", "));
        }
        if several_datasets {
            let _ = write!(label, " [{}]", r.dataset.as_deref().unwrap_or("?"));
        }
        let point = Point {
            recall: r.recall(field).unwrap_or(0.0),
            qps: r.qps,
            note: r.note.clone(),
        };
        match index_of.get(&label) {
            Some(&i) => out[i].points.push(point),
            None => {
                index_of.insert(label.clone(), out.len());
                out.push(Series {
                    label,
                    points: vec![point],
                });
            }
        }
    }
    out
}

/// "library index", or the index alone where it already starts with the library
/// (peers.py's "hnswlib HNSW M=32").
fn base_label(library: &str, index: &str) -> String {
    let lib = library.to_lowercase();
    let idx = index.to_lowercase();
    if idx == lib || idx.starts_with(&format!("{lib} ")) {
        index.to_string()
    } else {
        format!("{library} {index}")
    }
}

fn default_title(rows: &[Row]) -> String {
    let datasets = distinct(rows.iter().filter_map(|r| r.dataset.clone()));
    let ks = distinct(rows.iter().map(|r| r.k));
    let threads = distinct(rows.iter().map(|r| r.threads));
    let mut title = if datasets.is_empty() {
        "Recall vs. QPS".to_string()
    } else {
        datasets.join(", ")
    };
    let mut extra = Vec::new();
    if let [Some(k)] = ks[..] {
        extra.push(format!("k={k}"));
    }
    if let [Some(t)] = threads[..] {
        extra.push(if t == 1 {
            "1 thread".to_string()
        } else {
            format!("{t} threads")
        });
    }
    if !extra.is_empty() {
        let _ = write!(title, " ({})", extra.join(", "));
    }
    title
}

/// Indices of the Pareto frontier of `points` (ann-benchmarks: by recall descending,
/// keep a point whose QPS beats every one kept so far), in ascending recall order.
fn pareto(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[b]
            .recall
            .total_cmp(&points[a].recall)
            .then(points[b].qps.total_cmp(&points[a].qps))
    });
    let mut best = f64::NEG_INFINITY;
    let mut keep = Vec::new();
    for i in order {
        if points[i].qps > best {
            best = points[i].qps;
            keep.push(i);
        }
    }
    keep.reverse();
    keep
}

/// Ten qualitative colours (matplotlib's tab10, as ann-benchmarks).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Dash patterns, one per round of ten colours (in units of the line width).
const DASHES: [&str; 4] = ["", "6 3", "2 2", "8 3 2 3"];

#[derive(Clone, Copy, Debug)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
];

/// Colour, marker and dash of series `i`: the colours cycle every ten series, the
/// marker shape and the dash change with each round.
fn style(i: usize) -> (&'static str, Marker, &'static str) {
    let round = i / PALETTE.len();
    (
        PALETTE[i % PALETTE.len()],
        MARKERS[(i + round) % MARKERS.len()],
        DASHES[round % DASHES.len()],
    )
}

/// A number with at most two decimals, trailing zeros trimmed.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// XML text/attribute escaping; control characters XML forbids become spaces.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max` characters, with an ellipsis where cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A QPS tick label: 500, 2k, 10k, 1.5M.
fn qps_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", num(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", num(v / 1e3))
    } else if v >= 1.0 {
        num(v)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Approximate advance of one character of a sans-serif font, in font sizes.
const CHAR_W: f64 = 0.6;

/// The chart as an SVG document.
pub(crate) fn render_svg(series: &[Series], opts: &PlotOptions) -> String {
    let (w, h) = (f64::from(opts.width), f64::from(opts.height));
    // Fonts and margins grow with the image.
    let s = (w.min(h * 4.0 / 3.0) / 800.0).clamp(0.7, 3.0);
    let fs = 12.0 * s;

    // The points drawn: frontiers (as indices), and every point with --all-points.
    let fronts: Vec<Vec<usize>> = series.iter().map(|se| pareto(&se.points)).collect();
    let shown = series.iter().zip(&fronts).flat_map(|(se, f)| {
        let all: Box<dyn Iterator<Item = &Point>> = if opts.all_points {
            Box::new(se.points.iter())
        } else {
            Box::new(f.iter().map(|&i| &se.points[i]))
        };
        all
    });
    let (mut rmin, mut rmax, mut qmin, mut qmax) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in shown {
        rmin = rmin.min(p.recall);
        rmax = rmax.max(p.recall);
        qmin = qmin.min(p.qps);
        qmax = qmax.max(p.qps);
    }
    if !rmin.is_finite() {
        (rmin, rmax, qmin, qmax) = (0.0, 1.0, 1.0, 10.0);
    }

    // x: linear, from a tenth below the lowest recall (>= 0) to 1.
    let xhi = if rmax > 1.0 {
        (rmax * 10.0).ceil() / 10.0
    } else {
        1.0
    };
    let mut xlo = (((rmin - 0.01) * 10.0).floor() / 10.0).max(0.0);
    if xhi - xlo < 0.1 {
        xlo = (xhi - 0.1).max(0.0);
    }
    let xspan = xhi - xlo;
    let (xstep, xdec) = if xspan <= 0.2 {
        (0.02, 2)
    } else if xspan <= 0.5 {
        (0.05, 2)
    } else {
        (0.1, 1)
    };
    let xticks: Vec<f64> = ((xlo / xstep - 1e-6).ceil() as i64
        ..=(xhi / xstep + 1e-6).floor() as i64)
        .map(|i| i as f64 * xstep)
        .collect();

    // y: log10 of QPS, padded, at least one decade.
    let (mut ylo, mut yhi) = (qmin.log10(), qmax.log10());
    if yhi - ylo < 1.0 {
        let mid = (ylo + yhi) / 2.0;
        (ylo, yhi) = (mid - 0.5, mid + 0.5);
    }
    let pad = 0.05 * (yhi - ylo);
    (ylo, yhi) = (ylo - pad, yhi + pad);
    // 2× and 5× are labelled too under two decades, or where fewer than three powers of
    // ten fall inside the range (250 to 70k: 1k and 10k alone say little).
    let powers = ((yhi + 1e-9).floor() - (ylo - 1e-9).ceil() + 1.0).max(0.0);
    let few_decades = yhi - ylo < 2.0 || powers < 3.0;
    let mut yticks = Vec::new(); // (log10 value, labelled)
    for e in (ylo.floor() as i64)..=(yhi.ceil() as i64) {
        for m in 1..10 {
            let l = (f64::from(m)).log10() + e as f64;
            if l < ylo - 1e-9 || l > yhi + 1e-9 {
                continue;
            }
            let labelled = m == 1 || (few_decades && (m == 2 || m == 5));
            if labelled || yhi - ylo <= 6.0 {
                yticks.push((l, labelled));
            }
        }
    }
    let ylabels: Vec<String> = yticks
        .iter()
        .filter(|t| t.1)
        .map(|&(l, _)| qps_label(10f64.powf(l)))
        .collect();
    let ylabel_chars = ylabels.iter().map(|l| l.chars().count()).max().unwrap_or(1);

    // Layout: title on top, y labels left, legend outside on the right.
    let title_fs = (16.0 * s).min((w - 20.0) / (CHAR_W * opts.title.chars().count().max(1) as f64));
    let top = 26.0 * s + title_fs;
    let bottom = 50.0 * s;
    let left = 22.0 * s + ylabel_chars as f64 * CHAR_W * fs + 10.0 * s;
    let legend_sample = 30.0 * s;
    let label_chars = series
        .iter()
        .map(|se| se.label.chars().count())
        .max()
        .unwrap_or(1);
    let legend_w_max = 0.38 * w;
    let legend_w = (legend_sample + label_chars as f64 * CHAR_W * fs + 8.0 * s).min(legend_w_max);
    let max_label_chars = ((legend_w - legend_sample - 8.0 * s) / (CHAR_W * fs))
        .floor()
        .max(4.0) as usize;
    let right = legend_w + 18.0 * s;
    let (px, py) = (left, top);
    let pw = (w - left - right).max(10.0);
    let ph = (h - top - bottom).max(10.0);
    let x_of = |r: f64| px + (r - xlo) / (xhi - xlo) * pw;
    let y_of = |q: f64| py + ph - (q.log10() - ylo) / (yhi - ylo) * ph;

    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" font-family="DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif" font-size="{}">"#,
        opts.width,
        opts.height,
        opts.width,
        opts.height,
        num(fs)
    );
    let _ = writeln!(o, "<title>{}</title>", esc(&opts.title));
    let _ = writeln!(
        o,
        r#"<rect width="{}" height="{}" fill="white"/>"#,
        opts.width, opts.height
    );
    let _ = writeln!(
        o,
        r#"<text class="title" x="{}" y="{}" text-anchor="middle" font-size="{}" font-weight="bold">{}</text>"#,
        num(w / 2.0),
        num(10.0 * s + title_fs),
        num(title_fs),
        esc(&opts.title)
    );

    // Grid.
    let _ = writeln!(o, r#"<g class="grid" fill="none">"#);
    for &x in &xticks {
        let xx = num(x_of(x));
        let _ = writeln!(
            o,
            r##"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="#dddddd" stroke-width="{}"/>"##,
            num(py),
            num(py + ph),
            num(s)
        );
    }
    for &(l, labelled) in &yticks {
        let yy = num(y_of(10f64.powf(l)));
        let (colour, width) = if labelled {
            ("#cccccc", s)
        } else {
            ("#eeeeee", 0.8 * s)
        };
        let _ = writeln!(
            o,
            r#"<line x1="{}" y1="{yy}" x2="{}" y2="{yy}" stroke="{colour}" stroke-width="{}"/>"#,
            num(px),
            num(px + pw),
            num(width)
        );
    }
    let _ = writeln!(o, "</g>");

    // Axes, ticks, labels, titles.
    let _ = writeln!(o, r##"<g class="axes" fill="#222222">"##);
    let _ = writeln!(
        o,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444444" stroke-width="{}"/>"##,
        num(px),
        num(py),
        num(pw),
        num(ph),
        num(s)
    );
    let tick = 5.0 * s;
    for &x in &xticks {
        let xx = num(x_of(x));
        let _ = writeln!(
            o,
            r##"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="#444444" stroke-width="{}"/>"##,
            num(py + ph),
            num(py + ph + tick),
            num(s)
        );
        let _ = writeln!(
            o,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{:.*}</text>"#,
            num(py + ph + tick + fs * 1.05),
            xdec,
            x
        );
    }
    let mut labels = ylabels.iter();
    for &(l, labelled) in &yticks {
        let yy = y_of(10f64.powf(l));
        let len = if labelled { tick } else { tick * 0.6 };
        let _ = writeln!(
            o,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#444444" stroke-width="{}"/>"##,
            num(px - len),
            num(yy),
            num(px),
            num(yy),
            num(s)
        );
        if labelled && let Some(text) = labels.next() {
            let _ = writeln!(
                o,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                num(px - tick - 3.0 * s),
                num(yy + fs * 0.35),
                esc(text)
            );
        }
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="{}">{}</text>"#,
        num(px + pw / 2.0),
        num(h - 12.0 * s),
        num(fs * 1.1),
        esc(&opts.x_title)
    );
    let (yx, yy) = (14.0 * s, py + ph / 2.0);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="{}" transform="rotate(-90 {} {})">Queries per second (log scale)</text>"#,
        num(yx),
        num(yy),
        num(fs * 1.1),
        num(yx),
        num(yy)
    );
    let _ = writeln!(o, "</g>");

    // Series.
    let lw = 1.6 * s;
    let mr = 3.6 * s;
    for (i, (se, front)) in series.iter().zip(&fronts).enumerate() {
        let (colour, marker, dash) = style(i);
        let _ = writeln!(
            o,
            r#"<g class="series" data-label="{}" stroke="{colour}" fill="{colour}">"#,
            esc(&se.label)
        );
        let _ = writeln!(o, "<title>{}</title>", esc(&se.label));
        if opts.all_points {
            for (j, p) in se.points.iter().enumerate() {
                if front.contains(&j) {
                    continue;
                }
                let (x, y) = (x_of(p.recall), y_of(p.qps));
                let d = 0.8 * mr;
                let _ = writeln!(
                    o,
                    r#"<path class="raw" d="M{} {}H{}M{} {}V{}" fill="none" stroke-width="{}" opacity="0.6"><title>{}</title></path>"#,
                    num(x - d),
                    num(y),
                    num(x + d),
                    num(x),
                    num(y - d),
                    num(y + d),
                    num(0.9 * s),
                    esc(&point_tip(&se.label, p))
                );
            }
        }
        if front.len() > 1 {
            let pts: Vec<String> = front
                .iter()
                .map(|&j| {
                    format!(
                        "{},{}",
                        num(x_of(se.points[j].recall)),
                        num(y_of(se.points[j].qps))
                    )
                })
                .collect();
            let _ = write!(
                o,
                r#"<polyline points="{}" fill="none" stroke-width="{}" stroke-linejoin="round""#,
                pts.join(" "),
                num(lw)
            );
            if !dash.is_empty() {
                let d: Vec<String> = dash
                    .split(' ')
                    .map(|v| num(v.parse::<f64>().unwrap_or(1.0) * lw))
                    .collect();
                let _ = write!(o, r#" stroke-dasharray="{}""#, d.join(" "));
            }
            let _ = writeln!(o, "/>");
        }
        for &j in front {
            let p = &se.points[j];
            marker_svg(
                &mut o,
                marker,
                x_of(p.recall),
                y_of(p.qps),
                mr,
                s,
                Some(&point_tip(&se.label, p)),
            );
        }
        let _ = writeln!(o, "</g>");
    }

    // Legend, outside the plot on the right.
    let n = series.len();
    let mut row_h = 18.0 * s;
    let mut lfs = fs;
    if n as f64 * row_h > ph {
        row_h = (ph / n as f64).max(10.0 * s);
        lfs = fs.min(row_h * 0.8);
    }
    let max_rows = ((ph / row_h).floor() as usize).max(1);
    let (listed, more) = if n > max_rows {
        (max_rows - 1, n - (max_rows - 1))
    } else {
        (n, 0)
    };
    let lx = px + pw + 14.0 * s;
    let _ = writeln!(o, r#"<g class="legend" font-size="{}">"#, num(lfs));
    for (i, se) in series.iter().enumerate().take(listed) {
        let (colour, marker, dash) = style(i);
        let cy = py + row_h * (i as f64 + 0.5);
        let _ = write!(
            o,
            r#"<g class="legend-entry" stroke="{colour}" fill="{colour}"><line x1="{}" y1="{}" x2="{}" y2="{}" stroke-width="{}""#,
            num(lx),
            num(cy),
            num(lx + legend_sample - 6.0 * s),
            num(cy),
            num(lw)
        );
        if !dash.is_empty() {
            let d: Vec<String> = dash
                .split(' ')
                .map(|v| num(v.parse::<f64>().unwrap_or(1.0) * lw * 0.6))
                .collect();
            let _ = write!(o, r#" stroke-dasharray="{}""#, d.join(" "));
        }
        let _ = writeln!(o, "/>");
        marker_svg(
            &mut o,
            marker,
            lx + (legend_sample - 6.0 * s) / 2.0,
            cy,
            mr,
            s,
            None,
        );
        let shown = truncate(&se.label, max_label_chars);
        let _ = write!(
            o,
            r##"<text x="{}" y="{}" fill="#222222" stroke="none">{}"##,
            num(lx + legend_sample),
            num(cy + lfs * 0.35),
            esc(&shown)
        );
        if shown != se.label {
            let _ = write!(o, "<title>{}</title>", esc(&se.label));
        }
        let _ = writeln!(o, "</text></g>");
    }
    if more > 0 {
        let cy = py + row_h * (listed as f64 + 0.5);
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" fill="#222222">… and {more} more</text>"##,
            num(lx + legend_sample),
            num(cy + lfs * 0.35)
        );
    }
    let _ = writeln!(o, "</g>");
    let _ = writeln!(o, "</svg>");
    o
}

fn point_tip(label: &str, p: &Point) -> String {
    let mut t = format!("{label}: recall {:.4}, {} QPS", p.recall, qps_label(p.qps));
    if !p.note.is_empty() {
        let _ = write!(t, ", {}", p.note);
    }
    t
}

/// One marker centred on (x, y), radius `r`, with a thin white outline.
fn marker_svg(o: &mut String, m: Marker, x: f64, y: f64, r: f64, s: f64, tip: Option<&str>) {
    let common = format!(r#"stroke="white" stroke-width="{}""#, num(0.6 * s));
    let body = match m {
        Marker::Circle => {
            format!(
                r#"<circle cx="{}" cy="{}" r="{}" {common}"#,
                num(x),
                num(y),
                num(r)
            )
        }
        Marker::Square => {
            let a = 0.9 * r;
            format!(
                r#"<rect x="{}" y="{}" width="{}" height="{}" {common}"#,
                num(x - a),
                num(y - a),
                num(2.0 * a),
                num(2.0 * a)
            )
        }
        Marker::TriangleUp | Marker::TriangleDown => {
            let sign = if matches!(m, Marker::TriangleUp) {
                1.0
            } else {
                -1.0
            };
            let a = 1.15 * r;
            format!(
                r#"<path d="M{} {}L{} {}L{} {}Z" {common}"#,
                num(x),
                num(y - sign * a),
                num(x + a),
                num(y + sign * 0.7 * a),
                num(x - a),
                num(y + sign * 0.7 * a)
            )
        }
        Marker::Diamond => {
            let a = 1.3 * r;
            format!(
                r#"<path d="M{} {}L{} {}L{} {}L{} {}Z" {common}"#,
                num(x),
                num(y - a),
                num(x + 0.8 * a),
                num(y),
                num(x),
                num(y + a),
                num(x - 0.8 * a),
                num(y)
            )
        }
    };
    o.push_str(&body);
    match tip {
        Some(t) => {
            let _ = writeln!(o, "><title>{}</title>{}", esc(t), closing(m));
        }
        None => {
            let _ = writeln!(o, "/>");
        }
    }
}

fn closing(m: Marker) -> &'static str {
    match m {
        Marker::Circle => "</circle>",
        Marker::Square => "</rect>",
        Marker::TriangleUp | Marker::TriangleDown | Marker::Diamond => "</path>",
    }
}

/// Renders the SVG to PNG bytes with resvg, using the system's fonts.
fn render_png(svg: &str, width: u32, height: u32) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    let preferred = [
        "DejaVu Sans",
        "Liberation Sans",
        "Arial",
        "Helvetica",
        "Noto Sans",
    ];
    let family = preferred
        .iter()
        .find(|f| {
            db.faces()
                .any(|face| face.families.iter().any(|(n, _)| n == *f))
        })
        .map(|f| (*f).to_string())
        .or_else(|| {
            db.faces()
                .find_map(|face| face.families.first().map(|(n, _)| n.clone()))
        });
    match family {
        Some(f) => {
            // Generic families (and usvg's serif fallback) resolve to a font that exists.
            db.set_sans_serif_family(f.clone());
            db.set_serif_family(f.clone());
            opt.font_family = f;
        }
        None => crate::progress::note(
            "vq plot: warning: no system font found; the PNG has no text labels (an .svg output has them)",
        ),
    }
    let tree = usvg::Tree::from_str(svg, &opt).context("cannot parse the generated SVG")?;
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .with_context(|| format!("cannot allocate a {width}x{height} image"))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().context("cannot encode the PNG")
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let res = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}
