#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod autotune;
mod build;
pub mod faiss_io;
mod gpu;
mod parse;
mod saved;
mod spec;

use std::path::Path;

use vq_core::Metric;

pub use build::{CodecConstructor, Component, Factory, MAX_DIM, TransformConstructor};
pub use gpu::build_gpu;
pub use parse::{MAX_DEPTH, MAX_LEN, ParseError, ParseErrorKind};
pub use saved::{FactoryIndex, set_params};
pub use spec::{CoarseSpec, EncodingSpec, FactorySpec, IdMapKind, TransformSpec};

impl FactorySpec {
    /// Parses a factory string with Faiss's tokens (no registered ones).
    ///
    /// # Errors
    /// A [`ParseError`] naming the first offending token and its position.
    pub fn parse(input: &str) -> Result<FactorySpec, ParseError> {
        Factory::new().parse(input)
    }

    /// Builds an empty (untrained where training is needed) index of dimension `d`.
    ///
    /// # Errors
    /// As [`Factory::build`].
    pub fn build(&self, d: usize, metric: Metric) -> vq_core::Result<FactoryIndex> {
        Factory::new().build_spec(self.clone(), d, metric)
    }
}

impl std::str::FromStr for FactorySpec {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FactorySpec::parse(s)
    }
}

/// Parses `description` and builds the index (Faiss's `index_factory`).
///
/// # Errors
/// [`vq_core::Error::Factory`] wrapping a [`ParseError`], or the build's errors.
pub fn index_factory(d: usize, description: &str, metric: Metric) -> vq_core::Result<FactoryIndex> {
    Factory::new().index(d, description, metric)
}

/// Loads an index saved with [`FactoryIndex::save`] (Faiss's tokens only; use
/// [`Factory::load`] for strings with registered tokens).
///
/// # Errors
/// As [`Factory::load`].
pub fn load_index(path: impl AsRef<Path>) -> vq_core::Result<FactoryIndex> {
    Factory::new().load(path)
}

