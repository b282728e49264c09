//! Where a kernel reads its input: an f32 matrix, or a checkpoint tensor's little-endian BF16/F16/F32 bytes
//! (a safetensors view), decoded one row at a time inside each rayon task. For BF16 that halves the memory
//! read and never materializes an f32 copy of the tensor.

use oxport_hf::DType;
use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::simd;

/// A row-major `[n, k]` matrix to quantize.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    /// Raw little-endian values, e.g. `oxport_hf::TensorView::bytes` with its `dtype`.
    Encoded {
        bytes: &'a [u8],
        dtype: DType,
    },
}

impl<'a> Rows<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::Encoded { bytes, dtype } => bytes.len() / dtype.size_bytes(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `r` of a `[_, k]` matrix as f32: borrowed for f32 input, else decoded into `buf` (exact).
    #[inline]
    pub(crate) fn row<'s>(&'s self, r: usize, k: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
        match *self {
            Rows::F32(v) => &v[r * k..(r + 1) * k],
            Rows::Encoded { bytes, dtype } => {
                let es = dtype.size_bytes();
                buf.resize(k, 0.0);
                decode(&bytes[r * k * es..(r + 1) * k * es], dtype, buf);
                buf
            }
        }
    }

    /// How many values satisfy `pred`, and the flat index of the first; deterministic for any thread count.
    pub(crate) fn count_where(
        &self,
        n: usize,
        k: usize,
        pred: impl Fn(f32) -> bool + Sync,
    ) -> (usize, usize) {
        (0..n)
            .into_par_iter()
            .map_init(Vec::new, |buf, r| {
                let row = self.row(r, k, buf);
                let mut count = 0;
                let mut first = usize::MAX;
                for (j, v) in row.iter().enumerate() {
                    if pred(*v) {
                        count += 1;
                        first = first.min(r * k + j);
                    }
                }
                (count, first)
            })
            .reduce(|| (0, usize::MAX), |a, b| (a.0 + b.0, a.1.min(b.1)))
    }

    /// Check the shape and refuse NaN/±Inf (errors name `<matrix>`; see [`QuantError::for_tensor`]).
    pub(crate) fn check(&self, n: usize, k: usize) -> Result<(), QuantError> {
        if self.len() != n * k || n == 0 || k == 0 {
            return Err(QuantError::ShapeMismatch {
                tensor: ANON.into(),
                n,
                k,
                len: self.len(),
            });
        }
        let (count, first) = match *self {
            // NaN/Inf have an all-ones exponent: test the raw 16-bit patterns, no decoding.
            Rows::Encoded {
                bytes,
                dtype: dtype @ (DType::BF16 | DType::F16),
            } => {
                let exponent: u16 = if dtype == DType::BF16 { 0x7f80 } else { 0x7c00 };
                bytes
                    .par_chunks(2 * k)
                    .enumerate()
                    .map(|(r, row)| count_exponent_all_ones(row, exponent, r * k))
                    .reduce(|| (0, usize::MAX), |a, b| (a.0 + b.0, a.1.min(b.1)))
            }
            _ => self.count_where(n, k, |v| !v.is_finite()),
        };
        if count > 0 {
            return Err(QuantError::NonFinite {
                tensor: ANON.into(),
                count,
                first,
            });
        }
        Ok(())
    }

    /// The value at flat index `i` (for error messages).
    pub(crate) fn value(&self, i: usize) -> f32 {
        let mut buf = Vec::new();
        let k = 1;
        self.row(i, k, &mut buf)[0]
    }
}

simd::multiversion! {
    /// Little-endian BF16/F16/F32 bytes → f32, exact. BF16 is the top half of an f32, so a shift decodes it
    /// (vectorizes, unlike a per-value conversion call); F16 goes through half's F16C slice conversion.
    pub(crate) fn decode(bytes: &[u8], dtype: DType, out: &mut [f32]) {
        match dtype {
            DType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                }
            }
            DType::F16 => {
                use half::slice::HalfFloatSliceExt;
                let mut halves = [half::f16::ZERO; 256];
                for (o, b) in out.chunks_mut(256).zip(bytes.chunks(512)) {
                    let h = &mut halves[..o.len()];
                    for (d, s) in h.iter_mut().zip(b.chunks_exact(2)) {
                        *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]]));
                    }
                    h.convert_to_f32_slice(o);
                }
            }
            DType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }
}

simd::multiversion! {
    /// Count 16-bit values whose `exponent` bits are all ones; also the flat index of the first (`base` + j).
    fn count_exponent_all_ones(row: &[u8], exponent: u16, base: usize) -> (usize, usize) {
        let mut count = 0usize;
        for b in row.chunks_exact(2) {
            count += (u16::from_le_bytes([b[0], b[1]]) & exponent == exponent) as usize;
        }
        let first = if count == 0 {
            usize::MAX
        } else {
            let j = row.chunks_exact(2).position(|b| u16::from_le_bytes([b[0], b[1]]) & exponent == exponent);
            base + j.expect("counted one")
        };
        (count, first)
    }
}
