//! Calibration statistics from the reference forward pass: what NNCF collects before data-aware compression
//! (see `oxport_quant::stats`). Each sample is an independent prefill in a fresh KV cache, as NNCF resets the
//! stateful model before every sample (`src/nncf/openvino/engine.py`); for each observed linear layer the signed
//! token mean of its input is kept per sample, so memory grows with channels × samples, never with tokens.

use oxport_hf::Role;
use oxport_quant::ActivationStats;

use crate::{LinearInput, LinearObserver, Reference, Result};

struct Collector<'a> {
    stats: &'a mut ActivationStats,
    want: &'a dyn Fn(Role) -> bool,
}

impl LinearObserver for Collector<'_> {
    fn linear_input(&mut self, input: LinearInput<'_>) {
        if (self.want)(input.role) {
            self.stats
                .layers
                .entry(input.role)
                .or_default()
                .push_sample(input.data, input.tokens);
        }
    }
}

/// Run every sample through `reference` and keep the statistics of the inputs of the layers `want` selects.
/// `progress(done, total)` is called after each sample.
pub fn collect_activation_stats(
    reference: &Reference,
    samples: &[Vec<u32>],
    want: &dyn Fn(Role) -> bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ActivationStats> {
    let mut stats = ActivationStats::default();
    for (i, ids) in samples.iter().enumerate() {
        let mut c = Collector {
            stats: &mut stats,
            want,
        };
        reference.observe_prefill(ids, &mut c)?;
        stats.samples += 1;
        progress(i + 1, samples.len());
    }
    Ok(stats)
}
