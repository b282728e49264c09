//! oxport-openvino: Phi-3 checkpoints → stateful OpenVINO IR v11 laid out like `optimum-cli export openvino`.
//!
//! * [`plan`]: which compression each weight gets (optimum-cli defaults, NNCF mixed precision by `--ratio`).
//! * [`ir`]: a small IR writer (layer/edge builder without I/O, weights deferred then streamed into the `.bin`,
//!   deterministic XML, and a text form of the graph: [`graph_text`]).
//! * `phi3`: the graph optimum-intel exports (stateful KV cache, decomposed RMSNorm/RoPE/SwiGLU, SDPA).
//! * [`export()`]: the output folder, written into an oxport-io staging folder and renamed (merged) into place.
//! * [`defaults`]: optimum-cli's per-model default 4-bit recipes (the Phi family).
//! * [`npu`]: `--npu`, OpenVINO GenAI's compression recipe for Intel NPUs and the refusal of everything outside it.

pub mod awq;
mod compress;
pub mod defaults;
mod error;
mod export;
#[cfg(test)]
mod graph_snapshots;
pub mod ir;
pub mod npu;
mod phi3;
pub mod plan;

pub use error::{Error, Result};
pub use export::{
    ExportSummary, ExtraFiles, MODEL_BIN, MODEL_XML, export, export_with, graph_text,
};
pub use plan::{
    BackupPrecision, CompressionOptions, DataAware, DatasetRecord, GroupSizeFallback, Plan,
    PlanEntry, Scheme, Transform, WeightFormat, plan, plan_data_aware,
};
