//! Little-endian binary streams for saving graphs, with checks on every read.

use std::io::{Read, Write};

use vq_core::mem::vec_with_huge_pages;
use vq_core::{Error, Result};

/// Largest block read at once: a hostile length field cannot make us allocate more than
/// the stream really holds plus this.
const CHUNK: usize = 1 << 20;

/// Writes values little-endian to a byte sink.
pub struct Writer<'a> {
    inner: &'a mut dyn Write,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::Serialization(format!("write failed: {e}"))
}

impl<'a> Writer<'a> {
    /// Wraps a sink.
    pub fn new(inner: &'a mut dyn Write) -> Writer<'a> {
        Writer { inner }
    }

    /// Raw bytes, no length prefix.
    ///
    /// # Errors
    /// I/O errors.
    pub fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b).map_err(io_err)
    }

    /// One byte.
    ///
    /// # Errors
    /// I/O errors.
    pub fn u8(&mut self, v: u8) -> Result<()> {
        self.bytes(&[v])
    }

    /// A `u32`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn u32(&mut self, v: u32) -> Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    /// A `u64`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn u64(&mut self, v: u64) -> Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    /// A length-prefixed UTF-8 string.
    ///
    /// # Errors
    /// I/O errors.
    pub fn str(&mut self, s: &str) -> Result<()> {
        self.u64(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }

    /// `f32` values, no length prefix.
    ///
    /// # Errors
    /// I/O errors.
    pub fn f32s(&mut self, v: &[f32]) -> Result<()> {
        for c in v.chunks(CHUNK / 4) {
            let b: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.bytes(&b)?;
        }
        Ok(())
    }

    /// `u32` values, no length prefix.
    ///
    /// # Errors
    /// I/O errors.
    pub fn u32s(&mut self, v: impl Iterator<Item = u32>) -> Result<()> {
        let mut b = Vec::with_capacity(CHUNK.min(4 * v.size_hint().0));
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
            if b.len() >= CHUNK {
                self.bytes(&b)?;
                b.clear();
            }
        }
        self.bytes(&b)
    }

    /// `i64` values, no length prefix.
    ///
    /// # Errors
    /// I/O errors.
    pub fn i64s(&mut self, v: &[i64]) -> Result<()> {
        for c in v.chunks(CHUNK / 8) {
            let b: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.bytes(&b)?;
        }
        Ok(())
    }
}

/// Reads what [`Writer`] wrote; every short read or inconsistency is an `Err`.
pub struct Reader<'a> {
    inner: &'a mut dyn Read,
    pos: u64,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader(at byte {})", self.pos)
    }
}

impl<'a> Reader<'a> {
    /// Wraps a source.
    pub fn new(inner: &'a mut dyn Read) -> Reader<'a> {
        Reader { inner, pos: 0 }
    }

    /// An error about malformed contents at the current position.
    pub fn bad(&self, reason: impl std::fmt::Display) -> Error {
        Error::Serialization(format!("HNSW index, byte {}: {reason}", self.pos))
    }

    /// Exactly `n` bytes.
    ///
    /// # Errors
    /// The stream ends first.
    pub fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(CHUNK));
        while out.len() < n {
            let take = (n - out.len()).min(CHUNK);
            let start = out.len();
            out.resize(start + take, 0);
            if let Err(e) = self.inner.read_exact(&mut out[start..]) {
                return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    self.bad(format!("truncated: {} more bytes expected", n - start))
                } else {
                    Error::Serialization(format!("read failed: {e}"))
                });
            }
            self.pos += take as u64;
        }
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&b);
        Ok(a)
    }

    /// One byte.
    ///
    /// # Errors
    /// The stream ends.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A `u32`.
    ///
    /// # Errors
    /// The stream ends.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A `u64`.
    ///
    /// # Errors
    /// The stream ends.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u64` that must fit a `usize`.
    ///
    /// # Errors
    /// The stream ends or the value does not fit.
    pub fn usize(&mut self) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| self.bad(format!("count {v} too large")))
    }

    /// A length-prefixed string (at most 4 KiB).
    ///
    /// # Errors
    /// The stream ends, the length is absurd or the bytes are not UTF-8.
    pub fn str(&mut self) -> Result<String> {
        let n = self.usize()?;
        if n > 4096 {
            return Err(self.bad(format!("string of {n} bytes")));
        }
        let b = self.bytes(n)?;
        String::from_utf8(b).map_err(|_| self.bad("string is not UTF-8"))
    }

    /// `n` `f32` values.
    ///
    /// # Errors
    /// The stream ends.
    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let b = self.bytes(n.checked_mul(4).ok_or_else(|| self.bad("size overflow"))?)?;
        // Huge-page-advised when large: graph searches read stored vectors at random.
        let mut out = vec_with_huge_pages(n);
        out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(out)
    }

    /// `n` `u32` values.
    ///
    /// # Errors
    /// The stream ends.
    pub fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let b = self.bytes(n.checked_mul(4).ok_or_else(|| self.bad("size overflow"))?)?;
        let mut out = vec_with_huge_pages(n);
        out.extend(
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(out)
    }

    /// `n` `i64` values.
    ///
    /// # Errors
    /// The stream ends.
    pub fn i64s(&mut self, n: usize) -> Result<Vec<i64>> {
        let b = self.bytes(n.checked_mul(8).ok_or_else(|| self.bad("size overflow"))?)?;
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                i64::from_le_bytes(a)
            })
            .collect())
    }
}
