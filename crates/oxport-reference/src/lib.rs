//! oxport-reference: an f32 forward pass of a Phi-3 checkpoint, written independently of the exporters, that
//! `oxport validate` compares exports with (it matches transformers' fp32 logits to 1e-4,
//! `tests/transformers.rs`).
//!
//! * [`Reference`]: the model over the checkpoint's memory-mapped weights, with a [`KvCache`].
//! * [`LinearObserver`]: sees the input activations of every linear layer during a forward pass
//!   ([`Reference::forward_observed`]): what data-aware quantization (AWQ, GPTQ, scale estimation) collects.
//! * [`npy`]: the `.npy` reader for the transformers logits under `fixtures/reference/numerics/`.
//!
//! It depends on the checkpoint reader and math crates only: no runtime, tokenizer or HTTP crate.

mod calibrate;
mod error;
pub mod gemm;
mod model;
pub mod npy;
mod observer;
mod weights;

pub use calibrate::{Observe, collect_activation_stats};
pub use error::{Error, Result};
pub use model::{KvCache, Reference};
pub use observer::{LinearInput, LinearObserver, NoObserver};
pub use weights::MemoryPolicy;

#[cfg(test)]
mod tests;