/// Memory-maps an index saved with [`FactoryIndex::save`] (see [`Factory::mmap`]).
///
/// # Errors
/// As [`Factory::load`].
pub fn mmap_index(path: impl AsRef<Path>) -> vq_core::Result<FactoryIndex> {
    Factory::new().mmap(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vq_core::Index;

    #[test]
    fn parse_print_round_trip() {
        for s in [
            "Flat",
            "IDMap,Flat",
            "IDMap2,L2norm,Flat",
            "L2norm,L2norm,Flat",
            "PQ16",
            "PQ16x4",
            "OPQ16_64,PQ16",
            "OPQ8,PQ8x10",
            "PCA64,SQ8",
            "PCAW32,SQ4",
            "PCAR16,Flat",
            "PCAWR16,SQfp16",
            "RR,SQ4",
            "RR64,SQbf16",
            "IDMap2,L2norm,SQ8_direct",
            "SQ8_direct_signed",
            "SQ6",
            "SQ8_uniform",
            "IVF1024,Flat",
            "IVF4096,PQ32",
            "OPQ16_64,IVF1024,PQ16",
            "IMI2x8,PQ16",
            "IDMap2,PCA32,IVF16,SQ8",
            "HNSW32",
            "HNSW16_SQ8",
            "HNSW32_PQ16",
            "PCA32,HNSW8_PQ8x4",
            "IVF4096_HNSW32,Flat",
            "IVF64_HNSW16,PQ8",
            "IDMap2,IVF16_HNSW8,SQ8",
        ] {
            let spec = FactorySpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(FactorySpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn errors_name_the_token_and_position() {
        let e = FactorySpec::parse("Flat,Bogus").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnknownToken("Bogus".into()));
        let e = FactorySpec::parse("Flat,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Trailing("Flat".into()));
        let e = FactorySpec::parse("IDMap,Bogus,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::UnknownToken("Bogus".into()));
        assert_eq!(e.span, 6..11);
        assert!(e.to_string().contains("position 6"));
        assert!(e.to_string().ends_with("      ^^^^^"));
        assert_eq!(
            FactorySpec::parse("PQ16np").unwrap(),
            FactorySpec::Codes(EncodingSpec::Pq { m: 16, nbits: 8 })
        );
        for bad in [
            "PQ", "PQx4", "PQ16x", "PQ0", "PQ-1", "SQ7", "PCA", "OPQ_64", "RR0", "SQ",
        ] {
            let e = FactorySpec::parse(bad).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::UnknownToken(bad.into()), "{bad}");
        }
        assert_eq!(
            FactorySpec::parse("PQ16x4fs").unwrap(),
            FactorySpec::Codes(EncodingSpec::PqFastScan {
                m: 16,
                by_residual: false,
                bbs: 32
            })
        );
        let e = FactorySpec::parse("PQ16x4fs+8").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NotAvailableYet("PQ16x4fs+8".into()));
        let e = FactorySpec::parse("IVF1024_NSG32,Flat").unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::NotAvailableYet("IVF1024_NSG32".into())
        );
        assert_eq!(e.span, 0..13);
        // HNSW spellings: Faiss's equivalent forms and the default M.
        for (s, canon) in [
            ("HNSW", "HNSW32"),
            ("HNSW32,Flat", "HNSW32"),
            ("HNSW32_Flat", "HNSW32"),
            ("HNSW16,SQ8", "HNSW16_SQ8"),
            ("IVF64_HNSW,Flat", "IVF64_HNSW32,Flat"),
            ("IVF1k_HNSW8,Flat", "IVF1024_HNSW8,Flat"),
        ] {
            assert_eq!(FactorySpec::parse(s).unwrap().to_string(), canon, "{s}");
        }
        for (bad, tok, kind_unknown) in [
            ("HNSW0", "HNSW0", false),
            ("HNSW32_Bogus", "HNSW32_Bogus", false),
            ("IVF16,HNSW32", "HNSW32", true),
            ("HNSW32,PCA8,Flat", "PCA8", true),
            ("HNSW32_SQ8,Flat", "Flat", true),
            ("IVF16_HNSW0,Flat", "IVF16_HNSW0", false),
        ] {
            let e = FactorySpec::parse(bad).unwrap_err();
            let ok = match &e.kind {
                ParseErrorKind::NotAvailableYet(t) | ParseErrorKind::UnknownToken(t) => {
                    !kind_unknown && t == tok
                }
                ParseErrorKind::Misplaced(t) | ParseErrorKind::Trailing(t) => {
                    kind_unknown && t == tok
                }
                _ => false,
            };
            assert!(ok, "{bad}: {e}");
        }
        assert_eq!(
            FactorySpec::parse("IVF4k,Flat").unwrap(),
            FactorySpec::Ivf {
                coarse: CoarseSpec::Ivf { nlist: 4096 },
                encoding: EncodingSpec::Flat
            }
        );
        let e = FactorySpec::parse("IVF16,PCA8,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("PCA8".into()));
        let e = FactorySpec::parse("IVF16,IMI2x4,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("IMI2x4".into()));
        assert_eq!(
            FactorySpec::parse("IVF16").unwrap_err().kind,
            ParseErrorKind::MissingIndex
        );
        let e = FactorySpec::parse("L2norm,Flat,IDMap,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Trailing("IDMap".into()));
        assert_eq!(
            FactorySpec::parse("L2norm").unwrap_err().kind,
            ParseErrorKind::MissingIndex
        );
        assert_eq!(
            FactorySpec::parse("").unwrap_err().kind,
            ParseErrorKind::Empty
        );
        assert_eq!(FactorySpec::parse("Flat,").unwrap_err().span, 5..5);
        assert_eq!(
            FactorySpec::parse(" , Flat").unwrap_err().kind,
            ParseErrorKind::Empty
        );
    }

    #[test]
    fn builds_compressed_pipelines_and_checks_dimensions() {
        let ix = index_factory(128, "OPQ16_64,PQ16", Metric::L2).unwrap();
        assert_eq!(ix.dim(), 128);
        assert!(!ix.is_trained());
        let ix = index_factory(128, "PCA64,SQ8", Metric::L2).unwrap();
        assert_eq!(ix.dim(), 128);
        let ix = index_factory(32, "PQ8x4", Metric::InnerProduct).unwrap();
        assert_eq!(ix.bytes_per_vector(), 4.0);
        let ix = index_factory(30, "SQ4", Metric::L2).unwrap();
        assert_eq!(ix.bytes_per_vector(), 15.0);
        // M must divide the dimension it applies to (after the transforms).
        assert!(index_factory(128, "PQ7", Metric::L2).is_err());
        assert!(index_factory(128, "OPQ16_60,PQ16", Metric::L2).is_err());
        assert!(index_factory(128, "PCA64,PQ5", Metric::L2).is_err());
        assert!(index_factory(16, "PCA64,Flat", Metric::L2).is_err());
        assert!(index_factory(16, "PQ4x17", Metric::L2).is_err());
        let ix = index_factory(64, "OPQ16_64,IVF256,PQ16", Metric::L2).unwrap();
        assert_eq!(ix.bytes_per_vector(), 24.0);
        assert_eq!(ix.search_param_names()[0], "nprobe");
        assert!(index_factory(64, "IMI2x8,PQ16", Metric::InnerProduct).is_err());
        assert!(index_factory(63, "IMI2x8,Flat", Metric::L2).is_err());
        assert!(index_factory(64, "IVF0,Flat", Metric::L2).is_err());
        assert!(index_factory(64, "HNSW1", Metric::L2).is_err());
        assert!(index_factory(64, "HNSW8_PQ7", Metric::L2).is_err());
    }

    #[test]
    fn builds_hnsw_indexes_and_hnsw_quantizers() {
        let data = vq_core::synthetic::SyntheticSpec::new(3000, 16, 20)
            .generate()
            .unwrap();
        let (x, q) = (data.base.as_ref(), data.queries.as_ref());
        for s in [
            "HNSW8",
            "HNSW8_SQ8",
            "HNSW8_PQ8",
            "IVF32_HNSW8,Flat",
            "IVF32_HNSW8,SQ8",
        ] {
            let mut ix = index_factory(16, s, Metric::L2).unwrap();
            assert_eq!(
                ix.describe().starts_with("HNSW"),
                s.starts_with("HNSW"),
                "{s}"
            );
            ix.train(x).unwrap();
            ix.add(x).unwrap();
            let p = vq_core::SearchParams::parse(if s.starts_with("IVF") {
                "nprobe=8,quantizer_efSearch=32"
            } else {
                "efSearch=32"
            })
            .unwrap();
            let r = ix.search(q, 5, &p).unwrap();
            assert!(r.labels().iter().all(|&l| (0..3000).contains(&l)), "{s}");
        }
        let ix = index_factory(16, "HNSW8", Metric::L2).unwrap();
        assert_eq!(ix.search_param_names(), vec!["efSearch".to_string()]);
        // The HNSW coarse quantizer finds the lists the exact one does: recall against
        // exact search with enough probes.
        let mut exact = vq_core::IndexFlat::new(16, Metric::L2).unwrap();
        exact.add(x).unwrap();
        let want = exact.search(q, 10, &vq_core::SearchParams::new()).unwrap();
        let mut ivf = index_factory(16, "IVF64_HNSW16,Flat", Metric::L2).unwrap();
        ivf.train(x).unwrap();
        ivf.add(x).unwrap();
        let p = vq_core::SearchParams::parse("nprobe=16,quantizer_efSearch=64").unwrap();
        let got = ivf.search(q, 10, &p).unwrap();
        let hits: usize = (0..q.len())
            .map(|i| {
                let w = want.row(i).1;
                got.row(i).1.iter().filter(|l| w.contains(l)).count()
            })
            .sum();
        let recall = hits as f64 / (10 * q.len()) as f64;
        assert!(recall > 0.9, "IVF64_HNSW16 recall {recall}");
    }

    #[test]
    fn parsing_arbitrary_strings_never_panics_and_spans_are_inside() {
        let alphabet = [
            "Flat", "IDMap", "IDMap2", "L2norm", ",", " ", "IVF", "x", "é", ",,",
        ];
        let mut state = 12345u64;
        for _ in 0..2000 {
            let mut s = String::new();
            for _ in 0..(state % 6) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(alphabet[(state >> 33) as usize % alphabet.len()]);
            }
            state = state.wrapping_add(7);
            if let Err(e) = FactorySpec::parse(&s) {
                assert!(e.span.start <= e.span.end && e.span.end <= s.len(), "{s:?}");
                assert!(s.is_char_boundary(e.span.start) && s.is_char_boundary(e.span.end));
            }
        }
    }
}
