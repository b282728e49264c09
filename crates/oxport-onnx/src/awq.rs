//! `--awq`: NNCF's data-free AWQ for the genai graph (an oxport extension; the genai builder has no AWQ of its own).
//!
//! The scales are NNCF's (`oxport_quant::data_free_awq`: `1 / max(mean_i |W_down[i, j]|, eps)` per input channel
//! of `down_proj`). In the builder's graph gate and up are separate MatMuls feeding `down_proj` through
//! `Mul(SiLU(gate), up)`, which is NNCF's `MatMul_Mul_MatMul` pattern (`awq_patterns.py`): NNCF folds the inverse
//! scale into the first MatMul's output channels instead of inserting a node (`AWQ.apply`, mergeable branch). So here
//! `down_proj`'s input columns are multiplied by the scale and `up_proj`'s output rows by its inverse, both in f32
//! (`(w * s).astype(float32)`), before MatMulNBits quantization; the graph is unchanged. As in NNCF, AWQ applies
//! where `down_proj` is 4-bit.

use std::collections::BTreeMap;

use oxport_hf::{Checkpoint, DType, Role};
use oxport_quant::{AwqScales, Rows, data_free_awq, scale_columns};

use crate::error::{OnnxError, Result};
use crate::graph::{GraphLayout, LinearForm, LinearSpec, WeightItem};

/// The layers AWQ rescales, and their scales once computed.
pub(crate) struct Awq {
    targets: Vec<usize>,
    scales: BTreeMap<usize, AwqScales>,
}

impl Awq {
    /// Layers whose `down_proj` is a 4-bit MatMulNBits (none unless `enabled`).
    pub(crate) fn new(layout: &GraphLayout, enabled: bool) -> Self {
        let targets = layout
            .weight_order
            .iter()
            .filter_map(|w| match w {
                WeightItem::Linear(LinearSpec {
                    role: Role::MlpDown { layer },
                    form: LinearForm::NBits(p),
                    ..
                }) if enabled && p.bits == 4 => Some(*layer),
                _ => None,
            })
            .collect();
        Awq {
            targets,
            scales: BTreeMap::new(),
        }
    }

    /// The f32 rows to quantize for `spec` when AWQ rescales it (`up_proj` rows or `down_proj` columns of a target
    /// layer), else `None` (the checkpoint rows as they are).
    pub(crate) fn rows(
        &mut self,
        ckpt: &Checkpoint,
        spec: &LinearSpec,
    ) -> Result<Option<Vec<f32>>> {
        let (layer, up) = match spec.role {
            Role::MlpGateUp { layer } if spec.rows.start >= ckpt.config().intermediate_size => {
                (layer, true)
            }
            Role::MlpDown { layer } => (layer, false),
            _ => return Ok(None),
        };
        if !self.targets.contains(&layer) {
            return Ok(None);
        }
        let down = Role::MlpDown { layer };
        let s = match self.scales.entry(layer) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let view = ckpt.view(down).ok_or_else(|| missing(ckpt, down))?;
                let (n, k) = (view.info.shape[0], view.info.shape[1]);
                e.insert(data_free_awq(encoded(&view), n, k).map_err(|e| quant(down, e))?)
            }
        };
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

fn encoded<'a>(view: &oxport_hf::TensorView<'a>) -> Rows<'a> {
    Rows::Encoded {
        bytes: view.bytes,
        dtype: view.info.dtype,
    }
}

fn missing(ckpt: &Checkpoint, role: Role) -> OnnxError {
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
