use proptest::prelude::*;
use vq_core::distance::{Kernels, SimdLevel, scalar};

fn dims() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=67, Just(128usize), Just(784usize), Just(960usize)]
}

fn levels() -> Vec<Kernels> {
    SimdLevel::ALL
        .into_iter()
        .filter_map(Kernels::for_level)
        .collect()
}

fn f64_ip(a: &[f32], b: &[f32]) -> (f64, f64) {
    let s: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    (s, mag)
}

fn f64_l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn kernels_equal_scalar_exactly_on_integers(
        (a, b) in dims().prop_flat_map(|d| (
            prop::collection::vec(-16i32..=16, d),
            prop::collection::vec(-16i32..=16, d),
        ))
    ) {
        let a: Vec<f32> = a.into_iter().map(|x| x as f32).collect();
        let b: Vec<f32> = b.into_iter().map(|x| x as f32).collect();
        for k in levels() {
            prop_assert_eq!(k.l2_sqr(&a, &b), scalar::l2_sqr(&a, &b), "{}", k.level());
            prop_assert_eq!(k.inner_product(&a, &b), scalar::inner_product(&a, &b));
            prop_assert_eq!(k.norm_sqr(&a), scalar::norm_sqr(&a));
        }
    }

    #[test]
    fn kernels_match_f64_on_random_floats(
        (a, b) in dims().prop_flat_map(|d| (
            prop::collection::vec(-10.0f32..10.0, d),
            prop::collection::vec(-10.0f32..10.0, d),
        ))
    ) {
        let d = a.len() as f64;
        let eps = f32::EPSILON as f64;
        for k in levels() {
            let l2 = f64_l2(&a, &b);
            prop_assert!((k.l2_sqr(&a, &b) as f64 - l2).abs() <= 2.0 * d * eps * l2 + 1e-30,
                "{} l2 {} vs {}", k.level(), k.l2_sqr(&a, &b), l2);
            let (ip, mag) = f64_ip(&a, &b);
            prop_assert!((k.inner_product(&a, &b) as f64 - ip).abs() <= 2.0 * d * eps * mag + 1e-30);
        }
    }

    #[test]
    fn ny_kernels_equal_pairwise(
        (x, ys) in (1usize..=67).prop_flat_map(|d| (
            prop::collection::vec(-16i32..=16, d),
            prop::collection::vec(-16i32..=16, d * 11),
        ))
    ) {
        let x: Vec<f32> = x.into_iter().map(|v| v as f32).collect();
        let ys: Vec<f32> = ys.into_iter().map(|v| v as f32).collect();
        let n = ys.len() / x.len();
        for k in levels() {
            let mut out = vec![0.0; n];
            k.l2_sqr_ny(&x, &ys, &mut out);
            for (j, y) in ys.chunks_exact(x.len()).enumerate() {
                prop_assert_eq!(out[j], scalar::l2_sqr(&x, y));
            }
            k.inner_product_ny(&x, &ys, &mut out);
            for (j, y) in ys.chunks_exact(x.len()).enumerate() {
                prop_assert_eq!(out[j], scalar::inner_product(&x, y));
            }
        }
    }

    #[test]
    fn four_row_kernels_equal_scalar_on_integers_and_f64_on_floats(
        (x, ys, fx, fys) in dims().prop_flat_map(|d| (
            prop::collection::vec(-16i32..=16, d),
            prop::collection::vec(-16i32..=16, 4 * d),
            prop::collection::vec(-10.0f32..10.0, d),
            prop::collection::vec(-10.0f32..10.0, 4 * d),
        ))
    ) {
        let d = x.len();
        let x: Vec<f32> = x.into_iter().map(|v| v as f32).collect();
        let ys: Vec<f32> = ys.into_iter().map(|v| v as f32).collect();
        let rows = |v: &[f32]| -> [Vec<f32>; 4] {
            std::array::from_fn(|r| v[r * d..(r + 1) * d].to_vec())
        };
        let (iy, fy) = (rows(&ys), rows(&fys));
        let eps = f32::EPSILON as f64;
        fn four(v: &[Vec<f32>; 4]) -> [&[f32]; 4] {
            [&v[0], &v[1], &v[2], &v[3]]
        }
        for k in levels() {
            let (l2, ip) = (k.l2_sqr_4(&x, four(&iy)), k.inner_product_4(&x, four(&iy)));
            for r in 0..4 {
                prop_assert_eq!(l2[r], scalar::l2_sqr(&x, &iy[r]), "{} row {}", k.level(), r);
                prop_assert_eq!(ip[r], scalar::inner_product(&x, &iy[r]));
            }
            let (l2, ip) = (k.l2_sqr_4(&fx, four(&fy)), k.inner_product_4(&fx, four(&fy)));
            for r in 0..4 {
                let want = f64_l2(&fx, &fy[r]);
                prop_assert!((l2[r] as f64 - want).abs() <= 2.0 * d as f64 * eps * want + 1e-30,
                    "{} l2 {} vs {}", k.level(), l2[r], want);
                let (want, mag) = f64_ip(&fx, &fy[r]);
                prop_assert!((ip[r] as f64 - want).abs() <= 2.0 * d as f64 * eps * mag + 1e-30);
            }
        }
    }
}

#[test]
fn four_row_kernels_refuse_ragged_rows() {
    let k = Kernels::get();
    let (x, y, short) = ([1.0f32; 8], [2.0f32; 8], [2.0f32; 7]);
    let r = std::panic::catch_unwind(|| k.l2_sqr_4(&x, [&y, &y, &short, &y]));
    assert!(r.is_err());
    assert_eq!(k.l2_sqr_4(&x, [&y; 4]), [8.0; 4]);
}

#[test]
fn detected_level_is_supported() {
    let k = Kernels::get();
    assert!(k.level().is_supported());
    if std::env::var("VQ_SIMD").is_err() {
        assert_eq!(k.level(), SimdLevel::best_supported());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn threshold_hits_equal_scalar(
        (vals, offs, thr) in (0usize..300).prop_flat_map(|n| (
            prop::collection::vec(-50.0f32..50.0, n),
            prop::collection::vec(0.0f32..50.0, n),
            prop::collection::vec(-60.0f32..60.0, n),
        )),
        bias in -10.0f32..10.0,
        use_offsets in any::<bool>(),
    ) {
        let offs: &[f32] = if use_offsets { &offs } else { &[] };
        let mut want = Vec::new();
        scalar::le_hits(&vals, offs, bias, &thr, &mut want);
        // The scalar reference against its definition.
        let direct: Vec<u32> = (0..vals.len())
            .filter(|&i| (offs.get(i).copied().unwrap_or(0.0) + bias) + vals[i] <= thr[i])
            .map(|i| i as u32)
            .collect();
        prop_assert_eq!(&want, &direct);
        for k in levels() {
            let mut got = vec![7u32];
            k.le_hits(&vals, offs, bias, &thr, &mut got);
            prop_assert_eq!(&got[1..], &want[..], "{}", k.level());
        }
    }
}
