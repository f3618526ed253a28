//! Factory-string parser: Faiss's rule order (`index_factory_sub`), with the position
//! of every error.

use std::fmt;
use std::ops::Range;

use vq_pq::SqType;

use crate::Factory;
use crate::spec::{CoarseSpec, EncodingSpec, FactorySpec, IdMapKind, TransformSpec};

/// Why a factory string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The string (or a token between commas, or a pair of parentheses) is empty.
    Empty,
    /// A token that is not part of the grammar.
    UnknownToken(String),
    /// A Faiss token the workspace does not implement yet.
    NotAvailableYet(String),
    /// A coarse-quantizer token (`IVF{n}…`, `IMI2x{b}`) whose count is missing,
    /// malformed, zero or too large (`IVF,Flat`, `IVFx`, `IVF99999999999999999999`).
    BadCount(String),
    /// A token in a place where it cannot stand (e.g. `IDMap` after a transform).
    Misplaced(String),
    /// The string ends without an index (e.g. `"L2norm"`).
    MissingIndex,
    /// Tokens after the index (e.g. `"Flat,Flat"`).
    Trailing(String),
    /// A parenthesis without its partner.
    Unbalanced,
    /// Parentheses nested deeper than [`MAX_DEPTH`], or a string longer than
    /// [`MAX_LEN`] bytes.
    TooComplex,
}

/// Deepest nesting of parentheses a factory string may have.
pub const MAX_DEPTH: usize = 16;
/// Longest factory string, in bytes.
pub const MAX_LEN: usize = 4096;

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
            ParseErrorKind::BadCount(t) => write!(
                f,
                "token `{t}` at position {at} needs a count (e.g. `IVF4096`, `IVF4k`, \
                 `IMI2x12`): missing, malformed, zero or too large"
            )?,
            ParseErrorKind::Misplaced(t) => write!(f, "token `{t}` cannot stand at position {at}")?,
            ParseErrorKind::MissingIndex => write!(
                f,
                "the string ends at position {at} without an index (e.g. `Flat`)"
            )?,
            ParseErrorKind::Trailing(t) => {
                write!(f, "unexpected `{t}` at position {at} after the index")?
            }
            ParseErrorKind::Unbalanced => write!(f, "unbalanced parenthesis at position {at}")?,
            ParseErrorKind::TooComplex => write!(
                f,
                "the string nests parentheses deeper than {MAX_DEPTH} or is longer than \
                 {MAX_LEN} bytes (position {at})"
            )?,
        }
        write!(f, " in `{}`", self.input)?;
        // The marker counts characters, not bytes, so it lines up under non-ASCII input.
        let col = self.input[..self.span.start].chars().count();
        let width = self.input[self.span.clone()].chars().count().max(1);
        write!(
            f,
            "\n  {}\n  {}{}",
            self.input,
            " ".repeat(col),
            "^".repeat(width)
        )
    }
}

/// Faiss token prefixes recognised but not implemented yet.
const LATER: [&str; 17] = [
    "IVF",
    "IMI",
    "NSG",
    "LSH",
    "ITQ",
    "Residual",
    "RQ",
    "LSQ",
    "PRQ",
    "PLSQ",
    "RaBitQ",
    "ZnLattice",
    "MinMax",
    "Pad",
    "RCQ",
    "LSCQ",
    "FlatDedup",
];

#[derive(Clone, Copy, Debug)]
struct Tok<'s> {
    text: &'s str,
    start: usize,
}

impl Tok<'_> {
    fn span(&self) -> Range<usize> {
        self.start..self.start + self.text.len()
    }
}

pub(crate) struct Parser<'a> {
    input: &'a str,
    factory: &'a Factory,
    depth: std::cell::Cell<usize>,
}

type PResult<T> = Result<T, ParseError>;

/// Parses a positive decimal number (no sign, no leading `+`).
fn num(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&v| v > 0)
}

/// Parses `{n}[k|M]`.
fn ivf_lists(rest: &str) -> Option<usize> {
    let (digits, mult) = if let Some(r) = rest.strip_suffix('k') {
        (r, 1 << 10)
    } else if let Some(r) = rest.strip_suffix('M') {
        (r, 1 << 20)
    } else {
        (rest, 1)
    };
    num(digits)?.checked_mul(mult)
}

