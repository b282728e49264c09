//! Activation statistics for data-aware compression, as NNCF 3.4 collects and reduces them.
//!
//! NNCF registers, on the input of every compressible MatMul, a signed mean over every axis but the channel axis,
//! and keeps one such vector per calibration sample with the sample's shape (`algorithm.py::get_statistic_points`,
//! `openvino_backend.py::mean_statistic_collector`: `OVMeanReducer` + `OVShapeReducer` with `NoopAggregator`). Each
//! sample is an independent prefill. [`LayerStats`] holds exactly that — per sample, the `[in]` token mean and the
//! token count — so memory is per channel, never per token. The collector that fills it is the Rust reference
//! forward pass (`oxport-reference`'s `collect_activation_stats`); this module does no I/O.

use std::collections::BTreeMap;

use oxport_hf::Role;

/// What NNCF keeps for one layer's input: per sample, the signed per-channel mean over the sample's tokens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// `means[i][c]`: the mean of channel `c` over the tokens of sample `i`.
    pub means: Vec<Vec<f32>>,
    /// Tokens in sample `i` (NNCF's `shape_values`, reduced to the product of the non-channel axes).
    pub tokens: Vec<usize>,
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

impl LayerStats {
    /// Add one sample: `data` is `[tokens, channels]` row-major; its per-channel mean is added in token order in f32.
    pub fn push_sample(&mut self, data: &[f32], tokens: usize) {
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

/// NNCF's `process_stats` (`weight_compression/activation_stats.py`), shared by AWQ, scale estimation and LoRA
/// correction: `s[c] = max_i |means[i][c]|` over **all** samples, and `x` = the sample vectors used for the search,
/// `[channels][m]` row-major. When there are more than `subset_size` samples (and `subset_size > 0`), the samples
/// are sorted by token count, longest first (a stable sort, as Python's `sorted`), and every `N / subset_size`-th
/// one is kept.
pub fn process_stats(stats: &LayerStats, subset_size: usize) -> (Vec<f32>, Vec<f32>, usize) {
    let n = stats.means.len();
    let c = stats.channels();
    let mut s = vec![0f32; c];
    for m in &stats.means {
        for (a, v) in s.iter_mut().zip(m) {
            *a = a.max(v.abs());
        }
    }
    let picked: Vec<usize> = if subset_size > 0 && n > subset_size {
        let step = n / subset_size;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| stats.tokens[b].cmp(&stats.tokens[a]));
        order.into_iter().step_by(step).collect()
    } else {
        (0..n).collect()
    };
    let m = picked.len();
    let mut x = vec![0f32; c * m];
    for (col, &i) in picked.iter().enumerate() {
        for (ch, v) in stats.means[i].iter().enumerate() {
            x[ch * m + col] = *v;
        }
    }
    (s, x, m)
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
    fn process_stats_takes_the_max_over_all_samples_and_every_step_th_of_the_longest_first() {
        let l = LayerStats {
            means: (0..8).map(|i| vec![i as f32, -(i as f32) * 2.0]).collect(),
            // Sample 7 is the longest, then the rest (all 4 tokens) in their own order.
            tokens: vec![4, 4, 4, 4, 4, 4, 4, 9],
        };
        let (s, x, m) = process_stats(&l, 4);
        assert_eq!(s, vec![7.0, 14.0]);
        assert_eq!(m, 4);
        // Sorted: [7, 0, 1, 2, 3, 4, 5, 6]; step 2 → 7, 1, 3, 5.
        assert_eq!(x, vec![7.0, 1.0, 3.0, 5.0, -14.0, -2.0, -6.0, -10.0]);
        let (_, all, m) = process_stats(&l, 0);
        assert_eq!(m, 8);
        assert_eq!(all.len(), 16);
    }
}
