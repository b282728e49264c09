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

    /// The shape part of [`check`](Self::check), for kernels that refuse NaN/±Inf in their own row pass
    /// ([`row_finite`](Self::row_finite)), so the weight is read once rather than twice.
    pub(crate) fn check_shape(&self, n: usize, k: usize) -> Result<(), QuantError> {
        if self.len() != n * k || n == 0 || k == 0 {
            return Err(QuantError::ShapeMismatch {
                tensor: ANON.into(),
                n,
                k,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// Row `r` as [`row`](Self::row) gives it, with how many of its values are NaN/±Inf and the flat index of the
    /// first (`usize::MAX` when none); reduce with [`merge_non_finite`] and finish with [`refuse_non_finite`].
    #[inline]
    pub(crate) fn row_finite<'s>(
        &'s self,
        r: usize,
        k: usize,
        buf: &'s mut Vec<f32>,
    ) -> (&'s [f32], NonFinite) {
        let row = self.row(r, k, buf);
        let (count, first) = count_non_finite(row);
        let first = if count == 0 {
            usize::MAX
        } else {
            r * k + first
        };
        (row, (count, first))
    }

    /// Check the shape and refuse NaN/±Inf (errors name `<matrix>`; see [`QuantError::for_tensor`]).
    pub(crate) fn check(&self, n: usize, k: usize) -> Result<(), QuantError> {
        self.check_shape(n, k)?;
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
                    .reduce(|| (0, usize::MAX), merge_non_finite)
            }
            _ => self.count_where(n, k, |v| !v.is_finite()),
        };
        refuse_non_finite((count, first))
    }

    /// The value at flat index `i` (for error messages).
    pub(crate) fn value(&self, i: usize) -> f32 {
        let mut buf = Vec::new();
        let k = 1;
        self.row(i, k, &mut buf)[0]
    }
}

/// NaN/±Inf found in a row pass: how many, and the smallest flat index of one (`usize::MAX` when none).
pub(crate) type NonFinite = (usize, usize);

/// Combine two [`NonFinite`] counts (any order: the result does not depend on the thread count).
pub(crate) fn merge_non_finite(a: NonFinite, b: NonFinite) -> NonFinite {
    (a.0 + b.0, a.1.min(b.1))
}

/// The error [`Rows::check`] gives for the same NaN/±Inf: counted over the matrix, first flat index.
pub(crate) fn refuse_non_finite((count, first): NonFinite) -> Result<(), QuantError> {
    if count > 0 {
        return Err(QuantError::NonFinite {
            tensor: ANON.into(),
            count,
            first,
        });
    }
    Ok(())
}

simd::multiversion! {
    /// How many of `values` are NaN/±Inf (all-ones exponent), and the index of the first (`usize::MAX` when none).
    pub(crate) fn count_non_finite(values: &[f32]) -> (usize, usize) {
        // A u32 count (a plain reduction LLVM vectorizes to compare + subtract) per block short enough not to
        // overflow it.
        let mut count = 0usize;
        for block in values.chunks(1 << 24) {
            let mut c = 0u32;
            for v in block {
                c += (v.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32;
            }
            count += c as usize;
        }
        if count == 0 {
            return (0, usize::MAX);
        }
        (count, values.iter().position(|v| !v.is_finite()).expect("counted one"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbits::{NBitsParams, ScaleDtype, quantize_nbits_rows};
    use crate::nncf::{NncfMode, compress_nncf_rows};
    use crate::sensitivity::int8_asym_error_rows;

    /// `[6, 64]` BF16 with ±Inf/NaN in three rows; the first (smallest flat index) is row 1, column 5.
    fn poisoned() -> (Vec<u8>, usize, usize) {
        let (n, k) = (6, 64);
        let mut values: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.1).sin()).collect();
        values[4 * k + 2] = f32::NAN;
        values[k + 5] = f32::INFINITY;
        values[k + 60] = f32::NEG_INFINITY;
        let bytes = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        (bytes, n, k)
    }

    fn assert_refused(result: Result<impl std::fmt::Debug, QuantError>, what: &str) {
        let err = result.unwrap_err();
        assert!(
            matches!(err, QuantError::NonFinite { count: 3, first, .. } if first == 64 + 5),
            "{what}: {err:?}"
        );
    }

    #[test]
    fn kernels_refuse_non_finite_in_their_row_pass_as_the_separate_check_does() {
        let (bytes, n, k) = poisoned();
        let rows = Rows::Encoded {
            bytes: &bytes,
            dtype: DType::BF16,
        };
        assert_refused(rows.check(n, k), "check");
        assert_refused(int8_asym_error_rows(rows, n, k), "sensitivity");
        for mode in [NncfMode::Int4Sym, NncfMode::Int8Asym] {
            assert_refused(compress_nncf_rows(rows, n, k, mode, Some(32)), "nncf");
            // The NaN/Inf refusal still comes before a group size that does not divide K.
            assert_refused(
                compress_nncf_rows(rows, n, k, mode, Some(48)),
                "nncf bad group",
            );
        }
        // K = 63: rows are not byte-aligned for 4 bits, the codes path.
        let odd: Vec<u8> = bytes[..2 * 6 * 63].to_vec();
        let odd_rows = Rows::Encoded {
            bytes: &odd,
            dtype: DType::BF16,
        };
        let err = compress_nncf_rows(odd_rows, 6, 63, NncfMode::Int4Asym, Some(63)).unwrap_err();
        assert!(matches!(err, QuantError::NonFinite { .. }), "{err:?}");
        for scale_dtype in [ScaleDtype::F32, ScaleDtype::F16] {
            let p = NBitsParams {
                bits: 4,
                block_size: 32,
                symmetric: true,
                scale_dtype,
            };
            assert_refused(quantize_nbits_rows(rows, n, k, &p), "nbits");
            let bad = NBitsParams { block_size: 7, ..p };
            assert_refused(quantize_nbits_rows(rows, n, k, &bad), "nbits bad block");
        }
    }
}
