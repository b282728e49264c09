//! oxport-onnx: Phi-3 checkpoints → ONNX for ONNX Runtime GenAI, the layout the onnxruntime-genai model
//! builder writes (docs/onnx-genai.md): `model.onnx` (GroupQueryAttention with fused rotary,
//! MatMulNBits / MatMul / DequantizeLinear weights, Skip/SimplifiedLayerNormalization), every initializer in
//! `model.onnx.data`, `genai_config.json`, and the checkpoint's tokenizer and config files.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ckpt = oxport_arch::Model::open("phi3-dir")?;
//! let opts = oxport_onnx::ExportOptions::default(); // int4, cpu, block 32, symmetric
//! oxport_onnx::export(&ckpt, &opts, "out".as_ref(), &oxport_io::Silent, &oxport_io::CancelToken::new())?;
//! # Ok(()) }
//! ```

mod awq;
mod error;
mod export;
mod external;
mod genai_config;
pub mod graph;
mod graph_text;
mod options;
pub mod proto;
mod protoutil;
mod rope;
mod weights;

pub use error::{OnnxError, Result};
pub use export::{
    COPIED_FILES, DATA_FILE, ExportSummary, GENAI_CONFIG_FILE, IR_VERSION, MODEL_FILE, OPSET,
    export, layout, plan,
};
pub use external::{ALIGN_THRESHOLD_BYTES, ALIGNMENT_BYTES};
pub use genai_config::genai_config;
pub use graph_text::graph_text;
pub use options::{ExecutionProvider, ExportOptions, IoDtype, Precision};
pub use rope::{RopeCaches, rope_caches};
