//! Weight quantization for oxport: the kernels (ORT MatMulNBits, NNCF weight compression, fp16), NNCF's
//! data-aware int4 parameter searches as pure functions ([`scale_estimation`], [`gptq`]: statistics and raw layer
//! inputs in, scales and zero points out, no graph) and the per-tensor [`plan`] that decides which scheme each
//! checkpoint tensor gets.
//!
//! Every kernel is a pure function of its input (rayon inside one tensor, same bytes on any thread count).

pub mod awq;
pub mod awq_data;
pub mod error;
pub mod float;
pub mod fp16;
pub mod gptq;
pub mod nbits;
pub mod nncf;
mod npsum;
pub mod plan;
pub mod rows;
pub mod scale_estimation;
pub mod sensitivity;
mod simd;
pub mod stats;
pub use simd::force_portable_kernels;

pub use awq::{AwqScales, data_free_awq, scale_columns};
pub use awq_data::{AwqParams, MergePrev, data_aware_awq};
pub use error::QuantError;
pub use float::{FloatDtype, float_bytes_into};
pub use fp16::{f16_bytes_into, f32_to_f16_bytes};
pub use gptq::{GptqOptions, GptqResult, gptq, gptq_hessian};
pub use nbits::{
    NBitsParams, NBitsWeight, ScaleDtype, quantize_nbits, quantize_nbits_rows,
    quantize_nbits_rows_into,
};
pub use nncf::{
    NncfMode, NncfParams, NncfWeight, compress_nncf, compress_nncf_rows, compress_nncf_rows_into,
    compress_nncf_with_params,
};
pub use plan::{
    Backup, Fallback, OnScored, OnnxPlanOptions, OpenVinoPlanOptions, OvWeightFormat, PlanEntry,
    PlanStats, Precision, PrecisionStats, QuantPlan, Scheme, Transform, plan_onnx, plan_openvino,
    select_by_ratio,
};
pub use rows::Rows;
pub use scale_estimation::{
    ProcessedStats, ScaleEstimationParams, process_stats, scale_estimation,
};
pub use stats::{ActivationStats, LayerStats, SampleScalars, SensitivityMetric};
