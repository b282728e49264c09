//! Activation statistics for data-aware compression, as NNCF 3.4 collects and reduces them.
//!
//! NNCF registers, on the input of every compressible MatMul, a signed mean over every axis but the channel axis,
//! and keeps one such vector per calibration sample with the sample's shape (`algorithm.py::get_statistic_points`,
//! `openvino_backend.py::mean_statistic_collector`: `OVMeanReducer` + `OVShapeReducer` with `NoopAggregator`). Each
//! sample is an independent prefill. [`LayerStats`] holds exactly that — per sample, the `[in]` token mean and the
//! token count — so memory is per channel, never per token. The collector that fills it is the Rust reference
//! forward pass (`oxport-reference`'s `collect_activation_stats`); this module does no I/O.

use std::collections::BTreeMap;

use oxport_arch::Role;

/// What NNCF keeps for one layer's input: per sample, the signed per-channel mean over the sample's tokens (for
/// AWQ, scale estimation; only when asked for) and the per-sample scalars of the data-aware mixed-precision
/// criteria (always; one `f32` each).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// `means[i][c]`: the mean of channel `c` over the tokens of sample `i`.
    pub means: Vec<Vec<f32>>,
    /// Tokens in sample `i` (NNCF's `shape_values`, reduced to the product of the non-channel axes).
    pub tokens: Vec<usize>,
    /// Per sample, [`SampleScalars`] of the whole `[tokens, channels]` input.
    pub scalars: Vec<SampleScalars>,
}

/// NNCF's mixed-precision reducers of one sample's input `x` `[tokens, channels]`
/// (`src/nncf/common/tensor_statistics/collectors.py`): variance over tokens (population, numpy's `var`) per
/// channel, then the max (`MaxVarianceReducer`) or mean (`MeanVarianceReducer`) over channels; the mean over channels
/// of the max |x| over tokens (`MeanAbsMaxReducer`); and `sum(x²) / x.size` (`HAWQAggregator`'s per-sample term).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleScalars {
    pub max_variance: f32,
    pub mean_variance: f32,
    pub mean_abs_max: f32,
    pub trace_per_element: f32,
}

/// `--sensitivity-metric`: NNCF's `SensitivityMetric` values (`src/nncf/parameters.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensitivityMetric {
    WeightQuantizationError,
    HessianInputActivation,
    MeanActivationVariance,
    MaxActivationVariance,
    MeanActivationMagnitude,
}

impl SensitivityMetric {
    pub const ALL: [SensitivityMetric; 5] = [
        SensitivityMetric::WeightQuantizationError,
        SensitivityMetric::HessianInputActivation,
        SensitivityMetric::MeanActivationVariance,
        SensitivityMetric::MaxActivationVariance,
        SensitivityMetric::MeanActivationMagnitude,
    ];

    /// NNCF's name (`--sensitivity-metric`, rt_info).
    pub fn name(self) -> &'static str {
        match self {
            SensitivityMetric::WeightQuantizationError => "weight_quantization_error",
            SensitivityMetric::HessianInputActivation => "hessian_input_activation",
            SensitivityMetric::MeanActivationVariance => "mean_activation_variance",
            SensitivityMetric::MaxActivationVariance => "max_activation_variance",
            SensitivityMetric::MeanActivationMagnitude => "mean_activation_magnitude",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether the metric needs calibration statistics.
    pub fn is_data_aware(self) -> bool {
        self != SensitivityMetric::WeightQuantizationError
    }
}

/// Statistics of the calibration run, by the weight whose input they describe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationStats {
    pub layers: BTreeMap<Role, LayerStats>,
    /// Calibration samples seen.
    pub samples: usize,
}

impl ActivationStats {
    /// The statistics of `role`'s input, when they were collected.
    pub fn get(&self, role: Role) -> Option<&LayerStats> {
        self.layers.get(&role)
    }
}

impl ActivationStats {
    /// The activation factor of `role`'s mixed-precision score, aggregated over samples as NNCF aggregates it
    /// (`MeanAggregator` for the reducers; `HAWQAggregator`: `2 · Σ trace/size / samples`). `None` for the data-free
    /// metric or a role without statistics.
    pub fn activation_score(&self, role: Role, metric: SensitivityMetric) -> Option<f64> {
        let l = self.layers.get(&role)?;
        if l.scalars.is_empty() {
            return None;
        }
        let pick = |s: &SampleScalars| -> f64 {
            match metric {
                SensitivityMetric::MaxActivationVariance => s.max_variance as f64,
                SensitivityMetric::MeanActivationVariance => s.mean_variance as f64,
                SensitivityMetric::MeanActivationMagnitude => s.mean_abs_max as f64,
                SensitivityMetric::HessianInputActivation => s.trace_per_element as f64,
                SensitivityMetric::WeightQuantizationError => 0.0,
            }
        };
        let n = l.scalars.len() as f64;
        let sum: f64 = l.scalars.iter().map(pick).sum();
        match metric {
            SensitivityMetric::WeightQuantizationError => None,
            SensitivityMetric::HessianInputActivation => Some(sum * 2.0 / n),
            _ => Some(sum / n),
        }
    }
}

