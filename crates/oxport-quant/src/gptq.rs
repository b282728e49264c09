//! NNCF's GPTQ for 4-bit integer modes, as a pure function of one MatMul's weight and raw inputs
//! (openvinotoolkit/nncf:src/nncf/quantization/algorithms/weight_compression/gptq.py, nncf 3.4:
//! `GPTQ._calculate_hessian` and `GPTQ._quantize_weights`).
//!
//! 1. Hessian: a running average over samples, `H ← H·n/(n+1)`, `n ← n+1`, `x ← x·sqrt(2/n)`, `H ← H + xᵀx`
//!    (each sample `[tokens, in]` counts as one).
//! 2. Dead inputs (`H[j, j] = 0`): `H[j, j] = 1` and weight column `j` set to 0. Damping: `H[j, j] += 0.1·mean(diag H)`.
//! 3. `H⁻¹` through Cholesky: `L = chol(H)`, `H⁻¹ = L⁻ᵀL⁻¹` (`cholesky_inverse`), then the upper Cholesky factor
//!    `U` of `H⁻¹`.
//! 4. Columns in natural order (no act-order), in blocks of 128; at each group start the group's scale and zero
//!    point come from min-max — or from Scale Estimation on that group's inputs when enabled — over the weight
//!    *as of the block start* (NNCF reads `weight_tensor`, which only receives updates between blocks); each
//!    column is quantize-dequantized, its error `(w − q)/U[i,i]` is fed to the rest of the block, and the block's
//!    errors to the columns after it.
//!
//! Precision: NNCF runs this on numpy float32 tensors (the OpenVINO backend's inputs and weights are numpy
//! arrays; `fns.zeros(dtype=float32)` for the Hessian, `np.linalg.cholesky` / `np.linalg.inv` on float32 arrays
//! call single-precision LAPACK, `fns.linalg.cholesky_inverse` is `inv(L)` then a float32 matmul:
//! openvinotoolkit/nncf:src/nncf/tensor/functions/numpy_linalg.py). Here too every array (H, L, L⁻¹, H⁻¹, U, the
//! weights and errors) is f32, rounded at the same points; element-wise steps are NNCF's float32 operations
//! exactly. The reductions inside BLAS/LAPACK (the Hessian product, the Cholesky and inverse sums, the block
//! error product) have the library's own blocking and FMA order, which cannot be reproduced: here each such sum
//! accumulates in f64 and is rounded once to f32. Results therefore match NNCF to float32 rounding, not bit for
//! bit (`tests/se_gptq_golden.rs` measures how close).
//!
//! Output rows are independent given `U` and run in parallel; every sum has a fixed order, so the bytes are the
//! same on any thread count.

use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::nncf::{
    NncfMode, NncfParams, NncfWeight, code, compress_nncf_with_params, group_params,
};
use crate::npsum::{dot, pairwise_mean};
use crate::rows::Rows;
use crate::scale_estimation::{
    ScaleEstimationParams, check_inputs, estimate_group, process_stats, refuse_non_finite,
};

/// GPTQ's knobs (`AdvancedGPTQParameters` and `compress_weights(..., gptq=True, scale_estimation=...)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// `Int4Asym` or `Int4Sym` (NNCF skips GPTQ for 8-bit weights).
    pub mode: NncfMode,
    /// `None`: per-channel.
    pub group_size: Option<usize>,
    /// Fraction of the mean Hessian diagonal added to the diagonal (0.1).
    pub damp_percent: f64,
    /// Columns per block (128).
    pub block_size: usize,
    /// Scale Estimation at each group start (`scale_estimation=True`): NNCF passes the static defaults,
    /// [`ScaleEstimationParams::GPTQ`].
    pub scale_estimation: Option<ScaleEstimationParams>,
}

impl GptqOptions {
    /// NNCF's defaults for `mode` and `group_size`, without scale estimation.
    pub fn new(mode: NncfMode, group_size: Option<usize>) -> Self {
        Self {
            mode,
            group_size,
            damp_percent: 0.1,
            block_size: 128,
            scale_estimation: None,
        }
    }
}

