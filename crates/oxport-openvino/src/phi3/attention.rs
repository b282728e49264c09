//! Self-attention of one decoder layer (docs/openvino-ir.md §4.2): fused QKV, RoPE, the stateful KV cache, GQA,
//! SDPA and the output projection.

use super::mask::build_mask;
use super::*;

impl Builder<'_> {
    /// Rotate-half RoPE on `[B, heads, T, head_dim]` (transformers `apply_rotary_pos_emb`); `names` are the suffixes
    /// the reference gives the slices/products of Q (`["_1","_2","_3"]`, `["", "_1"]`, …).
    fn rope(&mut self, sa: &str, t: Out, heads: usize, sfx: &RopeNames, s: &Shared) -> Result<Out> {
        let hd = self.cfg.head_dim();
        let rot = self.cfg.rotary_dim();
        let hh = n(heads);
        let full = [DYN, hh, DYN, n(hd)];
        let rdims = [DYN, hh, DYN, n(rot)];
        let half = [DYN, hh, DYN, n(rot / 2)];
        let t_rot = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[0]),
            t,
            0,
            n(rot),
            3,
            &rdims,
        )?;
        let a = self.binary(
            "Multiply",
            &format!("{sa}/aten::mul/Multiply{}", sfx.mul[0]),
            t_rot,
            s.cos,
            &rdims,
        );
        let x2 = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[1]),
            t_rot,
            n(rot / 2),
            i64::MAX,
            3,
            &half,
        )?;
        let m1 = self.c_i32(&[-1], &[])?;
        let m1 = self.convert(
            &format!("{sa}/aten::neg/ConvertLike{}", sfx.neg),
            m1,
            Elem::F32,
        );
        let nx2 = self.binary(
            "Multiply",
            &format!("{sa}/aten::neg/Multiply{}", sfx.neg),
            x2,
            m1,
            &half,
        );
        let x1 = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[2]),
            t_rot,
            0,
            n(rot / 2),
            3,
            &half,
        )?;
        let rh = self.op(
            "Concat",
            "opset1",
            &format!("{sa}/aten::cat/Concat{}", sfx.cat),
            &[nx2, x1],
            &[("axis", "-1")],
            &rdims,
        );
        let b = self.binary(
            "Multiply",
            &format!("{sa}/aten::mul/Multiply{}", sfx.mul[1]),
            rh,
            s.sin,
            &rdims,
        );
        let out = self.binary(
            "Add",
            &format!("{sa}/aten::add/Add{}", sfx.add),
            a,
            b,
            &rdims,
        );
        if rot == hd {
            return Ok(out);
        }
        // partial_rotary_factor < 1: the pass-through dimensions are appended unchanged.
        let pass = self.slice(
            &format!("{sa}/aten::slice/Slice{}_pass", sfx.slice[0]),
            t,
            n(rot),
            i64::MAX,
            3,
            &[DYN, hh, DYN, n(hd - rot)],
        )?;
        Ok(self.op(
            "Concat",
            "opset1",
            &format!("{sa}/aten::cat/Concat{}_pass", sfx.cat),
            &[out, pass],
            &[("axis", "-1")],
            &full,
        ))
    }
}