fn builtin_transform(t: &str) -> Option<TransformSpec> {
    if t == "L2norm" || t == "L2Norm" {
        return Some(TransformSpec::L2Norm);
    }
    if t == "RR" {
        return Some(TransformSpec::RandomRotation { d_out: None });
    }
    if let Some(rest) = t.strip_prefix("OPQ") {
        let (m, d) = match rest.split_once('_') {
            Some((m, d)) => (num(m)?, Some(num(d)?)),
            None => (num(rest)?, None),
        };
        return Some(TransformSpec::Opq { m, d_out: d });
    }
    if let Some(rest) = t.strip_prefix("PCA") {
        let (whiten, rest) = match rest.strip_prefix('W') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (rotate, rest) = match rest.strip_prefix('R') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        return Some(TransformSpec::Pca {
            d_out: num(rest)?,
            whiten,
            rotate,
        });
    }
    if let Some(rest) = t.strip_prefix("RR") {
        return Some(TransformSpec::RandomRotation {
            d_out: Some(num(rest)?),
        });
    }
    None
}

fn builtin_encoding(t: &str) -> Option<EncodingSpec> {
    if t == "Flat" {
        return Some(EncodingSpec::Flat);
    }
    if let Some(fs) = fast_scan(t) {
        return Some(fs);
    }
    if let Some(rest) = t.strip_prefix("PQ") {
        let rest = rest.strip_suffix("np").unwrap_or(rest);
        let (m, nbits) = match rest.split_once('x') {
            Some((m, b)) => (num(m)?, num(b)?),
            None => (num(rest)?, 8),
        };
        return Some(EncodingSpec::Pq { m, nbits });
    }
    if let Some(rest) = t.strip_prefix("SQ") {
        return Some(EncodingSpec::Sq(SqType::parse(rest)?));
    }
    None
}

/// Does `t` have the shape of a coarse quantizer (`IVF{n}…`, `IMI2x{b}`), without
/// parsing a parenthesised sub-index?
fn coarse_shape(t: &str) -> bool {
    if let Some(rest) = t.strip_prefix("IMI2x") {
        return num(rest).is_some();
    }
    let Some(rest) = t.strip_prefix("IVF") else {
        return false;
    };
    if let Some(open) = rest.find('(') {
        return rest.ends_with(')') && ivf_lists(&rest[..open]).is_some();
    }
    match rest.split_once("_HNSW") {
        Some((n, m)) => ivf_lists(n).is_some() && (m.is_empty() || num(m).is_some()),
        None => ivf_lists(rest).is_some(),
    }
}

/// Is `t` an `IVF…` / `IMI…` token whose count cannot be read? (One whose count reads
/// but whose variant is not provided, `IVF1024_NSG32`, is not.)
fn bad_coarse_count(t: &str) -> bool {
    if let Some(rest) = t.strip_prefix("IMI") {
        let count = rest.strip_prefix("2x").unwrap_or("");
        let cut = count.find(['_', '(']).unwrap_or(count.len());
        return num(&count[..cut]).is_none_or(|b| b == 0);
    }
    let Some(rest) = t.strip_prefix("IVF") else {
        return false;
    };
    let cut = rest.find(['_', '(']).unwrap_or(rest.len());
    ivf_lists(&rest[..cut]).is_none_or(|n| n == 0)
}

/// `PQ{M}x4fs`, `PQ{M}x4fsr`, with an optional `_{bbs}` (a multiple of 32).
fn fast_scan(t: &str) -> Option<EncodingSpec> {
    let (m, rest) = t.strip_prefix("PQ")?.split_once("x4fs")?;
    let m = num(m)?;
    let (by_residual, rest) = match rest.strip_prefix('r') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let bbs = match rest {
        "" => 32,
        _ => num(rest.strip_prefix('_')?).filter(|b| b % 32 == 0)?,
    };
    Some(EncodingSpec::PqFastScan {
        m,
        by_residual,
        bbs,
    })
}

