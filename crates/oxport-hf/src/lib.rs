//! Hugging Face checkpoints as oxport reads them, for any architecture (`oxport-arch` knows the model families).
//!
//! * [`Checkpoint`]: shards memory-mapped, headers validated, tensors handed out by name as borrowed byte views.
//! * [`check_side_files`]: the tokenizer and chat template an export copies, checked before it writes anything.

mod checkpoint;
mod dtype;
mod error;
mod header;
mod side_files;

pub use checkpoint::{Checkpoint, TensorInfo, TensorView};
pub use dtype::DType;
pub use error::{Error, Result, regular_file};
pub use header::validate_safetensors;
pub use side_files::{check_chat_templates, check_side_files, check_tokenizer_json};
