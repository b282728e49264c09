//! cos/sin caches for GroupQueryAttention's fused rotary embedding (`do_rotary=1`, non-interleaved).
//!
//! Follows `builders/base.py::make_rotary_embedding_caches_from_scratch` step by step in f32, as torch does:
//! `inv_freq` and `mscale` from `oxport_arch::rope` with the genai builder's numerics, `freqs = outer(t, inv_freq)`,
//! `cos = cos(freqs) * mscale`, keeping only the first `dim / 2` columns (`cat(freqs, freqs)` sliced back).

use oxport_arch::Phi3Config;
use oxport_arch::rope::{self, FactorSet, Peer};

/// Row-major `[rows, half_dim]` caches in f32.
#[derive(Clone, Debug)]
pub struct RopeCaches {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub rows: usize,
    pub half_dim: usize,
}

/// Caches of `rows` positions. `long`: `None` for plain RoPE; `Some(true)` / `Some(false)` for the LongRoPE
/// long / short factor set with its mscale (`Phi3MiniLongRoPEModel.make_rope_init`: an absent or zero
/// `*_mscale` becomes `sqrt(1 + ln(ctx/orig) / ln(orig))`).
pub fn rope_caches(c: &Phi3Config, long: Option<bool>, rows: usize) -> RopeCaches {
    let half_dim = c.rotary_dim() / 2;
    let (inv_freq, mscale) = match (long, c.rope_scaling.as_ref()) {
        (Some(is_long), Some(_)) => {
            let set = if is_long {
                FactorSet::Long
            } else {
                FactorSet::Short
            };
            (
                rope::inv_freq(c, Some(set), Peer::GenaiBuilder),
                rope::attention_scale(c, set, Peer::GenaiBuilder),
            )
        }
        _ => (rope::inv_freq(c, None, Peer::GenaiBuilder), 1.0),
    };
    let mut cos = Vec::with_capacity(rows * half_dim);
    let mut sin = Vec::with_capacity(rows * half_dim);
    for t in 0..rows {
        for &f in &inv_freq {
            let x = (t as f32 * f) as f64;
            cos.push(x.cos() as f32 * mscale);
            sin.push(x.sin() as f32 * mscale);
        }
    }
    RopeCaches {
        cos,
        sin,
        rows,
        half_dim,
    }
}
