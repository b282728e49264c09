//! Phi-3 checkpoints as oxport reads them.
//!
//! * [`Phi3Config`]: `config.json` in the 2024 legacy layout or the newer `rope_parameters` layout, normalised.
//! * [`Role`]: every tensor name maps once to a typed role; policies match on the enum, never on strings.
//! * [`Checkpoint`]: shards memory-mapped, headers validated, tensors handed out as borrowed byte views.

mod checkpoint;
mod config;
mod dtype;
mod error;
mod role;

pub use checkpoint::{Checkpoint, TensorInfo, TensorView};
pub use config::{Phi3Config, RopeScaling, SUPPORTED_ARCHITECTURES};
pub use dtype::DType;
pub use error::{Error, Result};
pub use role::Role;
