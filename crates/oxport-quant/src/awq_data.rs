//! Data-aware AWQ: per-input-channel scales searched on calibration statistics, as NNCF 3.4 does it
//! (`openvinotoolkit/nncf:src/nncf/quantization/algorithms/weight_compression/awq.py`, `AWQ._data_aware_step`).
//!
//! For a 4-bit weight `W` `[n, k]` with the statistics of its input ([`crate::process_stats`] with AWQ's subset of 32
//! samples: `s[c]` the largest |token mean| of channel `c` over all samples, `X` `[k, m]` the kept samples):
//! 1. the `max(int(k · 0.002), 1)` channels with the largest `s` are found; only the quantization groups holding
//!    them are searched, every other channel keeps scale 1;
//! 2. per group `g`: `gscale = clip(s[g], quantile(s[g], 0.1), 100)` (numpy's linear quantile, in f64, as NNCF's
//!    `fns.quantile` computes it), `fp = W[:, g] @ X[g, :]`, and for `alpha = 0, 0.01, …, 0.99` (100 steps; 1.0 is
//!    never tried) the candidate `cur = gscale^alpha` scores `mean |Qdq(W[:, g] · cur) @ (X[g, :] / cur) − fp|`,
//!    `Qdq` being the weight's int4 mode over the group's columns of each row; the first candidate below the best
//!    so far (initially `max |fp|`) wins, and when none does the group keeps scale 1;
//! 3. for the `MatMul → Multiply → MatMul` pattern (the previous layer's weight takes `1 / scale`), a candidate
//!    that would push the previous MatMul's outputs near f16 overflow is clamped (`AWQ._clamp_scale`):
//!    `mag = mean|W_prev| / cur · max(s_prev) · k_prev ≥ 0.25 · 65504` → `cur = mean|W_prev| · max(s_prev) · k_prev /
//!    threshold` there.
//!
//! NNCF's arithmetic is numpy f32 with BLAS matmuls; this is f32 with a fixed summation order (the same bytes on
//! any thread count), so the chosen alpha can differ from NNCF's only where two candidates score within rounding.

use rayon::prelude::*;

use crate::awq::AwqScales;
use crate::error::QuantError;
use crate::nncf::{NncfMode, qdq_group_f32};
use crate::rows::Rows;
use crate::stats::LayerStats;

/// `AdvancedAWQParameters` defaults (`src/nncf/quantization/advanced_parameters.py`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqParams {
    pub subset_size: usize,
    pub percent_to_apply: f64,
    pub alpha_min: f64,
    pub alpha_max: f64,
    pub steps: usize,
}

impl Default for AwqParams {
    fn default() -> Self {
        AwqParams {
            subset_size: 32,
            percent_to_apply: 0.002,
            alpha_min: 0.0,
            alpha_max: 1.0,
            steps: 100,
        }
    }
}

/// The previous MatMul of a `MatMul → Multiply → MatMul` match, for the f16 overflow guard.
#[derive(Clone, Debug)]
pub struct MergePrev {
    /// `mean_j |W_prev[c, j]|` for each output channel `c` of the previous weight (= input channel of this one).
    pub mean_abs: Vec<f32>,
    /// `max_c s_prev[c]`: the largest |token mean| of the previous MatMul's input over all samples.
    pub max_s: f32,
    /// The previous weight's input width.
    pub k: usize,
}

const FP16_OVERFLOW_THRESHOLD: f32 = 0.25 * 65504.0;

/// NNCF's data-aware AWQ scales for `w` `[n, k]` quantized as `mode` in groups of `group_size` (`None`: one group
/// per row). `stats` are the statistics of `w`'s input; `prev` is given for the mergeable pattern only.
pub fn data_aware_awq(
    w: Rows<'_>,
    (n, k): (usize, usize),
    stats: &LayerStats,
    mode: NncfMode,
    group_size: Option<usize>,
    prev: Option<&MergePrev>,
    params: &AwqParams,
) -> Result<AwqScales, QuantError> {
    w.check(n, k)?;
    if stats.channels() != k || stats.means.is_empty() {
        return Err(QuantError::Options(format!(
            "AWQ statistics have {} channels in {} samples for a weight with {k} input channels",
            stats.channels(),
            stats.means.len()
        )));
    }
    let group = group_size.unwrap_or(k);
    if group == 0 || k % group != 0 {
        return Err(QuantError::Options(format!(
            "group size {group} does not divide {k} input channels"
        )));
    }
    let p = stats.processed(params.subset_size)?;
    let (s, x, m) = (p.s, p.x, p.samples);
    let top_k = ((k as f64 * params.percent_to_apply) as usize).max(1);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut groups: Vec<usize> = order[..top_k].iter().map(|c| c / group).collect();
    groups.sort_unstable();
    groups.dedup();
    let found: Vec<(usize, Option<Vec<f32>>)> = groups
        .par_iter()
        .map(|&g| {
            let cols = g * group..(g + 1) * group;
            let gw = group_columns(&w, n, k, cols.clone());
            let gx = &x[cols.start * m..cols.end * m];
            let search = GroupSearch {
                w: &gw,
                x: gx,
                n,
                m,
                mode,
            };
            (
                g,
                search.best(&s[cols.clone()], prev.map(|p| (p, cols)), params),
            )
        })
        .collect();
    let mut weight = vec![1f32; k];
    for (g, best) in found {
        if let Some(best) = best {
            weight[g * group..(g + 1) * group].copy_from_slice(&best);
        }
    }
    let activation = weight.iter().map(|&v| 1.0 / v).collect();
    Ok(AwqScales { weight, activation })
}

