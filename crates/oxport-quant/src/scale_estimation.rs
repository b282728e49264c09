//! NNCF's Scale Estimation for 4-bit integer modes, as a pure function of the weight and the activation statistics
//! (openvinotoolkit/nncf:src/nncf/quantization/algorithms/weight_compression/scale_estimation.py,
//! `ScaleEstimation.calculate_quantization_params`, nncf 3.4; statistics from `activation_stats.py::process_stats`).
//!
//! For each output row `o` and group `g` (every (o, g) cell is independent, so rows run in parallel and the result
//! is the same on any thread count):
//! 1. min-max (asym) or absmax (sym) parameters `scale0`, `zp`; `zp` never changes afterwards;
//! 2. `importance[j] = s[j]`, 0 where the code equals the zero point, normalised by `sum + eps`;
//! 3. the metric is `mean_over_samples((W_g·X_g − Qdq(W)_g·X_g)²)` (+ `weight_penalty · mean((Qdq(W) − W)²)` when
//!    the penalty is positive);
//! 4. `initial_steps` rounds: the candidate `Σ importance·|w| / (|q − zp| + 0.001·[q = zp])` (with the sign of
//!    `scale0`), kept where the metric does not get worse; the codes are then refreshed from the best scale;
//! 5. `scale_steps` grid rounds: codes from `(1 − 0.05·i)·scale0`, the same candidate from those codes, kept likewise.
//!
//! Everything is float32 as in NNCF. Element-wise steps and NNCF's `np.sum`/`np.mean` reductions are reproduced bit
//! for bit (numpy's pairwise order, [`crate::npsum`]); the two matmuls `W_g·X_g` are BLAS sgemm in NNCF, whose
//! order is not reproducible, and are accumulated in f64 here and rounded to f32. Only a metric comparison that
//! this rounding flips can change a chosen scale (`tests/se_gptq_golden.rs` measures it against NNCF).

use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::nncf::{NncfMode, NncfParams, code, group_params};
use crate::npsum::{pairwise_mean, pairwise_sum};

/// float32 machine epsilon (`fns.finfo(weight).eps`).
const EPS: f32 = f32::EPSILON;

/// The knobs of NNCF's `ScaleEstimation`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleEstimationParams {
    /// Samples kept by [`process_stats`] (0: all).
    pub subset_size: usize,
    /// Rectification rounds from the importance-weighted ideal scale.
    pub initial_steps: usize,
    /// Grid rounds with factors `1.0, 0.95, …`.
    pub scale_steps: usize,
    /// Weight-error penalty coefficient; off when not positive.
    pub weight_penalty: f64,
}

impl ScaleEstimationParams {
    /// What `compress_weights(..., scale_estimation=True)` uses: `AdvancedScaleEstimationParameters()`
    /// (openvinotoolkit/nncf:src/nncf/quantization/advanced_parameters.py): subset 64, 5 + 5 steps, no penalty.
    pub const WEIGHT_COMPRESSION: Self = Self {
        subset_size: 64,
        initial_steps: 5,
        scale_steps: 5,
        weight_penalty: -1.0,
    };
    /// What GPTQ's scale estimation uses: the defaults of the static `calculate_quantization_params`
    /// (subset 32, 5 + 10 steps), since `gptq.py` passes none.
    pub const GPTQ: Self = Self {
        subset_size: 32,
        initial_steps: 5,
        scale_steps: 10,
        weight_penalty: -1.0,
    };
}

impl Default for ScaleEstimationParams {
    fn default() -> Self {
        Self::WEIGHT_COMPRESSION
    }
}

/// `process_stats`'s output for one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessedStats {
    /// `s[j] = max over all samples |mean_j|`, `[in]`.
    pub s: Vec<f32>,
    /// The kept per-sample means, `[in, samples]` row-major.
    pub x: Vec<f32>,
    /// Columns of `x`.
    pub samples: usize,
}

