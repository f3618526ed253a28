//! vq-gpu's tests. Everywhere: without a usable GPU every entry point returns
//! `GpuUnavailable` and nothing panics. On a GPU (`cargo test -p vq-gpu -- --ignored`):
//! the GPU indexes against the CPU ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vq_core::synthetic::SyntheticSpec;
use vq_core::testing::check_knn;
use vq_core::{Error, Index, IndexFlat, Metric, SearchParams, VectorsRef};
use vq_gpu::{GpuDevice, GpuFlatConfig, GpuIndexFlat, GpuIndexIvfFlat, GpuIndexIvfPq, Storage};
use vq_ivf::IndexIvf;
use vq_kmeans::{KMeans, KMeansParams};

/// Without a GPU, each entry point is `Err(GpuUnavailable)` with a reason; with one,
/// the probe describes it. Never a panic.
#[test]
fn no_gpu_is_a_clear_error_never_a_panic() {
    match vq_gpu::probe() {
        Ok(devices) => {
            assert!(!devices.is_empty());
            for d in devices {
                assert!(d.total_memory > 0 && !d.name.is_empty(), "{d:?}");
            }
        }
        Err(Error::GpuUnavailable { reason }) => {
            assert!(!reason.is_empty());
            for r in [
                GpuDevice::new(0).map(|_| ()),
                vq_gpu::device_count().map(|_| ()),
            ] {
                match r {
                    Err(Error::GpuUnavailable { reason: r2 }) => assert!(!r2.is_empty()),
                    other => panic!("expected GpuUnavailable, got {other:?}"),
                }
            }
        }
        Err(e) => panic!("expected GpuUnavailable, got {e}"),
    }
    // A device far beyond any machine's is refused, GPU or not.
    assert!(matches!(
        GpuDevice::new(1 << 20),
        Err(Error::GpuUnavailable { .. })
    ));
}

fn device() -> GpuDevice {
    GpuDevice::new(0).expect("this test needs a CUDA device: run it on a GPU machine")
}

fn data(n: usize, d: usize, nq: usize) -> vq_core::synthetic::SyntheticData {
    SyntheticSpec::new(n, d, nq)
        .with_seed(7)
        .generate()
        .unwrap()
}

#[test]
#[ignore = "needs CUDA device"]
fn flat_equals_cpu_flat_l2_and_ip_any_k() {
    let dev = device();
    let ds = data(20_000, 64, 200);
    for metric in [Metric::L2, Metric::InnerProduct] {
        let mut cpu = IndexFlat::new(64, metric).unwrap();
        cpu.add(ds.base.as_ref()).unwrap();
        let g = GpuIndexFlat::from_cpu(&dev, &cpu, GpuFlatConfig::default()).unwrap();
        assert!(g.is_resident().unwrap());
        for k in [1, 10, 100, 1024, 1500, 3000] {
            let p = SearchParams::default();
            let want = cpu.search(ds.queries.as_ref(), k, &p).unwrap();
            let got = g.search(ds.queries.as_ref(), k, &p).unwrap();
            check_knn(
                &got,
                &want,
                ds.base.as_ref(),
                ds.queries.as_ref(),
                metric,
                1e-4,
            )
            .unwrap_or_else(|e| panic!("{metric} k={k}: {e}"));
        }
    }
}

#[test]
#[ignore = "needs CUDA device"]
fn flat_streams_data_and_queries_in_tiles() {
    let dev = device();
    let ds = data(10_000, 32, 3_000);
    let mut cpu = IndexFlat::new(32, Metric::L2).unwrap();
    cpu.add(ds.base.as_ref()).unwrap();
    // Data kept on the host (budget 0), small tiles: many data and query tiles.
    let cfg = GpuFlatConfig {
        max_device_bytes: Some(0),
        tile_bytes: 4 * 700 * 1000,
        tile_rows: 1000,
        ..GpuFlatConfig::default()
    };
    let g = GpuIndexFlat::from_cpu(&dev, &cpu, cfg).unwrap();
    assert!(!g.is_resident().unwrap());
    let p = SearchParams::default();
    let want = cpu.search(ds.queries.as_ref(), 20, &p).unwrap();
    let got = g.search(ds.queries.as_ref(), 20, &p).unwrap();
    check_knn(
        &got,
        &want,
        ds.base.as_ref(),
        ds.queries.as_ref(),
        Metric::L2,
        1e-4,
    )
    .unwrap();
    let rw = cpu.range_search(ds.queries.as_ref(), 30.0, &p).unwrap();
    let rg = g.range_search(ds.queries.as_ref(), 30.0, &p).unwrap();
    // Pairs within rounding of the radius may fall either way (the GPU computes
    // ‖q‖² + ‖x‖² − 2⟨q, x⟩): counts agree closely.
    let (wn, gn) = (rw.labels().len() as f64, rg.labels().len() as f64);
    assert!((wn - gn).abs() <= 0.001 * wn + 2.0, "{wn} vs {gn}");
}

