#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use vq_core::{Index, IndexFlat, IndexIDMap, IndexIDMap2, L2Normalize, Metric, PreTransform};

/// Why a factory string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The string (or a token between commas) is empty.
    Empty,
    /// A token that is not part of the grammar.
    UnknownToken(String),
    /// A Faiss token the workspace does not implement yet.
    NotAvailableYet(String),
    /// A token in a place where it cannot stand (e.g. `IDMap` after a transform).
    Misplaced(String),
    /// The string ends without an index (e.g. `"L2norm"`).
    MissingIndex,
    /// Tokens after the index (e.g. `"Flat,Flat"`).
    Trailing(String),
}

/// A factory-string error with the input and the span of the offending token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// The whole input.
    pub input: String,
    /// Byte range of the offending token in `input`.
    pub span: Range<usize>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.span.start;
        match &self.kind {
            ParseErrorKind::Empty => write!(f, "empty token at position {at}")?,
            ParseErrorKind::UnknownToken(t) => write!(f, "unknown token `{t}` at position {at}")?,
            ParseErrorKind::NotAvailableYet(t) => write!(
                f,
                "token `{t}` at position {at} is a Faiss index type vq does not provide yet"
            )?,
            ParseErrorKind::Misplaced(t) => write!(f, "token `{t}` cannot stand at position {at}")?,
            ParseErrorKind::MissingIndex => write!(
                f,
                "the string ends at position {at} without an index (e.g. `Flat`)"
            )?,
            ParseErrorKind::Trailing(t) => {
                write!(f, "unexpected `{t}` at position {at} after the index")?
            }
        }
        write!(f, " in `{}`", self.input)?;
        let width = (self.span.end - self.span.start).max(1);
        write!(
            f,
            "\n  {}\n  {}{}",
            self.input,
            " ".repeat(self.span.start),
            "^".repeat(width)
        )
    }
}

/// Id mapping around the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMapKind {
    /// `IDMap`: `add_with_ids`, ids translated on search.
    IdMap,
    /// `IDMap2`: also reconstructs by id.
    IdMap2,
}

/// A vector transform in front of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransformSpec {
    /// `L2norm`.
    L2Norm,
}

/// The index at the end of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexSpec {
    /// `Flat`.
    Flat,
}

/// A parsed factory string. `Display` prints the canonical string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorySpec {
    /// `IDMap`/`IDMap2` prefix, if any.
    pub id_map: Option<IdMapKind>,
    /// Transforms, applied first to last.
    pub transforms: Vec<TransformSpec>,
    /// The index.
    pub index: IndexSpec,
}

/// Faiss token prefixes recognised but not implemented yet.
const LATER: [&str; 14] = [
    "IVF", "IMI", "PQ", "OPQ", "PCA", "SQ", "HNSW", "NSG", "RFlat", "Refine", "LSH", "ITQ", "RR",
    "Residual",
];

fn tokens(s: &str) -> Vec<(&str, Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    for part in s.split(',') {
        let lead = part.len() - part.trim_start().len();
        let t = part.trim();
        let b = start + lead;
        out.push((t, b..b + t.len()));
        start += part.len() + 1;
    }
    out
}