/// GPTQ's result for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqResult {
    /// The per-group scales and zero points NNCF returns (`CompressedWeight(None, scale, zero_point)`).
    pub params: NncfParams,
    /// The quantize-dequantized weight `[n, k]` (f32) that NNCF writes back into the model (`set_weight`) before
    /// `transform_model` compresses it with `params`.
    pub dequantized: Vec<f32>,
    /// `dequantized` compressed with `params` ([`compress_nncf_with_params`]): the IR's weight when the weight
    /// constant is f32. For a bf16/f16 constant, round `dequantized` to it first (`scale_columns` does that for
    /// AWQ) and compress that with `params`.
    pub weight: NncfWeight,
}

/// GPTQ of `weight` `[n, k]` with `inputs`, each one sample's raw layer input `[tokens, k]` row-major.
pub fn gptq<X: AsRef<[f32]> + Sync>(
    weight: &[f32],
    n: usize,
    k: usize,
    inputs: &[X],
    options: &GptqOptions,
) -> Result<GptqResult, QuantError> {
    let group = check_inputs(weight, n, k, options.mode, options.group_size)?;
    if options.block_size == 0 {
        return Err(QuantError::Options("GPTQ block size 0".into()));
    }
    let mut hessian = gptq_hessian(inputs, k)?;
    let mut w = weight.to_vec();
    for j in 0..k {
        if hessian[j * k + j] == 0.0 {
            hessian[j * k + j] = 1.0;
            w.iter_mut().skip(j).step_by(k).for_each(|v| *v = 0.0);
        }
    }
    let diag: Vec<f32> = (0..k).map(|j| hessian[j * k + j]).collect();
    // `damp_percent * fns.mean(...)`: a Python float times a float32 scalar is float32.
    let damp = options.damp_percent as f32 * pairwise_mean(&diag);
    for j in 0..k {
        hessian[j * k + j] += damp;
    }
    let upper = inverse_upper_cholesky(&hessian, k)?;
    let stats = match &options.scale_estimation {
        Some(p) => Some(group_stats(inputs, k, group, p.subset_size)?),
        None => None,
    };
    let ctx = RowContext {
        k,
        group,
        mode: options.mode,
        block_size: options.block_size,
        upper: &upper,
        se: stats.as_deref().zip(options.scale_estimation.as_ref()),
    };
    let groups = k / group;
    let mut dequantized = vec![0f32; n * k];
    let mut scale = vec![0f32; n * groups];
    let mut zero_point = vec![0u8; n * groups];
    dequantized
        .par_chunks_mut(k)
        .zip(w.par_chunks_mut(k))
        .zip(
            scale
                .par_chunks_mut(groups)
                .zip(zero_point.par_chunks_mut(groups)),
        )
        .for_each(|((dq, row), (sc, zp))| ctx.quantize_row(row, dq, sc, zp));
    let params = NncfParams {
        mode: options.mode,
        group_size: options.group_size,
        n,
        groups,
        scale,
        zero_point: options.mode.is_asym().then_some(zero_point),
    };
    let weight = compress_nncf_with_params(Rows::F32(&dequantized), n, k, &params)?;
    Ok(GptqResult {
        params,
        dequantized,
        weight,
    })
}

/// `GPTQ._calculate_hessian` for a 2-D weight: `[k, k]` row-major f32, the running average of `2/n · xᵀx` over
/// the samples (each `[tokens, k]`).
pub fn gptq_hessian<X: AsRef<[f32]> + Sync>(
    inputs: &[X],
    k: usize,
) -> Result<Vec<f32>, QuantError> {
    if inputs.is_empty() || k == 0 {
        return Err(QuantError::Options(
            "GPTQ needs at least one input sample and K > 0".into(),
        ));
    }
    let mut hessian = vec![0f32; k * k];
    let mut scaled: Vec<f32> = Vec::new();
    for (nsamples, x) in inputs.iter().enumerate() {
        let x = x.as_ref();
        if x.is_empty() || !x.len().is_multiple_of(k) {
            return Err(QuantError::Options(format!(
                "GPTQ input sample {nsamples}: {} values are not [tokens, {k}]",
                x.len()
            )));
        }
        refuse_non_finite(x)?;
        // `hessian *= n / (n + 1)` and `inp * math.sqrt(2 / n)`: Python floats applied to float32 arrays.
        let decay = (nsamples as f64 / (nsamples as f64 + 1.0)) as f32;
        let factor = (2.0 / (nsamples as f64 + 1.0)).sqrt() as f32;
        let tokens = x.len() / k;
        // Transposed and scaled: `[k, tokens]`, so that each product is a dot of two contiguous rows.
        scaled.clear();
        scaled.resize(k * tokens, 0.0);
        for (t, row) in x.chunks_exact(k).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                scaled[j * tokens + t] = v * factor;
            }
        }
        let xt = &scaled;
        hessian.par_chunks_mut(k).enumerate().for_each(|(a, h)| {
            let xa = &xt[a * tokens..(a + 1) * tokens];
            for (b, hv) in h.iter_mut().enumerate() {
                *hv = *hv * decay + dot(xa, &xt[b * tokens..(b + 1) * tokens]);
            }
        });
    }
    Ok(hessian)
}

