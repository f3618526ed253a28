//! Distance measures.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How two vectors are compared.
///
/// `L2` results are **squared** Euclidean distances, smallest first; `InnerProduct`
/// results are similarities, largest first (as in Faiss). Cosine similarity is inner
/// product on L2-normalised vectors (see [`crate::L2Normalize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Metric {
    /// Squared Euclidean distance; smaller is closer.
    #[default]
    L2,
    /// Inner product; larger is closer.
    InnerProduct,
}

impl Metric {
    /// `true` when larger values are better (inner product).
    #[inline]
    pub fn is_similarity(self) -> bool {
        matches!(self, Metric::InnerProduct)
    }

    /// The value that pads a result list where fewer than `k` neighbours exist:
    /// `+inf` for L2 and `-inf` for inner product (Faiss uses the same convention).
    #[inline]
    pub fn worst(self) -> f32 {
        match self {
            Metric::L2 => f32::INFINITY,
            Metric::InnerProduct => f32::NEG_INFINITY,
        }
    }

    /// `true` when the value `a` is strictly closer than `b` under this metric.
    #[inline]
    pub fn is_better(self, a: f32, b: f32) -> bool {
        match self {
            Metric::L2 => a < b,
            Metric::InnerProduct => a > b,
        }
    }

    /// Maps a value to a key where smaller is always better (negates similarities).
    /// Negation is exact, so no precision is lost.
    #[inline]
    pub fn to_key(self, value: f32) -> f32 {
        match self {
            Metric::L2 => value,
            Metric::InnerProduct => -value,
        }
    }

    /// The inverse of [`Metric::to_key`], with a zero always `+0.0` (a similarity of 0
    /// is reported the same whichever way its key was signed).
    #[inline]
    pub fn from_key(self, key: f32) -> f32 {
        self.to_key(key) + 0.0
    }

    /// Short name: `"l2"` or `"ip"`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;

    /// Accepts `l2`, `L2`, `euclidean`, `ip`, `IP`, `inner_product`, `dot`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "l2" | "euclidean" | "metric_l2" => Ok(Metric::L2),
            "ip" | "inner_product" | "innerproduct" | "dot" | "metric_inner_product" => {
                Ok(Metric::InnerProduct)
            }
            _ => Err(Error::invalid_param(
                "metric",
                format!("unknown metric `{s}` (expected `l2` or `ip`)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!("L2".parse::<Metric>().unwrap(), Metric::L2);
        assert_eq!("ip".parse::<Metric>().unwrap(), Metric::InnerProduct);
        assert!("cosine".parse::<Metric>().is_err());
        assert!(Metric::L2.is_better(1.0, 2.0));
        assert!(Metric::InnerProduct.is_better(2.0, 1.0));
        assert_eq!(
            Metric::InnerProduct.from_key(Metric::InnerProduct.to_key(3.5)),
            3.5
        );
        assert!(Metric::InnerProduct.worst() < -1e30);
    }
}
