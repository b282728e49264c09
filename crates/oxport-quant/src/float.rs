//! Float weights for the fp16/fp32 exports: a checkpoint tensor's BF16/F16/F32 bytes → little-endian f32 or
//! f16 bytes, optionally transposed to `[k, n]` (the genai builder's `make_matmul_float` stores `weight.T`,
//! onnxruntime-genai `builder.py`), in one parallel pass that also refuses NaN/Inf.
//!
//! Values are decoded exactly (BF16 is the top half of an f32, [`crate::rows`]); f16 output rounds each f32 to
//! nearest even through half's slice conversion, the same function as [`crate::f32_to_f16_bytes`] (numpy
//! `astype(np.float16)`), so the bytes equal converting the f32 decode.

use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::rows::{
    NonFinite, Rows, count_non_finite, decode, merge_non_finite as merge, refuse_non_finite,
};

/// The element type written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatDtype {
    F32,
    F16,
}

impl FloatDtype {
    pub fn size_bytes(self) -> usize {
        match self {
            FloatDtype::F32 => 4,
            FloatDtype::F16 => 2,
        }
    }
}

/// Values per rayon task when not transposing (whole rows, at least one).
const TASK_VALUES: usize = 1 << 16;
/// Transpose: output rows (input columns) per rayon task. 64 BF16 values are two cache lines of each input row.
const BLOCK_COLS: usize = 64;
/// Transpose: input rows decoded into one tile before it is written out column by column (tile = 16 KiB of f32).
const BLOCK_ROWS: usize = 64;

/// Output rows `out_rows` of the `[n, k]` matrix `rows` as little-endian `dtype` bytes in `out` (resized; reuse
/// it across calls so its pages are faulted in once): rows of the row-major `[n, k]`, or of `[k, n]` when
/// `transpose`. An exporter streams a tensor as consecutive `out_rows` ranges, so the buffer stays small.
/// NaN/±Inf among the values read is refused with their count and the smallest flat index (within `[n, k]`)
/// of one; the result does not depend on the thread count.
pub fn float_bytes_into(
    rows: Rows<'_>,
    n: usize,
    k: usize,
    dtype: FloatDtype,
    transpose: bool,
    out_rows: Range<usize>,
    out: &mut Vec<u8>,
) -> Result<(), QuantError> {
    let out_width = if transpose { n } else { k };
    let out_height = if transpose { k } else { n };
    if rows.len() != n * k || n == 0 || k == 0 || out_rows.end > out_height {
        return Err(QuantError::ShapeMismatch {
            tensor: ANON.into(),
            n,
            k,
            len: rows.len(),
        });
    }
    let es = dtype.size_bytes();
    out.resize(out_rows.len() * out_width * es, 0);
    let (count, first) = if transpose {
        transposed(rows, n, k, dtype, out_rows.start, out)
    } else {
        straight(rows, k, dtype, out_rows.start, out)
    };
    refuse_non_finite((count, first))
}

/// Row-major: blocks of whole rows per task, each row decoded into a scratch row and written.
fn straight(rows: Rows<'_>, k: usize, dtype: FloatDtype, row0: usize, out: &mut [u8]) -> NonFinite {
    let es = dtype.size_bytes();
    let rows_per_task = (TASK_VALUES / k).max(1);
    out.par_chunks_mut(rows_per_task * k * es)
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(buf, halves), (t, dst)| {
                let mut acc = (0, usize::MAX);
                for (i, drow) in dst.chunks_exact_mut(k * es).enumerate() {
                    let r = row0 + t * rows_per_task + i;
                    let row = rows.row(r, k, buf);
                    let (count, first) = count_non_finite(row);
                    if count > 0 {
                        acc = merge(acc, (count, r * k + first));
                    }
                    write_values(row, dtype, drow, halves);
                }
                acc
            },
        )
        .reduce(|| (0, usize::MAX), merge)
}

