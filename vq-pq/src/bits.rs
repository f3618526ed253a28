//! Bit-packed codes: `n` values of `nbits` bits each, least significant bit first
//! (value `i` occupies bits `i·nbits .. (i+1)·nbits` of the little-endian bit stream),
//! the layout Faiss's `PQEncoderGeneric` and scalar quantizers use.
//!
//! ```
//! use vq_pq::bits::{pack, unpack, packed_len};
//! let values = [5u32, 0, 7, 3, 1];
//! let mut code = vec![0u8; packed_len(values.len(), 3)];
//! pack(&values, 3, &mut code);
//! assert_eq!(code.len(), 2);
//! let mut back = [0u32; 5];
//! unpack(&code, 3, &mut back);
//! assert_eq!(back, values);
//! ```

/// Bytes needed for `n` values of `nbits` bits.
#[inline]
pub fn packed_len(n: usize, nbits: usize) -> usize {
    (n * nbits).div_ceil(8)
}

/// Writes values of `nbits` bits (1..=32) one after the other into a byte buffer.
#[derive(Debug)]
pub struct BitWriter<'a> {
    buf: &'a mut [u8],
    bit: usize,
}

impl<'a> BitWriter<'a> {
    /// A writer at the start of `buf`; the bytes it touches are overwritten, so `buf`
    /// need not be zeroed.
    pub fn new(buf: &'a mut [u8]) -> BitWriter<'a> {
        BitWriter { buf, bit: 0 }
    }

    /// Appends the low `nbits` bits of `value`.
    ///
    /// # Panics
    /// If the buffer is too short (callers size it with [`packed_len`]).
    #[inline]
    pub fn write(&mut self, value: u32, nbits: usize) {
        let mut v = u64::from(value) & ((1u64 << nbits) - 1);
        let mut left = nbits;
        while left > 0 {
            let byte = self.bit / 8;
            let off = self.bit % 8;
            let take = (8 - off).min(left);
            let mask = (((1u16 << take) - 1) as u8) << off;
            let b = &mut self.buf[byte];
            *b = (*b & !mask) | (((v as u8) << off) & mask);
            v >>= take;
            left -= take;
            self.bit += take;
        }
    }
}

/// Reads values of `nbits` bits (1..=32) one after the other from a byte buffer.
#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> BitReader<'a> {
        BitReader { buf, bit: 0 }
    }

    /// Reads the next `nbits` bits; bits past the end of the buffer read as zero.
    #[inline]
    pub fn read(&mut self, nbits: usize) -> u32 {
        let byte = self.bit / 8;
        let off = self.bit % 8;
        let mut acc = 0u64;
        let need = (off + nbits).div_ceil(8);
        for i in 0..need {
            acc |= u64::from(self.buf.get(byte + i).copied().unwrap_or(0)) << (8 * i);
        }
        self.bit += nbits;
        ((acc >> off) & ((1u64 << nbits) - 1)) as u32
    }
}

/// Packs `values` (each below `2^nbits`) into `out` (`packed_len(values.len(), nbits)`
/// bytes or more; bytes beyond are left alone).
pub fn pack(values: &[u32], nbits: usize, out: &mut [u8]) {
    let mut w = BitWriter::new(out);
    for &v in values {
        w.write(v, nbits);
    }
}

/// Unpacks `out.len()` values of `nbits` bits from `code`.
pub fn unpack(code: &[u8], nbits: usize, out: &mut [u32]) {
    let mut r = BitReader::new(code);
    for o in out {
        *o = r.read(nbits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips_and_matches_the_bit_order() {
        for nbits in 1..=16usize {
            let n = 13;
            let values: Vec<u32> = (0..n as u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 7) & ((1 << nbits) - 1))
                .collect();
            let mut code = vec![0xAAu8; packed_len(n, nbits)];
            pack(&values, nbits, &mut code);
            let mut back = vec![0u32; n];
            unpack(&code, nbits, &mut back);
            assert_eq!(back, values, "nbits {nbits}");
            // LSB-first: bit j of value i is bit i*nbits+j of the stream.
            for (i, &v) in values.iter().enumerate() {
                for j in 0..nbits {
                    let pos = i * nbits + j;
                    let bit = (code[pos / 8] >> (pos % 8)) & 1;
                    assert_eq!(u32::from(bit), (v >> j) & 1);
                }
            }
        }
    }
}