/// Faiss's additive-quantizer fast-scan spellings (`PQ16x4fs+…`, `RQ…fs`...): known,
/// not provided.
fn is_later_pq(t: &str) -> bool {
    t.starts_with("PQ") && (t.contains('+') || (t.contains("fs") && fast_scan(t).is_none()))
}

/// Parses what follows `HNSW`: `[{M}][_{encoding}]`, the encoding `None` when absent.
fn hnsw_token(
    rest: &str,
    enc: impl Fn(&str) -> Option<EncodingSpec>,
) -> Option<(usize, Option<EncodingSpec>)> {
    let (m, e) = match rest.split_once('_') {
        Some((m, e)) => (m, Some(enc(e)?)),
        None => (rest, None),
    };
    let m = if m.is_empty() { 32 } else { num(m)? };
    Some((m, e))
}

impl<'a> Parser<'a> {
    pub(crate) fn new(input: &'a str, factory: &'a Factory) -> Parser<'a> {
        Parser {
            input,
            factory,
            depth: std::cell::Cell::new(0),
        }
    }

    fn err(&self, kind: ParseErrorKind, span: Range<usize>) -> ParseError {
        ParseError {
            kind,
            input: self.input.to_string(),
            span,
        }
    }

    /// Splits `input[range]` at top-level commas; checks parentheses.
    fn tokens(&self, range: Range<usize>) -> PResult<Vec<Tok<'a>>> {
        let s = &self.input[range.clone()];
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut open_at = 0usize;
        let mut start = 0usize;
        let push = |out: &mut Vec<Tok<'a>>, from: usize, to: usize| -> PResult<()> {
            let part = &self.input[range.start + from..range.start + to];
            let lead = part.len() - part.trim_start().len();
            let text = part.trim();
            let b = range.start + from + lead;
            if text.is_empty() {
                return Err(self.err(ParseErrorKind::Empty, b..b));
            }
            out.push(Tok { text, start: b });
            Ok(())
        };
        for (i, c) in s.char_indices() {
            match c {
                '(' => {
                    if depth == 0 {
                        open_at = i;
                    }
                    depth += 1;
                }
                ')' => {
                    if depth == 0 {
                        let at = range.start + i;
                        return Err(self.err(ParseErrorKind::Unbalanced, at..at + 1));
                    }
                    depth -= 1;
                }
                ',' if depth == 0 => {
                    push(&mut out, start, i)?;
                    start = i + 1;
                }
                _ => {}
            }
        }
        if depth > 0 {
            let at = range.start + open_at;
            return Err(self.err(ParseErrorKind::Unbalanced, at..at + 1));
        }
        push(&mut out, start, s.len())?;
        Ok(out)
    }

    pub(crate) fn parse(&self) -> PResult<FactorySpec> {
        if self.input.trim().is_empty() {
            return Err(self.err(ParseErrorKind::Empty, 0..self.input.len()));
        }
        if self.input.len() > MAX_LEN {
            let at = (0..=MAX_LEN)
                .rev()
                .find(|&i| self.input.is_char_boundary(i))
                .unwrap_or(0);
            return Err(self.err(ParseErrorKind::TooComplex, at..self.input.len()));
        }
        let toks = self.tokens(0..self.input.len())?;
        self.node(&toks, self.input.len(), true)
    }

    /// Does `t` read as a built-in token (so a registered name cannot take it)?
    fn builtin(&self, t: &str) -> bool {
        matches!(t, "IDMap" | "IDMap2" | "RFlat")
            || t.starts_with("Refine(")
            || builtin_transform(t).is_some()
            || builtin_encoding(t).is_some()
            || is_later_pq(t)
            || hnsw_token(t.strip_prefix("HNSW").unwrap_or("-"), builtin_encoding).is_some()
            || coarse_shape(t)
    }

    fn transform(&self, t: &str) -> Option<TransformSpec> {
        builtin_transform(t).or_else(|| {
            if self.builtin(t) {
                return None;
            }
            let (name, args) = self.factory.transform_token(t)?;
            Some(TransformSpec::Custom { name, args })
        })
    }

    fn encoding(&self, t: &str) -> Option<EncodingSpec> {
        if is_later_pq(t) {
            return None;
        }
        builtin_encoding(t).or_else(|| {
            if self.builtin(t) {
                return None;
            }
            let (name, args) = self.factory.codec_token(t)?;
            Some(EncodingSpec::Custom { name, args })
        })
    }

    fn hnsw(&self, t: &str) -> Option<(usize, Option<EncodingSpec>)> {
        hnsw_token(t.strip_prefix("HNSW")?, |e| self.encoding(e))
    }

    /// Parses a coarse-quantizer token, sub-index included.
    fn coarse(&self, tok: &Tok<'a>) -> PResult<Option<CoarseSpec>> {
        let t = tok.text;
        if let Some(rest) = t.strip_prefix("IMI2x") {
            return Ok(num(rest).map(|bits| CoarseSpec::Imi { bits }));
        }
        let Some(rest) = t.strip_prefix("IVF") else {
            return Ok(None);
        };
        if let Some(open) = rest.find('(') {
            if !rest.ends_with(')') {
                return Ok(None);
            }
            let Some(nlist) = ivf_lists(&rest[..open]) else {
                return Ok(None);
            };
            let inner_start = tok.start + 3 + open + 1;
            let inner_end = tok.start + t.len() - 1;
            let quantizer = self.sub(inner_start..inner_end, tok)?;
            return Ok(Some(CoarseSpec::IvfIndex {
                nlist,
                quantizer: Box::new(quantizer),
            }));
        }
        Ok(match rest.split_once("_HNSW") {
            Some((n, m)) => (|| {
                Some(CoarseSpec::IvfHnsw {
                    nlist: ivf_lists(n)?,
                    m: if m.is_empty() { 32 } else { num(m)? },
                })
            })(),
            None => ivf_lists(rest).map(|nlist| CoarseSpec::Ivf { nlist }),
        })
    }

    /// Parses the string between a pair of parentheses (`tok` holds them).
    fn sub(&self, range: Range<usize>, tok: &Tok<'a>) -> PResult<FactorySpec> {
        if self.input[range.clone()].trim().is_empty() {
            return Err(self.err(ParseErrorKind::Empty, tok.span()));
        }
        if self.depth.get() >= MAX_DEPTH {
            return Err(self.err(ParseErrorKind::TooComplex, tok.span()));
        }
        self.depth.set(self.depth.get() + 1);
        // Id maps wrap the whole index only: a quantizer or a refine index has no
        // user ids.
        let r = self
            .tokens(range.clone())
            .and_then(|toks| self.node(&toks, range.end, false));
        self.depth.set(self.depth.get() - 1);
        r
    }

    /// Is `t` something the grammar knows, so that finding it here means it is
    /// misplaced rather than unknown?
    fn known(&self, tok: &Tok<'a>) -> bool {
        let t = tok.text;
        t == "IDMap"
            || t == "IDMap2"
            || t == "RFlat"
            || t.starts_with("Refine(")
            || self.transform(t).is_some()
            || self.encoding(t).is_some()
            || self.hnsw(t).is_some()
            || coarse_shape(t)
    }

    /// The error for a token that cannot stand where it is.
    fn bad(&self, tok: &Tok<'a>) -> ParseError {
        let t = tok.text.to_string();
        // An error inside a parenthesised sub-index is more precise than "misplaced".
        if let Err(e) = self.coarse(tok) {
            return e;
        }
        let kind = if self.known(tok) {
            ParseErrorKind::Misplaced(t)
        } else if bad_coarse_count(&t) {
            ParseErrorKind::BadCount(t)
        } else if is_later_pq(&t)
            || t.starts_with("Refine")
            || LATER.iter().any(|p| t.starts_with(p))
        {
            ParseErrorKind::NotAvailableYet(t)
        } else {
            ParseErrorKind::UnknownToken(t)
        };
        self.err(kind, tok.span())
    }

    /// Faiss's `index_factory_sub`: id maps, refinement, transforms, then the index.
    fn node(&self, toks: &[Tok<'a>], end: usize, id_map: bool) -> PResult<FactorySpec> {
        let n = toks.len();
        // 1. Id wrappers, as prefix or suffix (one per index: a second is misplaced).
        for (name, kind) in [("IDMap2", IdMapKind::IdMap2), ("IDMap", IdMapKind::IdMap)] {
            for (at, rest, inner_end) in [(0, 1..n, end), (n - 1, 0..n - 1, toks[n - 1].start)] {
                if n > 1 && toks[at].text == name {
                    if !id_map {
                        return Err(
                            self.err(ParseErrorKind::Misplaced(name.to_string()), toks[at].span())
                        );
                    }
                    return Ok(FactorySpec::IdMap {
                        kind,
                        inner: Box::new(self.node(&toks[rest], inner_end, false)?),
                    });
                }
            }
        }
        // 2. Refinement suffix: applies to everything on its left, transforms included.
        if n > 1 {
            let last = &toks[n - 1];
            let refine = if last.text == "RFlat" {
                Some(FactorySpec::Codes(EncodingSpec::Flat))
            } else if last.text.starts_with("Refine(") && last.text.ends_with(')') {
                Some(self.sub(last.start + 7..last.start + last.text.len() - 1, last)?)
            } else {
                None
            };
            if let Some(refine) = refine {
                return Ok(FactorySpec::Refine {
                    base: Box::new(self.node(&toks[..n - 1], last.start, false)?),
                    refine: Box::new(refine),
                });
            }
        }
        // 3. Leading transforms.
        let mut chain = Vec::new();
        let mut i = 0;
        while i < n {
            match self.transform(toks[i].text) {
                Some(t) => chain.push(t),
                None => break,
            }
            i += 1;
        }
        if i == n {
            return Err(self.err(ParseErrorKind::MissingIndex, end..end));
        }
        if chain.is_empty() {
            return self.core(toks, end);
        }
        // As Faiss: what follows the transforms is parsed with the whole rule set again
        // (`L2norm,IDMap,Flat`).
        let inner = self.node(&toks[i..], end, id_map)?;
        Ok(if chain.is_empty() {
            inner
        } else {
            FactorySpec::PreTransform {
                chain,
                inner: Box::new(inner),
            }
        })
    }

    /// The index itself: a stand-alone encoding, a graph, or an inverted file.
    fn core(&self, toks: &[Tok<'a>], end: usize) -> PResult<FactorySpec> {
        let t0 = &toks[0];
        let trailing = |tok: &Tok<'a>| -> ParseError {
            if self.known(tok) {
                self.err(ParseErrorKind::Trailing(tok.text.to_string()), tok.span())
            } else {
                self.bad(tok)
            }
        };
        let misplaced =
            |tok: &Tok<'a>| self.err(ParseErrorKind::Misplaced(tok.text.to_string()), tok.span());
        if let Some(enc) = self.encoding(t0.text) {
            // Residuals need an inverted file.
            if matches!(
                enc,
                EncodingSpec::PqFastScan {
                    by_residual: true,
                    ..
                }
            ) {
                return Err(misplaced(t0));
            }
            return match toks.get(1) {
                None => Ok(FactorySpec::Codes(enc)),
                Some(t) => Err(trailing(t)),
            };
        }
        if let Some((m, storage)) = self.hnsw(t0.text) {
            let (storage, used) = match storage {
                Some(s) => (s, 1),
                None => match toks.get(1) {
                    None => (EncodingSpec::Flat, 1),
                    Some(t) => match self.encoding(t.text) {
                        Some(s) => (s, 2),
                        None => return Err(self.bad(t)),
                    },
                },
            };
            // Graphs visit vectors one at a time: fast-scan blocks do not apply (as
            // Faiss).
            if matches!(storage, EncodingSpec::PqFastScan { .. }) {
                return Err(misplaced(&toks[used - 1]));
            }
            return match toks.get(used) {
                None => Ok(FactorySpec::Hnsw { m, storage }),
                Some(t) => Err(trailing(t)),
            };
        }
        if let Some(coarse) = self.coarse(t0)? {
            let Some(t1) = toks.get(1) else {
                return Err(self.err(ParseErrorKind::MissingIndex, end..end));
            };
            let Some(encoding) = self.encoding(t1.text) else {
                return Err(self.bad(t1));
            };
            return match toks.get(2) {
                None => Ok(FactorySpec::Ivf { coarse, encoding }),
                Some(t) => Err(trailing(t)),
            };
        }
        Err(self.bad(t0))
    }
}