/// `[k, n]`: each task owns `BLOCK_COLS` output rows; it decodes `BLOCK_ROWS` input rows' slice of those columns
/// into a tile (contiguous reads), then writes the tile's columns as output row segments (contiguous writes).
fn transposed(
    rows: Rows<'_>,
    n: usize,
    k: usize,
    dtype: FloatDtype,
    row0: usize,
    out: &mut [u8],
) -> NonFinite {
    let es = dtype.size_bytes();
    out.par_chunks_mut(BLOCK_COLS * n * es)
        .enumerate()
        .map_init(
            || {
                (
                    vec![0f32; BLOCK_ROWS * BLOCK_COLS],
                    vec![0f32; BLOCK_ROWS],
                    Vec::new(),
                )
            },
            |(tile, col, halves), (t, dst)| {
                let kk0 = row0 + t * BLOCK_COLS;
                let kb = dst.len() / (n * es);
                let mut acc = (0, usize::MAX);
                for nn0 in (0..n).step_by(BLOCK_ROWS) {
                    let nb = BLOCK_ROWS.min(n - nn0);
                    for i in 0..nb {
                        let seg = &mut tile[i * BLOCK_COLS..i * BLOCK_COLS + kb];
                        rows.segment((nn0 + i) * k + kk0, seg);
                    }
                    for j in 0..kb {
                        let col = &mut col[..nb];
                        for (i, c) in col.iter_mut().enumerate() {
                            *c = tile[i * BLOCK_COLS + j];
                        }
                        let (count, first) = count_non_finite(col);
                        if count > 0 {
                            acc = merge(acc, (count, (nn0 + first) * k + kk0 + j));
                        }
                        let at = (j * n + nn0) * es;
                        write_values(col, dtype, &mut dst[at..at + nb * es], halves);
                    }
                }
                acc
            },
        )
        .reduce(|| (0, usize::MAX), merge)
}

/// `values` as little-endian `dtype` bytes into `dst` (`values.len() * size` bytes).
#[inline]
fn write_values(values: &[f32], dtype: FloatDtype, dst: &mut [u8], halves: &mut Vec<half::f16>) {
    match dtype {
        FloatDtype::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(values) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        FloatDtype::F16 => {
            // half's slice conversion: F16C `vcvtps2ph` (round to nearest even) when the CPU has it, the same RNE
            // software path otherwise — as `f32_to_f16_bytes`.
            halves.resize(values.len(), half::f16::ZERO);
            halves.convert_from_f32_slice(values);
            for (d, h) in dst.chunks_exact_mut(2).zip(halves.iter()) {
                d.copy_from_slice(&h.to_bits().to_le_bytes());
            }
        }
    }
}

