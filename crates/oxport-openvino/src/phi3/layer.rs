//! One decoder layer (docs/openvino-ir.md §4.2): RMSNorm, fused QKV, RoPE, the stateful KV cache, GQA, SDPA, SwiGLU.

use super::mask::build_mask;
use super::*;

impl Builder<'_> {
    /// `x * (1 / sqrt(mean(x^2) + eps)) * gamma`, decomposed as transformers' Phi3RMSNorm traces.
    pub(super) fn rms_norm(&mut self, prefix: &str, x: Out, role: Role) -> Result<Out> {
        let h = n(self.cfg.hidden_size);
        let gamma = self.norm_gamma(role)?;
        let one = self.c_float("", &[1.0], &[1, 1, 1])?;
        let two = self.c_float("", &[2.0], &[1, 1, 1])?;
        let p = self.binary(
            "Power",
            &format!("{prefix}/aten::pow/Power"),
            x,
            two,
            &[DYN, DYN, h],
        );
        let axes = self.c_i64(&[-1], &[1])?;
        let mean = self.op(
            "ReduceMean",
            "opset1",
            &format!("{prefix}/aten::mean/ReduceMean"),
            &[p, axes],
            &[("keep_dims", "true")],
            &[DYN, DYN, 1],
        );
        // eps stays f32 even in fp16 exports: 1e-5 is below f16's normal range (docs/openvino-ir.md §5.1).
        let eps = self.c_f32(&[self.cfg.rms_norm_eps as f32], &[1, 1, 1])?;
        let add = self.binary(
            "Add",
            &format!("{prefix}/aten::add/Add"),
            mean,
            eps,
            &[DYN, DYN, 1],
        );
        let sqrt = self.op(
            "Sqrt",
            "opset1",
            &format!("{prefix}/aten::rsqrt/Sqrt"),
            &[add],
            &[],
            &[DYN, DYN, 1],
        );
        let div = self.op(
            "Divide",
            "opset1",
            &format!("{prefix}/aten::rsqrt/Divide"),
            &[one, sqrt],
            &[AB, ("m_pythondiv", "true")],
            &[DYN, DYN, 1],
        );
        let mul = self.binary(
            "Multiply",
            &format!("{prefix}/aten::mul/Multiply"),
            x,
            div,
            &[DYN, DYN, h],
        );
        Ok(self.binary(
            "Multiply",
            &format!("{prefix}/aten::mul/Multiply_1"),
            gamma,
            mul,
            &[DYN, DYN, h],
        ))
    }

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
pub(super) fn state(b: &mut Builder, s: &Shared, layer: usize, which: &str) -> Result<Out> {
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

pub(super) fn assign(b: &mut Builder, layer: usize, which: &str, value: Out) {
    let var = format!("past_key_values.{layer}.{which}present.{layer}.{which}");
    b.g.sink("Assign", "opset6", "", &[value], &[("variable_id", &var)]);
}

pub(super) fn decoder_layer(
    b: &mut Builder,
    layer: usize,
    x: Out,
    s: &mut Shared,
    attention_mask: Out,
) -> Result<Out> {
    let cfg = b.cfg;
    let (h, nh, kv, hd, inter) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
        cfg.intermediate_size,
    );
    let lp = format!("__module.model.layers.{layer}");
    let sa = format!("{lp}.self_attn");
    let xn = b.rms_norm(
        &format!("{lp}.input_layernorm"),
        x,
        Role::InputNorm { layer },
    )?;
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

    // Q
    let q = b.slice(
        &format!("{sa}/aten::slice/Slice"),
        qkv,
        0,
        n(nh * hd),
        2,
        &[DYN, DYN, n(nh * hd)],
    )?;
    let q = b.reshape(
        &format!("{sa}/aten::view/Reshape"),
        q,
        &[0, 0, n(nh), n(hd)],
        true,
        &[DYN, DYN, n(nh), n(hd)],
    )?;
    let q = b.transpose(
        &format!("{sa}/aten::transpose/Transpose"),
        q,
        &[0, 2, 1, 3],
        &[DYN, n(nh), DYN, n(hd)],
    )?;
    let q = b.rope(&sa, q, nh, &ROPE_Q, s)?;

    // K: projection, RoPE, append to the cache.
    let past_k = state(b, s, layer, "key")?;
    let k = b.slice(
        &format!("{sa}/aten::slice/Slice_5"),
        qkv,
        n(nh * hd),
        n(nh * hd + kv * hd),
        2,
        &[DYN, DYN, n(kv * hd)],
    )?;
    let k = b.reshape(
        &format!("{sa}/aten::view/Reshape_1"),
        k,
        &[0, 0, n(kv), n(hd)],
        true,
        &[DYN, DYN, n(kv), n(hd)],
    )?;
    let k = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_1"),
        k,
        &[0, 2, 1, 3],
        &[DYN, n(kv), DYN, n(hd)],
    )?;
    let k = b.rope(&sa, k, kv, &ROPE_K, s)?;
    let k_all = b.op(
        "Concat",
        "opset1",
        &format!("{sa}/aten::cat/Concat_4"),
        &[past_k, k],
        &[("axis", "-2")],
        &[DYN, n(kv), DYN, n(hd)],
    );

    // V
    let past_v = state(b, s, layer, "value")?;
    let v = b.slice(
        &format!("{sa}/aten::slice/Slice_10"),
        qkv,
        n(nh * hd + kv * hd),
        i64::MAX,
        2,
        &[DYN, DYN, n(kv * hd)],
    )?;
    let v = b.reshape(
        &format!("{sa}/aten::view/Reshape_2"),
        v,
        &[0, 0, n(kv), n(hd)],
        true,
        &[DYN, DYN, n(kv), n(hd)],
    )?;
    let v = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_2"),
        v,
        &[0, 2, 1, 3],
        &[DYN, n(kv), DYN, n(hd)],
    )?;
    let v_all = b.op(
        "Concat",
        "opset1",
        &format!("{sa}/aten::cat/Concat_5"),
        &[past_v, v],
        &[("axis", "-2")],
        &[DYN, n(kv), DYN, n(hd)],
    );

    if s.lens.is_none() {
        // past_len from layer 0's gathered key cache, q_len from the normed hidden states (§4.1.3).
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
    }
    let (past_len, _q_len, q_len1) = s.lens.unwrap();

    // GQA: HF repeat_kv after the cache (the cache keeps kv heads): Unsqueeze → Broadcast → Reshape.
    let (k_att, v_att) = if kv < nh {
        if s.gqa_target.is_none() {
            let shp = b.shape_of(&format!("{sa}/aten::size/ShapeOf_2"), k_all, Elem::I64);
            let idx = b.c_i64(&[0, 1], &[2])?;
            let ax = b.c_i64(&[0], &[])?;
            let bh = b.gather("", shp, idx, ax, &[2]);
            let past1 = b.reshape("", past_len, &[1], false, &[1])?;
            let total1 = b.binary("Add", "", past1, q_len1, &[1]);
            let rep = b.c_i64(&[n(nh / kv)], &[1])?;
            let hdc = b.c_i64(&[n(hd)], &[1])?;
            s.gqa_target = Some(b.op(
                "Concat",
                "opset1",
                &format!("{sa}/prim::ListConstruct/SequenceMark_2"),
                &[bh, rep, total1, hdc],
                &[("axis", "0")],
                &[5],
            ));
        }
        let target = s.gqa_target.unwrap();
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
        (
            expand(k_all, "_2", "", "")?,
            expand(v_all, "_3", "_1", "_1")?,
        )
    } else {
        (k_all, v_all)
    };

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
    let attn = b.op(
        "ScaledDotProductAttention",
        "opset13",
        &format!("{sa}/aten::scaled_dot_product_attention/ScaledDotProductAttention"),
        &[q, k_att, v_att, s.mask.unwrap(), scale],
        &[("causal", "false")],
        &[DYN, n(nh), DYN, n(hd)],
    );
    assign(b, layer, "key", k_all);
    assign(b, layer, "value", v_all);
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
    let o = b.matmul_w(&format!("{sa}.o_proj/ov_ext::linear/MatMul"), r, w_o, h);
    let hres = b.binary(
        "Add",
        &format!("{lp}/aten::add/Add"),
        x,
        o,
        &[DYN, DYN, n(h)],
    );

    // MLP: fused gate_up → chunk(2) → silu(gate) * up → down.
    let hn = b.rms_norm(
        &format!("{lp}.post_attention_layernorm"),
        hres,
        Role::PostAttnNorm { layer },
    )?;
    let w_gu = b.weight(
        Role::MlpGateUp { layer },
        &format!("model.layers.{layer}.mlp.gate_up_proj"),
        false,
    )?;
    let mlp = format!("{lp}.mlp");
    let gu = b.matmul_w(
        &format!("{mlp}.gate_up_proj/ov_ext::linear/MatMul"),
        hn,
        w_gu,
        2 * inter,
    );
    if s.chunk_lengths.is_none() {
        // The traced `chunk(2)`: split lengths [ceil(N/2), -1] computed at runtime, built once and reused (§4.2 #12).
        let lu = format!("{mlp}/prim::ListUnpack");
        let shp = b.shape_of(&format!("{lu}/ShapeOf"), gu, Elem::I32);
        let last = b.c_i64(&[-1], &[])?;
        let ax = b.c_i32(&[0], &[1])?;
        let d = b.gather(&format!("{lu}/Gather"), shp, last, ax, &[]);
        let two = b.c_i32(&[2], &[])?;
        let half = b.op(
            "Divide",
            "opset1",
            &format!("{lu}/Divide"),
            &[d, two],
            &[AB, ("m_pythondiv", "true")],
            &[],
        );
        let md = b.binary("Mod", &format!("{lu}/Mod"), d, two, &[]);
        let zero = b.c_i32(&[0], &[1])?;
        let gt = b.g.op1(
            "Greater",
            "opset1",
            &format!("{lu}/Greater"),
            &[md, zero],
            &[AB],
            (Elem::Boolean, &[1]),
        );
        let gi = b.convert(&format!("{lu}/Convert_0"), gt, Elem::I32);
        let add = b.binary("Add", &format!("{lu}/Add"), half, gi, &[1]);
        let rest = b.c_i32(&[-1], &[1])?;
        s.chunk_lengths = Some(b.op(
            "Concat",
            "opset1",
            &format!("{lu}/Concat"),
            &[add, rest],
            &[("axis", "0")],
            &[2],
        ));
    }
    let axis = b.c_i64(&[-1], &[])?;
    let parts = b.g.op(
        "VariadicSplit",
        "opset1",
        &format!("{mlp}/prim::ListUnpack/VariadicSplit"),
        &[gu, axis, s.chunk_lengths.unwrap()],
        &[],
        &[
            (Elem::F32, &[DYN, DYN, n(inter)]),
            (Elem::F32, &[DYN, DYN, n(inter)]),
        ],
    );
    let swish = format!("{mlp}.activation_fn/aten::silu/Swish");
    let mut act = b.op(
        "Swish",
        "opset4",
        &swish,
        &[parts[0]],
        &[],
        &[DYN, DYN, n(inter)],
    );
    if b.awq_target(Role::MlpDown { layer }) {
        act = b.awq_multiply(Role::MlpDown { layer }, &swish, act, inter)?;
    }
    let m = b.binary(
        "Multiply",
        &format!("{mlp}/aten::mul/Multiply"),
        parts[1],
        act,
        &[DYN, DYN, n(inter)],
    );
    let w_down = b.weight(
        Role::MlpDown { layer },
        &format!("model.layers.{layer}.mlp.down_proj"),
        false,
    )?;
    let down = b.matmul_w(
        &format!("{mlp}.down_proj/ov_ext::linear/MatMul"),
        m,
        w_down,
        h,
    );
    Ok(b.binary(
        "Add",
        &format!("{lp}/aten::add/Add_1"),
        hres,
        down,
        &[DYN, DYN, n(h)],
    ))
}
