//! What `oxport export onnx` can be asked for, mirroring the onnxruntime-genai builder's `-p`, `-e` and
//! `--extra_options` (docs/onnx-genai.md §1.1, §1.8, §2.2).

use oxport_quant::{OnnxPlanOptions, ScaleDtype};

pub use oxport_quant::Precision;

/// The execution provider the graph is built for (`-e`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    /// DirectML: separate Q/K/V MatMuls, a separate `RotaryEmbedding` fed by a `position_ids` input, no `If`
    /// (LongRoPE caches concatenated), no windowed KV cache (`builders/base.py::is_packed_matmul_supported`,
    /// `is_fused_rope_supported`, `make_rotary_embedding_multi_cache`, `uses_windowed_kv_cache`).
    Dml,
    /// WebGPU: the cpu/cuda graph with fp16 I/O, `accuracy_level` 4 and no windowed KV cache.
    WebGpu,
}

impl ExecutionProvider {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Dml => "dml",
            ExecutionProvider::WebGpu => "webgpu",
        }
    }

    /// Q, K and V in one packed MatMul (`is_packed_matmul_supported`: every EP but dml).
    pub fn packed_qkv(self) -> bool {
        self != ExecutionProvider::Dml
    }

    /// Rotary embedding inside GroupQueryAttention (`do_rotary=1`, no `position_ids` input;
    /// `is_fused_rope_supported`: every EP but dml).
    pub fn fused_rope(self) -> bool {
        self != ExecutionProvider::Dml
    }

    /// LongRoPE caches chosen by an `If` on the total length (`eps_without_if_support = ["dml", "trt-rtx"]`);
    /// otherwise one concatenated `[short; long]` cache indexed through shifted position ids.
    pub fn longrope_if(self) -> bool {
        self != ExecutionProvider::Dml
    }

    /// The windowed KV cache block in genai_config (`uses_windowed_kv_cache`: cpu, cuda, trt-rtx).
    pub fn windowed_kv(self) -> bool {
        matches!(self, ExecutionProvider::Cpu | ExecutionProvider::Cuda)
    }
}

/// Element type of activations, KV cache, logits and float weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoDtype {
    F32,
    F16,
}

/// Options of one ONNX export.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExportOptions {
    pub precision: Precision,
    pub execution_provider: ExecutionProvider,
    /// MatMulNBits block size along K (power of two, 16..=256; builder default 32).
    pub block_size: usize,
    /// Symmetric int4 (no zero points) or asymmetric (uint4 with zero points).
    pub symmetric: bool,
    /// MatMulNBits `accuracy_level`; `None` = the builder default (4 on cpu/webgpu, 0 = omitted on cuda/dml).
    pub accuracy_level: Option<u32>,
    /// lm_head as 8-bit MatMulNBits.
    pub int8_lm_head: bool,
    /// Fraction of ratio-defining parameters kept in 4-bit (rest 8-bit), as NNCF ranks them.
    pub ratio: Option<f64>,
    /// Standard-ops form: `DequantizeLinear` (INT4/UINT4 `[K, N]`, blocked along K) + `MatMul`, and the first
    /// RMS norm decomposed, so that `onnx.checker` accepts the model. ORT fuses DQ+MatMul back to MatMulNBits.
    pub qdq: bool,
    /// NNCF's AWQ on the 4-bit `down_proj` weights, folded into `up_proj` (`crate::awq`): data-free, or data-aware
    /// when `awq_stats` holds calibration statistics.
    pub awq: bool,
    /// Calibration statistics of the `down_proj` and `gate_up_proj` inputs for data-aware AWQ.
    #[serde(skip)]
    pub awq_stats: Option<std::sync::Arc<oxport_quant::ActivationStats>>,
    /// `--model` as given (a folder or a hub id), recorded in `oxport_manifest.json`; default: the checkpoint
    /// folder as opened.
    #[serde(skip)]
    pub model_arg: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            precision: Precision::Int4,
            execution_provider: ExecutionProvider::Cpu,
            block_size: 32,
            symmetric: true,
            accuracy_level: None,
            int8_lm_head: false,
            ratio: None,
            qdq: false,
            awq: false,
            awq_stats: None,
            model_arg: None,
        }
    }
}

impl ExportOptions {
    /// `set_io_dtype` in the builder: fp32 for fp32 and for int4 on cpu, fp16 otherwise (cuda, dml, webgpu).
    pub fn io_dtype(&self) -> IoDtype {
        match (self.precision, self.execution_provider) {
            (Precision::Fp32, _) => IoDtype::F32,
            (Precision::Fp16, _) => IoDtype::F16,
            (Precision::Int4, ExecutionProvider::Cpu) => IoDtype::F32,
            (Precision::Int4, _) => IoDtype::F16,
        }
    }

    /// The MatMulNBits `accuracy_level` attribute to write; 0 means "omit the attribute" as the builder does.
    /// Defaults (`onnxruntime_genai/models/quantization/quant_config.py`): 4 on cpu and webgpu, 0 on cuda and dml.
    pub fn effective_accuracy_level(&self) -> u32 {
        self.accuracy_level
            .unwrap_or(match self.execution_provider {
                ExecutionProvider::Cpu | ExecutionProvider::WebGpu => 4,
                ExecutionProvider::Cuda | ExecutionProvider::Dml => 0,
            })
    }

    /// The quantization planner's view of these options.
    pub fn plan_options(&self) -> OnnxPlanOptions {
        OnnxPlanOptions {
            precision: self.precision,
            block_size: self.block_size,
            symmetric: self.symmetric,
            scale_dtype: match self.io_dtype() {
                IoDtype::F32 => ScaleDtype::F32,
                IoDtype::F16 => ScaleDtype::F16,
            },
            int8_lm_head: self.int8_lm_head,
            ratio: self.ratio,
        }
    }

    /// Reject combinations that cannot be exported.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::OnnxError::Options(m));
        if !self.block_size.is_power_of_two() || !(16..=256).contains(&self.block_size) {
            return bad(format!(
                "block size {} is not a power of two in 16..=256",
                self.block_size
            ));
        }
        if let Some(level) = self.accuracy_level
            && level > 4
        {
            return bad(format!("accuracy level {level} is not in 0..=4"));
        }
        if let Some(ratio) = self.ratio
            && !(ratio > 0.0 && ratio <= 1.0)
        {
            return bad(format!("ratio {ratio} is not in (0, 1]"));
        }
        if self.awq && (self.precision != Precision::Int4 || self.qdq) {
            return bad("--awq needs --precision int4 (MatMulNBits; not with --qdq)".into());
        }
        if self.precision != Precision::Int4 {
            if self.qdq {
                return bad("--qdq needs --precision int4".into());
            }
            if self.int8_lm_head || self.ratio.is_some() {
                return bad("--int8-lm-head and --ratio need --precision int4".into());
            }
        }
        if self.qdq && (self.int8_lm_head || self.ratio.is_some_and(|r| r < 1.0)) {
            return bad(
                "--qdq writes 4-bit DequantizeLinear only; drop --int8-lm-head / --ratio".into(),
            );
        }
        Ok(())
    }
}
