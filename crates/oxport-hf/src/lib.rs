//! Phi-3 checkpoints as oxport reads them.
//!
//! * [`Phi3Config`]: `config.json` in the 2024 legacy layout or the newer `rope_parameters` layout, normalised.
//! * [`Role`]: every tensor name maps once to a typed role; policies match on the enum, never on strings.
//! * [`Checkpoint`]: shards memory-mapped, headers validated, tensors handed out as borrowed byte views.
//! * [`check_side_files`]: the tokenizer and chat template an export copies, checked before it writes anything.

mod checkpoint;
mod config;
mod dtype;
mod error;
mod role;
mod side_files;

pub use checkpoint::{Checkpoint, TensorInfo, TensorView, validate_safetensors};
pub use config::{Phi3Config, RopeScaling, SUPPORTED_ARCHITECTURES};
pub use dtype::DType;
pub use error::{Error, Result};
pub use role::Role;
pub use side_files::{check_chat_templates, check_side_files, check_tokenizer_json};
