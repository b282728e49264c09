//! The Phi-3 decoder graph exactly as the onnxruntime-genai builder (0.18.0, `builders/base.py::Model`)
//! emits it for cpu/cuda: node order, node and value names, attributes and graph I/O. Shape and naming rules
//! are from docs/onnx-genai.md §1.3–§1.7 and checked against `fixtures/reference/ort/*/model.onnx`.
//!
//! Weights are not touched here: the graph names every initializer through [`LinearSpec`] / [`NormSpec`], and
//! the exporter streams their bytes into `model.onnx.data` in [`GraphLayout::weight_order`].

use oxport_arch::{Phi3Config, Role};
use oxport_quant::NBitsParams;

use crate::options::{ExportOptions, IoDtype};
use crate::proto::{NodeProto, ValueInfoProto, tensor_proto::DataType};
use crate::protoutil::{Attr, Dim, f16_bytes, f32_bytes, node, raw_tensor, value_info};

mod attention;

pub use attention::uses_longrope;

pub const MS_DOMAIN: &str = "com.microsoft";
const MASK: &str = "/model/attn_mask_reformat/attn_mask_subgraph";
pub const COS_CACHE: &str = "cos_cache";
pub const SIN_CACHE: &str = "sin_cache";

/// How one linear layer's weight is stored and consumed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinearForm {
    /// `MatMul` with the weight transposed to `[K, N]` in the I/O dtype (`make_matmul_float`).
    Float,
    /// com.microsoft `MatMulNBits` (ORT `matmul_nbits_quantizer.py`, QOperator format).
    NBits(NBitsParams),
    /// `DequantizeLinear` (blocked along K, axis 0) + `MatMul` (the same quantizer's QDQ format).
    Qdq(NBitsParams),
}

/// One MatMul of the graph and the slice of the checkpoint tensor it multiplies by.
#[derive(Clone, Debug)]
pub struct LinearSpec {
    pub role: Role,
    /// Rows `[start, end)` of the HF `[out, in]` weight (gate and up share `gate_up_proj`).
    pub rows: std::ops::Range<usize>,
    /// The float node name, e.g. `/model/layers.0/attn/qkv_proj/MatMul`.
    pub node_base: String,
    pub k: usize,
    pub n: usize,
    pub form: LinearForm,
}

impl LinearSpec {
    /// `name[1:].replace("/", ".") + ".weight"` (`make_matmul_float`).
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.node_base[1..].replace('/', "."))
    }

    /// The initializers this linear needs, in the order the exporter writes them.
    pub fn initializer_names(&self) -> Vec<String> {
        let w = self.weight_name();
        match self.form {
            LinearForm::Float => vec![w],
            LinearForm::NBits(p) => {
                let mut v = vec![format!("{w}_Q{}", p.bits), format!("{w}_scales")];
                if !p.symmetric {
                    v.push(format!("{w}_zero_points"));
                }
                v
            }
            LinearForm::Qdq(p) => {
                let mut v = vec![format!("{w}_DQ_Q{}", p.bits), format!("{w}_DQ_scales")];
                if !p.symmetric {
                    v.push(format!("{w}_DQ_zero_points"));
                }
                v
            }
        }
    }
}

/// One RMSNorm gamma.
#[derive(Clone, Debug)]
pub struct NormSpec {
    pub role: Role,
    pub name: String,
}

/// What the exporter writes, in this order.
#[derive(Clone, Debug)]
pub enum WeightItem {
    Embedding {
        name: String,
    },
    Norm(NormSpec),
    Linear(LinearSpec),
    /// `cos_cache` and `sin_cache` initializers (absent with LongRoPE on EPs with `If`, whose caches live in the
    /// If branches).
    RopeCaches,
    /// LongRoPE without `If` (dml): `cos_cache` / `sin_cache` = the short cache (`original_max_position_embeddings`
    /// rows) followed by the long one (`max_position_embeddings` rows), `make_rotary_embedding_multi_cache`.
    ConcatRopeCaches,
}

/// The graph without initializers, plus the list of weights to stream.
#[derive(Clone, Debug)]
pub struct GraphLayout {
    pub nodes: Vec<NodeProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    pub weight_order: Vec<WeightItem>,
}

