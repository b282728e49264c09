//! onnxruntime-genai builder decisions (docs/onnx-genai.md §1.8, §2.2), plus an optional NNCF-style
//! ratio between 4-bit and 8-bit MatMulNBits.

use oxport_arch::{Model, Role, Tensor};

use super::mixed::{candidate_error, dtype_eps, select_by_ratio};
use super::{OnnxPlanOptions, Precision, QuantPlan, Scheme, entry};
use crate::error::QuantError;
use crate::nbits::{NBitsParams, ScaleDtype};

/// Plan an ONNX (onnxruntime-genai layout) export.
///
/// The builder quantizes every MatMul (lm_head included) with `MatMulNBits` and keeps the embedding and the
/// norms in the graph's float dtype: f32 on cpu (f32 scales), f16 on cuda (f16 scales)
/// (docs/onnx-genai.md §1.8, §2.2). With tied embeddings the builder still emits an lm_head MatMul,
/// so the plan has an `LmHead` entry that reads the embedding.
pub fn plan_onnx(ckpt: &Model, opts: &OnnxPlanOptions) -> Result<QuantPlan, QuantError> {
    let c = ckpt.config();
    let float = match (opts.precision, opts.scale_dtype) {
        (Precision::Fp32, _) => Scheme::F32,
        (Precision::Fp16, _) => Scheme::F16,
        (Precision::Int4, ScaleDtype::F32) => Scheme::F32,
        (Precision::Int4, ScaleDtype::F16) => Scheme::F16,
    };
    let nbits = |bits: u32| NBitsParams {
        bits,
        block_size: opts.block_size,
        symmetric: opts.symmetric,
        scale_dtype: opts.scale_dtype,
    };
    if opts.precision == Precision::Int4 {
        nbits(4).validate().map_err(QuantError::Options)?;
    }
    let mut infos: Vec<Tensor> = ckpt.tensors().to_vec();
    if c.tie_word_embeddings && !infos.iter().any(|t| t.role == Role::LmHead) {
        let emb = ckpt
            .info(Role::Embedding)
            .expect("every checkpoint has an embedding");
        infos.push(Tensor {
            role: Role::LmHead,
            info: oxport_hf::TensorInfo {
                name: Role::LmHead.name(),
                ..emb.info.clone()
            },
        });
    }
    let mut entries = Vec::with_capacity(infos.len());
    let mut candidates = Vec::new();
    for t in &infos {
        let e = match (t.role.is_matmul(), opts.precision) {
            (false, _) => entry(
                t,
                float,
                "embedding and norms stay in the graph dtype (op_types_to_quantize=MatMul)",
            ),
            (true, Precision::Int4) if t.role == Role::LmHead && opts.int8_lm_head => entry(
                t,
                Scheme::NBits(nbits(8)),
                "--int8-lm-head (matmul_mixed_precision=last_matmul:int8)",
            ),
            (true, Precision::Int4) if t.role == Role::LmHead || opts.ratio.is_none() => entry(
                t,
                Scheme::NBits(nbits(4)),
                "int4: every MatMul weight (builder -p int4)",
            ),
            (true, Precision::Int4) => {
                candidates.push(entries.len());
                entry(t, Scheme::NBits(nbits(4)), "")
            }
            (true, _) => entry(t, float, "float precision"),
        };
        entries.push(e);
    }
    if let (Some(ratio), false) = (opts.ratio, candidates.is_empty()) {
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(QuantError::Options(format!(
                "ratio must be in (0, 1], not {ratio}"
            )));
        }
        // The same data-free ranking NNCF uses (int8 asym per-channel error), deciding 4-bit vs 8-bit NBits.
        let mut scores = Vec::with_capacity(candidates.len());
        for &i in &candidates {
            let t = &infos[i];
            let err = candidate_error(ckpt, t)?;
            scores.push(1.0 / (err as f64 + dtype_eps(t.dtype)));
        }
        let numels: Vec<usize> = candidates.iter().map(|&i| infos[i].numel()).collect();
        let chosen = if ratio >= 1.0 {
            (0..candidates.len()).map(|i| (i, true)).collect()
        } else {
            select_by_ratio(&scores, &numels, ratio)
        };
        for (rank, (ci, four)) in chosen.into_iter().enumerate() {
            let e = &mut entries[candidates[ci]];
            e.ratio_defining = true;
            e.sensitivity = Some(scores[ci]);
            e.scheme = Scheme::NBits(nbits(if four { 4 } else { 8 }));
            e.reason = format!(
                "ratio-defining, sensitivity rank {rank}: {}-bit MatMulNBits (--ratio {ratio})",
                if four { 4 } else { 8 }
            );
        }
    }
    Ok(QuantPlan::new(entries))
}