/// The upper Cholesky factor of `H⁻¹`, row-major `[k, k]`: `chol(cholesky_inverse(chol(H)), upper=True)`.
fn inverse_upper_cholesky(hessian: &[f32], k: usize) -> Result<Vec<f32>, QuantError> {
    let lower = cholesky(hessian, k)?;
    let inv_t = lower_inverse_transposed(&lower, k);
    // H⁻¹[a][b] = Σ_i L⁻¹[i][a]·L⁻¹[i][b] = (L⁻ᵀ row a) · (L⁻ᵀ row b), both zero below max(a, b).
    let mut inverse = vec![0f32; k * k];
    inverse.par_chunks_mut(k).enumerate().for_each(|(a, row)| {
        for (b, v) in row.iter_mut().enumerate() {
            let from = a.max(b);
            *v = dot(
                &inv_t[a * k + from..(a + 1) * k],
                &inv_t[b * k + from..(b + 1) * k],
            );
        }
    });
    let lower = cholesky(&inverse, k)?;
    let mut upper = vec![0f32; k * k];
    upper.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = lower[j * k + i];
        }
    });
    Ok(upper)
}

/// Lower Cholesky factor of a symmetric positive definite `[k, k]` matrix (f32 values, f64 sums); a matrix that
/// is not positive definite is NNCF's `LinAlgError` and an error here.
pub(crate) fn cholesky(a: &[f32], k: usize) -> Result<Vec<f32>, QuantError> {
    let mut l = vec![0f32; k * k];
    for j in 0..k {
        let (row_j, below) = l[j * k..].split_at_mut(k);
        let d = (a[j * k + j] as f64 - dot64(&row_j[..j], &row_j[..j])) as f32;
        if !(d > 0.0 && d.is_finite()) {
            return Err(QuantError::Unsupported {
                tensor: ANON.into(),
                msg: format!("GPTQ: the damped Hessian is not positive definite (pivot {j}: {d})"),
            });
        }
        let pivot = d.sqrt();
        row_j[j] = pivot;
        let row_j = &row_j[..j];
        below
            .par_chunks_mut(k)
            .enumerate()
            .for_each(|(off, row_i)| {
                let i = j + 1 + off;
                let s = a[i * k + j] as f64 - dot64(&row_i[..j], row_j);
                row_i[j] = (s as f32) / pivot;
            });
    }
    Ok(l)
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |acc, (&x, &y)| acc + x as f64 * y as f64)
}

/// `L⁻¹` of a lower-triangular `[k, k]` matrix, returned transposed (row `c` of the result is column `c` of
/// `L⁻¹`): forward substitution per column, columns in parallel.
fn lower_inverse_transposed(l: &[f32], k: usize) -> Vec<f32> {
    let mut inv_t = vec![0f32; k * k];
    inv_t.par_chunks_mut(k).enumerate().for_each(|(c, col)| {
        col[c] = 1.0 / l[c * k + c];
        for i in c + 1..k {
            let s = dot64(&l[i * k + c..i * k + i], &col[c..i]);
            col[i] = (-s as f32) / l[i * k + i];
        }
    });
    inv_t
}

