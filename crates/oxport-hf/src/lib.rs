//! Hugging Face checkpoints as oxport reads them, for any architecture (`oxport-arch` knows the model families).
//!
//! * [`resolve_model`]: a local folder, a hub id in the Hugging Face cache, or a download into that cache.
//! * [`Checkpoint`]: shards memory-mapped, headers validated, tensors handed out by name as borrowed byte views.
//! * [`calibration_samples`]: token windows for data-aware quantization, built as optimum-intel builds them
//!   (wikitext2 through the hub cache, or a local `.txt` / `.jsonl`), with CPython's generator ([`PyRandom`]).
//! * [`check_side_files`]: the tokenizer and chat template an export copies, checked before it writes anything.

mod calibration;
mod checkpoint;
mod dtype;
mod error;
mod header;
mod pyrandom;
mod resolve;
mod side_files;

pub use calibration::{
    CalibrationSet, CalibrationSource, CalibrationSpec, DEFAULT_NUM_SAMPLES, DEFAULT_SEQ_LEN,
    WIKITEXT2_CONFIG, WIKITEXT2_DATASET, WIKITEXT2_FILE, WIKITEXT2_REVISION, calibration_samples,
};
pub use checkpoint::{Checkpoint, TensorInfo, TensorView};
pub use dtype::DType;
pub use error::{Error, Result, regular_file};
pub use header::validate_safetensors;
pub use pyrandom::PyRandom;
pub use resolve::{
    DEFAULT_ENDPOINT, DownloadProgress, NoProgress, ResolveOptions, resolve_model,
    resolve_model_with,
};
pub use side_files::{check_chat_templates, check_side_files, check_tokenizer_json};
