//! NNCF's data-free sensitivity (`weight_quantization_error`): the error of the int8 backup quantization.
//!
//! nncf 3.4 `mixed_precision.py::DataFreeCriterion._calc_weight_sensitivity` →
//! `weight_lowering.py::get_integer_quantization_error(weight, reduction_axes, WeightCompressionConfig(),
//! reduction="max_mean")`: int8_asym per output channel with the f32 scale, dequantized as
//! `(q - zp) * scale`, then `max over rows (mean over K ((dq - w)^2))`.

use rayon::prelude::*;

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
        .map(|row| {
            let mut min = f32::INFINITY;
            let mut max = f32::NEG_INFINITY;
            for &v in row {
                min = min.min(v);
                max = max.max(v);
            }
            let lo = min.min(0.0);
            let hi = max.max(0.0);
            let mut s = (hi - lo) / 255.0;
            if s.abs() < f32::EPSILON {
                s = f32::EPSILON;
            }
            let zp = (0.0 - (lo / s).round_ties_even()).clamp(0.0, 255.0);
            let mut sum = 0f64;
            for &v in row {
                let q = (v / s + zp).round_ties_even().clamp(0.0, 255.0);
                let d = (q - zp) * s - v;
                sum += (d * d) as f64;
            }
            (sum / k as f64) as f32
        })
        .reduce(|| 0f32, f32::max)
}
