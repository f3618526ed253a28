//! Recall after removals: builds an HNSW index over a dataset, removes a fraction of the
//! ids (every id whose hash falls under the fraction, seeded), and compares recall at the
//! same `efSearch` with a fresh index built over the survivors only, both built with the
//! same level seed; repeated over `SEEDS` seeds (default 1), since one parallel build's
//! recall varies by about ±0.01. One JSON line per `efSearch`, with the means.
//!
//! ```sh
//! cargo run --release -p vq-hnsw --example deletion -- DATA M EFC FRACTION EF[,EF...] [SEEDS]
//! ```
//! `DATA` is a folder with `*base.fvecs` and `*query.fvecs` or `synthetic:N,D,NQ`.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::time::Instant;

use vq_core::{Index, IndexFlat, Label, Metric, SearchParams, SearchResults, Vectors};
use vq_hnsw::IndexHnswFlat;

fn load(spec: &str) -> vq_core::Result<(Vectors, Vectors)> {
    if spec.starts_with("synthetic:") {
        let d = vq_core::synthetic::parse_spec(spec)?.generate()?;
        return Ok((d.base, d.queries));
    }
    let mut base = None;
    let mut query = None;
    let dir = std::fs::read_dir(spec).map_err(|e| vq_core::Error::io(spec, e))?;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with("base.fvecs") {
            base = Some(vq_core::io::read_fvecs(e.path())?);
        } else if name.ends_with("query.fvecs") {
            query = Some(vq_core::io::read_fvecs(e.path())?);
        }
    }
    match (base, query) {
        (Some(b), Some(q)) => Ok((b, q)),
        _ => Err(vq_core::Error::invalid_param(
            "data",
            "needs *base.fvecs and *query.fvecs",
        )),
    }
}

/// Whether `id` is removed: a multiplicative hash below the fraction.
fn removed(id: Label, fraction: f64) -> bool {
    let h = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (h as f64 / (1u64 << 53) as f64) < fraction
}

fn recall(got: &SearchResults, want: &[Vec<Label>]) -> f64 {
    let mut hit = 0;
    for (q, w) in want.iter().enumerate() {
        let w: HashSet<_> = w.iter().collect();
        hit += got.row(q).1.iter().filter(|l| w.contains(l)).count();
    }
    hit as f64 / (10 * want.len()) as f64
}

fn main() -> vq_core::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 && a.len() != 7 {
        return Err(vq_core::Error::invalid_param(
            "arguments",
            "DATA M EFC FRACTION EF[,EF...] [SEEDS]",
        ));
    }
    let bad = |what: &str| vq_core::Error::invalid_param(what, "not a number");
    let (base, queries) = load(&a[1])?;
    let m: usize = a[2].parse().map_err(|_| bad("M"))?;
    let efc: usize = a[3].parse().map_err(|_| bad("EFC"))?;
    let fraction: f64 = a[4].parse().map_err(|_| bad("FRACTION"))?;
    let efs: Vec<usize> = a[5]
        .split(',')
        .map(|s| s.parse().map_err(|_| bad("EF")))
        .collect::<vq_core::Result<_>>()?;
    let seeds: u64 = match a.get(6) {
        Some(s) => s.parse().map_err(|_| bad("SEEDS"))?,
        None => 1,
    };
    let d = base.dim();
    let n = base.len();
    let keep: Vec<Label> = (0..n as Label).filter(|&i| !removed(i, fraction)).collect();
    let surv: Vec<f32> = keep
        .iter()
        .flat_map(|&i| base.row(i as usize).iter().copied())
        .collect();
    let surv = Vectors::new(surv, d)?;
    // Exact neighbours among the survivors, as original ids.
    let mut flat = IndexFlat::new(d, Metric::L2)?;
    flat.add(surv.as_ref())?;
    let gt = flat.search(queries.as_ref(), 10, &SearchParams::new())?;
    let gt: Vec<Vec<Label>> = (0..queries.len())
        .map(|q| gt.row(q).1.iter().map(|&j| keep[j as usize]).collect())
        .collect();

    let mut r_del = vec![0.0; efs.len()];
    let mut r_fresh = vec![0.0; efs.len()];
    let mut remove_s = 0.0;
    let mut nrem = 0;
    for seed in 0..seeds {
        let mut full = IndexHnswFlat::new(d, m, Metric::L2)?;
        full.set_ef_construction(efc)?;
        full.set_seed(12345 + seed);
        full.add(base.as_ref())?;
        let t = Instant::now();
        nrem = full.remove_ids(&|id: Label| removed(id, fraction))?;
        remove_s += t.elapsed().as_secs_f64() / seeds as f64;

        let mut fresh = IndexHnswFlat::new(d, m, Metric::L2)?;
        fresh.set_ef_construction(efc)?;
        fresh.set_seed(12345 + seed);
        fresh.add_with_ids(surv.as_ref(), &keep)?;
        for (i, &ef) in efs.iter().enumerate() {
            let p = SearchParams::new().with_ef_search(ef);
            r_del[i] += recall(&full.search(queries.as_ref(), 10, &p)?, &gt) / seeds as f64;
            r_fresh[i] += recall(&fresh.search(queries.as_ref(), 10, &p)?, &gt) / seeds as f64;
        }
    }
    for (i, ef) in efs.iter().enumerate() {
        println!(
            "{{\"case\":\"hnsw-deletion\",\"data\":\"{}\",\"M\":{m},\"efConstruction\":{efc},\"removed\":{nrem},\"n\":{n},\"seeds\":{seeds},\"remove_s\":{remove_s:.3},\"efSearch\":{ef},\"recall_10_at_10_after_removal\":{:.4},\"recall_10_at_10_fresh\":{:.4},\"difference\":{:.4}}}",
            a[1],
            r_del[i],
            r_fresh[i],
            r_fresh[i] - r_del[i]
        );
    }
    Ok(())
}
