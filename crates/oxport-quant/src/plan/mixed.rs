//! NNCF's data-free mixed precision: sensitivity of a candidate and the ratio walk
//! (nncf 3.4 `mixed_precision.py`: `DataFreeCriterion`, `MixedPrecisionCriterion.apply`).

use oxport_arch::{Model, Tensor};
use oxport_hf::DType;

use crate::error::QuantError;
use crate::rows::Rows;
use crate::sensitivity::{int8_asym_error_rows, int8_asym_frobenius_rows};
use crate::stats::SensitivityMetric;

/// NNCF's data-free error of one candidate, read straight from the checkpoint's mapped bytes (one row at a
/// time); the mapped pages are released afterwards so planning a large model stays at a small RSS.
pub(super) fn candidate_error(ckpt: &Model, t: &Tensor) -> Result<f32, QuantError> {
    with_rows(ckpt, t, int8_asym_error_rows)
}

/// `kernel` over the candidate's mapped rows `[n, k]`, errors named after the tensor, pages released after.
fn with_rows(
    ckpt: &Model,
    t: &Tensor,
    kernel: fn(Rows<'_>, usize, usize) -> Result<f32, QuantError>,
) -> Result<f32, QuantError> {
    let view = ckpt
        .view(t.role)
        .ok_or_else(|| QuantError::Options(format!("{}: not in the checkpoint", t.name)))?;
    let rows = Rows::Encoded {
        bytes: view.bytes,
        dtype: view.info.dtype,
    };
    let out = kernel(rows, t.shape[0], t.shape[1]).map_err(|e| e.for_tensor(&t.name));
    ckpt.release(t.role);
    out
}

/// NNCF's score of one candidate: the data-free `1 / (int8 error + eps)`, times the activation factor for the
/// variance/magnitude criteria; `‖int8 error‖_F × hawq` for `hessian_input_activation`; 0 (`THE_LOWEST_SENSITIVITY`)
/// for the embedding under a data-aware criterion (`mixed_precision.py::DataBasedCriterion._calc_score_per_node`).
pub(super) fn candidate_score(
    ckpt: &Model,
    t: &Tensor,
    metric: SensitivityMetric,
    activation: Option<f64>,
) -> Result<f64, QuantError> {
    if metric.is_data_aware() && t.role == oxport_arch::Role::Embedding {
        return Ok(0.0);
    }
    let act = || {
        activation.ok_or_else(|| {
            QuantError::Options(format!(
                "{}: no calibration statistics for the {} criterion",
                t.name,
                metric.name()
            ))
        })
    };
    if metric == SensitivityMetric::HessianInputActivation {
        let fro = with_rows(ckpt, t, int8_asym_frobenius_rows)?;
        return Ok(fro as f64 * act()?);
    }
    let err = candidate_error(ckpt, t)?;
    let inv = 1.0 / (err as f64 + dtype_eps(t.dtype));
    Ok(if metric.is_data_aware() {
        inv * act()?
    } else {
        inv
    })
}

/// `np.finfo(dtype).eps` of the weight as NNCF sees it.
pub(super) fn dtype_eps(d: DType) -> f64 {
    match d {
        DType::BF16 => 2f64.powi(-7),
        DType::F16 => 2f64.powi(-10),
        DType::F32 => f32::EPSILON as f64,
    }
}

/// `MixedPrecisionCriterion.apply`: walk the candidates by ascending score (stable: graph order on ties);
/// stop at the first one that would bring the primary share to `ratio` or above (`break`, not `continue`).
/// Returns `(candidate index, gets primary)` in rank order.
pub fn select_by_ratio(scores: &[f64], numels: &[usize], ratio: f64) -> Vec<(usize, bool)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let total: usize = numels.iter().sum();
    let mut in_primary = 0usize;
    let mut open = true;
    order
        .into_iter()
        .map(|i| {
            if open && ((in_primary + numels[i]) as f64 / total as f64) < ratio {
                in_primary += numels[i];
                (i, true)
            } else {
                open = false;
                (i, false)
            }
        })
        .collect()
}
