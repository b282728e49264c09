//! An f32 forward pass of the original Phi-3 checkpoint, written independently of the exporters.
//!
//! It follows transformers' `models/phi3/modeling_phi3.py` (Phi3RMSNorm, Phi3Attention with the fused `qkv_proj`
//! split Q|K|V, partial rotary on the first `rotary_dim` channels with `rotate_half`, GQA by repeating KV heads,
//! Phi3MLP with the fused `gate_up_proj` split gate|up and SiLU) and `modeling_rope_utils.py`
//! (`_compute_longrope_parameters`: short factors up to `original_max_position_embeddings`, long factors beyond, cos/sin
//! scaled by the attention factor). Weights are widened to f32 once; matmuls run in parallel over output rows.

use oxport_hf::{Checkpoint, Phi3Config, Role};
use rayon::prelude::*;

use crate::error::Result;

/// One decoder layer's weights, all f32, PyTorch `[out, in]` layout.
struct Layer {
    input_norm: Vec<f32>,
    qkv: Vec<f32>,
    o: Vec<f32>,
    post_norm: Vec<f32>,
    gate_up: Vec<f32>,
    down: Vec<f32>,
}

/// The reference model: weights in f32 and the config they came from.
pub struct Reference {
    config: Phi3Config,
    embedding: Vec<f32>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    /// `None` when the embeddings are tied.
    lm_head: Option<Vec<f32>>,
}

/// Post-RoPE keys and values of every processed position, per layer: `[position][kv_heads * head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Number of positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `y[t, o] = Σ_i x[t, i] · w[o, i]`, parallel over output rows (`n` tokens, `w` is `[out, in]`).
fn matmul(x: &[f32], n: usize, w: &[f32], in_dim: usize) -> Vec<f32> {
    let out_dim = w.len() / in_dim;
    let mut transposed = vec![0f32; out_dim * n];
    transposed
        .par_chunks_mut(n)
        .zip(w.par_chunks(in_dim))
        .for_each(|(col, row)| {
            for (t, y) in col.iter_mut().enumerate() {
                *y = dot(&x[t * in_dim..(t + 1) * in_dim], row);
            }
        });
    let mut y = vec![0f32; n * out_dim];
    for o in 0..out_dim {
        for t in 0..n {
            y[t * out_dim + o] = transposed[o * n + t];
        }
    }
    y
}

/// Dot product with 8 independent accumulators so that the compiler vectorizes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Phi3RMSNorm: `w · x / sqrt(mean(x²) + eps)` per row.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks(w.len()).zip(out.chunks_mut(w.len())) {
        let var = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
            *o = g * (v * inv);
        }
    }
    out
}

impl Reference {
    /// Read every weight of `checkpoint` as f32.
    pub fn load(checkpoint: &Checkpoint) -> Result<Self> {
        let config = checkpoint.config().clone();
        let read = |role| checkpoint.read_f32(role);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for layer in 0..config.num_hidden_layers {
            layers.push(Layer {
                input_norm: read(Role::InputNorm { layer })?,
                qkv: read(Role::AttnQkv { layer })?,
                o: read(Role::AttnOut { layer })?,
                post_norm: read(Role::PostAttnNorm { layer })?,
                gate_up: read(Role::MlpGateUp { layer })?,
                down: read(Role::MlpDown { layer })?,
            });
        }
        let lm_head = if config.tie_word_embeddings && checkpoint.info(Role::LmHead).is_none() {
            None
        } else {
            Some(read(Role::LmHead)?)
        };
        Ok(Reference {
            embedding: read(Role::Embedding)?,
            final_norm: read(Role::FinalNorm)?,
            layers,
            lm_head,
            config,
        })
    }

