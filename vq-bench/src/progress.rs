//! Progress on stderr and the choice between JSON lines and a table on stdout.
//!
//! Bars and spinners are drawn only when stderr is a terminal and `--quiet` is not
//! given; notes (one line on stderr) are silenced by `--quiet` alone. Results go to
//! stdout as JSON lines when `--json` is given or stdout is not a terminal, else as a
//! table.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the global output choices (from `--quiet` and `--json`).
pub(crate) fn configure(quiet: bool, json: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json || !std::io::stdout().is_terminal(), Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// One line on stderr, unless `--quiet`.
pub(crate) fn note(msg: impl Display) {
    if !quiet() {
        eprintln!("{msg}");
    }
}

fn target() -> ProgressDrawTarget {
    if quiet() {
        ProgressDrawTarget::hidden()
    } else {
        // Hidden by indicatif itself when stderr is not a terminal.
        ProgressDrawTarget::stderr()
    }
}

/// A bar over `len` items (vectors, queries, combinations), cleared when dropped.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), target());
    let style = ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} (eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// A spinner for a step whose length is unknown (training), cleared when dropped.
pub(crate) fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, target());
    let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Prints result rows: JSON lines, or an aligned table of chosen columns.
pub(crate) struct Report {
    columns: Vec<(&'static str, &'static str)>,
    /// Column widths, fixed by the header and the first row (a longer cell later
    /// widens only its own line).
    widths: Vec<usize>,
}

impl Report {
    /// A report whose table shows `columns` (header, JSON key).
    pub(crate) fn new(columns: Vec<(&'static str, &'static str)>) -> Report {
        Report {
            columns,
            widths: Vec::new(),
        }
    }

    /// Prints one row.
    pub(crate) fn row(&mut self, row: &Value) {
        if JSON.load(Ordering::Relaxed) {
            print_out(&format!("{row}\n"));
            return;
        }
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|(_, key)| cell(row.get(*key)))
            .collect();
        if self.widths.is_empty() {
            self.widths = self
                .columns
                .iter()
                .zip(&cells)
                .map(|((h, _), c)| h.len().max(c.len()).max(10))
                .collect();
            let head: Vec<String> = self
                .columns
                .iter()
                .zip(&self.widths)
                .map(|((h, _), w)| format!("{h:>w$}"))
                .collect();
            print_out(&format!("{}\n", head.join("  ")));
        }
        let line: Vec<String> = cells
            .iter()
            .zip(&self.widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        print_out(&format!("{}\n", line.join("  ")));
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) if f.abs() >= 100.0 => format!("{f:.0}"),
            (None, Some(f)) => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Writes `text` to stdout. A reader that has gone away (`vq bench … | head -1`) ends the
/// process quietly with success, as Unix tools do (`println!` would panic); any other
/// failure to write ends it with an error message.
#[allow(clippy::print_stderr)]
pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