/// `W[:, cols]` as f32 `[n, cols.len()]`.
fn group_columns(w: &Rows<'_>, n: usize, k: usize, cols: std::ops::Range<usize>) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * cols.len());
    let mut buf = Vec::new();
    for r in 0..n {
        out.extend_from_slice(&w.row(r, k, &mut buf)[cols.clone()]);
    }
    out
}

/// One group's alpha search.
struct GroupSearch<'a> {
    /// `[n, g]`.
    w: &'a [f32],
    /// `[g, m]`.
    x: &'a [f32],
    n: usize,
    m: usize,
    mode: NncfMode,
}

impl GroupSearch<'_> {
    /// The best `cur` for this group, `None` when no alpha beats `max |fp|`.
    fn best(
        &self,
        s: &[f32],
        prev: Option<(&MergePrev, std::ops::Range<usize>)>,
        params: &AwqParams,
    ) -> Option<Vec<f32>> {
        let g = s.len();
        let lo = quantile_linear(s, 0.1) as f32;
        let gscale: Vec<f32> = s.iter().map(|v| v.max(lo).min(100.0)).collect();
        let fp = matmul(self.w, self.x, self.n, g, self.m);
        let mut min_diff = fp.iter().fold(0f32, |a, v| a.max(v.abs()));
        let mut best = None;
        let step = (params.alpha_max - params.alpha_min) / params.steps as f64;
        let mut alpha = params.alpha_min;
        let (mut scaled, mut codes, mut q) = (vec![0f32; g], vec![0u8; g], vec![0f32; self.n * g]);
        let mut sx = vec![0f32; g * self.m];
        for _ in 0..params.steps {
            let mut cur: Vec<f32> = gscale.iter().map(|v| v.powf(alpha as f32)).collect();
            if let Some((p, cols)) = &prev {
                clamp_for_f16(&mut cur, &p.mean_abs[cols.clone()], p.max_s * p.k as f32);
            }
            for (row, qrow) in self.w.chunks_exact(g).zip(q.chunks_exact_mut(g)) {
                for ((d, v), c) in scaled.iter_mut().zip(row).zip(&cur) {
                    *d = v * c;
                }
                qdq_group_f32(&scaled, self.mode, &mut codes, qrow);
            }
            for ((dst, src), c) in sx
                .chunks_exact_mut(self.m)
                .zip(self.x.chunks_exact(self.m))
                .zip(&cur)
            {
                for (d, v) in dst.iter_mut().zip(src) {
                    *d = v / c;
                }
            }
            let out = matmul(&q, &sx, self.n, g, self.m);
            let diff = mean_abs_diff(&out, &fp);
            if diff < min_diff {
                min_diff = diff;
                best = Some(cur);
            }
            alpha += step;
        }
        best
    }
}

/// `AWQ._clamp_scale` where the previous MatMul's scaled outputs would come near the f16 maximum.
fn clamp_for_f16(cur: &mut [f32], prev_mean_abs: &[f32], factor: f32) {
    let mags: Vec<f32> = prev_mean_abs
        .iter()
        .zip(cur.iter())
        .map(|(p, c)| p / c * factor)
        .collect();
    if mags.iter().fold(f32::MIN, |a, &v| a.max(v)) >= FP16_OVERFLOW_THRESHOLD {
        for ((c, mag), p) in cur.iter_mut().zip(&mags).zip(prev_mean_abs) {
            if *mag >= FP16_OVERFLOW_THRESHOLD {
                *c = p * factor / FP16_OVERFLOW_THRESHOLD;
            }
        }
    }
}

/// `a [n, k] @ b [k, m]`, f32, each output summed over `k` in order.
fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for (arow, orow) in a.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (av, brow) in arow.iter().zip(b.chunks_exact(m)) {
            for (o, bv) in orow.iter_mut().zip(brow) {
                *o += av * bv;
            }
        }
    }
    out
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum();
    (sum / a.len() as f64) as f32
}