    pub fn config(&self) -> &Phi3Config {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// A fresh, empty KV cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); self.layers.len()],
            values: vec![Vec::new(); self.layers.len()],
            len: 0,
        }
    }

    /// Run `ids` after the positions already in `cache`; return logits `[ids.len() * vocab]` and extend the cache.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, n) = (c.hidden_size, ids.len());
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(crate::Error::Invalid(format!(
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
            x.extend_from_slice(&self.embedding[id * h..(id + 1) * h]);
        }
        let past = cache.len;
        let (cos, sin) = self.rope_tables(past, n);
        let eps = c.rms_norm_eps as f32;
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.input_norm, eps);
            let attn = self.attention(l, layer, &normed, n, past, &cos, &sin, cache);
            for (a, b) in x.iter_mut().zip(&attn) {
                *a += b;
            }
            let normed = rms_norm(&x, &layer.post_norm, eps);
            let mlp = self.mlp(layer, &normed, n);
            for (a, b) in x.iter_mut().zip(&mlp) {
                *a += b;
            }
        }
        cache.len += n;
        let normed = rms_norm(&x, &self.final_norm, eps);
        let head = self.lm_head.as_deref().unwrap_or(&self.embedding);
        Ok(matmul(&normed, n, head, h))
    }

    /// cos/sin `[n][rotary_dim]` for positions `past..past+n`, as transformers builds them: `inv_freq` in f32,
    /// `emb = cat(freqs, freqs)`, LongRoPE factors chosen by the total sequence length and the attention factor
    /// applied to both tables (`modeling_rope_utils.py::_compute_longrope_parameters`, `dynamic_rope_update`).
    fn rope_tables(&self, past: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let c = &self.config;
        let dim = c.rotary_dim();
        let half = dim / 2;
        let base = c.rope_theta as f32;
        let total = past + n;
        let (factors, scale): (Option<&[f64]>, f32) = match &c.rope_scaling {
            Some(r) if !r.short_factor.is_empty() => {
                let long = total > c.original_max_position_embeddings;
                let f = if long {
                    &r.long_factor
                } else {
                    &r.short_factor
                };
                (Some(f.as_slice()), c.longrope_attention_factor() as f32)
            }
            _ => (None, 1.0),
        };
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let f = factors.map_or(1.0, |f| f[i] as f32);
                1.0 / (f * base.powf((2 * i) as f32 / dim as f32))
            })
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(n * dim), Vec::with_capacity(n * dim));
        for p in past..total {
            for _ in 0..2 {
                for &f in &inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * scale);
                    sin.push(angle.sin() * scale);
                }
            }
        }
        (cos, sin)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        layer: &Layer,
        x: &[f32],
        n: usize,
        past: usize,
        cos: &[f32],
        sin: &[f32],
        cache: &mut KvCache,
    ) -> Vec<f32> {
        let c = &self.config;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (q_dim, kv_dim, rot) = (heads * hd, kv_heads * hd, c.rotary_dim());
        let qkv = matmul(x, n, &layer.qkv, c.hidden_size);
        let width = q_dim + 2 * kv_dim;
        let mut q = vec![0f32; n * q_dim];
        for t in 0..n {
            let row = &qkv[t * width..(t + 1) * width];
            q[t * q_dim..(t + 1) * q_dim].copy_from_slice(&row[..q_dim]);
            let mut k = row[q_dim..q_dim + kv_dim].to_vec();
            let (ct, st) = (&cos[t * rot..(t + 1) * rot], &sin[t * rot..(t + 1) * rot]);
            for head in k.chunks_mut(hd) {
                rotate(head, ct, st);
            }
            for head in q[t * q_dim..(t + 1) * q_dim].chunks_mut(hd) {
                rotate(head, ct, st);
            }
            cache.keys[l].extend_from_slice(&k);
            cache.values[l].extend_from_slice(&row[q_dim + kv_dim..]);
        }
        let (keys, values) = (&cache.keys[l], &cache.values[l]);
        let scale = 1.0 / (hd as f32).sqrt();
        let window = c.sliding_window.unwrap_or(usize::MAX);
        let group = heads / kv_heads;
        let mut out = vec![0f32; n * q_dim];
        out.par_chunks_mut(q_dim)
            .enumerate()
            .for_each(|(t, out_t)| {
                let pos = past + t;
                // transformers' sliding-window mask keeps keys with `pos - key < window`.
                let first = (pos + 1).saturating_sub(window);
                let mut scores = vec![0f32; pos + 1 - first];
                for h in 0..heads {
                    let kvh = h / group;
                    let qh = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                    for (j, s) in (first..=pos).zip(scores.iter_mut()) {
                        *s = dot(
                            qh,
                            &keys[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd],
                        ) * scale;
                    }
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let o = &mut out_t[h * hd..(h + 1) * hd];
                    for (j, s) in (first..=pos).zip(&scores) {
                        let v = &values[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                        for (o, v) in o.iter_mut().zip(v) {
                            *o += s / sum * v;
                        }
                    }
                }
            });
        matmul(&out, n, &layer.o, q_dim)
    }

    fn mlp(&self, layer: &Layer, x: &[f32], n: usize) -> Vec<f32> {
        let inter = self.config.intermediate_size;
        let gate_up = matmul(x, n, &layer.gate_up, self.config.hidden_size);
        let mut act = vec![0f32; n * inter];
        for t in 0..n {
            let row = &gate_up[t * 2 * inter..(t + 1) * 2 * inter];
            let (gate, up) = row.split_at(inter);
            for ((a, g), u) in act[t * inter..(t + 1) * inter].iter_mut().zip(gate).zip(up) {
                *a = u * (g / (1.0 + (-g).exp()));
            }
        }
        matmul(&act, n, &layer.down, inter)
    }
}