#[test]
#[ignore = "needs CUDA device"]
fn flat_f16_storage_matches_cpu_on_rounded_vectors() {
    let dev = device();
    let ds = data(20_000, 64, 100);
    let cfg = GpuFlatConfig {
        storage: Storage::F16,
        ..GpuFlatConfig::default()
    };
    let mut g = GpuIndexFlat::with_config(&dev, 64, Metric::L2, cfg).unwrap();
    g.add(ds.base.as_ref()).unwrap();
    let cpu = g.to_cpu(); // the rounded vectors
    let rq: Vec<f32> = ds
        .queries
        .as_slice()
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    let rq = VectorsRef::new(&rq, 64).unwrap();
    let p = SearchParams::default();
    let want = cpu.search(rq, 10, &p).unwrap();
    let got = g.search(ds.queries.as_ref(), 10, &p).unwrap();
    check_knn(&got, &want, cpu.vectors(), rq, Metric::L2, 1e-3).unwrap();
    // Values beyond f16's range are refused, not turned into infinities.
    let big = [1e6f32; 64];
    assert!(g.add(VectorsRef::new(&big, 64).unwrap()).is_err());
}

#[test]
#[ignore = "needs CUDA device"]
fn flat_range_search_equals_cpu() {
    let dev = device();
    let ds = data(5_000, 16, 50);
    for (metric, radius) in [(Metric::L2, 8.0f32), (Metric::InnerProduct, 2.0)] {
        let mut cpu = IndexFlat::new(16, metric).unwrap();
        cpu.add(ds.base.as_ref()).unwrap();
        let g = GpuIndexFlat::from_cpu(&dev, &cpu, GpuFlatConfig::default()).unwrap();
        let p = SearchParams::default();
        let want = cpu.range_search(ds.queries.as_ref(), radius, &p).unwrap();
        let got = g.range_search(ds.queries.as_ref(), radius, &p).unwrap();
        // Boundary cases may fall either way by rounding: compare counts closely.
        let (wn, gn) = (want.labels().len() as f64, got.labels().len() as f64);
        assert!(
            (wn - gn).abs() <= 0.001 * wn + 2.0,
            "{metric}: {wn} vs {gn}"
        );
    }
}

fn recall(got: &vq_core::SearchResults, want: &vq_core::SearchResults) -> f64 {
    let mut hit = 0usize;
    for q in 0..got.nq() {
        let w = want.row(q).1;
        hit += got.row(q).1.iter().filter(|l| w.contains(l)).count();
    }
    hit as f64 / want.labels().len() as f64
}

#[test]
#[ignore = "needs CUDA device"]
fn ivf_flat_and_pq_recall_equal_cpu_at_the_same_nprobe() {
    let dev = device();
    let ds = data(50_000, 32, 500);
    let mut exact = IndexFlat::new(32, Metric::L2).unwrap();
    exact.add(ds.base.as_ref()).unwrap();
    let gt = exact
        .search(ds.queries.as_ref(), 10, &SearchParams::default())
        .unwrap();
    // Same trained CPU index on both sides.
    let mut cpu = IndexIvf::new_flat(32, 256, Metric::L2).unwrap();
    cpu.train(ds.base.as_ref()).unwrap();
    cpu.add(ds.base.as_ref()).unwrap();
    let mut cpu_pq = IndexIvf::new_pq(32, 256, 8, 8, Metric::L2).unwrap();
    cpu_pq.train(ds.base.as_ref()).unwrap();
    cpu_pq.add(ds.base.as_ref()).unwrap();
    for nprobe in [1, 8, 64] {
        let p = SearchParams::new().with_nprobe(nprobe);
        let c = cpu.search(ds.queries.as_ref(), 10, &p).unwrap();
        let cp = cpu_pq.search(ds.queries.as_ref(), 10, &p).unwrap();
        let rc = recall(&c, &gt);
        let rcp = recall(&cp, &gt);
        let g = GpuIndexIvfFlat::from_cpu(&dev, cpu).unwrap();
        let gp = GpuIndexIvfPq::from_cpu(&dev, cpu_pq).unwrap();
        let r = recall(&g.search(ds.queries.as_ref(), 10, &p).unwrap(), &gt);
        let rp = recall(&gp.search(ds.queries.as_ref(), 10, &p).unwrap(), &gt);
        assert!(
            (r - rc).abs() <= 0.005,
            "IVF-Flat nprobe {nprobe}: gpu {r} cpu {rc}"
        );
        assert!(
            (rp - rcp).abs() <= 0.005,
            "IVF-PQ nprobe {nprobe}: gpu {rp} cpu {rcp}"
        );
        cpu = g.into_cpu();
        cpu_pq = gp.into_cpu();
    }
}

