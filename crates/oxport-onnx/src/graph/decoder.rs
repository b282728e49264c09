//! The decoder's pieces in the builder's node order: the embedding, each layer (input norm, attention, MLP) and
//! the final norm with lm_head; [`super::build`] strings them together.

use oxport_arch::Role;

use super::{
    Builder, COS_CACHE, LinearForm, LinearSpec, MS_DOMAIN, NormSpec, SIN_CACHE, WeightItem,
};
use crate::protoutil::{Attr, node};

/// What every layer's attention reads: `position_ids` (None with the fused-RoPE GQA), `seqlens_k` and
/// `total_sequence_length`.
pub(super) struct AttnInputs {
    pub(super) position_ids: Option<String>,
    pub(super) seqlens: String,
    pub(super) total: String,
}

impl Builder<'_> {
    /// The LinearSpec of one MatMul, in the form the quantization decision for `role` asks for.
    fn spec(&self, role: Role, rows: std::ops::Range<usize>, base: String, k: usize) -> LinearSpec {
        LinearSpec {
            n: rows.len(),
            role,
            rows,
            node_base: base,
            k,
            form: (self.form_for)(role),
        }
    }

    /// [`Builder::linear`] on `input`, its weight next in the weight order; returns the output name.
    fn linear_w(&mut self, spec: LinearSpec, input: &str) -> String {
        let out = self.linear(&spec, input, None);
        self.weights.push(WeightItem::Linear(spec));
        out
    }

    /// The token embedding; returns its output name. Tied embeddings (Phi-4-mini): the builder shares lm_head's
    /// weight with the embedding (`builder.py`: `shared_embeddings` defaults to `tie_word_embeddings`;
    /// `base.py::make_embedding`): int4 → Reshape of lm_head's MatMulNBits `B` + com.microsoft
    /// GatherBlockQuantized with its scales; float → Transpose of lm_head's `[K, N]` weight + Gather. An 8-bit or
    /// Q/DQ lm_head keeps its own float embedding.
    pub(super) fn embedding(&mut self) -> String {
        let c = self.c;
        let lm_form = (self.form_for)(Role::LmHead);
        let lm_weight = "lm_head.MatMul.weight";
        match (c.tie_word_embeddings, lm_form) {
            (true, LinearForm::NBits(p)) if p.bits == 4 => {
                let blocks = c.hidden_size.div_ceil(p.block_size);
                let row_bytes = blocks * p.block_size * p.bits as usize / 8;
                let shape = self.constant_i64(&[c.vocab_size as i64, row_bytes as i64], false);
                let reshape = "/model/embed_tokens/Reshape";
                let q = format!("{lm_weight}_Q{}", p.bits);
                self.push(node(
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
                self.push(node(
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
                self.push(node(
                    "Transpose",
                    transpose,
                    "",
                    &[lm_weight],
                    &[&format!("{transpose}/output_0")],
                    vec![("perm", Attr::Ints(vec![1, 0]))],
                ));
                self.gather_embedding(&format!("{transpose}/output_0"))
            }
            _ => {
                let embed_name = "model.embed_tokens.weight".to_string();
                let out = self.gather_embedding(&embed_name);
                self.weights
                    .insert(0, WeightItem::Embedding { name: embed_name });
                out
            }
        }
    }

    /// `/model/embed_tokens/Gather` of `input_ids` rows from `table`.
    fn gather_embedding(&mut self, table: &str) -> String {
        let out = "/model/embed_tokens/Gather/output_0".to_string();
        self.push(node(
            "Gather",
            "/model/embed_tokens/Gather",
            "",
            &[table, "input_ids"],
            &[&out],
            vec![],
        ));
        out
    }

    /// One decoder layer; `carry` is the previous layer's (residual stream, sub-layer output), None for layer 0
    /// (whose input norm reads `embed_out`). Returns this layer's carry.
    pub(super) fn decoder_layer(
        &mut self,
        layer: usize,
        embed_out: &str,
        carry: Option<(String, String)>,
        a: &AttnInputs,
    ) -> (String, String) {
        let p = format!("/model/layers.{layer}");
        let in_norm = NormSpec {
            role: Role::InputNorm { layer },
            name: format!("model.layers.{layer}.input_layernorm.weight"),
        };
        let (normed, residual) = match &carry {
            None => {
                let out = format!("{p}/input_layernorm/output_0");
                self.first_norm(embed_out, &in_norm.name, &out);
                (out, embed_out.to_string())
            }
            Some((res, sub)) => self.skip_norm(
                &format!("{p}/input_layernorm"),
                [res, sub, &in_norm.name],
                true,
            ),
        };
        self.weights.push(WeightItem::Norm(in_norm));

        let o_out = self.self_attention(layer, &normed, a);

        let post = NormSpec {
            role: Role::PostAttnNorm { layer },
            name: format!("model.layers.{layer}.post_attention_layernorm.weight"),
        };
        let (normed2, residual2) = self.skip_norm(
            &format!("{p}/post_attention_layernorm"),
            [&residual, &o_out, &post.name],
            true,
        );
        self.weights.push(WeightItem::Norm(post));
        let down_out = self.mlp(layer, &normed2);
        (residual2, down_out)
    }

    /// The QKV projections, GroupQueryAttention and o_proj; returns o_proj's output.
    fn self_attention(&mut self, layer: usize, normed: &str, a: &AttnInputs) -> String {
        let c = self.c;
        let h = c.hidden_size;
        let p = format!("/model/layers.{layer}");
        let attn = match &a.position_ids {
            None => {
                let qkv = self.spec(
                    Role::AttnQkv { layer },
                    0..c.qkv_rows(),
                    format!("{p}/attn/qkv_proj/MatMul"),
                    h,
                );
                let qkv_out = self.linear_w(qkv, normed);
                self.gqa(
                    layer,
                    [&qkv_out, "", ""],
                    [COS_CACHE, SIN_CACHE],
                    &a.seqlens,
                    &a.total,
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
                    let lin = self.spec(
                        Role::AttnQkv { layer },
                        rows,
                        format!("{p}/attn/{name}/MatMul"),
                        h,
                    );
                    outs.push(self.linear_w(lin, normed));
                }
                let q = self.rotary(
                    &format!("{p}/attn/q_rotary"),
                    &outs[0],
                    pos,
                    c.num_attention_heads,
                );
                let k = self.rotary(
                    &format!("{p}/attn/k_rotary"),
                    &outs[1],
                    pos,
                    c.num_key_value_heads,
                );
                self.gqa(layer, [&q, &k, &outs[2]], ["", ""], &a.seqlens, &a.total)
            }
        };
        let o = self.spec(
            Role::AttnOut { layer },
            0..h,
            format!("{p}/attn/o_proj/MatMul"),
            c.num_attention_heads * c.head_dim(),
        );
        self.linear_w(o, &attn)
    }

    /// gate and up MatMuls, SiLU(gate) * up, down; returns down's output.
    fn mlp(&mut self, layer: usize, normed2: &str) -> String {
        let (h, inter) = (self.c.hidden_size, self.c.intermediate_size);
        let p = format!("/model/layers.{layer}");
        let gate = self.spec(
            Role::MlpGateUp { layer },
            0..inter,
            format!("{p}/mlp/gate_proj/MatMul"),
            h,
        );
        let up = self.spec(
            Role::MlpGateUp { layer },
            inter..2 * inter,
            format!("{p}/mlp/up_proj/MatMul"),
            h,
        );
        let gate_out = self.linear_w(gate, normed2);
        let up_out = self.linear_w(up, normed2);
        // `make_activation_with_mul`: SiLU as Sigmoid then Mul.
        let sig = format!("{p}/mlp/act_fn/Sigmoid");
        self.push(node(
            "Sigmoid",
            &sig,
            "",
            &[&gate_out],
            &[&format!("{sig}/output_0")],
            vec![],
        ));
        let act = format!("{p}/mlp/act_fn/Mul");
        self.push(node(
            "Mul",
            &act,
            "",
            &[&gate_out, &format!("{sig}/output_0")],
            &[&format!("{act}/output_0")],
            vec![],
        ));
        let mul = format!("{p}/mlp/Mul");
        self.push(node(
            "Mul",
            &mul,
            "",
            &[&format!("{act}/output_0"), &up_out],
            &[&format!("{mul}/output_0")],
            vec![],
        ));
        let down = self.spec(
            Role::MlpDown { layer },
            0..h,
            format!("{p}/mlp/down_proj/MatMul"),
            inter,
        );
        self.linear_w(down, &format!("{mul}/output_0"))
    }

    /// The final Skip norm over the last layer's `carry`, then lm_head into `logits`.
    pub(super) fn final_norm_lm_head(&mut self, (res, sub): (String, String)) {
        let c = self.c;
        let layers = c.num_hidden_layers;
        let final_norm = NormSpec {
            role: Role::FinalNorm,
            name: format!("model.layers.{layers}.final_norm_layernorm.weight"),
        };
        let (normed, _) = self.skip_norm(
            &format!("/model/layers.{layers}/final_norm_layernorm"),
            [&res, &sub, &final_norm.name],
            false,
        );
        self.weights.push(WeightItem::Norm(final_norm));
        let lm = self.spec(
            Role::LmHead,
            0..c.vocab_size,
            "/lm_head/MatMul".to_string(),
            c.hidden_size,
        );
        self.linear(&lm, &normed, Some("logits"));
        self.weights.push(WeightItem::Linear(lm));
    }
}