/// Per-group statistics for scale estimation inside GPTQ: `activations_to_wc_statistics` (each sample's mean over
/// its tokens, added in order in f32 as `np.mean` over the leading axes does, divided by the token count) of the
/// group's input columns, then `process_stats` with `subset_size`.
fn group_stats<X: AsRef<[f32]>>(
    inputs: &[X],
    k: usize,
    group: usize,
    subset_size: usize,
) -> Result<Vec<GroupStats>, QuantError> {
    let tokens: Vec<usize> = inputs.iter().map(|x| x.as_ref().len() / k).collect();
    let means: Vec<Vec<f32>> = inputs
        .iter()
        .zip(&tokens)
        .map(|(x, &t)| {
            let mut sum = vec![0f32; k];
            for row in x.as_ref().chunks_exact(k) {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            sum.iter().map(|&s| s / t as f32).collect()
        })
        .collect();
    (0..k / group)
        .map(|g| {
            let slice: Vec<Vec<f32>> = means
                .iter()
                .map(|m| m[g * group..(g + 1) * group].to_vec())
                .collect();
            let st = process_stats(&slice, &tokens, subset_size)?;
            Ok(GroupStats { s: st.s, xg: st.x })
        })
        .collect()
}

/// One group's statistics for [`estimate_group`]: `s` `[group]`, `X_g` `[group, samples]`.
struct GroupStats {
    s: Vec<f32>,
    xg: Vec<f32>,
}

/// What every output row needs: the inverse Hessian's upper factor and the group parameters' source.
struct RowContext<'a> {
    k: usize,
    group: usize,
    mode: NncfMode,
    block_size: usize,
    upper: &'a [f32],
    se: Option<(&'a [GroupStats], &'a ScaleEstimationParams)>,
}

