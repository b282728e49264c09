//! Tensor names → typed roles, once, at the boundary (like llama.cpp's tensor mapping).

use crate::config::Phi3Config;

/// What a checkpoint tensor is. Every policy (quantization, graph wiring) matches on this, never on names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// `model.embed_tokens.weight` `[vocab, hidden]`.
    Embedding,
    /// `model.layers.N.input_layernorm.weight` `[hidden]`.
    InputNorm { layer: usize },
    /// `model.layers.N.self_attn.qkv_proj.weight` `[q + 2·kv, hidden]`: Q rows, then K, then V.
    AttnQkv { layer: usize },
    /// `model.layers.N.self_attn.o_proj.weight` `[hidden, hidden]`.
    AttnOut { layer: usize },
    /// `model.layers.N.post_attention_layernorm.weight` `[hidden]`.
    PostAttnNorm { layer: usize },
    /// `model.layers.N.mlp.gate_up_proj.weight` `[2·intermediate, hidden]`: gate rows, then up rows.
    MlpGateUp { layer: usize },
    /// `model.layers.N.mlp.down_proj.weight` `[hidden, intermediate]`.
    MlpDown { layer: usize },
    /// `model.norm.weight` `[hidden]`.
    FinalNorm,
    /// `lm_head.weight` `[vocab, hidden]` (absent when embeddings are tied).
    LmHead,
}

impl Role {
    /// Parse a checkpoint tensor name; `None` for names that are not part of a Phi-3 checkpoint.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "model.embed_tokens.weight" => return Some(Role::Embedding),
            "model.norm.weight" => return Some(Role::FinalNorm),
            "lm_head.weight" => return Some(Role::LmHead),
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        if layer.is_empty() || (layer.len() > 1 && layer.starts_with('0')) {
            return None;
        }
        let layer: usize = layer.parse().ok()?;
        Some(match rest {
            "input_layernorm.weight" => Role::InputNorm { layer },
            "self_attn.qkv_proj.weight" => Role::AttnQkv { layer },
            "self_attn.o_proj.weight" => Role::AttnOut { layer },
            "post_attention_layernorm.weight" => Role::PostAttnNorm { layer },
            "mlp.gate_up_proj.weight" => Role::MlpGateUp { layer },
            "mlp.down_proj.weight" => Role::MlpDown { layer },
            _ => return None,
        })
    }

    /// The checkpoint name of this role.
    pub fn name(&self) -> String {
        match *self {
            Role::Embedding => "model.embed_tokens.weight".into(),
            Role::FinalNorm => "model.norm.weight".into(),
            Role::LmHead => "lm_head.weight".into(),
            Role::InputNorm { layer } => format!("model.layers.{layer}.input_layernorm.weight"),
            Role::AttnQkv { layer } => format!("model.layers.{layer}.self_attn.qkv_proj.weight"),
            Role::AttnOut { layer } => format!("model.layers.{layer}.self_attn.o_proj.weight"),
            Role::PostAttnNorm { layer } => {
                format!("model.layers.{layer}.post_attention_layernorm.weight")
            }
            Role::MlpGateUp { layer } => format!("model.layers.{layer}.mlp.gate_up_proj.weight"),
            Role::MlpDown { layer } => format!("model.layers.{layer}.mlp.down_proj.weight"),
        }
    }

    pub fn layer(&self) -> Option<usize> {
        match *self {
            Role::InputNorm { layer }
            | Role::AttnQkv { layer }
            | Role::AttnOut { layer }
            | Role::PostAttnNorm { layer }
            | Role::MlpGateUp { layer }
            | Role::MlpDown { layer } => Some(layer),
            Role::Embedding | Role::FinalNorm | Role::LmHead => None,
        }
    }

    /// A weight consumed by a MatMul (the quantizable linear layers, lm_head included).
    pub fn is_matmul(&self) -> bool {
        matches!(
            self,
            Role::AttnQkv { .. }
                | Role::AttnOut { .. }
                | Role::MlpGateUp { .. }
                | Role::MlpDown { .. }
                | Role::LmHead
        )
    }

    pub fn is_norm(&self) -> bool {
        matches!(
            self,
            Role::InputNorm { .. } | Role::PostAttnNorm { .. } | Role::FinalNorm
        )
    }

    /// The shape `config` implies for this tensor (row-major, `[out, in]` for linear layers as in PyTorch).
    pub fn expected_shape(&self, c: &Phi3Config) -> Vec<usize> {
        let h = c.hidden_size;
        match self {
            Role::Embedding | Role::LmHead => vec![c.vocab_size, h],
            Role::InputNorm { .. } | Role::PostAttnNorm { .. } | Role::FinalNorm => vec![h],
            Role::AttnQkv { .. } => vec![c.qkv_rows(), h],
            Role::AttnOut { .. } => vec![h, c.num_attention_heads * c.head_dim()],
            Role::MlpGateUp { .. } => vec![2 * c.intermediate_size, h],
            Role::MlpDown { .. } => vec![h, c.intermediate_size],
        }
    }

    /// Every role a checkpoint for `config` must hold, in canonical order (the order writers emit).
    pub fn all_for(c: &Phi3Config) -> Vec<Role> {
        let mut roles = vec![Role::Embedding];
        for layer in 0..c.num_hidden_layers {
            roles.extend([
                Role::InputNorm { layer },
                Role::AttnQkv { layer },
                Role::AttnOut { layer },
                Role::PostAttnNorm { layer },
                Role::MlpGateUp { layer },
                Role::MlpDown { layer },
            ]);
        }
        roles.push(Role::FinalNorm);
        if !c.tie_word_embeddings {
            roles.push(Role::LmHead);
        }
        roles
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Role::Embedding => "embedding",
            Role::InputNorm { .. } => "input_norm",
            Role::AttnQkv { .. } => "attn_qkv",
            Role::AttnOut { .. } => "attn_out",
            Role::PostAttnNorm { .. } => "post_attn_norm",
            Role::MlpGateUp { .. } => "mlp_gate_up",
            Role::MlpDown { .. } => "mlp_down",
            Role::FinalNorm => "final_norm",
            Role::LmHead => "lm_head",
        };
        match self.layer() {
            Some(l) => write!(f, "{s}[{l}]"),
            None => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.31.self_attn.qkv_proj.weight",
            "model.layers.7.self_attn.o_proj.weight",
            "model.layers.2.post_attention_layernorm.weight",
            "model.layers.2.mlp.gate_up_proj.weight",
            "model.layers.2.mlp.down_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ] {
            assert_eq!(Role::from_name(name).unwrap().name(), name);
        }
        assert_eq!(
            Role::from_name("model.layers.07.mlp.down_proj.weight"),
            None
        );
        assert_eq!(
            Role::from_name("model.layers.1.self_attn.rotary_emb.inv_freq"),
            None
        );
        assert_eq!(Role::from_name("model.layers.x.mlp.down_proj.weight"), None);
    }
}
