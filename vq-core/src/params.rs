//! Per-call search parameters and Faiss-style parameter strings.

use std::fmt;

use crate::error::{Error, Result};
use crate::selector::IdFilter;

/// Parameters passed to each search call, never stored by mutating a shared index.
///
/// Every field is optional: `None` means "the index's own default". An index ignores
/// fields that do not apply to it; [`crate::Index::search_param_names`] says which apply,
/// so tools can reject a parameter an index does not have (as Faiss's `ParameterSpace`
/// does).
///
/// Parameter strings use Faiss's syntax: `name=value` pairs separated by commas, with a
/// `quantizer_` prefix for the coarse quantizer's own parameters.
///
/// ```
/// use vq_core::SearchParams;
/// let p = SearchParams::parse("nprobe=16,efSearch=64,quantizer_efSearch=128")?;
/// assert_eq!(p.nprobe, Some(16));
/// assert_eq!(p.ef_search, Some(64));
/// assert_eq!(p.quantizer.as_ref().unwrap().ef_search, Some(128));
/// assert_eq!(p.to_string(), "nprobe=16,efSearch=64,quantizer_efSearch=128");
/// assert!(SearchParams::parse("nprobe=-1").is_err());
/// assert!(SearchParams::parse("nprobes=4").is_err());
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SearchParams<'a> {
    /// IVF: number of inverted lists visited per query (`nprobe`).
    pub nprobe: Option<usize>,
    /// IVF: stop after scanning this many codes per query (`max_codes`; 0 = no limit).
    pub max_codes: Option<usize>,
    /// HNSW: size of the dynamic candidate list (`efSearch`).
    pub ef_search: Option<usize>,
    /// Re-ranking: candidates fetched = `k_factor × k` (`k_factor` / `k_factor_rf`).
    pub k_factor: Option<f32>,
    /// Only ids this filter accepts are returned.
    pub selector: Option<&'a dyn IdFilter>,
    /// Parameters for the coarse quantizer (`quantizer_` prefix).
    pub quantizer: Option<Box<SearchParams<'a>>>,
    /// The caller re-ranks the results itself (as [`crate::IndexRefine`] does with its
    /// base): an index may then return its candidates ranked by approximate distances
    /// instead of exact ones. The fast-scan IVF without residuals (`IVFn,PQMx4fs`)
    /// then returns the k smallest quantised sums with their estimated distances and
    /// skips its exact ADC scoring, as Faiss's fast-scan indexes always do; every other
    /// index ignores it. Default `false`.
    pub approximate: bool,
}

impl fmt::Debug for SearchParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchParams")
            .field("nprobe", &self.nprobe)
            .field("max_codes", &self.max_codes)
            .field("ef_search", &self.ef_search)
            .field("k_factor", &self.k_factor)
            .field("selector", &self.selector.map(|_| "IdFilter"))
            .field("quantizer", &self.quantizer)
            .field("approximate", &self.approximate)
            .finish()
    }
}

/// The parameter names [`SearchParams::set`] understands (without the `quantizer_`
/// prefix), in Faiss's spelling.
pub const PARAM_NAMES: [&str; 5] = ["nprobe", "max_codes", "efSearch", "k_factor", "k_factor_rf"];

impl<'a> SearchParams<'a> {
    /// Default parameters (every field `None`).
    pub fn new() -> SearchParams<'a> {
        SearchParams::default()
    }

    /// Sets `nprobe`.
    pub fn with_nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = Some(nprobe);
        self
    }

    /// Sets `efSearch`.
    pub fn with_ef_search(mut self, ef: usize) -> Self {
        self.ef_search = Some(ef);
        self
    }

    /// Sets the id filter.
    pub fn with_selector(mut self, selector: &'a dyn IdFilter) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Sets [`SearchParams::approximate`].
    pub fn with_approximate(mut self, approximate: bool) -> Self {
        self.approximate = approximate;
        self
    }

    /// Parses a Faiss-style parameter string (`"nprobe=16,efSearch=64"`). An empty
    /// string gives the defaults.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an unknown name, a missing `=`, or a bad value.
    pub fn parse(s: &str) -> Result<SearchParams<'static>> {
        let mut p = SearchParams::default();
        for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                Error::invalid_param(item, "expected `name=value` (e.g. `nprobe=16`)")
            })?;
            p.set(name.trim(), value.trim())?;
        }
        Ok(p)
    }

    /// Sets one parameter by its Faiss name.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an unknown name or a value out of range.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        if let Some(inner) = name.strip_prefix("quantizer_") {
            return self
                .quantizer
                .get_or_insert_with(Default::default)
                .set(inner, value);
        }
        let count = |v: &str, min: usize| -> Result<usize> {
            match v.parse::<usize>() {
                Ok(x) if x >= min => Ok(x),
                _ => Err(Error::invalid_param(
                    name,
                    format!("`{v}` is not an integer >= {min}"),
                )),
            }
        };
        match name {
            "nprobe" => self.nprobe = Some(count(value, 1)?),
            "max_codes" => self.max_codes = Some(count(value, 0)?),
            "efSearch" => self.ef_search = Some(count(value, 1)?),
            "k_factor" | "k_factor_rf" => match value.parse::<f32>() {
                Ok(x) if x.is_finite() && x >= 1.0 => self.k_factor = Some(x),
                _ => {
                    return Err(Error::invalid_param(
                        name,
                        format!("`{value}` is not a number >= 1"),
                    ));
                }
            },
            _ => {
                return Err(Error::invalid_param(
                    name,
                    format!(
                        "unknown search parameter (known: {})",
                        PARAM_NAMES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The names of the parameters that are set, with `quantizer_` prefixes for nested
    /// ones (the selector is not a named parameter).
    pub fn names_set(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.nprobe.is_some() {
            v.push("nprobe".to_string());
        }
        if self.max_codes.is_some() {
            v.push("max_codes".to_string());
        }
        if self.ef_search.is_some() {
            v.push("efSearch".to_string());
        }
        if self.k_factor.is_some() {
            v.push("k_factor".to_string());
        }
        if let Some(q) = &self.quantizer {
            v.extend(q.names_set().into_iter().map(|n| format!("quantizer_{n}")));
        }
        v
    }
}

impl fmt::Display for SearchParams<'_> {
    /// The canonical parameter string (the selector is not printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(x) = self.nprobe {
            parts.push(format!("nprobe={x}"));
        }
        if let Some(x) = self.max_codes {
            parts.push(format!("max_codes={x}"));
        }
        if let Some(x) = self.ef_search {
            parts.push(format!("efSearch={x}"));
        }
        if let Some(x) = self.k_factor {
            parts.push(format!("k_factor={x}"));
        }
        if let Some(q) = &self.quantizer {
            let inner = q.to_string();
            parts.extend(
                inner
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("quantizer_{s}")),
            );
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_and_round_trip() {
        assert!(SearchParams::parse("").unwrap().names_set().is_empty());
        assert!(SearchParams::parse("nprobe").is_err());
        assert!(SearchParams::parse("nprobe=0").is_err());
        assert!(SearchParams::parse("efSearch=abc").is_err());
        assert!(SearchParams::parse("k_factor=0.5").is_err());
        let p = SearchParams::parse(" nprobe = 8 , k_factor_rf=4 ").unwrap();
        assert_eq!(p.names_set(), vec!["nprobe", "k_factor"]);
        let again = SearchParams::parse(&p.to_string()).unwrap();
        assert_eq!(again.to_string(), p.to_string());
    }
}
