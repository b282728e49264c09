//! Plan first, then execute: every checkpoint tensor gets a [`Scheme`] and a reason before any heavy work.
//!
//! [`plan_openvino`] reproduces what `optimum-cli export openvino` + NNCF 3.4 decide (docs/openvino-ir.md
//! §5, §6, §9); [`plan_onnx`] what the onnxruntime-genai builder decides (docs/onnx-genai.md §1.8, §2.2).

use oxport_arch::{Role, Tensor};

use crate::nbits::{NBitsParams, ScaleDtype};
use crate::nncf::NncfMode;

mod display;
mod mixed;
mod onnx;
mod openvino;

pub use mixed::select_by_ratio;
pub use onnx::plan_onnx;
pub use openvino::plan_openvino;

/// How one tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Scheme {
    /// Plain f32.
    F32,
    /// Plain IEEE f16 (round-to-nearest-even, see [`crate::fp16`]).
    F16,
    /// Kept in the checkpoint's own dtype (NNCF group-size fallback `ignore`: "kept with original precision").
    Keep,
    /// ONNX Runtime `MatMulNBits`.
    NBits(NBitsParams),
    /// NNCF weight compression; `group_size` `None` = per output channel.
    Nncf {
        mode: NncfMode,
        group_size: Option<usize>,
    },
}

/// One tensor's decision.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanEntry {
    pub role: Role,
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: Scheme,
    /// Why this scheme (the rule that fired), for `--dry-run`.
    pub reason: String,
    /// NNCF "ratio-defining" weight (a mixed-precision candidate).
    pub ratio_defining: bool,
    /// Data-free sensitivity score used for ranking (NNCF `weight_quantization_error`), when computed.
    pub sensitivity: Option<f64>,
    /// A transform that couples this weight with another tensor (AWQ rescales its input columns and the
    /// activation feeding it), applied when the weight is written.
    pub transform: Transform,
    /// NNCF's scale estimation searches this 4-bit weight's scales on the calibration data at export.
    pub scale_estimation: bool,
}

/// A cross-tensor transform of one weight.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transform {
    #[default]
    None,
    /// AWQ: input column `j` of the weight is multiplied by `s[j]` before compression and the activation feeding
    /// it by `1 / s[j]` (NNCF's `awq.py`).
    Awq {
        /// The scales come from calibration statistics (NNCF's data-aware search) rather than from the weight
        /// alone (data-free).
        data_aware: bool,
        /// The searched scales, once computed (data-aware AWQ searches them after planning, before export;
        /// data-free AWQ computes them from the weight while writing it).
        #[serde(skip)]
        scales: Option<std::sync::Arc<crate::AwqScales>>,
    },
}

impl Transform {
    pub fn is_awq(&self) -> bool {
        matches!(self, Transform::Awq { .. })
    }

    /// The scales an AWQ transform already has.
    pub fn awq_scales(&self) -> Option<&crate::AwqScales> {
        match self {
            Transform::Awq {
                scales: Some(s), ..
            } => Some(s),
            _ => None,
        }
    }
}

impl PlanEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One row of the NNCF-style statistics table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PrecisionStats {
    /// e.g. `int4_sym, group size 128`, `int8_asym, per-channel`, `float`.
    pub label: String,
    pub params: usize,
    pub layers: usize,
    pub ratio_defining_params: usize,
    pub ratio_defining_layers: usize,
}

/// Statistics over the weight layers (MatMul weights and the embedding), as NNCF prints them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PlanStats {
    pub total_params: usize,
    pub total_layers: usize,
    pub ratio_defining_params: usize,
    pub ratio_defining_layers: usize,
    /// In NNCF's order: float, then decreasing bit width, then increasing group size.
    pub rows: Vec<PrecisionStats>,
}

/// The whole plan, entries in the checkpoint's canonical order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuantPlan {
    pub entries: Vec<PlanEntry>,
    pub stats: PlanStats,
}

impl QuantPlan {
    /// The entry for `role`.
    pub fn entry(&self, role: Role) -> Option<&PlanEntry> {
        self.entries.iter().find(|e| e.role == role)
    }

    /// The entry for `role`, to record a transform in.
    pub fn entry_mut(&mut self, role: Role) -> Option<&mut PlanEntry> {
        self.entries.iter_mut().find(|e| e.role == role)
    }

    /// The weights (MatMul weights and the embedding), in the plan's order; norms and other tensors left out.
    pub fn weights(&self) -> impl Iterator<Item = &PlanEntry> {
        self.entries.iter().filter(|e| is_weight(e.role))
    }
}

