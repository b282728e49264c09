//! The whole model: interface, embedding, rotary tables, layers, final norm and lm_head (docs/openvino-ir.md §2, §4).

use oxport_arch::rope::{self, FactorSet, Peer};

use super::layer::decoder_layer;
use super::*;

/// Build the whole IR for `ckpt` under `plan` without reading a weight: every weight constant is a deferred
/// [`WeightRef`], which [`super::stream`] computes and writes in creation order.
pub(crate) fn build(ckpt: &Model, plan: &Plan) -> Result<Graph<WeightRef>> {
    let cfg = ckpt.config();
    let mut b = Builder {
        g: Graph::new("Model0"),
        cfg,
        ckpt,
        plan,
    };
    // §2 interface, Parameter order input_ids, attention_mask, position_ids, beam_idx.
    let input_ids = b.g.parameter("input_ids", Elem::I64, &[DYN, DYN]);
    let attention_mask = b.g.parameter("attention_mask", Elem::I64, &[DYN, DYN]);
    let position_ids = b.g.parameter("position_ids", Elem::I64, &[DYN, DYN]);
    let beam_idx = b.g.parameter("beam_idx", Elem::I32, &[DYN]);

    let ids_shape = b.shape_of("", input_ids, Elem::I64);
    let zero_idx = b.c_i64(&[0], &[1])?;
    let zero_axis = b.c_i64(&[0], &[])?;
    let batch = b.gather("", ids_shape, zero_idx, zero_axis, &[1]);

    let (w_embed, mut x) = embedding(&mut b, input_ids)?;

    // §4.1.2 rotary cos/sin, once. inv_freq stays f32 in every format: optimum's fp16 export rounds it to f16,
    // which shifts RoPE angles at large positions (docs/openvino-ir.md §4.1); keeping f32 is strictly more accurate.
    let inv = inv_freq(&mut b, position_ids)?;
    let (cos, sin) = cos_sin(&mut b, position_ids, inv)?;

    let mut shared = Shared {
        beam_idx,
        batch,
        cos,
        sin,
        mask: None,
        lens: None,
        gqa_target: None,
        chunk_lengths: None,
        sdpa_scale: None,
    };

    for layer in 0..cfg.num_hidden_layers {
        x = decoder_layer(&mut b, layer, x, &mut shared, attention_mask)?;
    }

    // §4.3 epilogue.
    let xn = b.rms_norm("__module.model.norm", x, Role::FinalNorm)?;
    let w_lm = if cfg.tie_word_embeddings {
        w_embed
    } else {
        b.weight(Role::LmHead, "lm_head", false)?
    };
    let logits = b.matmul_w(
        "__module.lm_head/ov_ext::linear/MatMul",
        xn,
        w_lm,
        cfg.vocab_size,
    );
    b.g.name_tensor(logits, "logits");
    let id = b.g.layer_count();
    b.g.result(&format!("Result_{id}"), logits, "logits");
    Ok(b.g)
}

/// §4.1.1 embedding: the weight (also lm_head's when tied) and the gathered rows.
fn embedding(b: &mut Builder, input_ids: Out) -> Result<(Out, Out)> {
    let w_embed = b.weight(Role::Embedding, "model.embed_tokens", true)?;
    let ids32 = b.convert(
        "__module.model.embed_tokens/ov_ext::embedding/Convert_1",
        input_ids,
        Elem::I32,
    );
    let axis0 = b.c_i32(&[0], &[])?;
    let x = b.gather(
        "__module.model.embed_tokens/ov_ext::embedding/Gather",
        w_embed,
        ids32,
        axis0,
        &[DYN, DYN, n(b.cfg.hidden_size)],
    );
    Ok((w_embed, x))
}

