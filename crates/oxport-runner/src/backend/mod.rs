//! Language-model sessions with one interface for the reference and both runtimes: feed token ids after the
//! positions already processed, get logits for each fed position.

pub mod onnxruntime;
pub mod openvino;

use crate::error::Result;
use oxport_reference::{KvCache, Reference};

/// Session settings: f32-exact by default (see `docs/runtimes.md` §3–4), or whatever the device does by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// ORT: `session.qdq_matmulnbits_accuracy_level=0`; OpenVINO: `INFERENCE_PRECISION_HINT=f32`,
    /// `DYNAMIC_QUANTIZATION_GROUP_SIZE=0`, `KV_CACHE_PRECISION=f32`.
    #[default]
    F32Exact,
    /// The runtime's own defaults (bf16 inference and int8 activations on some CPUs).
    DeviceDefault,
}

/// One sequence at a time through a causal LM with a KV cache.
pub trait LlmSession {
    /// Process `ids` after the positions already seen; return logits `[ids.len() * vocab]`.
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
    /// Forget the sequence (a new KV cache / infer request).
    fn reset(&mut self) -> Result<()>;
    /// Positions processed since the last reset.
    fn position(&self) -> usize;
    fn vocab_size(&self) -> usize;
}

/// The Rust reference forward pass as an [`LlmSession`].
pub struct ReferenceSession<'a> {
    model: &'a Reference,
    cache: KvCache,
}

impl<'a> ReferenceSession<'a> {
    pub fn new(model: &'a Reference) -> Self {
        ReferenceSession {
            model,
            cache: model.new_cache(),
        }
    }
}

impl LlmSession for ReferenceSession<'_> {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.model.forward(ids, &mut self.cache)?)
    }

    fn reset(&mut self) -> Result<()> {
        self.cache = self.model.new_cache();
        Ok(())
    }

    fn position(&self) -> usize {
        self.cache.len()
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
}

/// Check that a runtime returned `[1, n, vocab]` logits and take them.
pub(crate) fn check_logits(
    shape: &[i64],
    n: usize,
    data: &[f32],
    output: &str,
) -> Result<(usize, Vec<f32>)> {
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    match dims.as_slice() {
        [1, seq, vocab] if *seq == n && *vocab > 0 => Ok((*vocab, data.to_vec())),
        // Some exports return only the last position's logits.
        _ => Err(crate::Error::Shape {
            tensor: output.to_string(),
            expected: vec![1, n, 0],
            got: dims,
        }),
    }
}