impl Scheme {
    /// NNCF's 4-bit modes (grouped or per-channel).
    pub fn is_nncf_four_bit(&self) -> bool {
        matches!(self, Scheme::Nncf { mode, .. } if mode.bits() == 4)
    }
}

/// `--weight-format` of `optimum-cli export openvino`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OvWeightFormat {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

/// NNCF `BackupMode`: what non-int4 weights get in an int4 export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backup {
    /// Keep in the original precision.
    None,
    Int8Sym,
    Int8Asym,
}

/// NNCF `GroupSizeFallbackMode` for K not divisible by the group size (docs/openvino-ir.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// `InvalidGroupSizeError` naming the weights selected for int4.
    Error,
    /// Drop such weights from the candidates; they keep the checkpoint precision.
    Ignore,
    /// Use the largest power of two dividing K if ≥ `min_adjusted_group_size`, else the backup.
    Adjust,
}

/// Options mirroring `optimum-cli export openvino` / NNCF `compress_weights`.
///
/// `group_size` 0 means per-channel int4 (optimum's `--group-size -1`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenVinoPlanOptions {
    pub weight_format: OvWeightFormat,
    /// 128 by default; for int4 only.
    pub group_size: usize,
    /// Fraction of ratio-defining parameters in int4 (1.0 default).
    pub ratio: f64,
    /// int4_sym instead of int4_asym.
    pub sym: bool,
    /// Embedding and last MatMul become candidates too.
    pub all_layers: bool,
    pub backup_precision: Backup,
    pub group_size_fallback: Fallback,
    /// NNCF `min_adjusted_group_size` (32).
    pub min_adjusted_group_size: usize,
    /// The mixed-precision criterion (ratio < 1); the data-aware ones read `activation`.
    pub sensitivity_metric: crate::stats::SensitivityMetric,
    /// Calibration statistics of the ratio-defining weights' inputs (data-aware criteria).
    #[serde(skip)]
    pub activation: Option<std::sync::Arc<crate::stats::ActivationStats>>,
}

impl Default for OpenVinoPlanOptions {
    fn default() -> Self {
        OpenVinoPlanOptions {
            weight_format: OvWeightFormat::Int4,
            group_size: 128,
            ratio: 1.0,
            sym: false,
            all_layers: false,
            backup_precision: Backup::Int8Asym,
            group_size_fallback: Fallback::Error,
            min_adjusted_group_size: 32,
            sensitivity_metric: crate::stats::SensitivityMetric::WeightQuantizationError,
            activation: None,
        }
    }
}

/// `-p` of the onnxruntime-genai builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Int4,
    Fp16,
    Fp32,
}

/// Options mirroring the onnxruntime-genai builder's int4 path.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OnnxPlanOptions {
    pub precision: Precision,
    /// MatMulNBits block size (32 default).
    pub block_size: usize,
    pub symmetric: bool,
    /// F32 for cpu, F16 for cuda.
    pub scale_dtype: ScaleDtype,
    /// lm_head as 8-bit MatMulNBits instead of 4-bit (builder `matmul_mixed_precision=last_matmul:int8`).
    pub int8_lm_head: bool,
    /// Fraction of ratio-defining parameters in 4-bit, the rest 8-bit MatMulNBits, ranked like NNCF.
    pub ratio: Option<f64>,
}

impl Default for OnnxPlanOptions {
    fn default() -> Self {
        OnnxPlanOptions {
            precision: Precision::Int4,
            block_size: 32,
            symmetric: true,
            scale_dtype: ScaleDtype::F32,
            int8_lm_head: false,
            ratio: None,
        }
    }
}

/// Told about the slow part of planning (reading candidate weights for the sensitivity ranking): the name of the
/// weight just scored, how many are done, of how many. A plain callback, not oxport-io's `Reporter`, so this crate
/// depends on no I/O crate; the exporters adapt it to their reporter.
pub type OnScored<'a> = &'a mut dyn FnMut(&str, usize, usize);

pub(super) fn entry(t: &Tensor, scheme: Scheme, reason: impl Into<String>) -> PlanEntry {
    PlanEntry {
        role: t.role,
        name: t.name.clone(),
        shape: t.shape.clone(),
        scheme,
        reason: reason.into(),
        ratio_defining: false,
        sensitivity: None,
        transform: Transform::None,
        scale_estimation: false,
    }
}

/// A weight NNCF compresses: MatMul weights and the embedding (Gather) table.
pub(super) fn is_weight(role: Role) -> bool {
    role.is_matmul() || role == Role::Embedding
}