/// `activation_stats.process_stats`: `mean_values[i]` is sample `i`'s per-channel mean over batch and tokens
/// (`[in]`), `token_counts[i]` its number of tokens (NNCF's product of the shape without the channel axis).
/// `s` uses every sample; `x` keeps, when there are more than `subset_size` (> 0), every `N / subset_size`-th
/// sample of the list stably sorted by token count, descending.
pub fn process_stats(
    mean_values: &[Vec<f32>],
    token_counts: &[usize],
    subset_size: usize,
) -> Result<ProcessedStats, QuantError> {
    let options = |msg: String| QuantError::Options(format!("activation statistics: {msg}"));
    let total = mean_values.len();
    if total == 0 || token_counts.len() != total {
        return Err(options(format!(
            "{total} mean vectors and {} token counts (need the same, at least one)",
            token_counts.len()
        )));
    }
    let channels = mean_values[0].len();
    if let Some(i) = mean_values.iter().position(|m| m.len() != channels) {
        return Err(options(format!(
            "sample {i} has {} channels, sample 0 {channels}",
            mean_values[i].len()
        )));
    }
    let flat: Vec<f32> = mean_values.iter().flatten().copied().collect();
    refuse_non_finite(&flat)?;
    let idxs: Vec<usize> = if subset_size > 0 && total > subset_size {
        let mut order: Vec<usize> = (0..total).collect();
        // Python's sorted(key=-len) is stable, as is sort_by_key.
        order.sort_by_key(|&i| std::cmp::Reverse(token_counts[i]));
        order.into_iter().step_by(total / subset_size).collect()
    } else {
        (0..total).collect()
    };
    let s = (0..channels)
        .map(|j| mean_values.iter().fold(0f32, |m, v| m.max(v[j].abs())))
        .collect();
    let samples = idxs.len();
    let mut x = vec![0f32; channels * samples];
    for (j, row) in x.chunks_exact_mut(samples).enumerate() {
        for (dst, &i) in row.iter_mut().zip(&idxs) {
            *dst = mean_values[i][j];
        }
    }
    Ok(ProcessedStats { s, x, samples })
}

/// `ScaleEstimation.calculate_quantization_params` for `weight` `[n, k]` (`[out, in]`, already AWQ-scaled when
/// AWQ ran) in a 4-bit mode: the per-group scales `[n, groups]` and the unchanged min-max zero points (asym).
pub fn scale_estimation(
    weight: &[f32],
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
    stats: &ProcessedStats,
    params: &ScaleEstimationParams,
) -> Result<NncfParams, QuantError> {
    let group = check_inputs(weight, n, k, mode, group_size)?;
    if stats.s.len() != k || stats.samples == 0 || stats.x.len() != k * stats.samples {
        return Err(QuantError::Options(format!(
            "scale estimation: statistics for {} channels x {} samples ({} values) do not fit K = {k}",
            stats.s.len(),
            stats.samples,
            stats.x.len()
        )));
    }
    refuse_non_finite(&stats.x)?;
    let groups = k / group;
    let mut scale = vec![0f32; n * groups];
    let mut zero_point = vec![0u8; n * groups];
    let cols = stats.samples;
    scale
        .par_chunks_mut(groups)
        .zip(zero_point.par_chunks_mut(groups))
        .zip(weight.par_chunks(k))
        .for_each(|((sc, zp), row)| {
            for g in 0..groups {
                let (j0, j1) = (g * group, (g + 1) * group);
                let xg = &stats.x[j0 * cols..j1 * cols];
                let (s, z) = estimate_group(&row[j0..j1], &stats.s[j0..j1], xg, mode, params);
                sc[g] = s;
                zp[g] = z as u8;
            }
        });
    Ok(NncfParams {
        mode,
        group_size,
        n,
        groups,
        scale,
        zero_point: mode.is_asym().then_some(zero_point),
    })
}