impl FactorySpec {
    /// Parses a factory string.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first offending token and its position.
    pub fn parse(input: &str) -> Result<FactorySpec, ParseError> {
        let err = |kind, span: Range<usize>| ParseError {
            kind,
            input: input.to_string(),
            span,
        };
        if input.trim().is_empty() {
            return Err(err(ParseErrorKind::Empty, 0..input.len()));
        }
        let toks = tokens(input);
        let mut id_map = None;
        let mut transforms = Vec::new();
        let mut index = None;
        for (i, (t, span)) in toks.iter().enumerate() {
            let span = span.clone();
            if t.is_empty() {
                return Err(err(ParseErrorKind::Empty, span));
            }
            let known = matches!(*t, "IDMap" | "IDMap2" | "L2norm" | "Flat");
            if !known {
                let kind = if LATER.iter().any(|p| t.starts_with(p)) {
                    ParseErrorKind::NotAvailableYet(t.to_string())
                } else {
                    ParseErrorKind::UnknownToken(t.to_string())
                };
                return Err(err(kind, span));
            }
            if index.is_some() {
                return Err(err(ParseErrorKind::Trailing(t.to_string()), span));
            }
            match *t {
                "IDMap" | "IDMap2" => {
                    if i != 0 {
                        return Err(err(ParseErrorKind::Misplaced(t.to_string()), span));
                    }
                    id_map = Some(if *t == "IDMap" {
                        IdMapKind::IdMap
                    } else {
                        IdMapKind::IdMap2
                    });
                }
                "L2norm" => transforms.push(TransformSpec::L2Norm),
                "Flat" => index = Some(IndexSpec::Flat),
                _ => unreachable!("checked above"),
            }
        }
        let index =
            index.ok_or_else(|| err(ParseErrorKind::MissingIndex, input.len()..input.len()))?;
        Ok(FactorySpec {
            id_map,
            transforms,
            index,
        })
    }

    /// Builds an empty index of dimension `d` for this spec.
    ///
    /// # Errors
    /// Invalid dimensions (`d == 0`).
    pub fn build(&self, d: usize, metric: Metric) -> vq_core::Result<Box<dyn Index>> {
        let base: Box<dyn Index> = match self.index {
            IndexSpec::Flat => Box::new(IndexFlat::new(d, metric)?),
        };
        let inner: Box<dyn Index> = if self.transforms.is_empty() {
            base
        } else {
            let chain = self
                .transforms
                .iter()
                .map(|t| -> vq_core::Result<Box<dyn vq_core::VectorTransform>> {
                    match t {
                        TransformSpec::L2Norm => Ok(Box::new(L2Normalize::new(d)?)),
                    }
                })
                .collect::<vq_core::Result<Vec<_>>>()?;
            Box::new(PreTransform::new(chain, base)?)
        };
        Ok(match self.id_map {
            None => inner,
            Some(IdMapKind::IdMap) => Box::new(IndexIDMap::new(inner)?),
            Some(IdMapKind::IdMap2) => Box::new(IndexIDMap2::new(inner)?),
        })
    }
}

impl FromStr for FactorySpec {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FactorySpec::parse(s)
    }
}

impl fmt::Display for FactorySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = Vec::new();
        match self.id_map {
            Some(IdMapKind::IdMap) => parts.push("IDMap"),
            Some(IdMapKind::IdMap2) => parts.push("IDMap2"),
            None => {}
        }
        for t in &self.transforms {
            match t {
                TransformSpec::L2Norm => parts.push("L2norm"),
            }
        }
        match self.index {
            IndexSpec::Flat => parts.push("Flat"),
        }
        f.write_str(&parts.join(","))
    }
}

/// Parses `description` and builds the index (Faiss's `index_factory`).
///
/// # Errors
/// [`vq_core::Error::Factory`] wrapping a [`ParseError`], or the build's errors.
pub fn index_factory(
    d: usize,
    description: &str,
    metric: Metric,
) -> vq_core::Result<Box<dyn Index>> {
    let spec = FactorySpec::parse(description).map_err(|e| vq_core::Error::Factory(Box::new(e)))?;
    spec.build(d, metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_print_round_trip() {
        for s in [
            "Flat",
            "IDMap,Flat",
            "IDMap2,L2norm,Flat",
            "L2norm,L2norm,Flat",
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
        let e = FactorySpec::parse("IVF1024,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::NotAvailableYet("IVF1024".into()));
        assert_eq!(e.span, 0..7);
        let e = FactorySpec::parse("L2norm,IDMap,Flat").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Misplaced("IDMap".into()));
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
