//! NNCF's data-free sensitivity (`weight_quantization_error`): the error of the int8 backup quantization.
//!
//! nncf 3.4 `mixed_precision.py::DataFreeCriterion._calc_weight_sensitivity` →
//! `weight_lowering.py::get_integer_quantization_error(weight, reduction_axes, WeightCompressionConfig(),
//! reduction="max_mean")`: int8_asym per output channel with the f32 scale, dequantized as
//! `(q - zp) * scale`, then `max over rows (mean over K ((dq - w)^2))`.

use rayon::prelude::*;

use crate::error::QuantError;
use crate::nncf::asym_params;
use crate::rows::{Rows, merge_non_finite, refuse_non_finite};
use crate::simd;

/// `max_n mean_k (dequant(int8_asym(w)) - w)^2` of an `[n, k]` matrix, as f32 like NNCF's `.item()` of an
/// f32 tensor. The mean is accumulated in f64 (numpy's pairwise f32 sum differs in the last bits only; the
/// ranking of real weights never hinges on that).
pub fn int8_asym_error(weight: &[f32], n: usize, k: usize) -> f32 {
    assert_eq!(
        weight.len(),
        n * k,
        "int8_asym_error: {} values for [{n}, {k}]",
        weight.len()
    );
    weight
        .par_chunks(k)
        .map(row_error)
        .reduce(|| 0f32, f32::max)
}

/// [`int8_asym_error`] of BF16/F16/F32 rows decoded per row (no f32 copy of the tensor); refuses NaN/Inf.
/// NaN/Inf is refused within the same row pass, so planning reads each candidate once.
pub fn int8_asym_error_rows(weight: Rows<'_>, n: usize, k: usize) -> Result<f32, QuantError> {
    weight.check_shape(n, k)?;
    let (error, non_finite) = (0..n)
        .into_par_iter()
        .map_init(Vec::new, |buf, r| {
            let (row, non_finite) = weight.row_finite(r, k, buf);
            let error = if non_finite.0 == 0 {
                row_error(row)
            } else {
                0.0
            };
            (error, non_finite)
        })
        .reduce(
            || (0f32, (0, usize::MAX)),
            |a, b| (f32::max(a.0, b.0), merge_non_finite(a.1, b.1)),
        );
    refuse_non_finite(non_finite)?;
    Ok(error)
}

/// `‖dequant(int8_asym(w)) - w‖_F` of BF16/F16/F32 rows (NNCF's `reduction="frobenius"`, the weight factor of
/// `hessian_input_activation`); refuses NaN/Inf.
pub fn int8_asym_frobenius_rows(weight: Rows<'_>, n: usize, k: usize) -> Result<f32, QuantError> {
    weight.check_shape(n, k)?;
    let (sum, non_finite) = (0..n)
        .into_par_iter()
        .map_init(Vec::new, |buf, r| {
            let (row, non_finite) = weight.row_finite(r, k, buf);
            let sq = if non_finite.0 == 0 {
                row_error(row) as f64 * k as f64
            } else {
                0.0
            };
            (r, sq, non_finite)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0f64, (0, usize::MAX)), |(acc, nf), (_, sq, b)| {
            (acc + sq, merge_non_finite(nf, b))
        });
    refuse_non_finite(non_finite)?;
    Ok(sum.sqrt() as f32)
}

/// Lanes of the squared-error sum (independent accumulators, vectorizable).
const LANES: usize = 8;

simd::multiversion! {
fn row_error(row: &[f32]) -> f32 {
    let (min, max) = simd::min_max(row);
    let (s, zp) = asym_params(min, max, 255.0);
    let err = |v: f32| -> f64 {
        let q = simd::clamp_round_half_even(v / s + zp, 0.0, 255.0) as f32;
        let d = (q - zp) * s - v;
        (d * d) as f64
    };
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|&v| err(v)).sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += err(c[i]);
        }
    }
    ((acc.iter().sum::<f64>() + rest) / row.len() as f64) as f32
}
}
