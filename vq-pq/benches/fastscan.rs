//! Throughput of the fast-scan kernels: bytes of codes scanned per second for one and
//! four queries per pass, at each SIMD level, and of the flat index's whole search.
//!
//! `cargo bench -p vq-pq --bench fastscan` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vq_core::distance::SimdLevel;
use vq_pq::fastscan::{self, FastScanLayout, FsCollector, QuantizedLut, SUB_BLOCK};

/// Counts reports (so the work cannot be optimised away) with a tight threshold, as a
/// k-NN scan has once its heap is full.
struct Count {
    threshold: u16,
    hits: usize,
}

impl FsCollector for Count {
    fn threshold(&self, _q: usize) -> u16 {
        self.threshold
    }
    fn collect(&mut self, _q: usize, _sb: usize, mask: u32, _sums: &[u16; SUB_BLOCK]) {
        self.hits += mask.count_ones() as usize;
    }
}

fn kernels(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 1 << 18;
    for m in [16usize, 32, 64] {
        let layout = FastScanLayout::new(m, 32).unwrap();
        let mut codes = vec![0u8; layout.bytes_for(n)];
        let mut code = vec![0u8; m];
        for i in 0..n {
            code.iter_mut().for_each(|c| *c = rng.random_range(0..16));
            layout.write_code(&mut codes, i, &code);
        }
        let tables: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..m * 16).map(|_| rng.random_range(0.0..1.0)).collect())
            .collect();
        let nsub = n / SUB_BLOCK;
        let mut g = c.benchmark_group(format!("fastscan_m{m}"));
        g.throughput(Throughput::Bytes(codes.len() as u64));
        for level in SimdLevel::ALL {
            if !level.is_supported() {
                continue;
            }
            for (nq, max) in [(1usize, 255u8), (4, 255), (4, 127), (4, 63)] {
                let luts: Vec<QuantizedLut> = tables[..nq]
                    .iter()
                    .map(|t| QuantizedLut::with_max(t, layout.m2(), max).unwrap())
                    .collect();
                let l: Vec<&QuantizedLut> = luts.iter().collect();
                let id = BenchmarkId::new(format!("{level}"), format!("nq{nq}_max{max}"));
                g.bench_function(id, |b| {
                    b.iter(|| {
                        let mut cnt = Count {
                            threshold: (m * usize::from(max) / 6) as u16,
                            hits: 0,
                        };
                        fastscan::scan(level, &layout, &l, &codes, nsub, &mut cnt).unwrap();
                        cnt.hits
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = kernels
}
criterion_main!(benches);
