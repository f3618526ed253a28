#![allow(clippy::unwrap_used)]

use super::format::{self, Header, Node, Pq};
use super::import::faiss_fs_pos;

/// Faiss's `pq4_pack_codes` loop, written out: per block, per pair of sub-quantizers,
/// per 32 vectors, 16 bytes for each of the pair; byte `j` holds vector `perm[j]` in its
/// low nibble and vector `perm[j] + 16` in its high one.
fn pack_oracle(codes: &[Vec<u8>], m2: usize, bbs: usize) -> Vec<u8> {
    const PERM: [usize; 16] = [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15];
    let nb = codes.len().div_ceil(bbs) * bbs;
    let code = |i: usize, sq: usize| codes.get(i).and_then(|c| c.get(sq)).copied().unwrap_or(0);
    let mut out = Vec::new();
    for i0 in (0..nb).step_by(bbs) {
        for sq in (0..m2).step_by(2) {
            for i in (0..bbs).step_by(32) {
                let mut chunk = [0u8; 32];
                for j in 0..16 {
                    let v = i0 + i + PERM[j];
                    chunk[j] = code(v, sq) | (code(v + 16, sq) << 4);
                    chunk[j + 16] = code(v, sq + 1) | (code(v + 16, sq + 1) << 4);
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
    out
}

#[test]
fn fast_scan_positions_follow_faiss_packing() {
    let mut s = 12345u64;
    for (n, m, bbs) in [(70, 8, 32), (5, 3, 32), (130, 6, 64), (96, 4, 96)] {
        let m2 = m + m % 2;
        let codes: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                (0..m)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (s >> 60) as u8
                    })
                    .collect()
            })
            .collect();
        let packed = pack_oracle(&codes, m2, bbs);
        let mut mine = vec![0u8; packed.len()];
        for (i, c) in codes.iter().enumerate() {
            for (sq, &v) in c.iter().enumerate() {
                let (b, sh) = faiss_fs_pos(i, sq, bbs, m2);
                mine[b] |= v << sh;
            }
        }
        assert_eq!(mine, packed, "n {n} M {m} bbs {bbs}");
    }
}

#[test]
fn objects_round_trip_through_bytes() {
    let h = Header {
        d: 4,
        ntotal: 3,
        is_trained: true,
        metric: 1,
        metric_arg: 0.0,
    };
    let node = Node::IdMap {
        map2: true,
        h: h.clone(),
        inner: Box::new(Node::Pq {
            h: h.clone(),
            pq: Pq {
                d: 4,
                m: 2,
                nbits: 1,
                centroids: (0..8).map(|i| i as f32).collect(),
            },
            codes: vec![1, 2, 3],
            search_type: 0,
            encode_signs: false,
            polysemous_ht: 3,
        }),
        ids: vec![7, 8, 9],
    };
    let bytes = format::serialize(&node);
    assert_eq!(&bytes[..4], b"IxM2");
    assert_eq!(
        format::parse(&format::MappedFile::in_memory(&bytes), "t").unwrap(),
        node
    );
    // A bool that is neither 0 nor 1 is corruption (Faiss's READ1_BOOL).
    let mut b = bytes.clone();
    b[4 + 4 + 8 + 8 + 8] = 2;
    assert!(format::parse(&format::MappedFile::in_memory(&b), "t").is_err());
}
