//! Attention-side subgraphs of the builder's graph: the attention-mask reformatting for GroupQueryAttention,
//! the LongRoPE cache selection, and the GroupQueryAttention node itself (docs/onnx-genai.md §1.4–§1.6).

use oxport_arch::Phi3Config;

use super::{Builder, COS_CACHE, MASK, MS_DOMAIN, SIN_CACHE};
use crate::proto::{GraphProto, tensor_proto::DataType};
use crate::protoutil::{Attr, Dim, node, raw_tensor, value_info};
use crate::rope::{RopeCaches, rope_caches};

/// Whether the builder would pick `Phi3MiniLongRoPEModel` (builder.py `create_model`): context extended past
/// `original_max_position_embeddings` with LongRoPE factors.
pub fn uses_longrope(c: &Phi3Config) -> bool {
    c.max_position_embeddings != c.original_max_position_embeddings
        && c.rope_scaling
            .as_ref()
            .is_some_and(|r| !r.short_factor.is_empty())
}

impl Builder<'_> {
    /// `make_attention_mask_reformatting_for_gqa` (§1.4), first half: seqlens_k = int32(ReduceSum(mask, 1) - 1).
    pub(super) fn seqlens_k(&mut self) -> String {
        let one = self.constant_i64(&[1], false);
        let reduce = format!("{MASK}/ReduceSum");
        self.push(node(
            "ReduceSum",
            &reduce,
            "",
            &["attention_mask", &one],
            &[&format!("{reduce}/output_0")],
            vec![("keepdims", Attr::Int(0))],
        ));
        let sub = format!("{MASK}/Sub");
        self.push(node(
            "Sub",
            &sub,
            "",
            &[&format!("{reduce}/output_0"), &one],
            &[&format!("{sub}/output_0")],
            vec![],
        ));
        let seqlens = format!("{sub}/Cast/output_0");
        self.push(node(
            "Cast",
            &format!("{sub}/Cast"),
            "",
            &[&format!("{sub}/output_0")],
            &[&seqlens],
            vec![("to", Attr::Int(DataType::Int32 as i64))],
        ));
        seqlens
    }

    /// The total length as int64: `Shape(mask)[1]` (shared by the LongRoPE `If` and the mask subgraph).
    pub(super) fn total_length_i64(&mut self) -> String {
        let shape = format!("{MASK}/Shape");
        self.push(node(
            "Shape",
            &shape,
            "",
            &["attention_mask"],
            &[&format!("{shape}/output_0")],
            vec![],
        ));
        let one_scalar = self.constant_i64(&[1], true);
        let gather = format!("{MASK}/Gather");
        self.push(node(
            "Gather",
            &gather,
            "",
            &[&format!("{shape}/output_0"), &one_scalar],
            &[&format!("{gather}/output_0")],
            vec![("axis", Attr::Int(0))],
        ));
        format!("{gather}/output_0")
    }

    /// `total_sequence_length` = int32 of [`Self::total_length_i64`].
    pub(super) fn total_length_i32(&mut self, total_i64: &str) -> String {
        let cast = format!("{MASK}/Gather/Cast");
        let total = format!("{cast}/output_0");
        self.push(node(
            "Cast",
            &cast,
            "",
            &[total_i64],
            &[&total],
            vec![("to", Attr::Int(DataType::Int32 as i64))],
        ));
        total
    }

    /// `Phi3MiniLongRoPEModel.make_position_ids_reformatting` for EPs without `If` (builders/phi.py):
    /// `position_ids + (max(position_ids) >= original) * original`, which indexes the long half of the
    /// concatenated cache once any position reaches the original context.
    pub(super) fn position_ids_reformat(&mut self) -> String {
        let base = "/model/pos_ids_reformat";
        let reduce = format!("{base}/ReduceMax");
        self.push(node(
            "ReduceMax",
            &reduce,
            "",
            &["position_ids"],
            &[&format!("{reduce}/output_0")],
            vec![("keepdims", Attr::Int(0))],
        ));
        let original = self.constant_i64(&[self.c.original_max_position_embeddings as i64], true);
        let ge = format!("{base}/GreaterOrEqual");
        self.push(node(
            "GreaterOrEqual",
            &ge,
            "",
            &[&format!("{reduce}/output_0"), &original],
            &[&format!("{ge}/output_0")],
            vec![],
        ));
        let cast = format!("{base}/Cast");
        self.push(node(
            "Cast",
            &cast,
            "",
            &[&format!("{ge}/output_0")],
            &[&format!("{cast}/output_0")],
            vec![("to", Attr::Int(DataType::Int64 as i64))],
        ));
        let mul = format!("{base}/Mul");
        self.push(node(
            "Mul",
            &mul,
            "",
            &[&format!("{cast}/output_0"), &original],
            &[&format!("{mul}/output_0")],
            vec![],
        ));
        let add = format!("{base}/Add_1");
        let out = format!("{add}/output_0");
        self.push(node(
            "Add",
            &add,
            "",
            &[&format!("{mul}/output_0"), "position_ids"],
            &[&out],
            vec![],
        ));
        out
    }

    /// `make_rotary_embedding_multi_cache` (§1.6): one If on `total_len > original_context` selecting the long
    /// or short cos/sin caches, which live as Constant nodes inside the branches.
    pub(super) fn longrope_if(&mut self, total_i64: &str, threshold: &str) {
        let c = self.c;
        let greater = "/model/rope_caches_subgraph/Greater";
        self.push(node(
            "Greater",
            greater,
            "",
            &[total_i64, threshold],
            &[&format!("{greater}/output_0")],
            vec![],
        ));
        let RopeCaches {
            cos: cos_large,
            sin: sin_large,
            rows: large_rows,
            half_dim,
        } = rope_caches(c, Some(true), c.max_position_embeddings);
        let RopeCaches {
            cos: cos_small,
            sin: sin_small,
            rows: small_rows,
            ..
        } = rope_caches(c, Some(false), c.original_max_position_embeddings);
        let io = self.io;
        let branch = |label: &str, cos: Vec<f32>, sin: Vec<f32>, rows: usize| {
            let mut g = GraphProto {
                name: Some(format!("{label}_rope_caches_graph")),
                ..Default::default()
            };
            for (kind, data) in [("cos", cos), ("sin", sin)] {
                let out = format!("{kind}_cache_{label}");
                let t = raw_tensor(&out, io.onnx(), &[rows, half_dim], io.bytes(&data));
                g.node.push(node(
                    "Constant",
                    &format!("/{label}/{kind}_cache/Constant"),
                    "",
                    &[],
                    &[&out],
                    vec![("value", Attr::Tensor(t))],
                ));
                g.output.push(value_info(
                    &out,
                    io.onnx(),
                    &[Dim::Fixed(rows), Dim::Fixed(half_dim)],
                ));
            }
            g
        };
        let then_branch = branch("large", cos_large, sin_large, large_rows);
        let else_branch = branch("small", cos_small, sin_small, small_rows);
        self.push(node(
            "If",
            "/model/rope_caches_subgraph/If",
            "",
            &[&format!("{greater}/output_0")],
            &[COS_CACHE, SIN_CACHE],
            vec![
                ("then_branch", Attr::Graph(then_branch)),
                ("else_branch", Attr::Graph(else_branch)),
            ],
        ));
    }

    /// A separate com.microsoft `RotaryEmbedding` (`make_rotary_embedding`): `num_heads` and
    /// `rotary_embedding_dim` stay 0 unless the rotary is partial.
    pub(super) fn rotary(
        &mut self,
        base: &str,
        input: &str,
        position_ids: &str,
        heads: usize,
    ) -> String {
        let c = self.c;
        let partial = c.partial_rotary_factor != 1.0;
        let name = format!("{base}/RotaryEmbedding");
        let out = format!("{name}/output_0");
        self.push(node(
            "RotaryEmbedding",
            &name,
            MS_DOMAIN,
            &[input, position_ids, COS_CACHE, SIN_CACHE],
            &[&out],
            vec![
                ("interleaved", Attr::Int(0)),
                (
                    "num_heads",
                    Attr::Int(if partial { heads as i64 } else { 0 }),
                ),
                (
                    "rotary_embedding_dim",
                    Attr::Int(if partial { c.rotary_dim() as i64 } else { 0 }),
                ),
            ],
        ));
        out
    }

    /// GroupQueryAttention over `qkv` (packed: `[qkv, "", ""]`, or separate `[q, k, v]`), with the cos/sin
    /// caches for fused rotary (`do_rotary=1`) or `["", ""]` when RotaryEmbedding ran before.
    pub(super) fn gqa(
        &mut self,
        layer: usize,
        qkv: [&str; 3],
        caches: [&str; 2],
        seqlens: &str,
        total: &str,
    ) -> String {
        let c = self.c;
        let base = format!("/model/layers.{layer}/attn/GroupQueryAttention");
        let out = format!("{base}/output_0");
        let past_k = format!("past_key_values.{layer}.key");
        let past_v = format!("past_key_values.{layer}.value");
        let present_k = format!("present.{layer}.key");
        let present_v = format!("present.{layer}.value");
        let scale = 1.0 / (c.head_dim() as f64).sqrt();
        let do_rotary = !caches[0].is_empty();
        self.push(node(
            "GroupQueryAttention",
            &base,
            MS_DOMAIN,
            &[
                qkv[0], qkv[1], qkv[2], &past_k, &past_v, seqlens, total, caches[0], caches[1], "",
                "", "",
            ],
            &[&out, &present_k, &present_v],
            vec![
                ("num_heads", Attr::Int(c.num_attention_heads as i64)),
                ("kv_num_heads", Attr::Int(c.num_key_value_heads as i64)),
                ("scale", Attr::Float(scale as f32)),
                // Builder 0.18 passes `config.sliding_window` only for layers HF marks "sliding_attention"
                // (`is_local`); Phi-3 has no such layers, so every layer gets -1 and the window moves to
                // genai_config `sliding_window` (builders/base.py `make_attention`, `make_genai_config`).
                ("local_window_size", Attr::Int(-1)),
                ("softcap", Attr::Float(0.0)),
                ("do_rotary", Attr::Int(do_rotary as i64)),
                ("rotary_interleaved", Attr::Int(0)),
            ],
        ));
        out
    }
}
