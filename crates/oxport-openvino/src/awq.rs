//! Data-aware AWQ for the OpenVINO export (`--awq --dataset …`): NNCF's search (`oxport_quant::data_aware_awq`)
//! on every weight the plan marks for AWQ, run before the graph is built so that the scales become part of the plan.
//!
//! In the Phi-3 IR the only AWQ target is `down_proj`, matched by NNCF's `Act_Mul_MatMul` pattern (Swish →
//! Multiply → MatMul, `awq_patterns.py`): the merge node is the Swish, which has no weight, so there is no
//! f16-overflow guard (that applies to the mergeable `MatMul_Mul_MatMul` pattern only) and the inverse scale is the
//! `…/awq_mul` Multiply the data-free path also writes (`AWQ.apply`).

use oxport_arch::{Model, Role};
use oxport_quant::{ActivationStats, AwqParams, Rows, data_aware_awq};

use crate::error::{Error, Result};
use crate::plan::{Plan, Scheme, Transform};

/// The calibration roles data-aware AWQ needs statistics for: the inputs of the plan's AWQ targets.
pub fn stats_roles(plan: &Plan) -> Vec<Role> {
    plan.weights()
        .filter(|e| e.transform.is_awq())
        .map(|e| e.role)
        .collect()
}

/// Compute the data-aware AWQ scales of every AWQ target of `plan` from `stats` and record them in the plan.
/// `progress(done, total)` after each weight.
pub fn apply_data_aware_awq(
    ckpt: &Model,
    plan: &mut Plan,
    stats: &ActivationStats,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let targets: Vec<_> = plan
        .weights()
        .filter(|e| e.transform.is_awq())
        .cloned()
        .collect();
    for (i, e) in targets.iter().enumerate() {
        let (mode, group) = match e.scheme {
            Scheme::Nncf { mode, group_size } if e.scheme.is_nncf_four_bit() => (mode, group_size),
            other => {
                return Err(Error::Options(format!(
                    "{}: AWQ applies to 4-bit weights, the plan has {}",
                    e.role,
                    other.label()
                )));
            }
        };
        let layer = stats.get(e.role).ok_or_else(|| {
            Error::Options(format!(
                "{}: no calibration statistics for its input",
                e.role
            ))
        })?;
        let view = ckpt
            .view(e.role)
            .ok_or_else(|| Error::MissingTensor(e.role.to_string()))?;
        view.check_finite()?;
        let rows = Rows::Encoded {
            bytes: view.bytes,
            dtype: view.info.dtype,
        };
        let scales = data_aware_awq(
            rows,
            (e.shape[0], e.shape[1]),
            layer,
            mode,
            group,
            None,
            &AwqParams::default(),
        )
        .map_err(|source| Error::Quant {
            tensor: e.role.name(),
            source: Box::new(source.for_tensor(&e.role.name())),
        })?;
        ckpt.release(e.role);
        if let Some(entry) = plan.quant.entry_mut(e.role) {
            entry.transform = Transform::Awq {
                data_aware: true,
                scales: Some(std::sync::Arc::new(scales)),
            };
        }
        progress(i + 1, targets.len());
    }
    Ok(())
}