impl SampleScalars {
    /// The reducers over one `[tokens, channels]` input (f64 accumulation; NNCF's run in OpenVINO f32).
    pub fn of(data: &[f32], tokens: usize) -> Self {
        let channels = data.len() / tokens.max(1);
        let t = tokens as f64;
        let (mut sum, mut sq, mut absmax) = (
            vec![0f64; channels],
            vec![0f64; channels],
            vec![0f32; channels],
        );
        for row in data.chunks_exact(channels) {
            for c in 0..channels {
                let v = row[c];
                sum[c] += v as f64;
                sq[c] += v as f64 * v as f64;
                absmax[c] = absmax[c].max(v.abs());
            }
        }
        let var: Vec<f64> = (0..channels)
            .map(|c| {
                let m = sum[c] / t;
                (sq[c] / t - m * m).max(0.0)
            })
            .collect();
        let c = channels as f64;
        SampleScalars {
            max_variance: var.iter().fold(0f64, |a, &v| a.max(v)) as f32,
            mean_variance: (var.iter().sum::<f64>() / c) as f32,
            mean_abs_max: (absmax.iter().map(|&v| v as f64).sum::<f64>() / c) as f32,
            trace_per_element: (sq.iter().sum::<f64>() / data.len() as f64) as f32,
        }
    }
}

impl LayerStats {
    /// Add one sample's [`SampleScalars`] only (layers that need no per-channel means).
    pub fn push_scalars(&mut self, data: &[f32], tokens: usize) {
        self.scalars.push(SampleScalars::of(data, tokens));
        self.tokens.push(tokens);
    }

    /// Add one sample: `data` is `[tokens, channels]` row-major; its per-channel mean is added in token order in f32,
    /// and its [`SampleScalars`].
    pub fn push_sample(&mut self, data: &[f32], tokens: usize) {
        self.scalars.push(SampleScalars::of(data, tokens));
        let channels = data.len() / tokens.max(1);
        let mut sum = vec![0f32; channels];
        for row in data.chunks_exact(channels) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        let t = tokens as f32;
        sum.iter_mut().for_each(|s| *s /= t);
        self.means.push(sum);
        self.tokens.push(tokens);
    }

    /// Channels per sample vector (0 when empty).
    pub fn channels(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }
}

impl LayerStats {
    /// NNCF's `process_stats` of these samples (see [`crate::process_stats`]): `s` over all samples, `x` the
    /// `subset_size` kept for the search.
    pub fn processed(
        &self,
        subset_size: usize,
    ) -> Result<crate::ProcessedStats, crate::QuantError> {
        crate::process_stats(&self.means, &self.tokens, subset_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_means_are_per_channel_token_means() {
        let mut l = LayerStats::default();
        l.push_sample(&[1.0, -2.0, 3.0, 4.0], 2);
        assert_eq!(l.means, vec![vec![2.0, 1.0]]);
        assert_eq!(l.tokens, vec![2]);
    }

    #[test]
    fn mixed_precision_reducers_are_nncfs() {
        // x = [[1, -2], [3, 4]]: var over tokens per channel = [1, 9]; max |x| = [3, 4]; sum x² / size = 30 / 4.
        let s = SampleScalars::of(&[1.0, -2.0, 3.0, 4.0], 2);
        assert_eq!(s.max_variance, 9.0);
        assert_eq!(s.mean_variance, 5.0);
        assert_eq!(s.mean_abs_max, 3.5);
        assert_eq!(s.trace_per_element, 7.5);
        let mut stats = ActivationStats::default();
        let l = stats.layers.entry(Role::LmHead).or_default();
        l.push_scalars(&[1.0, -2.0, 3.0, 4.0], 2);
        l.push_scalars(&[0.0, 0.0, 0.0, 0.0], 2);
        let score = |m| stats.activation_score(Role::LmHead, m).unwrap();
        assert_eq!(score(SensitivityMetric::MaxActivationVariance), 4.5);
        assert_eq!(score(SensitivityMetric::HessianInputActivation), 7.5);
        assert_eq!(
            stats.activation_score(Role::LmHead, SensitivityMetric::WeightQuantizationError),
            None
        );
        assert_eq!(
            SensitivityMetric::parse("max_activation_variance"),
            Some(SensitivityMetric::MaxActivationVariance)
        );
    }
}