impl IoDtype {
    pub fn onnx(self) -> DataType {
        match self {
            IoDtype::F32 => DataType::Float,
            IoDtype::F16 => DataType::Float16,
        }
    }

    pub fn size_bytes(self) -> usize {
        match self {
            IoDtype::F32 => 4,
            IoDtype::F16 => 2,
        }
    }

    pub fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            IoDtype::F32 => f32_bytes(values),
            IoDtype::F16 => f16_bytes(values),
        }
    }
}

struct Builder<'a> {
    c: &'a Phi3Config,
    opts: &'a ExportOptions,
    io: IoDtype,
    nodes: Vec<NodeProto>,
    constants: Vec<String>,
}

impl Builder<'_> {
    fn push(&mut self, n: NodeProto) {
        self.nodes.push(n);
    }

    /// `make_constant`: a Constant node `/model/constant_nodes/{DTYPE}/{value}` with output
    /// `/model/constants/{DTYPE}/{value}`, made once, where first used.
    fn constant_i64(&mut self, values: &[i64], scalar: bool) -> String {
        let text = if scalar {
            values[0].to_string()
        } else {
            format!(
                "[{}]",
                values
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        self.constant(
            "INT64",
            &text,
            DataType::Int64,
            if scalar { vec![] } else { vec![values.len()] },
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn constant(
        &mut self,
        dtype: &str,
        text: &str,
        elem: DataType,
        dims: Vec<usize>,
        raw: Vec<u8>,
    ) -> String {
        let out = format!("/model/constants/{dtype}/{text}");
        if !self.constants.contains(&out) {
            let name = format!("/model/constant_nodes/{dtype}/{text}");
            let t = raw_tensor(&out, elem, &dims, raw);
            self.push(node(
                "Constant",
                &name,
                "",
                &[],
                &[&out],
                vec![("value", Attr::Tensor(t))],
            ));
            self.constants.push(out.clone());
        }
        out
    }

    /// `make_layernorm` for the first norm: SimplifiedLayerNormalization in the default domain, or (with
    /// `--qdq`) the same math in standard ops so `onnx.checker` accepts the model (§1.3 watch-out).
    fn first_norm(&mut self, input: &str, weight: &str, output: &str) {
        let base = "/model/layers.0/input_layernorm";
        let eps = self.c.rms_norm_eps as f32;
        if !self.opts.qdq {
            self.push(node(
                "SimplifiedLayerNormalization",
                &format!("{base}/LayerNorm"),
                "",
                &[input, weight],
                &[output],
                vec![
                    ("epsilon", Attr::Float(eps)),
                    ("axis", Attr::Int(-1)),
                    ("stash_type", Attr::Int(1)),
                ],
            ));
            return;
        }
        // y = x / sqrt(mean(x*x, -1) + eps) * gamma
        let axes = self.constant_i64(&[-1], false);
        let (dtype, elem) = match self.io {
            IoDtype::F32 => ("FLOAT", DataType::Float),
            IoDtype::F16 => ("FLOAT16", DataType::Float16),
        };
        let eps_name = self.constant(
            dtype,
            &format!("{eps:e}"),
            elem,
            vec![],
            self.io.bytes(&[eps]),
        );
        let o = |s: &str| format!("{base}/{s}/output_0");
        self.push(node(
            "Mul",
            &format!("{base}/Square"),
            "",
            &[input, input],
            &[&o("Square")],
            vec![],
        ));
        self.push(node(
            "ReduceMean",
            &format!("{base}/ReduceMean"),
            "",
            &[&o("Square"), &axes],
            &[&o("ReduceMean")],
            vec![("keepdims", Attr::Int(1))],
        ));
        self.push(node(
            "Add",
            &format!("{base}/Add"),
            "",
            &[&o("ReduceMean"), &eps_name],
            &[&o("Add")],
            vec![],
        ));
        self.push(node(
            "Sqrt",
            &format!("{base}/Sqrt"),
            "",
            &[&o("Add")],
            &[&o("Sqrt")],
            vec![],
        ));
        self.push(node(
            "Div",
            &format!("{base}/Div"),
            "",
            &[input, &o("Sqrt")],
            &[&o("Div")],
            vec![],
        ));
        self.push(node(
            "Mul",
            &format!("{base}/LayerNorm"),
            "",
            &[&o("Div"), weight],
            &[output],
            vec![],
        ));
    }

    /// `make_layernorm` with a residual: com.microsoft SkipSimplifiedLayerNormalization, outputs
    /// `[output_0, "", "", output_3]` (output_3 = the residual sum), or only output_0 for the final norm.
    fn skip_norm(
        &mut self,
        base: &str,
        inputs: [&str; 3],
        with_residual_out: bool,
    ) -> (String, String) {
        let out0 = format!("{base}/output_0");
        let out3 = format!("{base}/output_3");
        let outputs: Vec<&str> = if with_residual_out {
            vec![&out0, "", "", &out3]
        } else {
            vec![&out0]
        };
        self.push(node(
            "SkipSimplifiedLayerNormalization",
            &format!("{base}/SkipLayerNorm"),
            MS_DOMAIN,
            &inputs,
            &outputs,
            vec![("epsilon", Attr::Float(self.c.rms_norm_eps as f32))],
        ));
        (out0, out3)
    }

    /// A MatMul in the form `spec.form` asks for; returns the output name.
    fn linear(&mut self, spec: &LinearSpec, input: &str, output: Option<&str>) -> String {
        let base = &spec.node_base;
        let out = output
            .map(str::to_string)
            .unwrap_or_else(|| format!("{base}/output_0"));
        let names = spec.initializer_names();
        match spec.form {
            LinearForm::Float => {
                self.push(node(
                    "MatMul",
                    base,
                    "",
                    &[input, &names[0]],
                    &[&out],
                    vec![],
                ));
            }
            LinearForm::NBits(p) => {
                let mut attrs = vec![
                    ("K", Attr::Int(spec.k as i64)),
                    ("N", Attr::Int(spec.n as i64)),
                ];
                let level = self.opts.effective_accuracy_level();
                // "Do not output accuracy_level if it is 0" (matmul_nbits_quantizer.py).
                if level != 0 {
                    attrs.push(("accuracy_level", Attr::Int(level as i64)));
                }
                attrs.push(("bits", Attr::Int(p.bits as i64)));
                attrs.push(("block_size", Attr::Int(p.block_size as i64)));
                let inputs: Vec<&str> = std::iter::once(input)
                    .chain(names.iter().map(String::as_str))
                    .collect();
                self.push(node(
                    "MatMulNBits",
                    &format!("{base}_Q{}", p.bits),
                    MS_DOMAIN,
                    &inputs,
                    &[&out],
                    attrs,
                ));
            }
            LinearForm::Qdq(p) => {
                let dq_out = format!("{}_output", names[0]);
                let dq_inputs: Vec<&str> = names.iter().map(String::as_str).collect();
                self.push(node(
                    "DequantizeLinear",
                    &format!("{base}_DQ_Q{}", p.bits),
                    "",
                    &dq_inputs,
                    &[&dq_out],
                    vec![
                        ("axis", Attr::Int(0)),
                        ("block_size", Attr::Int(p.block_size as i64)),
                    ],
                ));
                self.push(node(
                    "MatMul",
                    &format!("{base}_matmul_Q{}", p.bits),
                    "",
                    &[input, &dq_out],
                    &[&out],
                    vec![],
                ));
            }
        }
        out
    }
}

/// Which form each linear layer takes, given the quantization decision for its checkpoint role.
pub type FormFor<'a> = dyn Fn(Role) -> LinearForm + 'a;

/// Build the decoder graph for `c`.
pub fn build(c: &Phi3Config, opts: &ExportOptions, form_for: &FormFor<'_>) -> GraphLayout {
    let io = opts.io_dtype();
    let mut b = Builder {
        c,
        opts,
        io,
        nodes: Vec::new(),
        constants: Vec::new(),
    };
    let mut weights = Vec::new();
    let h = c.hidden_size;
    let inter = c.intermediate_size;
    let layers = c.num_hidden_layers;

    let ep = opts.execution_provider;
    let longrope = uses_longrope(c);
    // Node order as the builder makes them: the LongRoPE position shift (dml) or the cache `If` (cpu, cuda,
    // webgpu) comes before the attention-mask subgraph, which then reuses its Shape/Gather.
    let position_ids = if ep.fused_rope() {
        None
    } else if longrope && !ep.longrope_if() {
        Some(b.position_ids_reformat())
    } else {
        Some("position_ids".to_string())
    };
    let (seqlens, total) = if longrope && ep.longrope_if() {
        let threshold = b.constant_i64(&[c.original_max_position_embeddings as i64], true);
        let total_i64 = b.total_length_i64();
        b.longrope_if(&total_i64, &threshold);
        let seqlens = b.seqlens_k();
        (seqlens, b.total_length_i32(&total_i64))
    } else {
        let seqlens = b.seqlens_k();
        let total_i64 = b.total_length_i64();
        (seqlens, b.total_length_i32(&total_i64))
    };
    if !longrope {
        weights.push(WeightItem::RopeCaches);
    } else if !ep.longrope_if() {
        weights.push(WeightItem::ConcatRopeCaches);
    }

    // Tied embeddings (Phi-4-mini): the builder shares lm_head's weight with the embedding
    // (`builder.py`: `shared_embeddings` defaults to `tie_word_embeddings`; `base.py::make_embedding`):
    // int4 → Reshape of lm_head's MatMulNBits `B` + com.microsoft GatherBlockQuantized with its scales; float →
    // Transpose of lm_head's `[K, N]` weight + Gather. An 8-bit or Q/DQ lm_head keeps its own float embedding.
    let lm_form = form_for(Role::LmHead);
    let lm_weight = "lm_head.MatMul.weight";
    let embed_out = match (c.tie_word_embeddings, lm_form) {
        (true, LinearForm::NBits(p)) if p.bits == 4 => {
            let blocks = c.hidden_size.div_ceil(p.block_size);
            let row_bytes = blocks * p.block_size * p.bits as usize / 8;
            let shape = b.constant_i64(&[c.vocab_size as i64, row_bytes as i64], false);
            let reshape = "/model/embed_tokens/Reshape";
            let q = format!("{lm_weight}_Q{}", p.bits);
            b.push(node(
                "Reshape",
                reshape,
                "",
                &[&q, &shape],
                &[&format!("{reshape}/output_0")],
                vec![],
            ));
            let gbq = "/model/embed_tokens/GatherBlockQuantized";
            let out = format!("{gbq}/output_0");
            let scales = format!("{lm_weight}_scales");
            let zero_points = format!("{lm_weight}_zero_points");
            let mut inputs = vec![format!("{reshape}/output_0"), "input_ids".into(), scales];
            if !p.symmetric {
                inputs.push(zero_points);
            }
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            b.push(node(
                "GatherBlockQuantized",
                gbq,
                MS_DOMAIN,
                &inputs,
                &[&out],
                vec![
                    ("bits", Attr::Int(p.bits as i64)),
                    ("block_size", Attr::Int(p.block_size as i64)),
                    ("gather_axis", Attr::Int(0)),
                    ("quantize_axis", Attr::Int(1)),
                ],
            ));
            out
        }
        (true, LinearForm::Float) => {
            let transpose = "/model/embed_tokens/Transpose";
            b.push(node(
                "Transpose",
                transpose,
                "",
                &[lm_weight],
                &[&format!("{transpose}/output_0")],
                vec![("perm", Attr::Ints(vec![1, 0]))],
            ));
            let out = "/model/embed_tokens/Gather/output_0".to_string();
            b.push(node(
                "Gather",
                "/model/embed_tokens/Gather",
                "",
                &[&format!("{transpose}/output_0"), "input_ids"],
                &[&out],
                vec![],
            ));
            out
        }
        _ => {
            let embed_name = "model.embed_tokens.weight".to_string();
            let out = "/model/embed_tokens/Gather/output_0".to_string();
            b.push(node(
                "Gather",
                "/model/embed_tokens/Gather",
                "",
                &[&embed_name, "input_ids"],
                &[&out],
                vec![],
            ));
            weights.insert(0, WeightItem::Embedding { name: embed_name });
            out
        }
    };

    let spec = |role: Role, rows: std::ops::Range<usize>, base: String, k: usize| LinearSpec {
        n: rows.len(),
        role,
        rows,
        node_base: base,
        k,
        form: form_for(role),
    };

    // (residual stream, sub-layer output) carried into the next Skip norm.
    let mut carry: Option<(String, String)> = None;
    for layer in 0..layers {
        let p = format!("/model/layers.{layer}");
        let in_norm = NormSpec {
            role: Role::InputNorm { layer },
            name: format!("model.layers.{layer}.input_layernorm.weight"),
        };
        let (normed, residual) = match &carry {
            None => {
                let out = format!("{p}/input_layernorm/output_0");
                b.first_norm(&embed_out, &in_norm.name, &out);
                (out, embed_out.clone())
            }
            Some((res, sub)) => b.skip_norm(
                &format!("{p}/input_layernorm"),
                [res, sub, &in_norm.name],
                true,
            ),
        };
        weights.push(WeightItem::Norm(in_norm));

        let attn = match &position_ids {
            None => {
                let qkv = spec(
                    Role::AttnQkv { layer },
                    0..c.qkv_rows(),
                    format!("{p}/attn/qkv_proj/MatMul"),
                    h,
                );
                let qkv_out = b.linear(&qkv, &normed, None);
                weights.push(WeightItem::Linear(qkv));
                b.gqa(
                    layer,
                    [&qkv_out, "", ""],
                    [COS_CACHE, SIN_CACHE],
                    &seqlens,
                    &total,
                )
            }
            Some(pos) => {
                // Separate q/k/v MatMuls over row ranges of the fused `qkv_proj` weight, then RotaryEmbedding.
                let q_rows = c.num_attention_heads * c.head_dim();
                let kv_rows = c.num_key_value_heads * c.head_dim();
                let mut outs = Vec::new();
                for (name, rows) in [
                    ("q_proj", 0..q_rows),
                    ("k_proj", q_rows..q_rows + kv_rows),
                    ("v_proj", q_rows + kv_rows..q_rows + 2 * kv_rows),
                ] {
                    let lin = spec(
                        Role::AttnQkv { layer },
                        rows,
                        format!("{p}/attn/{name}/MatMul"),
                        h,
                    );
                    outs.push(b.linear(&lin, &normed, None));
                    weights.push(WeightItem::Linear(lin));
                }
                let q = b.rotary(
                    &format!("{p}/attn/q_rotary"),
                    &outs[0],
                    pos,
                    c.num_attention_heads,
                );
                let k = b.rotary(
                    &format!("{p}/attn/k_rotary"),
                    &outs[1],
                    pos,
                    c.num_key_value_heads,
                );
                b.gqa(layer, [&q, &k, &outs[2]], ["", ""], &seqlens, &total)
            }
        };
        let o = spec(
            Role::AttnOut { layer },
            0..h,
            format!("{p}/attn/o_proj/MatMul"),
            c.num_attention_heads * c.head_dim(),
        );
        let o_out = b.linear(&o, &attn, None);
        weights.push(WeightItem::Linear(o));

        let post = NormSpec {
            role: Role::PostAttnNorm { layer },
            name: format!("model.layers.{layer}.post_attention_layernorm.weight"),
        };
        let (normed2, residual2) = b.skip_norm(
            &format!("{p}/post_attention_layernorm"),
            [&residual, &o_out, &post.name],
            true,
        );
        weights.push(WeightItem::Norm(post));

        let gate = spec(
            Role::MlpGateUp { layer },
            0..inter,
            format!("{p}/mlp/gate_proj/MatMul"),
            h,
        );
        let up = spec(
            Role::MlpGateUp { layer },
            inter..2 * inter,
            format!("{p}/mlp/up_proj/MatMul"),
            h,
        );
        let gate_out = b.linear(&gate, &normed2, None);
        let up_out = b.linear(&up, &normed2, None);
        weights.push(WeightItem::Linear(gate));
        weights.push(WeightItem::Linear(up));
        // `make_activation_with_mul`: SiLU as Sigmoid then Mul.
        let sig = format!("{p}/mlp/act_fn/Sigmoid");
        b.push(node(
            "Sigmoid",
            &sig,
            "",
            &[&gate_out],
            &[&format!("{sig}/output_0")],
            vec![],
        ));
        let act = format!("{p}/mlp/act_fn/Mul");
        b.push(node(
            "Mul",
            &act,
            "",
            &[&gate_out, &format!("{sig}/output_0")],
            &[&format!("{act}/output_0")],
            vec![],
        ));
        let mul = format!("{p}/mlp/Mul");
        b.push(node(
            "Mul",
            &mul,
            "",
            &[&format!("{act}/output_0"), &up_out],
            &[&format!("{mul}/output_0")],
            vec![],
        ));
        let down = spec(
            Role::MlpDown { layer },
            0..h,
            format!("{p}/mlp/down_proj/MatMul"),
            inter,
        );
        let down_out = b.linear(&down, &format!("{mul}/output_0"), None);
        weights.push(WeightItem::Linear(down));
        carry = Some((residual2, down_out));
    }

    let final_norm = NormSpec {
        role: Role::FinalNorm,
        name: format!("model.layers.{layers}.final_norm_layernorm.weight"),
    };
    let (res, sub) = carry.expect("a Phi-3 config has at least one layer");
    let (normed, _) = b.skip_norm(
        &format!("/model/layers.{layers}/final_norm_layernorm"),
        [&res, &sub, &final_norm.name],
        false,
    );
    weights.push(WeightItem::Norm(final_norm));
    let lm = spec(
        Role::LmHead,
        0..c.vocab_size,
        "/lm_head/MatMul".to_string(),
        h,
    );
    b.linear(&lm, &normed, Some("logits"));
    weights.push(WeightItem::Linear(lm));

    let (inputs, outputs) = graph_io(c, io, position_ids.is_some());
    GraphLayout {
        nodes: b.nodes,
        inputs,
        outputs,
        weight_order: weights,
    }
}

/// Graph inputs and outputs (§1.7): all past keys, then all past values; likewise for presents.
fn graph_io(
    c: &Phi3Config,
    io: IoDtype,
    with_position_ids: bool,
) -> (Vec<ValueInfoProto>, Vec<ValueInfoProto>) {
    let kv = c.num_key_value_heads;
    let mut inputs = vec![
        value_info(
            "input_ids",
            DataType::Int64,
            &[Dim::Named("batch_size"), Dim::Named("sequence_length")],
        ),
        value_info(
            "attention_mask",
            DataType::Int64,
            &[
                Dim::Named("batch_size"),
                Dim::Named("total_sequence_length"),
            ],
        ),
    ];
    if with_position_ids {
        inputs.push(value_info(
            "position_ids",
            DataType::Int64,
            &[Dim::Named("batch_size"), Dim::Named("sequence_length")],
        ));
    }
    let past = [
        Dim::Named("batch_size"),
        Dim::Fixed(kv),
        Dim::Named("past_sequence_length"),
        Dim::Named("kv_cache_dim"),
    ];
    let present = [
        Dim::Named("batch_size"),
        Dim::Fixed(kv),
        Dim::Named("total_sequence_length"),
        Dim::Named("kv_cache_dim"),
    ];
    let mut outputs = vec![value_info(
        "logits",
        io.onnx(),
        &[
            Dim::Named("batch_size"),
            Dim::Named("sequence_length"),
            Dim::Fixed(c.vocab_size),
        ],
    )];
    for kind in ["key", "value"] {
        for layer in 0..c.num_hidden_layers {
            inputs.push(value_info(
                &format!("past_key_values.{layer}.{kind}"),
                io.onnx(),
                &past,
            ));
            outputs.push(value_info(
                &format!("present.{layer}.{kind}"),
                io.onnx(),
                &present,
            ));
        }
    }
    (inputs, outputs)
}
