//! Auto-tuning on a small synthetic set: the frontier and the target-recall answer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vq_core::eval::GroundTruth;
use vq_core::synthetic::SyntheticSpec;
use vq_core::{Index, Metric, SearchParams};
use vq_factory::autotune::{Criterion, ExploreOptions, OperatingPoints, ParameterSpace};
use vq_factory::index_factory;

struct Setup {
    data: vq_core::synthetic::SyntheticData,
    gt: GroundTruth,
}

fn setup() -> Setup {
    let data = SyntheticSpec::new(4_000, 24, 100)
        .with_seed(11)
        .generate()
        .unwrap();
    let mut flat = index_factory(24, "Flat", Metric::L2).unwrap();
    flat.add(data.base.as_ref()).unwrap();
    let res = flat
        .search(data.queries.as_ref(), 100, &SearchParams::default())
        .unwrap();
    Setup {
        gt: GroundTruth::from_results(&res),
        data,
    }
}

fn explore(
    s: &Setup,
    spec: &str,
    criterion: &str,
    opts: &ExploreOptions,
) -> (ParameterSpace, OperatingPoints, vq_factory::FactoryIndex) {
    let mut index = index_factory(24, spec, Metric::L2).unwrap();
    index.train(s.data.base.as_ref()).unwrap();
    index.add(s.data.base.as_ref()).unwrap();
    let c: Criterion = criterion.parse().unwrap();
    let space = ParameterSpace::for_index(&index, c.k()).unwrap();
    let mut seen = 0;
    let ops = space
        .explore(&index, s.data.queries.as_ref(), &c, &s.gt, opts, |_| {
            seen += 1
        })
        .unwrap();
    assert_eq!(seen, ops.all().len());
    (space, ops, index)
}

fn quick() -> ExploreOptions {
    ExploreOptions {
        min_test_s: 0.0,
        max_repeats: 1,
        ..ExploreOptions::default()
    }
}

#[test]
fn frontier_points_are_non_dominated_and_the_target_is_reached_again() {
    let s = setup();
    for (spec, crit) in [
        ("IVF64,Flat", "10-recall@10"),
        ("IVF32,PQ8,RFlat", "1-recall@1"),
        ("HNSW8", "R@10"),
        ("IVF32_HNSW8,SQ8", "10-recall@10"),
    ] {
        let (space, ops, index) = explore(&s, spec, crit, &quick());
        assert!(!ops.truncated());
        assert_eq!(
            ops.all().len() + ops.skipped(),
            space.n_combinations(),
            "{spec}: every combination is run or skipped"
        );
        let frontier: Vec<_> = ops.optimal().collect();
        assert!(!frontier.is_empty());
        for p in &frontier {
            for q in ops.all() {
                let dominates = q.perf >= p.perf
                    && q.time_s <= p.time_s
                    && (q.perf > p.perf || q.time_s < p.time_s);
                assert!(
                    !dominates,
                    "{spec}: {} is dominated by {}",
                    p.params, q.params
                );
            }
        }
        // Increasing perf along the frontier, with increasing time.
        for w in frontier.windows(2) {
            assert!(
                w[0].perf <= w[1].perf && w[0].time_s <= w[1].time_s,
                "{spec}"
            );
        }
        let top = frontier.last().unwrap().perf;
        let target = (top * 0.95).min(0.9);
        let best = ops.fastest_reaching(target).unwrap();
        let c: Criterion = crit.parse().unwrap();
        let again = index
            .search(
                s.data.queries.as_ref(),
                c.k(),
                &SearchParams::parse(&best.params).unwrap(),
            )
            .unwrap();
        let perf = c.evaluate(&again, &s.gt).unwrap();
        assert!(
            perf >= target,
            "{spec}: {} gives {perf} < {target} when re-run",
            best.params
        );
    }
}

#[test]
fn dominated_combinations_are_skipped() {
    let s = setup();
    // 7 nprobe × 7 k_factor_rf values: recall saturates long before the last ones.
    let (space, ops, _) = explore(&s, "IVF64,SQ8,RFlat", "1-recall@1", &quick());
    assert_eq!(space.n_combinations(), 49);
    assert!(ops.skipped() > 0, "nothing skipped out of 49");
}

#[test]
fn the_budget_stops_exploration() {
    let s = setup();
    let opts = ExploreOptions {
        budget: Some(Duration::ZERO),
        ..quick()
    };
    let (_, ops, _) = explore(&s, "IVF64,Flat", "1-recall@1", &opts);
    assert!(ops.truncated());
    assert_eq!(
        ops.all().len(),
        1,
        "only the first (most accurate) combination runs"
    );
}

#[test]
fn bad_criteria_are_errors() {
    let s = setup();
    let mut index = index_factory(24, "IVF16,Flat", Metric::L2).unwrap();
    index.train(s.data.base.as_ref()).unwrap();
    index.add(s.data.base.as_ref()).unwrap();
    let space = ParameterSpace::for_index(&index, 10).unwrap();
    // A ground truth with too few neighbours for 10-recall@10.
    let thin = GroundTruth::new((0..100).collect(), 1).unwrap();
    let c: Criterion = "10-recall@10".parse().unwrap();
    assert!(
        space
            .explore(&index, s.data.queries.as_ref(), &c, &thin, &quick(), |_| {})
            .is_err()
    );
    // k larger than the index.
    let c: Criterion = "1-recall@5000".parse().unwrap();
    assert!(
        space
            .explore(&index, s.data.queries.as_ref(), &c, &s.gt, &quick(), |_| {})
            .is_err()
    );
    assert!(ParameterSpace::for_index(&index, 0).is_err());
}
