//! The hook that sees what every linear layer of the forward pass multiplies.

use oxport_arch::Role;

/// The input of one linear layer during a forward pass: `[tokens, features]` activations, row-major, in f32.
#[derive(Clone, Copy, Debug)]
pub struct LinearInput<'a> {
    /// The weight it multiplies: `AttnQkv`, `AttnOut`, `MlpGateUp`, `MlpDown` (each with its layer) or `LmHead`.
    pub role: Role,
    /// Tokens of this forward call (rows of `data`).
    pub tokens: usize,
    /// The layer's input width (the weight's `in` dimension).
    pub features: usize,
    pub data: &'a [f32],
}

impl LinearInput<'_> {
    /// The activations of token `t`.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.features..(t + 1) * self.features]
    }
}

/// Called with the input of every linear layer, in forward order (per layer: qkv, o, gate_up, down; then lm_head),
/// before the layer multiplies it. Observing never changes the result.
pub trait LinearObserver {
    fn linear_input(&mut self, input: LinearInput<'_>);
}

/// The observer of a plain forward pass: sees nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl LinearObserver for NoObserver {
    fn linear_input(&mut self, _: LinearInput<'_>) {}
}
