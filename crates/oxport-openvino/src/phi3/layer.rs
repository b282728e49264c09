//! One decoder layer (docs/openvino-ir.md §4.2): RMSNorm, self-attention (attention.rs), SwiGLU MLP.

use super::attention::self_attention;
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
}

/// One decoder layer: `x + attention(norm(x))`, then `h + mlp(norm(h))`.
pub(super) fn decoder_layer(
    b: &mut Builder,
    layer: usize,
    x: Out,
    s: &mut Shared,
    attention_mask: Out,
) -> Result<Out> {
    let h = b.cfg.hidden_size;
    let lp = format!("__module.model.layers.{layer}");
    let xn = b.rms_norm(
        &format!("{lp}.input_layernorm"),
        x,
        Role::InputNorm { layer },
    )?;
    let o = self_attention(b, layer, xn, s, attention_mask)?;
    let hres = b.binary(
        "Add",
        &format!("{lp}/aten::add/Add"),
        x,
        o,
        &[DYN, DYN, n(h)],
    );
    let hn = b.rms_norm(
        &format!("{lp}.post_attention_layernorm"),
        hres,
        Role::PostAttnNorm { layer },
    )?;
    let down = mlp(b, layer, hn, s)?;
    Ok(b.binary(
        "Add",
        &format!("{lp}/aten::add/Add_1"),
        hres,
        down,
        &[DYN, DYN, n(h)],
    ))
}

/// MLP: fused gate_up → chunk(2) → silu(gate) * up → down.
fn mlp(b: &mut Builder, layer: usize, hn: Out, s: &mut Shared) -> Result<Out> {
    let (h, inter) = (b.cfg.hidden_size, b.cfg.intermediate_size);
    let w_gu = b.weight(
        Role::MlpGateUp { layer },
        &format!("model.layers.{layer}.mlp.gate_up_proj"),
        false,
    )?;
    let mlp = format!("__module.model.layers.{layer}.mlp");
    let gu = b.matmul_w(
        &format!("{mlp}.gate_up_proj/ov_ext::linear/MatMul"),
        hn,
        w_gu,
        2 * inter,
    );
    let lengths = match s.chunk_lengths {
        Some(l) => l,
        None => {
            let l = chunk_lengths(b, &mlp, gu)?;
            s.chunk_lengths = Some(l);
            l
        }
    };
    let axis = b.c_i64(&[-1], &[])?;
    let parts = b.g.op(
        "VariadicSplit",
        "opset1",
        &format!("{mlp}/prim::ListUnpack/VariadicSplit"),
        &[gu, axis, lengths],
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
    Ok(b.matmul_w(
        &format!("{mlp}.down_proj/ov_ext::linear/MatMul"),
        m,
        w_down,
        h,
    ))
}

/// The traced `chunk(2)`: split lengths [ceil(N/2), -1] computed at runtime, built once and reused (§4.2 #12).
fn chunk_lengths(b: &mut Builder, mlp: &str, gu: Out) -> Result<Out> {
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
    Ok(b.op(
        "Concat",
        "opset1",
        &format!("{lu}/Concat"),
        &[add, rest],
        &[("axis", "0")],
        &[2],
    ))
}