/// Shape, mode and finiteness checks shared with GPTQ; returns the effective group size.
pub(crate) fn check_inputs(
    weight: &[f32],
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
) -> Result<usize, QuantError> {
    if weight.len() != n * k {
        return Err(QuantError::ShapeMismatch {
            tensor: ANON.into(),
            n,
            k,
            len: weight.len(),
        });
    }
    if mode.bits() != 4 {
        return Err(QuantError::Unsupported {
            tensor: ANON.into(),
            msg: format!("{mode}: NNCF runs scale estimation and GPTQ on 4-bit weights only"),
        });
    }
    let group = group_size.unwrap_or(k);
    if group == 0 || !k.is_multiple_of(group) {
        return Err(QuantError::InvalidGroupSize {
            tensor: ANON.into(),
            n,
            k,
            group_size: group,
        });
    }
    refuse_non_finite(weight)?;
    Ok(group)
}

pub(crate) fn refuse_non_finite(values: &[f32]) -> Result<(), QuantError> {
    let count = values.iter().filter(|v| !v.is_finite()).count();
    match values.iter().position(|v| !v.is_finite()) {
        Some(first) => Err(QuantError::NonFinite {
            tensor: ANON.into(),
            count,
            first,
        }),
        None => Ok(()),
    }
}

/// The working arrays of one (row, group) cell: weights, codes relative to the zero point, importance.
struct Cell<'a> {
    w: &'a [f32],
    /// `X_g`, `[group, cols]` row-major (the group's rows of the statistics, as they are).
    xg: &'a [f32],
    mode: NncfMode,
    zp: f32,
    weight_penalty: f64,
    /// `W_g · X_g`, `[cols]`.
    fp: Vec<f32>,
    importance: Vec<f32>,
    /// `q − zp` (`get_target_zero_mask`'s target).
    target: Vec<f32>,
    /// `0.001` where the target is 0, else 0.
    zero: Vec<f32>,
}

/// Scale Estimation of one group: `w` `[group]`, `s` `[group]`, `xg` `[group, cols]` (the group's rows of the
/// statistics). Returns `(scale, zero point)`.
pub(crate) fn estimate_group(
    w: &[f32],
    s: &[f32],
    xg: &[f32],
    mode: NncfMode,
    params: &ScaleEstimationParams,
) -> (f32, f32) {
    let (scale0, zp) = group_params(w, mode);
    let mut cell = Cell {
        w,
        xg,
        mode,
        zp,
        weight_penalty: params.weight_penalty,
        fp: matvec(w, xg),
        importance: Vec::new(),
        target: vec![0f32; w.len()],
        zero: vec![0f32; w.len()],
    };
    cell.refresh_targets(scale0);
    // importance = s, 0 where the target is 0, / (sum + eps); never refreshed afterwards.
    let importance: Vec<f32> = s
        .iter()
        .zip(&cell.zero)
        .map(|(&s, &z)| if z != 0.0 { 0.0 } else { s })
        .collect();
    let denom = pairwise_sum(&importance) + EPS;
    cell.importance = importance.iter().map(|&v| v / denom).collect();

    let mut best = cell.metric(scale0);
    let mut result = scale0;
    let sign = scale0 / scale0.abs();
    for i in 0..params.initial_steps {
        let near = cell.near_to_ideal_scale() * sign;
        keep_better(&mut best, &mut result, cell.metric(near), near);
        if i + 1 < params.initial_steps {
            cell.refresh_targets(result);
        }
    }
    for step in 0..params.scale_steps {
        // `factor * scale`: a Python float times a float32 array is float32 (NEP 50).
        let factor = (1.0 - 0.05 * step as f64) as f32;
        cell.refresh_targets(factor * scale0);
        let near = cell.near_to_ideal_scale() * sign;
        keep_better(&mut best, &mut result, cell.metric(near), near);
    }
    (result, zp)
}

/// NNCF's update, literally: `mask = diff > best; best = mask·best + (1 − mask)·diff`, same for the scale (a select
/// for finite values; NaN and ±Inf propagate as in NNCF).
fn keep_better(best: &mut f32, result: &mut f32, diff: f32, candidate: f32) {
    let mask = if diff > *best { 1.0f32 } else { 0.0 };
    *best = mask * *best + (1.0 - mask) * diff;
    *result = mask * *result + (1.0 - mask) * candidate;
}