impl RowContext<'_> {
    /// The GPTQ column loop for one output row: `w` is the row of NNCF's `weight_tensor` (updated between blocks),
    /// `dq` receives the quantize-dequantized row, `scales`/`zero_points` the row's group parameters.
    fn quantize_row(
        &self,
        w: &mut [f32],
        dq: &mut [f32],
        scales: &mut [f32],
        zero_points: &mut [u8],
    ) {
        let k = self.k;
        let mut block: Vec<f32> = Vec::with_capacity(self.block_size);
        let mut errors: Vec<f32> = Vec::with_capacity(self.block_size);
        let mut acc = vec![0f64; k];
        let (mut s, mut z) = (0f32, 0f32);
        for i1 in (0..k).step_by(self.block_size) {
            let i2 = (i1 + self.block_size).min(k);
            block.clear();
            block.extend_from_slice(&w[i1..i2]);
            errors.clear();
            for i in 0..i2 - i1 {
                let col = i1 + i;
                if col % self.group == 0 {
                    // NNCF reads `weight_tensor[:, col:col + group]`: the weight as of this block's start.
                    (s, z) = self.group_params(&w[col..col + self.group], col / self.group);
                    scales[col / self.group] = s;
                    zero_points[col / self.group] = z as u8;
                }
                let q = (code(block[i], self.mode, s, z) as f32 - z) * s;
                dq[col] = q;
                let error = (block[i] - q) / self.upper[col * k + col];
                let u = &self.upper[col * k + i1..col * k + i2];
                for (b, &u) in block[i..].iter_mut().zip(&u[i..]) {
                    *b -= error * u;
                }
                errors.push(error);
            }
            // weight_tensor[:, i2:] -= error_block @ hinv[i1:i2, i2:]
            let tail = &mut acc[i2..];
            tail.fill(0.0);
            for (i, &e) in errors.iter().enumerate() {
                let u = &self.upper[(i1 + i) * k + i2..(i1 + i + 1) * k];
                tail.iter_mut()
                    .zip(u)
                    .for_each(|(a, &u)| *a += e as f64 * u as f64);
            }
            w[i2..]
                .iter_mut()
                .zip(tail.iter())
                .for_each(|(v, &a)| *v -= a as f32);
        }
    }

    /// Min-max parameters of a group, or Scale Estimation's when enabled.
    fn group_params(&self, w: &[f32], g: usize) -> (f32, f32) {
        match self.se {
            Some((stats, params)) => {
                let st = &stats[g];
                estimate_group(w, &st.s, &st.xg, self.mode, params)
            }
            None => group_params(w, self.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nncf::compress_nncf;

    #[test]
    fn cholesky_of_a_known_matrix() {
        let a = [4.0f32, 12.0, -16.0, 12.0, 37.0, -43.0, -16.0, -43.0, 98.0];
        let l = cholesky(&a, 3).unwrap();
        assert_eq!(l, vec![2.0, 0.0, 0.0, 6.0, 1.0, 0.0, -8.0, 5.0, 3.0]);
        // Not positive definite: an error, not a panic or NaN.
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }

    #[test]
    fn inverse_upper_factor_of_a_diagonal_matrix() {
        // H = diag(4, 16): H⁻¹ = diag(1/4, 1/16), upper factor diag(1/2, 1/4).
        let u = inverse_upper_cholesky(&[4.0, 0.0, 0.0, 16.0], 2).unwrap();
        assert_eq!(u, vec![0.5, 0.0, 0.0, 0.25]);
    }

    #[test]
    fn hessian_is_the_running_average_of_two_x_transpose_x() {
        // Two samples [1 token, 2 channels]: (2·x1ᵀx1 + 2·x2ᵀx2) / 2.
        // The first sample is scaled by f32(sqrt(2)) before the product, as NNCF does: within rounding.
        let h = gptq_hessian(&[vec![1.0f32, 2.0], vec![3.0, 0.0]], 2).unwrap();
        for (got, want) in h.iter().zip([10.0f32, 2.0, 2.0, 4.0]) {
            assert!((got - want).abs() <= 4.0 * f32::EPSILON * want, "{h:?}");
        }
        assert!(gptq_hessian(&[vec![1.0f32, 2.0, 3.0]], 2).is_err());
        assert!(gptq_hessian::<Vec<f32>>(&[], 2).is_err());
    }

    #[test]
    fn a_diagonal_hessian_gives_plain_round_to_nearest() {
        // Inputs c·I: H = 2c²·I, so U is diagonal and no error is fed forward: GPTQ is NNCF's data-free RTN.
        let (n, k) = (4, 64);
        let x: Vec<f32> = (0..k * k)
            .map(|i| if i / k == i % k { 0.5 } else { 0.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 257) as f32 - 128.0) / 300.0)
            .collect();
        for mode in [NncfMode::Int4Asym, NncfMode::Int4Sym] {
            for group in [Some(16), None] {
                let options = GptqOptions {
                    block_size: 24,
                    ..GptqOptions::new(mode, group)
                };
                let got = gptq(&w, n, k, std::slice::from_ref(&x), &options).unwrap();
                let rtn = compress_nncf(&w, n, k, mode, group).unwrap();
                assert_eq!(got.weight, rtn, "{mode} {group:?}");
            }
        }
    }

    #[test]
    fn dead_inputs_zero_their_weight_column() {
        // Channel 1 never fires: its Hessian diagonal is 0 → 1, and its weights become 0 before quantizing.
        let x = vec![vec![1.0f32, 0.0, 0.5, -1.0], vec![0.25, 0.0, 1.0, 2.0]];
        let w = [0.3f32, 0.9, -0.2, 0.1, -0.4, 0.8, 0.6, 0.05];
        let got = gptq(&w, 2, 4, &x, &GptqOptions::new(NncfMode::Int4Sym, None)).unwrap();
        assert_eq!(got.dequantized[1], 0.0);
        assert_eq!(got.dequantized[5], 0.0);
        // The scale comes from the zeroed weight: the extreme of row 1 without the 0.8 is 0.6 (positive, so the
        // symmetric scale is negative).
        assert_eq!(got.params.scale[1], -0.6f32 / 8.0);
    }

    #[test]
    fn refuses_bad_inputs() {
        let w = vec![0.1f32; 8];
        let o = GptqOptions::new(NncfMode::Int4Asym, Some(4));
        assert!(gptq(&w, 2, 4, &[vec![1.0f32; 3]], &o).is_err());
        assert!(gptq(&w, 2, 4, &[vec![f32::NAN; 4]], &o).is_err());
        assert!(
            gptq(
                &w,
                2,
                4,
                &[vec![1.0f32; 4]],
                &GptqOptions::new(NncfMode::Int8Asym, None)
            )
            .is_err()
        );
        assert!(
            gptq(
                &w,
                2,
                4,
                &[vec![1.0f32; 4]],
                &GptqOptions { block_size: 0, ..o }
            )
            .is_err()
        );
    }
}