/// numpy's `quantile(a, q)` with the default linear method, in f64 (`np.quantile(a.astype(float64), q)`).
pub(crate) fn quantile_linear(a: &[f32], q: f64) -> f64 {
    let mut v: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = pos - lo as f64;
    let d = v[hi] - v[lo];
    // numpy `_lerp`: from the upper end when t >= 0.5, for monotonicity.
    if t >= 0.5 {
        v[hi] - d * (1.0 - t)
    } else {
        v[lo] + d * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_numpys_linear_method() {
        // np.quantile([3, 1, 2, 5, 4, 9, 7], 0.1) == 1.6
        let q = quantile_linear(&[3.0, 1.0, 2.0, 5.0, 4.0, 9.0, 7.0], 0.1);
        assert!((q - 1.6).abs() < 1e-12, "{q}");
        assert_eq!(quantile_linear(&[2.0], 0.1), 2.0);
    }

    fn stats(k: usize, samples: usize, hot: usize) -> LayerStats {
        let mut l = LayerStats::default();
        for i in 0..samples {
            let v: Vec<f32> = (0..k)
                .map(|c| {
                    let base = ((c * 37 + i * 11) % 17) as f32 / 17.0 - 0.5;
                    if c == hot { 40.0 + i as f32 } else { base }
                })
                .collect();
            l.push_sample(&v, 1);
        }
        l
    }

    fn weight(n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect()
    }

    #[test]
    fn only_the_group_of_the_hottest_channel_is_rescaled_and_the_error_does_not_grow() {
        let (n, k, g) = (8, 128, 32);
        let w = weight(n, k);
        let st = stats(k, 40, 70);
        let p = AwqParams::default();
        let sc = data_aware_awq(
            Rows::F32(&w),
            (n, k),
            &st,
            NncfMode::Int4Asym,
            Some(g),
            None,
            &p,
        )
        .unwrap();
        // int(128 * 0.002) = 0 → one channel (70), in group 2 (64..96).
        for (c, v) in sc.weight.iter().enumerate() {
            if !(64..96).contains(&c) {
                assert_eq!(*v, 1.0, "channel {c}");
            }
        }
        assert!(sc.weight[64..96].iter().any(|v| *v != 1.0));
        // The chosen scale scores no worse than scale 1 on the statistics it was searched on.
        let pr = st.processed(p.subset_size).unwrap();
        let (x, m) = (pr.x, pr.samples);
        let err = |scale: &[f32]| {
            let s = GroupSearch {
                w: &group_columns(&Rows::F32(&w), n, k, 64..96),
                x: &x[64 * m..96 * m],
                n,
                m,
                mode: NncfMode::Int4Asym,
            };
            let fp = matmul(s.w, s.x, n, g, m);
            let mut q = vec![0f32; n * g];
            let mut codes = vec![0u8; g];
            for (row, qrow) in s.w.chunks_exact(g).zip(q.chunks_exact_mut(g)) {
                let scaled: Vec<f32> = row.iter().zip(scale).map(|(a, b)| a * b).collect();
                qdq_group_f32(&scaled, NncfMode::Int4Asym, &mut codes, qrow);
            }
            let sx: Vec<f32> =
                s.x.chunks_exact(m)
                    .zip(scale)
                    .flat_map(|(r, c)| r.iter().map(move |v| v / c))
                    .collect();
            mean_abs_diff(&matmul(&q, &sx, n, g, m), &fp)
        };
        assert!(err(&sc.weight[64..96]) <= err(&[1.0; 32]));
        for (a, w) in sc.activation.iter().zip(&sc.weight) {
            assert_eq!(*a, 1.0 / w);
        }
    }

    #[test]
    fn same_scales_on_one_and_two_threads() {
        let (n, k) = (16, 1024);
        let w = weight(n, k);
        let st = stats(k, 50, 900);
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| {
                    data_aware_awq(
                        Rows::F32(&w),
                        (n, k),
                        &st,
                        NncfMode::Int4Sym,
                        Some(64),
                        None,
                        &AwqParams::default(),
                    )
                    .unwrap()
                })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn the_f16_guard_clamps_scales_that_would_overflow_the_previous_matmul() {
        let mut cur = vec![1.0f32, 1e-6];
        clamp_for_f16(&mut cur, &[1.0, 1.0], 1.0);
        assert_eq!(cur[0], 1.0);
        assert_eq!(cur[1], 1.0 / FP16_OVERFLOW_THRESHOLD);
    }

    #[test]
    fn mismatched_statistics_are_refused() {
        let w = weight(2, 64);
        let st = stats(32, 4, 0);
        let e = data_aware_awq(
            Rows::F32(&w),
            (2, 64),
            &st,
            NncfMode::Int4Asym,
            Some(32),
            None,
            &AwqParams::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("32 channels"), "{e}");
    }
}