#[test]
#[ignore = "needs CUDA device"]
fn ivf_trained_on_gpu_reaches_cpu_recall_and_converts_back() {
    let dev = device();
    let ds = data(40_000, 32, 300);
    let mut exact = IndexFlat::new(32, Metric::InnerProduct).unwrap();
    exact.add(ds.base.as_ref()).unwrap();
    let gt = exact
        .search(ds.queries.as_ref(), 10, &SearchParams::default())
        .unwrap();
    let mut g = GpuIndexIvfPq::new_pq(&dev, 32, 128, 8, Metric::InnerProduct).unwrap();
    g.train(ds.base.as_ref()).unwrap();
    g.add(ds.base.as_ref()).unwrap();
    let p = SearchParams::new().with_nprobe(16);
    let rg = recall(&g.search(ds.queries.as_ref(), 10, &p).unwrap(), &gt);
    let cpu = g.into_cpu();
    let rc = recall(&cpu.search(ds.queries.as_ref(), 10, &p).unwrap(), &gt);
    assert!((rg - rc).abs() <= 0.005, "gpu {rg} cpu {rc}");
    assert!(rc > 0.3, "recall {rc}");
}

#[test]
#[ignore = "needs CUDA device"]
fn gpu_kmeans_objective_within_half_a_percent_of_cpu() {
    let dev = device();
    let ds = data(50_000, 32, 0);
    let params = KMeansParams::new(256).with_niter(20).with_seed(3);
    let mut cpu = KMeans::new(32, params.clone()).unwrap();
    cpu.train(ds.base.as_ref()).unwrap();
    let mut gpu = KMeans::new(32, params).unwrap();
    vq_gpu::train_kmeans(&mut gpu, &dev, ds.base.as_ref()).unwrap();
    let (c, g) = (cpu.objective().unwrap(), gpu.objective().unwrap());
    assert!((g - c).abs() <= 0.005 * c, "gpu {g} cpu {c}");
}

#[test]
#[ignore = "needs CUDA device"]
fn gpu_indexes_check_their_input() {
    let dev = device();
    let mut g = GpuIndexFlat::new(&dev, 4, Metric::L2).unwrap();
    let p = SearchParams::default();
    let q = [0.0f32; 4];
    let q = VectorsRef::new(&q, 4).unwrap();
    assert!(matches!(g.search(q, 1, &p), Err(Error::EmptyIndex)));
    g.add(VectorsRef::new(&[1.0, 2.0, 3.0, 4.0], 4).unwrap())
        .unwrap();
    assert!(g.search(q, 0, &p).is_err());
    assert!(g.search(q, 2, &p).is_err());
    assert!(
        g.add(VectorsRef::new(&[f32::NAN, 0.0, 0.0, 0.0], 4).unwrap())
            .is_err()
    );
    assert!(
        g.search(VectorsRef::new(&[0.0; 3], 3).unwrap(), 1, &p)
            .is_err()
    );
    let ivf = GpuIndexIvfFlat::new_flat(&dev, 4, 2, Metric::L2).unwrap();
    assert!(ivf.search(q, 1, &p).is_err());
    assert!(
        IndexIvf::new_pq(8, 4, 2, 4, Metric::L2)
            .map(|cpu| GpuIndexIvfPq::from_cpu(&dev, cpu))
            .unwrap()
            .is_err()
    );
}
