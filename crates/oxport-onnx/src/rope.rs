//! cos/sin caches for GroupQueryAttention's fused rotary embedding (`do_rotary=1`, non-interleaved).
//!
//! Follows `builders/base.py::make_rotary_embedding_caches_from_scratch` step by step in f32, as torch does:
//! `inv_freq = 1 / (rescale * theta ** (arange(0, dim, 2).float() / dim))`, `freqs = outer(t, inv_freq)`,
//! `cos = cos(freqs) * mscale`, keeping only the first `dim / 2` columns (`cat(freqs, freqs)` sliced back).

use oxport_arch::Phi3Config;

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
    let dim = c.rotary_dim();
    let half_dim = dim / 2;
    let theta = c.rope_theta as f32;
    let (factors, mscale): (Vec<f32>, f32) = match (long, c.rope_scaling.as_ref()) {
        (Some(is_long), Some(r)) => {
            let (f, m) = if is_long {
                (&r.long_factor, r.long_mscale)
            } else {
                (&r.short_factor, r.short_mscale)
            };
            let m = m
                .filter(|&m| m > 0.0)
                .unwrap_or_else(|| c.longrope_attention_factor());
            (f.iter().map(|&x| x as f32).collect(), m as f32)
        }
        _ => (vec![1.0; half_dim], 1.0),
    };
    let inv_freq: Vec<f32> = (0..half_dim)
        .map(|j| {
            let exponent = (2 * j) as f32 / dim as f32;
            1.0f32 / (factors.get(j).copied().unwrap_or(1.0) * theta.powf(exponent))
        })
        .collect();
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