/// `rotate_half` RoPE on the first `cos.len()` channels of one head; the rest pass through (partial rotary).
fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len() / 2;
    for i in 0..half {
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos[i] - b * sin[i];
        head[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive() {
        let (n, i, o) = (3, 13, 5);
        let x: Vec<f32> = (0..n * i).map(|v| (v as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..o * i).map(|v| (v as f32 * 0.11).cos()).collect();
        let y = matmul(&x, n, &w, i);
        for t in 0..n {
            for r in 0..o {
                let e: f32 = (0..i).map(|k| x[t * i + k] * w[r * i + k]).sum();
                assert!((y[t * o + r] - e).abs() < 1e-5);
            }
        }
    }

    fn longrope_model() -> Reference {
        let json = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":100,"max_position_embeddings":256,
            "partial_rotary_factor":0.5,"rope_parameters":{"rope_type":"longrope","rope_theta":500.0,
            "original_max_position_embeddings":64,"short_factor":[1,2,3,4],"long_factor":[5,6,7,8]}}"#;
        let config = Phi3Config::from_json_str(json, std::path::Path::new("config.json")).unwrap();
        Reference {
            config,
            embedding: vec![],
            layers: vec![],
            final_norm: vec![],
            lm_head: None,
        }
    }

    #[test]
    fn longrope_picks_factors_by_total_length_and_scales_cos_sin() {
        let m = longrope_model();
        let (dim, scale) = (
            m.config.rotary_dim(),
            m.config.longrope_attention_factor() as f32,
        );
        assert_eq!(dim, 8, "partial rotary: head 16 × 0.5");
        assert!(scale > 1.0);
        let expect = |factors: [f32; 4], pos: f32, i: usize| {
            let inv = 1.0 / (factors[i % 4] * 500f32.powf((2 * (i % 4)) as f32 / 8.0));
            ((pos * inv).cos() * scale, (pos * inv).sin() * scale)
        };
        // 3 positions in all: within original_max_position_embeddings, short factors.
        let (cos, sin) = m.rope_tables(0, 3);
        for i in 0..8 {
            let (c, s) = expect([1.0, 2.0, 3.0, 4.0], 2.0, i);
            assert!(
                (cos[16 + i] - c).abs() < 1e-6 && (sin[16 + i] - s).abs() < 1e-6,
                "short, channel {i}"
            );
        }
        // Position 70 of 71: beyond 64, long factors (transformers' dynamic LongRoPE update).
        let (cos, sin) = m.rope_tables(70, 1);
        for i in 0..8 {
            let (c, s) = expect([5.0, 6.0, 7.0, 8.0], 70.0, i);
            assert!(
                (cos[i] - c).abs() < 1e-5 && (sin[i] - s).abs() < 1e-5,
                "long, channel {i}"
            );
        }
    }

    #[test]
    fn rotate_leaves_the_non_rotary_tail_alone() {
        let mut head = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let angle = 0.5f32;
        let (cos, sin) = ([angle.cos(); 4], [angle.sin(); 4]);
        rotate(&mut head, &cos, &sin);
        assert!((head[0] - (1.0 * angle.cos() - 3.0 * angle.sin())).abs() < 1e-6);
        assert!((head[2] - (3.0 * angle.cos() + 1.0 * angle.sin())).abs() < 1e-6);
        assert_eq!(&head[4..], &[5.0, 6.0]);
    }
}
