//! RoPE numerics, once: inverse frequencies with partial rotary, the LongRoPE short/long factor sets, and the
//! attention scale that multiplies cos and sin. Each exporter matches a different peer byte for byte, and the
//! peers do not compute these the same way, so every function takes the [`Peer`] whose numerics it reproduces.
//!
//! `inv_freq[i] = 1 / (factor[i] * theta^(2i / rotary_dim))` for `i < rotary_dim / 2`, where `rotary_dim =
//! head_dim * partial_rotary_factor` (Phi-4-mini rotates 96 of 128 dimensions) and `factor` is 1 without
//! LongRoPE (transformers `modeling_rope_utils.py`, `_compute_default_rope_parameters` and
//! `_compute_longrope_parameters`).

use crate::config::Phi3Config;

/// Whose numerics to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// onnxruntime-genai's model builder (`builders/base.py::make_rotary_embedding_caches_from_scratch`,
    /// `builders/phi.py::Phi3MiniLongRoPEModel.make_rope_init`), which oxport-onnx's cos/sin caches match:
    /// `theta ** (arange(0, dim, 2).float() / dim)` in f32; the LongRoPE scale is the config's `short_mscale` /
    /// `long_mscale` when set and positive, else the derived [`attention_factor`].
    GenaiBuilder,
    /// transformers' eager forward pass (`modeling_rope_utils.py`), which oxport-reference matches: the power in
    /// f32; the LongRoPE scale is always the derived [`attention_factor`].
    Transformers,
    /// optimum-intel's traced OpenVINO IR, which oxport-openvino matches: its `inv_freq` constants equal the
    /// power computed in f64 and rounded to f32 (which can differ from the f32 power in the last bit, so the
    /// f32 path would not give optimum's bytes); the LongRoPE scale is the derived [`attention_factor`].
    OptimumIntel,
}

/// The LongRoPE factor set: `short_factor` within `original_max_position_embeddings`, `long_factor` beyond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorSet {
    Short,
    Long,
}

impl FactorSet {
    /// The set transformers' dynamic LongRoPE update picks for a sequence of `total_len` positions
    /// (`longrope_frequency_update`: long once the length exceeds `original_max_position_embeddings`).
    pub fn for_length(c: &Phi3Config, total_len: usize) -> FactorSet {
        if total_len > c.original_max_position_embeddings {
            FactorSet::Long
        } else {
            FactorSet::Short
        }
    }
}

/// The per-frequency factors of `set`; `None` without LongRoPE or without a set (plain RoPE).
pub fn factors(c: &Phi3Config, set: Option<FactorSet>) -> Option<&[f64]> {
    let r = c.rope_scaling.as_ref()?;
    Some(match set? {
        FactorSet::Short => &r.short_factor,
        FactorSet::Long => &r.long_factor,
    })
}

/// `rotary_dim / 2` inverse frequencies, divided by the factors of `set` (plain RoPE for `None`), computed as
/// `peer` computes them.
pub fn inv_freq(c: &Phi3Config, set: Option<FactorSet>, peer: Peer) -> Vec<f32> {
    let dim = c.rotary_dim();
    let factors = factors(c, set);
    (0..dim / 2)
        .map(|i| {
            let power = match peer {
                Peer::GenaiBuilder | Peer::Transformers => {
                    (c.rope_theta as f32).powf((2 * i) as f32 / dim as f32)
                }
                Peer::OptimumIntel => c.rope_theta.powf((2 * i) as f64 / dim as f64) as f32,
            };
            let factor = factors.map_or(1.0, |f| f[i] as f32);
            1.0f32 / (factor * power)
        })
        .collect()
}

/// LongRoPE's attention factor as transformers derives it: `sqrt(1 + ln(max / original) / ln(original))` when
/// the context was extended (`max_position_embeddings > original_max_position_embeddings`), else 1.
pub fn attention_factor(c: &Phi3Config) -> f64 {
    let scale = c.max_position_embeddings as f64 / c.original_max_position_embeddings as f64;
    if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (c.original_max_position_embeddings as f64).ln()).sqrt()
    }
}

/// The scale `peer` multiplies cos and sin by for `set`: 1 without LongRoPE.
pub fn attention_scale(c: &Phi3Config, set: FactorSet, peer: Peer) -> f32 {
    let Some(r) = c.rope_scaling.as_ref() else {
        return 1.0;
    };
    let configured = match (peer, set) {
        (Peer::GenaiBuilder, FactorSet::Short) => r.short_mscale,
        (Peer::GenaiBuilder, FactorSet::Long) => r.long_mscale,
        (Peer::Transformers | Peer::OptimumIntel, _) => None,
    };
    configured
        .filter(|&m| m > 0.0)
        .unwrap_or_else(|| attention_factor(c)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longrope(partial: f64) -> Phi3Config {
        let json = format!(
            r#"{{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":100,"max_position_embeddings":256,
            "partial_rotary_factor":{partial},"rope_parameters":{{"rope_type":"longrope","rope_theta":500.0,
            "original_max_position_embeddings":64,"short_factor":[1,2,3,4],"long_factor":[5,6,7,8],
            "long_mscale":1.5}}}}"#
        );
        Phi3Config::from_json_str(&json, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn partial_rotary_and_factor_sets() {
        let c = longrope(0.5);
        assert_eq!(c.rotary_dim(), 8, "head 16 × 0.5");
        for (set, f) in [(FactorSet::Short, 1.0f32), (FactorSet::Long, 5.0)] {
            let inv = inv_freq(&c, Some(set), Peer::Transformers);
            assert_eq!(inv.len(), 4);
            assert_eq!(inv[0], 1.0 / f, "{set:?}");
        }
        assert_eq!(inv_freq(&c, None, Peer::Transformers)[0], 1.0);
        assert_eq!(FactorSet::for_length(&c, 64), FactorSet::Short);
        assert_eq!(FactorSet::for_length(&c, 65), FactorSet::Long);
    }

    #[test]
    fn the_peers_differ_only_where_documented() {
        let c = longrope(0.5);
        let f32_path = inv_freq(&c, None, Peer::Transformers);
        assert_eq!(f32_path, inv_freq(&c, None, Peer::GenaiBuilder));
        let f64_path = inv_freq(&c, None, Peer::OptimumIntel);
        for (a, b) in f32_path.iter().zip(&f64_path) {
            assert!((a - b).abs() <= a * 1e-6, "{a} vs {b}");
        }
        let derived = attention_factor(&c) as f32;
        assert!(derived > 1.0);
        // Only the genai builder reads the configured mscale.
        assert_eq!(
            attention_scale(&c, FactorSet::Long, Peer::GenaiBuilder),
            1.5
        );
        assert_eq!(
            attention_scale(&c, FactorSet::Short, Peer::GenaiBuilder),
            derived
        );
        assert_eq!(
            attention_scale(&c, FactorSet::Long, Peer::OptimumIntel),
            derived
        );
    }
}