impl Cell<'_> {
    /// Codes of `w` at `scale` and the fixed zero point → `target = q − zp`, `zero = 0.001·[target == 0]`
    /// (`np.isclose(target, 0)` on integer-valued floats is equality).
    fn refresh_targets(&mut self, scale: f32) {
        for ((t, z), &v) in self.target.iter_mut().zip(&mut self.zero).zip(self.w) {
            *t = code(v, self.mode, scale, self.zp) as f32 - self.zp;
            *z = if *t == 0.0 { 0.001 } else { 0.0 };
        }
    }

    /// `estimate_scales`: `Σ importance · |w| / (|target| + zero)` in numpy's pairwise order.
    fn near_to_ideal_scale(&self) -> f32 {
        let weighted: Vec<f32> = (self.w.iter().zip(&self.target).zip(&self.zero))
            .zip(&self.importance)
            .map(|(((&w, &t), &z), &imp)| w.abs() / (t.abs() + z) * imp)
            .collect();
        pairwise_sum(&weighted)
    }

    /// `mean((fp_outs − q_outs)²)` over samples for the weights quantize-dequantized at `scale` and the fixed zero
    /// point, plus the weight penalty when it is positive.
    fn metric(&self, scale: f32) -> f32 {
        let dq: Vec<f32> = self
            .w
            .iter()
            .map(|&v| (code(v, self.mode, scale, self.zp) as f32 - self.zp) * scale)
            .collect();
        let q_outs = matvec(&dq, self.xg);
        let sq: Vec<f32> = self
            .fp
            .iter()
            .zip(&q_outs)
            .map(|(&f, &q)| (f - q) * (f - q))
            .collect();
        let mut diff = pairwise_mean(&sq);
        if self.weight_penalty > 0.0 {
            let err: Vec<f32> = dq
                .iter()
                .zip(self.w)
                .map(|(&d, &w)| (d - w) * (d - w))
                .collect();
            diff += self.weight_penalty as f32 * pairwise_mean(&err);
        }
        diff
    }
}

