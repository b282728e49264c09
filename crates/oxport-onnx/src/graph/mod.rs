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
mod decoder;

use decoder::AttnInputs;

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
    form_for: &'a FormFor<'a>,
    nodes: Vec<NodeProto>,
    constants: Vec<String>,
    /// The initializers in the order the exporter writes them.
    weights: Vec<WeightItem>,
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
        form_for,
        nodes: Vec::new(),
        constants: Vec::new(),
        weights: Vec::new(),
    };
    let a = b.attention_inputs();
    let embed_out = b.embedding();
    // (residual stream, sub-layer output) carried into the next Skip norm.
    let mut carry = None;
    for layer in 0..c.num_hidden_layers {
        carry = Some(b.decoder_layer(layer, &embed_out, carry, &a));
    }
    b.final_norm_lm_head(carry.expect("a Phi-3 config has at least one layer"));

    let (inputs, outputs) = graph_io(c, io, a.position_ids.is_some());
    GraphLayout {
        nodes: b.nodes,
        inputs,
        outputs,
        weight_order: b.weights,
    }
}

impl Builder<'_> {
    /// Node order as the builder makes them: the LongRoPE position shift (dml) or the cache `If` (cpu, cuda,
    /// webgpu) comes before the attention-mask subgraph, which then reuses its Shape/Gather. The RoPE caches
    /// lead the weight order.
    fn attention_inputs(&mut self) -> AttnInputs {
        let c = self.c;
        let ep = self.opts.execution_provider;
        let longrope = uses_longrope(c);
        let position_ids = if ep.fused_rope() {
            None
        } else if longrope && !ep.longrope_if() {
            Some(self.position_ids_reformat())
        } else {
            Some("position_ids".to_string())
        };
        let (seqlens, total) = if longrope && ep.longrope_if() {
            let threshold = self.constant_i64(&[c.original_max_position_embeddings as i64], true);
            let total_i64 = self.total_length_i64();
            self.longrope_if(&total_i64, &threshold);
            let seqlens = self.seqlens_k();
            (seqlens, self.total_length_i32(&total_i64))
        } else {
            let seqlens = self.seqlens_k();
            let total_i64 = self.total_length_i64();
            (seqlens, self.total_length_i32(&total_i64))
        };
        if !longrope {
            self.weights.push(WeightItem::RopeCaches);
        } else if !ep.longrope_if() {
            self.weights.push(WeightItem::ConcatRopeCaches);
        }
        AttnInputs {
            position_ids,
            seqlens,
            total,
        }
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
