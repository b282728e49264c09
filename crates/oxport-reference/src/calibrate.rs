//! Calibration statistics from the reference forward pass: what NNCF collects before data-aware compression
//! (see `oxport_quant::stats`). Each sample is an independent prefill in a fresh KV cache, as NNCF resets the
//! stateful model before every sample (`src/nncf/openvino/engine.py`); for each observed linear layer the signed
//! token mean of its input is kept per sample, so memory grows with channels × samples, never with tokens.

use oxport_arch::Role;
use oxport_quant::ActivationStats;

use crate::{LinearInput, LinearObserver, Reference, Result};

/// What to keep of one layer's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observe {
    Nothing,
    /// The mixed-precision scalars only (`oxport_quant::SampleScalars`).
    Scalars,
    /// The per-channel token means too (AWQ, scale estimation).
    Means,
}

struct Collector<'a> {
    stats: &'a mut ActivationStats,
    want: &'a dyn Fn(Role) -> Observe,
}

impl LinearObserver for Collector<'_> {
    fn linear_input(&mut self, input: LinearInput<'_>) {
        let keep = (self.want)(input.role);
        if keep == Observe::Nothing {
            return;
        }
        let l = self.stats.layers.entry(input.role).or_default();
        if keep == Observe::Means {
            l.push_sample(input.data, input.tokens);
        } else {
            l.push_scalars(input.data, input.tokens);
        }
    }
}

/// Run every sample through `reference` and keep, for the input of each linear layer, what `want` says.
/// `progress(done, total)` is called after each sample.
pub fn collect_activation_stats(
    reference: &Reference,
    samples: &[Vec<u32>],
    want: &dyn Fn(Role) -> Observe,
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