struct RopeNames {
    slice: [&'static str; 3],
    mul: [&'static str; 2],
    neg: &'static str,
    cat: &'static str,
    add: &'static str,
}

const ROPE_Q: RopeNames = RopeNames {
    slice: ["_1", "_2", "_3"],
    mul: ["", "_1"],
    neg: "",
    cat: "",
    add: "",
};
const ROPE_K: RopeNames = RopeNames {
    slice: ["_6", "_7", "_8"],
    mul: ["_2", "_3"],
    neg: "_1",
    cat: "_2",
    add: "_1",
};

/// One ReadValue → Gather(beam_idx) chain for a cache variable (§3).
fn state(b: &mut Builder, s: &Shared, layer: usize, which: &str) -> Result<Out> {
    let (kv, hd) = (b.cfg.num_key_value_heads, b.cfg.head_dim());
    let zero = b.c_float("", &[0.0], &[])?;
    let kvc = b.c_i64(&[n(kv)], &[1])?;
    let z = b.c_i64(&[0], &[1])?;
    let hdc = b.c_i64(&[n(hd)], &[1])?;
    let shape = b.op(
        "Concat",
        "opset1",
        "",
        &[s.batch, kvc, z, hdc],
        &[("axis", "0")],
        &[4],
    );
    let init = b.g.op1(
        "Broadcast",
        "opset3",
        "",
        &[zero, shape],
        &[("mode", "numpy")],
        (Elem::F32, &[DYN, n(kv), 0, n(hd)]),
    );
    let var = format!("past_key_values.{layer}.{which}present.{layer}.{which}");
    let var_shape = crate::ir::partial_shape(&[DYN, n(kv), DYN, n(hd)]);
    let rv = b.op(
        "ReadValue",
        "opset6",
        "",
        &[init],
        &[
            ("variable_id", &var),
            ("variable_type", "f32"),
            ("variable_shape", &var_shape),
        ],
        &[DYN, n(kv), DYN, n(hd)],
    );
    b.g.name_tensor(rv, &format!("past_key_values.{layer}.{which}"));
    let axis = b.c_i64(&[0], &[])?;
    Ok(b.gather("", rv, s.beam_idx, axis, &[DYN, n(kv), DYN, n(hd)]))
}

fn assign(b: &mut Builder, layer: usize, which: &str, value: Out) {
    let var = format!("past_key_values.{layer}.{which}present.{layer}.{which}");
    b.g.sink("Assign", "opset6", "", &[value], &[("variable_id", &var)]);
}

/// The traced names of one head split of the fused QKV output: its Slice, Reshape and Transpose suffixes.
struct HeadNames {
    slice: &'static str,
    reshape: &'static str,
    transpose: &'static str,
}

const HEADS_Q: HeadNames = HeadNames {
    slice: "",
    reshape: "",
    transpose: "",
};
const HEADS_K: HeadNames = HeadNames {
    slice: "_5",
    reshape: "_1",
    transpose: "_1",
};
const HEADS_V: HeadNames = HeadNames {
    slice: "_10",
    reshape: "_2",
    transpose: "_2",
};

/// Columns `[start, end)` of the fused QKV output as `[B, heads, T, head_dim]`: Slice → Reshape → Transpose.
fn split_heads(
    b: &mut Builder,
    sa: &str,
    qkv: Out,
    (start, end): (i64, i64),
    heads: usize,
    names: &HeadNames,
) -> Result<Out> {
    let hd = b.cfg.head_dim();
    let t = b.slice(
        &format!("{sa}/aten::slice/Slice{}", names.slice),
        qkv,
        start,
        end,
        2,
        &[DYN, DYN, n(heads * hd)],
    )?;
    let t = b.reshape(
        &format!("{sa}/aten::view/Reshape{}", names.reshape),
        t,
        &[0, 0, n(heads), n(hd)],
        true,
        &[DYN, DYN, n(heads), n(hd)],
    )?;
    b.transpose(
        &format!("{sa}/aten::transpose/Transpose{}", names.transpose),
        t,
        &[0, 2, 1, 3],
        &[DYN, n(heads), DYN, n(hd)],
    )
}

/// The cache so far with this step's keys or values appended (`aten::cat` on the sequence axis).
fn append_cache(b: &mut Builder, name: &str, past: Out, new: Out) -> Out {
    let (kv, hd) = (b.cfg.num_key_value_heads, b.cfg.head_dim());
    b.op(
        "Concat",
        "opset1",
        name,
        &[past, new],
        &[("axis", "-2")],
        &[DYN, n(kv), DYN, n(hd)],
    )
}

/// Fused QKV projection, RoPE, the KV cache (ReadValue … Assign), GQA, SDPA and the output projection.
pub(super) fn self_attention(
    b: &mut Builder,
    layer: usize,
    xn: Out,
    s: &mut Shared,
    attention_mask: Out,
) -> Result<Out> {
    let cfg = b.cfg;
    let (nh, kv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
    );
    let sa = format!("__module.model.layers.{layer}.self_attn");
    let w_qkv = b.weight(
        Role::AttnQkv { layer },
        &format!("model.layers.{layer}.self_attn.qkv_proj"),
        false,
    )?;
    let qkv = b.matmul_w(
        &format!("{sa}.qkv_proj/ov_ext::linear/MatMul"),
        xn,
        w_qkv,
        cfg.qkv_rows(),
    );
    let (q_end, k_end) = (n(nh * hd), n(nh * hd + kv * hd));

    let q = split_heads(b, &sa, qkv, (0, q_end), nh, &HEADS_Q)?;
    let q = b.rope(&sa, q, nh, &ROPE_Q, s)?;

    // K: projection, RoPE, append to the cache.
    let past_k = state(b, s, layer, "key")?;
    let k = split_heads(b, &sa, qkv, (q_end, k_end), kv, &HEADS_K)?;
    let k = b.rope(&sa, k, kv, &ROPE_K, s)?;
    let k_all = append_cache(b, &format!("{sa}/aten::cat/Concat_4"), past_k, k);

    // V
    let past_v = state(b, s, layer, "value")?;
    let v = split_heads(b, &sa, qkv, (k_end, i64::MAX), kv, &HEADS_V)?;
    let v_all = append_cache(b, &format!("{sa}/aten::cat/Concat_5"), past_v, v);

    if s.lens.is_none() {
        lens_and_mask(b, s, past_k, xn, attention_mask)?;
    }
    let (k_att, v_att) = if kv < nh {
        repeat_kv(b, &sa, s, k_all, v_all)?
    } else {
        (k_all, v_all)
    };
    let attn = sdpa(b, &sa, s, [q, k_att, v_att])?;
    assign(b, layer, "key", k_all);
    assign(b, layer, "value", v_all);
    out_proj(b, layer, &sa, attn)
}

/// Built once, in layer 0: past_len from its gathered key cache, q_len from the normed hidden states (§4.1.3), and
/// the attention mask from them.
fn lens_and_mask(
    b: &mut Builder,
    s: &mut Shared,
    past_k: Out,
    xn: Out,
    attention_mask: Out,
) -> Result<()> {
    let shp_past = b.shape_of("", past_k, Elem::I64);
    let past_len = b.gather_scalar("", shp_past, 2)?;
    let shp_x = b.shape_of("", xn, Elem::I64);
    let q_len = b.gather_scalar("", shp_x, 1)?;
    let q_len1 = b.reshape("", q_len, &[1], false, &[1])?;
    s.lens = Some((past_len, q_len, q_len1));
    let batch_n = b.gather_scalar("", shp_x, 0)?;
    s.mask = Some(build_mask(
        b,
        past_len,
        q_len,
        q_len1,
        batch_n,
        attention_mask,
    )?);
    Ok(())
}

/// GQA: HF repeat_kv after the cache (the cache keeps kv heads): Unsqueeze → Broadcast → Reshape, for K then V.
fn repeat_kv(
    b: &mut Builder,
    sa: &str,
    s: &mut Shared,
    k_all: Out,
    v_all: Out,
) -> Result<(Out, Out)> {
    let (nh, kv, hd) = (
        b.cfg.num_attention_heads,
        b.cfg.num_key_value_heads,
        b.cfg.head_dim(),
    );
    let target = match s.gqa_target {
        Some(t) => t,
        None => {
            let t = gqa_target(b, sa, s, k_all)?;
            s.gqa_target = Some(t);
            t
        }
    };
    let mut expand = |t: Out, sfx_u: &str, sfx_b: &str, sfx_r: &str| -> Result<Out> {
        let u = b.unsqueeze(
            &format!("{sa}/aten::unsqueeze/Unsqueeze{sfx_u}"),
            t,
            2,
            &[DYN, n(kv), 1, DYN, n(hd)],
        )?;
        let e = b.op(
            "Broadcast",
            "opset3",
            &format!("{sa}/aten::expand/Broadcast{sfx_b}"),
            &[u, target],
            &[("mode", "bidirectional")],
            &[DYN, n(kv), n(nh / kv), DYN, n(hd)],
        );
        b.reshape(
            &format!("{sa}/aten::reshape/Reshape{sfx_r}"),
            e,
            &[0, n(nh), -1, n(hd)],
            true,
            &[DYN, n(nh), DYN, n(hd)],
        )
    };
    Ok((
        expand(k_all, "_2", "", "")?,
        expand(v_all, "_3", "_1", "_1")?,
    ))
}

/// The `[B, kv, n_rep, total, head_dim]` broadcast target of repeat_kv, built once (in layer 0).
fn gqa_target(b: &mut Builder, sa: &str, s: &Shared, k_all: Out) -> Result<Out> {
    let (nh, kv, hd) = (
        b.cfg.num_attention_heads,
        b.cfg.num_key_value_heads,
        b.cfg.head_dim(),
    );
    let (past_len, _q_len, q_len1) = s.lens.unwrap();
    let shp = b.shape_of(&format!("{sa}/aten::size/ShapeOf_2"), k_all, Elem::I64);
    let idx = b.c_i64(&[0, 1], &[2])?;
    let ax = b.c_i64(&[0], &[])?;
    let bh = b.gather("", shp, idx, ax, &[2]);
    let past1 = b.reshape("", past_len, &[1], false, &[1])?;
    let total1 = b.binary("Add", "", past1, q_len1, &[1]);
    let rep = b.c_i64(&[n(nh / kv)], &[1])?;
    let hdc = b.c_i64(&[n(hd)], &[1])?;
    Ok(b.op(
        "Concat",
        "opset1",
        &format!("{sa}/prim::ListConstruct/SequenceMark_2"),
        &[bh, rep, total1, hdc],
        &[("axis", "0")],
        &[5],
    ))
}

/// ScaledDotProductAttention of `[q, k, v]` under the shared mask.
fn sdpa(b: &mut Builder, sa: &str, s: &mut Shared, [q, k, v]: [Out; 3]) -> Result<Out> {
    let (nh, hd) = (b.cfg.num_attention_heads, b.cfg.head_dim());
    // One scale constant shared by all layers (in fp16 exports its decompression Convert carries layer 0's traced
    // `ConvertLike` name, as in the reference).
    let scale = match s.sdpa_scale {
        Some(o) => o,
        None => {
            let o = b.c_float(
                &format!("{sa}/aten::scaled_dot_product_attention/ConvertLike"),
                &[1.0 / (hd as f32).sqrt()],
                &[],
            )?;
            s.sdpa_scale = Some(o);
            o
        }
    };
    Ok(b.op(
        "ScaledDotProductAttention",
        "opset13",
        &format!("{sa}/aten::scaled_dot_product_attention/ScaledDotProductAttention"),
        &[q, k, v, s.mask.unwrap(), scale],
        &[("causal", "false")],
        &[DYN, n(nh), DYN, n(hd)],
    ))
}

/// Heads back to `[B, T, hidden]`, then o_proj.
fn out_proj(b: &mut Builder, layer: usize, sa: &str, attn: Out) -> Result<Out> {
    let cfg = b.cfg;
    let (h, nh, kv, hd) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
    );
    let t = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_3"),
        attn,
        &[0, 2, 1, 3],
        &[DYN, DYN, n(nh), n(hd)],
    )?;
    let rname = if kv < nh { "Reshape_2" } else { "Reshape" };
    let r = b.reshape(
        &format!("{sa}/aten::reshape/{rname}"),
        t,
        &[0, 0, n(nh * hd)],
        true,
        &[DYN, DYN, n(nh * hd)],
    )?;
    let w_o = b.weight(
        Role::AttnOut { layer },
        &format!("model.layers.{layer}.self_attn.o_proj"),
        false,
    )?;
    Ok(b.matmul_w(&format!("{sa}.o_proj/ov_ext::linear/MatMul"), r, w_o, h))
}
