//! Many threads searching one index while another adds behind an `RwLock` (the pattern
//! documented on `vq_core::Index`), and the `Send + Sync` bounds of the index types.
#![allow(clippy::unwrap_used)]

use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use vq_core::synthetic::SyntheticSpec;
use vq_core::{Index, Metric, SearchParams, VectorsRef};
use vq_factory::index_factory;

/// Every index type is `Send + Sync` (checked at compile time).
#[test]
fn index_types_are_send_and_sync() {
    fn pin<T: Send + Sync>() {}
    pin::<vq_core::IndexFlat>();
    pin::<vq_core::IndexIDMap<vq_core::IndexFlat>>();
    pin::<vq_core::IndexRefine>();
    pin::<vq_ivf::IndexIvfFlat>();
    pin::<vq_ivf::IndexIvfPq>();
    pin::<vq_ivf::IndexIvfSq>();
    pin::<vq_hnsw::IndexHnswFlat>();
    pin::<vq_pq::IndexPQ>();
    pin::<vq_factory::FactoryIndex>();
    pin::<vq_gpu::GpuIndexFlat>();
    pin::<vq_gpu::GpuIndexIvfPq>();
    pin::<Box<dyn Index>>();
}

/// `VQ_CONCURRENCY_ROUNDS=N` repeats the scenario N times (longer local runs).
#[test]
fn searches_run_while_another_thread_adds_behind_a_rwlock() {
    let rounds: usize = std::env::var("VQ_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let d = 16;
    let data = SyntheticSpec::new(24_000, d, 50)
        .with_seed(5)
        .generate()
        .unwrap();
    let base = data.base.as_slice();
    let keys = ["Flat", "IVF32,Flat", "HNSW16", "IVF32,PQ4"];
    for key in (0..rounds).flat_map(|_| keys) {
        let mut index = index_factory(d, key, Metric::L2).unwrap();
        index
            .train(VectorsRef::new(&base[..4000 * d], d).unwrap())
            .unwrap();
        index
            .add(VectorsRef::new(&base[..4000 * d], d).unwrap())
            .unwrap();
        index
            .set_params(if key.starts_with("IVF") {
                "nprobe=8"
            } else {
                ""
            })
            .ok();
        let index = RwLock::new(index);
        let searches = AtomicUsize::new(0);
        let adds = 20;
        std::thread::scope(|s| {
            for t in 0..4 {
                let (index, searches, data) = (&index, &searches, &data);
                s.spawn(move || {
                    let mut last_len = 0;
                    loop {
                        let g = index.read().unwrap();
                        let len = g.len();
                        assert!(len >= last_len, "{key}: the index shrank");
                        // Whole batches only: the length is always 4000 + a multiple of 1000.
                        assert_eq!(len % 1000, 0, "{key}: a half-added batch was visible");
                        let q = data.queries.as_ref().slice(t * 10..t * 10 + 10);
                        let r = g.search(q, 5, &SearchParams::default()).unwrap();
                        for row in 0..10 {
                            let (dist, ids) = r.row(row);
                            assert!(
                                ids.iter().all(|&i| i >= 0 && (i as usize) < len),
                                "{key}: {ids:?}"
                            );
                            assert!(dist.windows(2).all(|w| w[0] <= w[1]), "{key}: unsorted");
                        }
                        drop(g);
                        searches.fetch_add(1, Ordering::Relaxed);
                        last_len = len;
                        if len == 4000 + adds * 1000 {
                            break;
                        }
                    }
                });
            }
            s.spawn(|| {
                for b in 0..adds {
                    let lo = (4 + b) * 1000;
                    let x = VectorsRef::new(&base[lo * d..(lo + 1000) * d], d).unwrap();
                    index.write().unwrap().add(x).unwrap();
                }
            });
        });
        let index = index.into_inner().unwrap();
        assert_eq!(index.len(), 24_000);
        let n_search = searches.load(Ordering::Relaxed);
        eprintln!("{key}: {n_search} searches of 10 queries during {adds} adds, all consistent");
        assert!(n_search >= 4, "{key}");
        // After the adds, results equal those of an index built in one go.
        let mut fresh = index_factory(d, key, Metric::L2).unwrap();
        fresh
            .train(VectorsRef::new(&base[..4000 * d], d).unwrap())
            .unwrap();
        fresh.add(data.base.as_ref()).unwrap();
        if key == "Flat" {
            let p = SearchParams::default();
            assert_eq!(
                index.search(data.queries.as_ref(), 10, &p).unwrap(),
                fresh.search(data.queries.as_ref(), 10, &p).unwrap()
            );
        }
    }
}