impl Rows<'_> {
    /// Values `start..start + out.len()` (flat, row-major) as f32: copied, or decoded exactly.
    #[inline]
    pub(crate) fn segment(&self, start: usize, out: &mut [f32]) {
        match *self {
            Rows::F32(v) => out.copy_from_slice(&v[start..start + out.len()]),
            Rows::Encoded { bytes, dtype } => {
                let es = dtype.size_bytes();
                decode(&bytes[start * es..(start + out.len()) * es], dtype, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::f32_to_f16_bytes;
    use oxport_hf::DType;

    /// `[n, k]` test values with many f16 rounding ties and overflows, and their BF16/F16/F32 encodings.
    fn matrix(n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|i| ((i as f32) * 0.37).sin() * 70000.0 / (1 + i % 13) as f32)
            .collect()
    }

    fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
        match dtype {
            DType::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    fn decoded(bytes: &[u8], dtype: DType) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / dtype.size_bytes()];
        decode(bytes, dtype, &mut out);
        out
    }

    fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        (0..k * n).map(|i| w[(i % n) * k + i / n]).collect()
    }

    fn all(n: usize, k: usize, transpose: bool) -> Range<usize> {
        if transpose { 0..k } else { 0..n }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn same_bytes_as_decoding_then_converting_for_every_dtype_and_odd_shapes() {
        // Shapes that leave partial tiles and blocks in both directions.
        for (n, k) in [(1, 1), (3, 5), (67, 130), (129, 257), (200, 64)] {
            let values = matrix(n, k);
            for dtype in [DType::BF16, DType::F16, DType::F32] {
                // F16 input must stay below its overflow (65520).
                let scale = if dtype == DType::F16 { 0.5 } else { 1.0 };
                let scaled: Vec<f32> = values.iter().map(|v| v * scale).collect();
                let bytes = encode(&scaled, dtype);
                let exact = decoded(&bytes, dtype);
                let rows = Rows::Encoded {
                    bytes: &bytes,
                    dtype,
                };
                let mut out = vec![7u8; 5]; // reused, wrong-sized buffer
                for transpose_it in [false, true] {
                    let want = if transpose_it {
                        transpose(&exact, n, k)
                    } else {
                        exact.clone()
                    };
                    float_bytes_into(
                        rows,
                        n,
                        k,
                        FloatDtype::F32,
                        transpose_it,
                        all(n, k, transpose_it),
                        &mut out,
                    )
                    .unwrap();
                    assert_eq!(
                        out,
                        f32_bytes(&want),
                        "{dtype} [{n}, {k}] f32 t={transpose_it}"
                    );
                    float_bytes_into(
                        rows,
                        n,
                        k,
                        FloatDtype::F16,
                        transpose_it,
                        all(n, k, transpose_it),
                        &mut out,
                    )
                    .unwrap();
                    assert_eq!(
                        out,
                        f32_to_f16_bytes(&want),
                        "{dtype} [{n}, {k}] f16 t={transpose_it}"
                    );
                }
            }
            let mut out = Vec::new();
            float_bytes_into(
                Rows::F32(&values),
                n,
                k,
                FloatDtype::F16,
                true,
                0..k,
                &mut out,
            )
            .unwrap();
            assert_eq!(out, f32_to_f16_bytes(&transpose(&values, n, k)));
        }
    }

    #[test]
    fn consecutive_output_row_ranges_concatenate_to_the_whole() {
        let (n, k) = (150, 200);
        let values = matrix(n, k);
        let bytes = encode(&values, DType::BF16);
        let rows = Rows::Encoded {
            bytes: &bytes,
            dtype: DType::BF16,
        };
        for transpose_it in [false, true] {
            let mut whole = Vec::new();
            float_bytes_into(
                rows,
                n,
                k,
                FloatDtype::F16,
                transpose_it,
                all(n, k, transpose_it),
                &mut whole,
            )
            .unwrap();
            let height = all(n, k, transpose_it).end;
            let mut pieces = Vec::new();
            let mut buf = Vec::new();
            for start in (0..height).step_by(70) {
                let end = (start + 70).min(height);
                float_bytes_into(
                    rows,
                    n,
                    k,
                    FloatDtype::F16,
                    transpose_it,
                    start..end,
                    &mut buf,
                )
                .unwrap();
                pieces.extend_from_slice(&buf);
            }
            assert_eq!(pieces, whole, "t={transpose_it}");
        }
    }

    #[test]
    fn non_finite_values_are_counted_over_the_whole_matrix_with_the_first_flat_index() {
        let (n, k) = (130, 300);
        let mut values = matrix(n, k);
        values[129 * k + 3] = f32::NAN;
        values[70 * k + 299] = f32::INFINITY;
        values[70 * k + 250] = f32::NEG_INFINITY;
        let bytes = encode(&values, DType::BF16);
        let rows = Rows::Encoded {
            bytes: &bytes,
            dtype: DType::BF16,
        };
        for transpose_it in [false, true] {
            let err = float_bytes_into(
                rows,
                n,
                k,
                FloatDtype::F16,
                transpose_it,
                all(n, k, transpose_it),
                &mut Vec::new(),
            )
            .unwrap_err();
            assert!(
                matches!(err, QuantError::NonFinite { count: 3, first, .. } if first == 70 * k + 250),
                "{err}"
            );
        }
    }

    #[test]
    fn shape_must_match() {
        let err = float_bytes_into(
            Rows::F32(&[0.0; 6]),
            4,
            2,
            FloatDtype::F32,
            false,
            0..4,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, QuantError::ShapeMismatch { .. }), "{err}");
    }
}
