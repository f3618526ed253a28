use proptest::prelude::*;
use vq_core::io::{
    MmapBin, MmapVecs, VectorReader, read_bvecs, read_fbin, read_fvecs, read_ibin, read_ivecs,
    read_vectors, write_bin, write_bvecs, write_fbin, write_fvecs, write_ivecs,
};
use vq_core::testing::vectors;
use vq_core::{Error, VectorsRef};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn fvecs_and_fbin_round_trip(x in vectors(1..=40, 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.fvecs");
        write_fvecs(&p, x.as_ref()).unwrap();
        prop_assert_eq!(read_fvecs(&p).unwrap(), x.clone());
        prop_assert_eq!(read_vectors(&p).unwrap(), x.clone());
        let m = MmapVecs::<f32>::open(&p).unwrap();
        prop_assert_eq!(m.to_matrix(0, usize::MAX).as_slice().to_vec(), x.as_slice().to_vec());
        let mut r = VectorReader::<f32>::open_texmex(&p).unwrap();
        let mut all = Vec::new();
        while let Some(b) = r.next_batch(7).unwrap() {
            all.extend_from_slice(b.as_slice());
        }
        prop_assert_eq!(&all[..], x.as_slice());

        let pb = dir.path().join("x.fbin");
        write_fbin(&pb, x.as_ref()).unwrap();
        prop_assert_eq!(read_fbin(&pb).unwrap(), x.clone());
        let mb = MmapBin::<f32>::open(&pb).unwrap();
        prop_assert_eq!(mb.vectors().unwrap().as_slice(), x.as_slice());
        let mut br = VectorReader::<f32>::open_bigann(&pb).unwrap();
        prop_assert_eq!(br.next_batch(usize::MAX).unwrap().unwrap().into_vec(), x.as_slice().to_vec());
    }

    #[test]
    fn ivecs_bvecs_ibin_round_trip(
        (d, v) in (1usize..30).prop_flat_map(|d| (Just(d), prop::collection::vec(any::<i32>(), d..d * 20)))
    ) {
        let n = v.len() / d;
        let v = &v[..n * d];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ivecs");
        write_ivecs(&p, v, d).unwrap();
        prop_assert_eq!(read_ivecs(&p).unwrap().into_vec(), v.to_vec());
        let b: Vec<u8> = v.iter().map(|&x| x as u8).collect();
        let pb = dir.path().join("x.bvecs");
        write_bvecs(&pb, &b, d).unwrap();
        prop_assert_eq!(read_bvecs(&pb).unwrap().into_vec(), b.clone());
        let pi = dir.path().join("x.ibin");
        write_bin(&pi, v, d).unwrap();
        prop_assert_eq!(read_ibin(&pi).unwrap().into_vec(), v.to_vec());
    }
}

fn format_error(r: vq_core::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn malformed_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.fvecs");
    write_fvecs(&good, VectorsRef::new(&[1.0; 12], 3).unwrap()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    // Truncated in the middle of a vector.
    let p = dir.path().join("trunc.fvecs");
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(format_error(read_fvecs(&p)).contains("trunc"));
    assert!(MmapVecs::<f32>::open(&p).is_err());

    // Empty.
    let p = dir.path().join("empty.fvecs");
    std::fs::write(&p, b"").unwrap();
    assert!(format_error(read_fvecs(&p)).contains("empty"));

    // Inconsistent dimension in the second vector (same total size).
    let mut bad = bytes.clone();
    bad[16..20].copy_from_slice(&2i32.to_le_bytes());
    let p = dir.path().join("dims.fvecs");
    std::fs::write(&p, &bad).unwrap();
    assert!(format_error(read_fvecs(&p)).contains("vector 1 has dimension 2"));
    assert!(MmapVecs::<f32>::open(&p).is_err());

    // Streamed: the batch holding the bad vector fails, and so does every later one
    // (the reader no longer knows where a vector starts), never misaligned data.
    let mut r = VectorReader::<f32>::open_texmex(&p).unwrap();
    let first = r.next_batch(1).unwrap().unwrap();
    assert_eq!(first.as_slice(), &[1.0; 3]);
    assert!(format_error(r.next_batch(1).map(|_| ())).contains("vector 1 has dimension 2"));
    let again = format_error(r.next_batch(1).map(|_| ()));
    assert!(again.contains("earlier read failed"), "{again}");

    // Negative and absurd dimensions.
    for d in [-5i32, 0, i32::MAX] {
        let mut bad = bytes.clone();
        bad[..4].copy_from_slice(&d.to_le_bytes());
        let p = dir.path().join("neg.fvecs");
        std::fs::write(&p, &bad).unwrap();
        assert!(format_error(read_fvecs(&p)).contains("dimension"));
    }

    // An ivecs file read as fvecs works (same layout) but a bvecs file does not.
    let pb = dir.path().join("x.bvecs");
    write_bvecs(&pb, &[1u8; 10], 5).unwrap();
    assert!(read_fvecs(&pb).is_err());

    // BigANN header disagreeing with the size; short file.
    let p = dir.path().join("x.fbin");
    write_fbin(&p, VectorsRef::new(&[1.0; 6], 2).unwrap()).unwrap();
    let mut b = std::fs::read(&p).unwrap();
    b[0] = 4;
    std::fs::write(&p, &b).unwrap();
    assert!(format_error(read_fbin(&p)).contains("header says 4"));
    std::fs::write(&p, &b[..5]).unwrap();
    assert!(format_error(read_fbin(&p)).contains("header"));
    // A hostile header asking for petabytes is refused before allocating.
    let mut hostile = vec![0u8; 8];
    hostile[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    hostile[4..].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&p, &hostile).unwrap();
    assert!(read_fbin(&p).is_err());

    // Missing file: an I/O error naming the path.
    let missing = dir.path().join("nope.fvecs");
    match read_fvecs(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    assert!(read_vectors(dir.path().join("x.txt")).is_err());
}
