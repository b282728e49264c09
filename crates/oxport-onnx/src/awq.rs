//! `--awq`: NNCF's data-free AWQ for the genai graph (an oxport extension; the genai builder has no AWQ of its own).
//!
//! The scales are NNCF's (`oxport_quant::data_free_awq`: `1 / max(mean_i |W_down[i, j]|, eps)` per input channel
//! of `down_proj`). In the builder's graph gate and up are separate MatMuls feeding `down_proj` through
//! `Mul(SiLU(gate), up)`, which is NNCF's `MatMul_Mul_MatMul` pattern (`awq_patterns.py`): NNCF folds the inverse
//! scale into the first MatMul's output channels instead of inserting a node (`AWQ.apply`, mergeable branch). So here
//! `down_proj`'s input columns are multiplied by the scale and `up_proj`'s output rows by its inverse, both in f32
//! (`(w * s).astype(float32)`), before MatMulNBits quantization; the graph is unchanged. As in NNCF, AWQ applies
//! where `down_proj` is 4-bit.
//!
//! With calibration statistics (`--awq --dataset …`) the scales come from NNCF's data-aware search instead
//! (`oxport_quant::data_aware_awq`), with the f16-overflow guard of the mergeable pattern fed by `up_proj`'s
//! weights and the statistics of its input (`AWQ._data_aware_step`, `prev_weight` / `prev_statistics`). The
//! search quantizes each candidate with NNCF's int4 rule of the same symmetry and block size as the
//! MatMulNBits weight (NNCF has no MatMulNBits quantizer; the two differ in rounding details only).

use std::collections::BTreeMap;

use oxport_arch::{Model, Role};
use oxport_hf::DType;
use std::sync::Arc;

use oxport_quant::{
    ActivationStats, AwqParams, AwqScales, MergePrev, NBitsParams, NncfMode, Rows, data_aware_awq,
    data_free_awq, scale_columns,
};

use crate::error::{OnnxError, Result};
use crate::graph::{GraphLayout, LinearForm, LinearSpec, WeightItem};

/// The layers AWQ rescales, and their scales once computed.
pub(crate) struct Awq {
    /// Target layers with their `down_proj` MatMulNBits parameters.
    targets: BTreeMap<usize, NBitsParams>,
    scales: BTreeMap<usize, AwqScales>,
    stats: Option<Arc<ActivationStats>>,
}

impl Awq {
    /// Layers whose `down_proj` is a 4-bit MatMulNBits (none unless `enabled`).
    pub(crate) fn new(
        layout: &GraphLayout,
        enabled: bool,
        stats: Option<Arc<ActivationStats>>,
    ) -> Self {
        let targets = layout
            .weight_order
            .iter()
            .filter_map(|w| match w {
                WeightItem::Linear(LinearSpec {
                    role: Role::MlpDown { layer },
                    form: LinearForm::NBits(p),
                    ..
                }) if enabled && p.bits == 4 => Some((*layer, *p)),
                _ => None,
            })
            .collect();
        Awq {
            targets,
            scales: BTreeMap::new(),
            stats,
        }
    }

    /// The f32 rows to quantize for `spec` when AWQ rescales it (`up_proj` rows or `down_proj` columns of a target
    /// layer), else `None` (the checkpoint rows as they are).
    pub(crate) fn rows(&mut self, ckpt: &Model, spec: &LinearSpec) -> Result<Option<Vec<f32>>> {
        let (layer, up) = match spec.role {
            Role::MlpGateUp { layer } if spec.rows.start >= ckpt.config().intermediate_size => {
                (layer, true)
            }
            Role::MlpDown { layer } => (layer, false),
            _ => return Ok(None),
        };
        let Some(&params) = self.targets.get(&layer) else {
            return Ok(None);
        };
        if !self.scales.contains_key(&layer) {
            let s = self.layer_scales(ckpt, layer, params)?;
            self.scales.insert(layer, s);
        }
        let s = &self.scales[&layer];
        let view = ckpt
            .view(spec.role)
            .ok_or_else(|| missing(ckpt, spec.role))?;
        let rows = Rows::Encoded {
            bytes: view.rows_bytes(spec.rows.clone()),
            dtype: view.info.dtype,
        };
        let (n, k) = (spec.rows.len(), spec.k);
        let w = if up {
            // Row j of up_proj (its output channel j) times 1 / scale[j].
            let mut w = scale_columns(rows, n, k, &vec![1.0; k], DType::F32)
                .map_err(|e| quant(spec.role, e))?;
            for (row, a) in w.chunks_exact_mut(k).zip(&s.activation) {
                row.iter_mut().for_each(|v| *v *= a);
            }
            w
        } else {
            scale_columns(rows, n, k, &s.weight, DType::F32).map_err(|e| quant(spec.role, e))?
        };
        Ok(Some(w))
    }
}

impl Awq {
    /// The scales of `layer`'s `down_proj`: data-aware when statistics were collected, else data-free.
    fn layer_scales(&self, ckpt: &Model, layer: usize, p: NBitsParams) -> Result<AwqScales> {
        let down = Role::MlpDown { layer };
        let view = ckpt.view(down).ok_or_else(|| missing(ckpt, down))?;
        let (n, k) = (view.info.shape[0], view.info.shape[1]);
        let Some(stats) = &self.stats else {
            return data_free_awq(encoded(&view), n, k).map_err(|e| quant(down, e));
        };
        let gate_up = Role::MlpGateUp { layer };
        let (layer_stats, prev_stats) = match (stats.get(down), stats.get(gate_up)) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(OnnxError::Options(format!(
                    "{}: no calibration statistics for data-aware AWQ",
                    down.name()
                )));
            }
        };
        let up = ckpt.view(gate_up).ok_or_else(|| missing(ckpt, gate_up))?;
        let hidden = up.info.shape[1];
        let inter = ckpt.config().intermediate_size;
        let up_rows = Rows::Encoded {
            bytes: up.rows_bytes(inter..2 * inter),
            dtype: up.info.dtype,
        };
        let up_f32 = scale_columns(up_rows, inter, hidden, &vec![1.0; hidden], DType::F32)
            .map_err(|e| quant(gate_up, e))?;
        let mean_abs = up_f32
            .chunks_exact(hidden)
            .map(|row| row.iter().map(|v| v.abs()).sum::<f32>() / hidden as f32)
            .collect();
        let s_prev = prev_stats
            .processed(AwqParams::default().subset_size)
            .map_err(|e| quant(gate_up, e))?
            .s;
        let prev = MergePrev {
            mean_abs,
            max_s: s_prev.iter().fold(0f32, |a, &v| a.max(v)),
            k: hidden,
        };
        let mode = if p.symmetric {
            NncfMode::Int4Sym
        } else {
            NncfMode::Int4Asym
        };
        data_aware_awq(
            encoded(&view),
            (n, k),
            layer_stats,
            mode,
            Some(p.block_size),
            Some(&prev),
            &AwqParams::default(),
        )
        .map_err(|e| quant(down, e))
    }
}

fn encoded<'a>(view: &oxport_hf::TensorView<'a>) -> Rows<'a> {
    Rows::Encoded {
        bytes: view.bytes,
        dtype: view.info.dtype,
    }
}

fn missing(ckpt: &Model, role: Role) -> OnnxError {
    oxport_hf::Error::MissingTensors {
        dir: ckpt.dir().to_path_buf(),
        names: vec![role.name()],
    }
    .into()
}

fn quant(role: Role, source: oxport_quant::QuantError) -> OnnxError {
    OnnxError::Quant {
        tensor: role.name(),
        source: Box::new(source.for_tensor(&role.name())),
    }
}