/// `w · X_g` for `w` `[group]`, `X_g` `[group, cols]`: `[cols]`. Each output is [`dot`]'s f64 chain over the
/// group in order (products of two f32 are exact in f64, so the bits are `dot`'s); the chains of the `cols` outputs
/// run side by side, which the compiler vectorizes over the outputs without reordering any sum.
fn matvec(w: &[f32], xg: &[f32]) -> Vec<f32> {
    let cols = xg.len() / w.len().max(1);
    let mut acc = vec![0f64; cols];
    for (&wj, row) in w.iter().zip(xg.chunks_exact(cols.max(1))) {
        let wj = wj as f64;
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += wj * x as f64;
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_sorts_by_tokens_and_steps() {
        let means: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32, -(i as f32) * 2.0]).collect();
        // Sorted by tokens, descending, stable: 1 (9), 3 (9), 0 (4), 4 (4), 2 (1); step 5 / 2 = 2 → 1, 0, 2.
        let stats = process_stats(&means, &[4, 9, 1, 9, 4], 2).unwrap();
        assert_eq!(stats.samples, 3);
        assert_eq!(stats.x, vec![1.0, 0.0, 2.0, -2.0, -0.0, -4.0]);
        // s uses all samples.
        assert_eq!(stats.s, vec![4.0, 8.0]);
        let all = process_stats(&means, &[4, 9, 1, 9, 4], 0).unwrap();
        assert_eq!(all.samples, 5);
        assert!(process_stats(&means, &[1, 2], 0).is_err());
    }

    #[test]
    fn a_weight_on_the_grid_keeps_its_min_max_scale() {
        // 2 x 8, sym: every weight is an integer multiple of 1/8 with the extreme -1 → absmax scale 1/8 and zero
        // quantization error (all exact in binary), so no candidate can do strictly better and the scale stays.
        let row: Vec<f32> = [-8.0f32, -3.0, 1.0, 7.0, 2.0, -1.0, 5.0, 4.0]
            .iter()
            .map(|v| v / 8.0)
            .collect();
        let w: Vec<f32> = row.iter().chain(&row).copied().collect();
        let means = vec![vec![1.0f32; 8], vec![0.5; 8]];
        let stats = process_stats(&means, &[3, 3], 0).unwrap();
        let p = scale_estimation(
            &w,
            2,
            8,
            NncfMode::Int4Sym,
            None,
            &stats,
            &ScaleEstimationParams::default(),
        )
        .unwrap();
        assert_eq!(p.scale, vec![0.125f32; 2]);
        assert_eq!(p.zero_point, None);
    }

    #[test]
    fn scale_estimation_finds_the_scale_that_fits_the_codes() {
        // Asym, 1 x 8: min-max gives scale 1.5 / 15 = 0.1 from the single outlier at 1.5; the other weights sit on a
        // 0.13 grid that the 0.1 scale rounds badly. The ideal scale for the same codes is near 0.1 and the
        // metric can only improve: the result must not be worse than min-max on the layer output.
        let w = [0.0f32, 0.13, 0.26, 0.39, 0.52, 0.65, 0.78, 1.5];
        let means = vec![vec![1.0f32; 8], vec![2.0; 8], vec![-1.0; 8]];
        let stats = process_stats(&means, &[1, 1, 1], 0).unwrap();
        let params = ScaleEstimationParams::default();
        let p = scale_estimation(&w, 1, 8, NncfMode::Int4Asym, None, &stats, &params).unwrap();
        let (s0, zp) = group_params(&w, NncfMode::Int4Asym);
        assert_eq!(p.zero_point, Some(vec![zp as u8]));
        let cell_metric = |scale: f32| {
            let dq: f32 = w
                .iter()
                .map(|&v| (code(v, NncfMode::Int4Asym, scale, zp) as f32 - zp) * scale - v)
                .sum();
            dq * dq
        };
        assert!(cell_metric(p.scale[0]) <= cell_metric(s0));
    }

    #[test]
    fn given_min_max_parameters_reproduce_compress_nncf() {
        use crate::nncf::{compress_nncf, compress_nncf_with_params};
        use crate::rows::Rows;
        let (n, k, group) = (3, 32, 16);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        for mode in [NncfMode::Int4Asym, NncfMode::Int4Sym, NncfMode::Int8Asym] {
            let cells: Vec<(f32, f32)> = w.chunks(group).map(|g| group_params(g, mode)).collect();
            let mut params = NncfParams {
                mode,
                group_size: Some(group),
                n,
                groups: k / group,
                scale: cells.iter().map(|c| c.0).collect(),
                zero_point: mode
                    .is_asym()
                    .then(|| cells.iter().map(|c| c.1 as u8).collect()),
            };
            let got = compress_nncf_with_params(Rows::F32(&w), n, k, &params).unwrap();
            assert_eq!(
                got,
                compress_nncf(&w, n, k, mode, Some(group)).unwrap(),
                "{mode}"
            );
            params.scale[1] = 0.0;
            assert!(compress_nncf_with_params(Rows::F32(&w), n, k, &params).is_err());
        }
    }

    #[test]
    fn refuses_bad_inputs() {
        let stats = process_stats(&[vec![1.0f32; 8]], &[1], 0).unwrap();
        let p = ScaleEstimationParams::default();
        let w = vec![0.5f32; 16];
        assert!(scale_estimation(&w, 2, 8, NncfMode::Int8Asym, None, &stats, &p).is_err());
        assert!(scale_estimation(&w, 2, 8, NncfMode::Int4Asym, Some(3), &stats, &p).is_err());
        assert!(scale_estimation(&w, 3, 8, NncfMode::Int4Asym, None, &stats, &p).is_err());
        let mut bad = w.clone();
        bad[3] = f32::NAN;
        assert!(scale_estimation(&bad, 2, 8, NncfMode::Int4Asym, None, &stats, &p).is_err());
        let short = process_stats(&[vec![1.0f32; 4]], &[1], 0).unwrap();
        assert!(scale_estimation(&w, 2, 8, NncfMode::Int4Asym, None, &short, &p).is_err());
    }
}
