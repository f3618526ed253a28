//! Validated views of row-major vector sets, and ids.

use crate::error::{Error, Result};

/// Values from which [`VectorsRef::check_finite`] splits its scan over threads.
const PARALLEL_CHECK: usize = 1 << 20;

/// A vector id. Results use [`NO_LABEL`] (`-1`) where fewer than `k` neighbours exist,
/// exactly as Faiss does, so results map one-to-one onto Faiss's.
pub type Label = i64;

/// The id that pads missing results.
pub const NO_LABEL: Label = -1;

/// A borrowed, validated set of `len()` vectors of dimension `dim()`, stored row-major.
///
/// Construction checks that the dimension is non-zero and that the buffer holds whole
/// vectors; [`VectorsRef::new_finite`] also rejects NaN and infinities. Operations that
/// need finite values (adding to an index, searching) check again at their boundary.
///
/// ```
/// use vq_core::VectorsRef;
/// let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let x = VectorsRef::new(&data, 3)?;
/// assert_eq!(x.len(), 2);
/// assert_eq!(x.row(1), &[4.0, 5.0, 6.0]);
/// assert!(VectorsRef::new(&data, 4).is_err());
/// # Ok::<(), vq_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorsRef<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> VectorsRef<'a> {
    /// Views `data` as vectors of dimension `dim`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `dim == 0`; [`Error::RaggedData`] if `data.len()` is
    /// not a multiple of `dim`.
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid_param(
                "dim",
                "the dimension must be at least 1",
            ));
        }
        if !data.len().is_multiple_of(dim) {
            return Err(Error::RaggedData {
                len: data.len(),
                dim,
            });
        }
        Ok(VectorsRef { data, dim })
    }

    /// Like [`VectorsRef::new`], and also rejects NaN and infinite values.
    ///
    /// # Errors
    /// As [`VectorsRef::new`], plus [`Error::NonFinite`] naming the first bad value.
    pub fn new_finite(data: &'a [f32], dim: usize) -> Result<Self> {
        let v = Self::new(data, dim)?;
        v.check_finite()?;
        Ok(v)
    }

    /// Checks that every value is finite.
    ///
    /// # Errors
    /// [`Error::NonFinite`] with the position of the first NaN or infinity.
    pub fn check_finite(&self) -> Result<()> {
        // Fast path, vectorisable: a branch-free test over blocks.
        let block_bad = |c: &[f32]| !c.iter().fold(true, |ok, x| ok & x.is_finite());
        let bad = if self.data.len() >= PARALLEL_CHECK {
            use rayon::prelude::*;
            self.data
                .par_chunks(PARALLEL_CHECK / 4)
                .any(|c| c.chunks(1024).any(block_bad))
        } else {
            self.data.chunks(1024).any(block_bad)
        };
        if !bad {
            return Ok(());
        }
        match self.data.iter().position(|x| !x.is_finite()) {
            Some(pos) => Err(Error::NonFinite {
                row: pos / self.dim,
                col: pos % self.dim,
                value: self.data[pos],
            }),
            None => Ok(()),
        }
    }

    /// Checks that the dimension equals `expected`.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`].
    pub fn check_dim(&self, expected: usize) -> Result<()> {
        if self.dim != expected {
            return Err(Error::DimensionMismatch {
                expected,
                got: self.dim,
            });
        }
        Ok(())
    }

    /// Dimension of each vector.
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// `true` when there are no vectors.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The whole row-major buffer (`len() * dim()` values).
    #[inline]
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Vector `i`.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterator over the vectors.
    #[inline]
    pub fn rows(&self) -> std::slice::ChunksExact<'a, f32> {
        self.data.chunks_exact(self.dim)
    }

    /// The vectors `range` as a new view.
    ///
    /// # Panics
    /// If the range is out of bounds, like slice indexing.
    #[inline]
    pub fn slice(&self, range: std::ops::Range<usize>) -> VectorsRef<'a> {
        VectorsRef {
            data: &self.data[range.start * self.dim..range.end * self.dim],
            dim: self.dim,
        }
    }

    /// Copies into an owned [`Vectors`].
    pub fn to_owned(&self) -> Vectors {
        Vectors {
            data: self.data.to_vec(),
            dim: self.dim,
        }
    }
}

/// An owned set of vectors: the counterpart of [`VectorsRef`], returned by readers and
/// generators.
#[derive(Clone, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Vectors {
    data: Vec<f32>,
    dim: usize,
}

impl Vectors {
    /// Takes ownership of `data` as vectors of dimension `dim`.
    ///
    /// # Errors
    /// As [`VectorsRef::new`].
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        VectorsRef::new(&data, dim)?;
        Ok(Vectors { data, dim })
    }

    /// A borrowed view.
    #[inline]
    pub fn as_ref(&self) -> VectorsRef<'_> {
        VectorsRef {
            data: &self.data,
            dim: self.dim,
        }
    }

    /// Dimension of each vector.
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// `true` when there are no vectors.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Vector `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The row-major buffer.
    #[inline]
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The row-major buffer, mutably.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Gives back the buffer.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Keeps the first `n` vectors (no-op when `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        self.data.truncate(n * self.dim);
    }
}

impl<'a> From<&'a Vectors> for VectorsRef<'a> {
    fn from(v: &'a Vectors) -> Self {
        v.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(matches!(
            VectorsRef::new(&[1.0; 5], 2),
            Err(Error::RaggedData { len: 5, dim: 2 })
        ));
        assert!(VectorsRef::new(&[1.0; 4], 0).is_err());
        let data = [1.0, 2.0, f32::NAN, 4.0];
        match VectorsRef::new_finite(&data, 2) {
            Err(Error::NonFinite { row: 1, col: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        let inf = [1.0, f32::INFINITY];
        assert!(VectorsRef::new_finite(&inf, 1).is_err());
        let ok = [1.0f32; 3000];
        assert!(VectorsRef::new_finite(&ok, 3).is_ok());
        let v = VectorsRef::new(&ok, 3).unwrap();
        assert_eq!(v.slice(2..5).len(), 3);
        assert!(v.check_dim(4).is_err());
    }
}