/// The `[1, rot/2, 1]` inverse frequencies: a constant, or with LongRoPE a Select between the short and long sets.
fn inv_freq(b: &mut Builder, position_ids: Out) -> Result<Out> {
    let cfg = b.cfg;
    let rot = cfg.rotary_dim();
    let re = "__module.model.rotary_emb";
    // optimum-intel's traced constants: the power in f64, rounded to f32 (`oxport_arch::rope::Peer::OptimumIntel`).
    let inv_freq = |set: Option<FactorSet>| rope::inv_freq(cfg, set, Peer::OptimumIntel);
    Ok(match &cfg.rope_scaling {
        None => b.c_f32(&inv_freq(None), &[1, rot / 2, 1])?,
        Some(_) => {
            // LongRoPE (transformers `longrope_frequency_update`): long factors once max(position_ids)+1 exceeds
            // original_max_position_embeddings, short factors otherwise.
            let short = b.c_f32(&inv_freq(Some(FactorSet::Short)), &[1, rot / 2, 1])?;
            let long = b.c_f32(&inv_freq(Some(FactorSet::Long)), &[1, rot / 2, 1])?;
            let axes = b.c_i64(&[0, 1], &[2])?;
            let maxpos = b.op(
                "ReduceMax",
                "opset1",
                &format!("{re}/aten::max/ReduceMax"),
                &[position_ids, axes],
                &[("keep_dims", "false")],
                &[],
            );
            let one = b.c_i64(&[1], &[])?;
            let seq = b.binary("Add", &format!("{re}/aten::add/Add"), maxpos, one, &[]);
            let orig = b.c_i64(&[n(cfg.original_max_position_embeddings)], &[])?;
            let is_long = b.g.op1(
                "Greater",
                "opset1",
                &format!("{re}/aten::gt/Greater"),
                &[seq, orig],
                &[AB],
                (Elem::Boolean, &[]),
            );
            b.g.op1(
                "Select",
                "opset1",
                &format!("{re}/aten::where/Select"),
                &[is_long, long, short],
                &[AB],
                (Elem::F32, &[1, n(rot / 2), 1]),
            )
        }
    })
}

/// `cos`/`sin` of `position_ids × inv_freq` (scaled by LongRoPE's attention factor), as `[B, 1, T, rot]`.
fn cos_sin(b: &mut Builder, position_ids: Out, inv: Out) -> Result<(Out, Out)> {
    let cfg = b.cfg;
    let rot = cfg.rotary_dim();
    let re = "__module.model.rotary_emb";
    let pos_u = b.unsqueeze(
        &format!("{re}/aten::unsqueeze/Unsqueeze_2"),
        position_ids,
        1,
        &[DYN, 1, DYN],
    )?;
    let pos_f = b.convert(&format!("{re}/aten::to/Convert_3"), pos_u, Elem::F32);
    let freqs = b.op(
        "MatMul",
        "opset1",
        &format!("{re}/aten::matmul/MatMul"),
        &[inv, pos_f],
        &[("transpose_a", "false"), ("transpose_b", "false")],
        &[DYN, n(rot / 2), DYN],
    );
    let freqs_t = b.transpose(
        &format!("{re}/aten::transpose/Transpose"),
        freqs,
        &[0, 2, 1],
        &[DYN, DYN, n(rot / 2)],
    )?;
    let emb = b.op(
        "Concat",
        "opset1",
        &format!("{re}/aten::cat/Concat"),
        &[freqs_t, freqs_t],
        &[("axis", "-1")],
        &[DYN, DYN, n(rot)],
    );
    let mut cos = b.op(
        "Cos",
        "opset1",
        &format!("{re}/aten::cos/Cos"),
        &[emb],
        &[],
        &[DYN, DYN, n(rot)],
    );
    let mut sin = b.op(
        "Sin",
        "opset1",
        &format!("{re}/aten::sin/Sin"),
        &[emb],
        &[],
        &[DYN, DYN, n(rot)],
    );
    if cfg.rope_scaling.is_some() {
        // One scale for both factor sets: the derived attention factor.
        let factor = rope::attention_scale(cfg, FactorSet::Long, Peer::OptimumIntel);
        if factor != 1.0 {
            let f = b.c_f32(&[factor], &[])?;
            cos = b.binary(
                "Multiply",
                &format!("{re}/aten::mul/Multiply"),
                cos,
                f,
                &[DYN, DYN, n(rot)],
            );
            sin = b.binary(
                "Multiply",
                &format!("{re}/aten::mul/Multiply_1"),
                sin,
                f,
                &[DYN, DYN, n(rot)],
            );
        }
    }
    let sa0 = "__module.model.layers.0.self_attn";
    let cos = b.unsqueeze(
        &format!("{sa0}/aten::unsqueeze/Unsqueeze"),
        cos,
        1,
        &[DYN, 1, DYN, n(rot)],
    )?;
    let sin = b.unsqueeze(
        &format!("{sa0}/aten::unsqueeze/Unsqueeze_1"),
        sin,
        1,
        &[DYN, 1, DYN, n(rot)],
    )?;
    Ok((cos, sin))
}
