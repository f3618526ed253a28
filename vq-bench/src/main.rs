#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// The tool's output is its JSON lines on stdout.
#![allow(clippy::print_stdout)]

mod bench;
mod cli;
mod dataset;
mod formats;
mod gt;
mod kmeans;
mod plot;
mod progress;
mod tune;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// vq: build, search and measure vector indexes.
#[derive(Parser, Debug)]
#[command(name = "vq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bars and no notes on stderr (errors are still printed).
    #[arg(long, global = true)]
    quiet: bool,
    /// Results as JSON lines even on a terminal (the default when stdout is a pipe or a
    /// file); on a terminal the default is a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an index from a factory string, search it, print one JSON line per
    /// `--params` setting (timings, recall, memory).
    Bench(bench::BenchArgs),
    /// Train k-means on the base vectors; print one JSON line (time, objective,
    /// full-base MSE, imbalance, per-iteration objectives).
    Kmeans(kmeans::KmeansArgs),
    /// Write a synthetic dataset as texmex files (base, query, learn, ground truth), so
    /// other tools (Faiss's harness) read the very same bytes.
    Generate(bench::GenerateArgs),
    /// Print the canonical form of a factory string and a tree of what it builds (or
    /// the error, with a marker under the offending token, and a non-zero exit).
    Describe(cli::DescribeArgs),
    /// Build an index from a factory string (train, add) and save it to a file.
    Build(cli::BuildArgs),
    /// Load a saved index (read or memory-mapped), search it, print one JSON line;
    /// optionally write the result ids as `.ivecs`.
    Search(cli::SearchArgs),
    /// What a saved index holds (string, sizes, training state), as one JSON line.
    Info(cli::InfoArgs),
    /// Convert an index between Faiss's file format and the vq container (either way;
    /// the input's format is detected).
    Convert(cli::ConvertArgs),
    /// Explore a pipeline's search parameters (nprobe, efSearch, k_factor_rf, …) and
    /// print the Pareto-optimal settings for a recall criterion; optionally the fastest
    /// one that reaches a target.
    Tune(tune::TuneArgs),
    /// Exact ground truth of a dataset: ids as `.ivecs`, distances as `.fvecs`.
    Gt(gt::GtArgs),
    /// Draw recall-vs-QPS curves (SVG or PNG) from `vq bench`/`vq tune`/peers.py JSON lines.
    Plot(plot::PlotArgs),
}

fn run(cli: Cli) -> Result<ExitCode> {
    progress::configure(cli.quiet, cli.json);
    match cli.command {
        Command::Bench(a) => bench::run_bench(&a),
        Command::Generate(a) => bench::run_generate(&a),
        Command::Kmeans(a) => kmeans::run(&a),
        Command::Describe(a) => return cli::run_describe(&a),
        Command::Build(a) => cli::run_build(&a),
        Command::Search(a) => cli::run_search(&a),
        Command::Info(a) => cli::run_info(&a),
        Command::Convert(a) => cli::run_convert(&a),
        Command::Plot(a) => plot::run(&a),
        Command::Tune(a) => tune::run(&a),
        Command::Gt(a) => gt::run(&a),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the first line of each error in the chain (a factory error's
            // second and third lines draw a marker under the token; the first names it).
            // A cause the message before it already ends with (vq-core's I/O errors
            // print their source) is not repeated.
            let mut msg: Vec<String> = Vec::new();
            for c in e.chain() {
                let line = c.to_string().lines().next().unwrap_or_default().to_string();
                if msg.last().is_none_or(|m| !m.ends_with(&line)) {
                    msg.push(line);
                }
            }
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
