//! The forward pass: an f32 Phi-3 decoder over the original checkpoint, written independently of the exporters.
//!
//! It follows transformers' `models/phi3/modeling_phi3.py` (Phi3RMSNorm, Phi3Attention with the fused `qkv_proj`
//! split Q|K|V, partial rotary on the first `rotary_dim` channels with `rotate_half`, GQA by repeating KV heads,
//! Phi3MLP with the fused `gate_up_proj` split gate|up and SiLU) and `modeling_rope_utils.py`
//! (`_compute_longrope_parameters`: short factors up to `original_max_position_embeddings`, long factors beyond, cos/sin
//! scaled by the attention factor).
//!
//! The matmul weights are never copied: they stay in the checkpoint's mmap, and each matmul ([`crate::gemm`]: a
//! cache-blocked, multi-threaded AVX-512/AVX2 GEMM with one fixed summation order, which streams the weights once
//! when decoding) widens them to f32 a panel of rows at a time, then releases the tensor's mapped pages, so a
//! 3.8 B-parameter model runs in about one tensor of resident weights plus activations and the KV cache
//! ([`crate::weights`]). Norm vectors are widened once at load. Attention runs on the same GEMM (per head, the
//! scores and the weighted values).

use oxport_arch::rope::{self, FactorSet, Peer};
use oxport_arch::{Model, Phi3Config, Role};
use rayon::prelude::*;

use crate::error::Result;
use crate::gemm::{WeightRows, gemm};
use crate::observer::{LinearInput, LinearObserver, NoObserver};
use crate::weights::{Mapped, MemoryPolicy, Weights};

/// One decoder layer's norm weights in f32 (its matmul weights stay in the checkpoint).
pub(crate) struct LayerNorms {
    pub(crate) input: Vec<f32>,
    pub(crate) post_attention: Vec<f32>,
}

/// The reference model: the checkpoint's weights and the config they came from.
pub struct Reference {
    pub(crate) config: Phi3Config,
    pub(crate) weights: Box<dyn Weights>,
    pub(crate) layers: Vec<LayerNorms>,
    pub(crate) final_norm: Vec<f32>,
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

/// Phi3RMSNorm: `w · x / sqrt(mean(x²) + eps)` per row.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::new();
    rms_norm_into(x, w, eps, &mut out);
    out
}

/// [`rms_norm`] into `out` (resized).
fn rms_norm_into(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    // Token rows in parallel, each computed as one thread would.
    out.par_chunks_mut(w.len())
        .zip(x.par_chunks(w.len()))
        .for_each(|(o, row)| {
            let var = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
                *o = g * (v * inv);
            }
        });
}

/// `x += y`, elementwise, in parallel.
fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(x, y)| {
            for (a, b) in x.iter_mut().zip(y) {
                *a += b;
            }
        });
}

/// The activations of one forward call, reused by every layer: the large buffers are allocated (and their pages
/// faulted in) once per call, not once per layer.
#[derive(Default)]
struct Workspace {
    /// The normed input of the attention or the MLP.
    normed: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    /// The attention heads' output, the input of `o_proj`.
    heads: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    /// The output of `o_proj` or `down_proj`, added to the residual stream.
    out: Vec<f32>,
}

/// The `[out, in]` weights the forward pass multiplies by, with the embedding table.
pub(crate) fn matmul_roles(config: &Phi3Config) -> Vec<Role> {
    let mut roles = vec![Role::Embedding, Role::LmHead];
    for layer in 0..config.num_hidden_layers {
        roles.extend([
            Role::AttnQkv { layer },
            Role::AttnOut { layer },
            Role::MlpGateUp { layer },
            Role::MlpDown { layer },
        ]);
    }
    roles
}

/// Every norm vector widened to f32 (NaN/Inf refused, pages released): per layer, and the final norm.
pub(crate) fn read_norms(checkpoint: &Model) -> Result<(Vec<LayerNorms>, Vec<f32>)> {
    let layers = (0..checkpoint.config().num_hidden_layers)
        .map(|layer| {
            Ok(LayerNorms {
                input: checkpoint.read_f32(Role::InputNorm { layer })?,
                post_attention: checkpoint.read_f32(Role::PostAttnNorm { layer })?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((layers, checkpoint.read_f32(Role::FinalNorm)?))
}

impl Reference {
    /// The reference over `checkpoint`'s weights. It keeps its own mapping of the shards (opened again from
    /// `checkpoint.dir()`: headers only, no tensor data), so the caller keeps theirs; see
    /// [`from_checkpoint`](Self::from_checkpoint) to hand one over instead.
    pub fn load(checkpoint: &Model) -> Result<Self> {
        let reader = oxport_hf::Checkpoint::open(checkpoint.dir())?;
        Self::from_checkpoint(Model::classify(reader, checkpoint.config().clone())?)
    }

    /// The reference owning `checkpoint`, with the memory policy [`MemoryPolicy::auto`] picks for its size.
    /// Refuses NaN/Inf in any weight now, as widening at load used to (one read of the mapped bytes), and widens
    /// the norm vectors.
    pub fn from_checkpoint(checkpoint: Model) -> Result<Self> {
        let policy = MemoryPolicy::auto(checkpoint.total_bytes());
        Self::with_memory_policy(checkpoint, policy)
    }

    /// [`from_checkpoint`](Self::from_checkpoint) with the given memory policy.
    pub fn with_memory_policy(checkpoint: Model, policy: MemoryPolicy) -> Result<Self> {
        let (layers, final_norm) = read_norms(&checkpoint)?;
        let weights = Mapped::new(checkpoint, policy)?;
        Ok(Reference {
            config: weights.checkpoint.config().clone(),
            weights: Box::new(weights),
            layers,
            final_norm,
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
        self.forward_observed(ids, cache, &mut NoObserver)
    }

    /// [`forward`](Self::forward), showing `observer` the input of every linear layer first.
    pub fn forward_observed(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        observer: &mut dyn LinearObserver,
    ) -> Result<Vec<f32>> {
        self.forward_inner(ids, cache, observer, false)
    }

    fn forward_inner(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        observer: &mut dyn LinearObserver,
        skip_head: bool,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, n) = (c.hidden_size, ids.len());
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            if id as usize >= c.vocab_size {
                return Err(crate::error::Error::Invalid(format!(
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
        }
        self.weights.embed(ids, &mut x)?;
        let past = cache.len;
        let (cos, sin) = self.rope_tables(past, n);
        let eps = c.rms_norm_eps as f32;
        let mut ws = Workspace::default();
        for (l, norms) in self.layers.iter().enumerate() {
            rms_norm_into(&x, &norms.input, eps, &mut ws.normed);
            self.attention(l, n, past, (&cos, &sin), cache, observer, &mut ws)?;
            add_into(&mut x, &ws.out);
            rms_norm_into(&x, &norms.post_attention, eps, &mut ws.normed);
            self.mlp(l, n, observer, &mut ws)?;
            add_into(&mut x, &ws.out);
        }
        cache.len += n;
        if skip_head {
            return Ok(Vec::new());
        }
        let normed = rms_norm(&x, &self.final_norm, eps);
        let mut logits = Vec::new();
        self.linear(Role::LmHead, &normed, n, observer, &mut logits)?;
        Ok(logits)
    }

    /// A prefill of `ids` in a fresh cache that only shows `observer` the decoder layers' linear inputs: the LM head
    /// is not multiplied (nothing is returned), which is what collecting calibration statistics needs.
    pub fn observe_prefill(&self, ids: &[u32], observer: &mut dyn LinearObserver) -> Result<()> {
        let mut cache = self.new_cache();
        self.forward_inner(ids, &mut cache, observer, true)?;
        Ok(())
    }

    /// One linear layer: show `observer` its input, then multiply by the weight of `role` into `y`.
    fn linear(
        &self,
        role: Role,
        x: &[f32],
        n: usize,
        observer: &mut dyn LinearObserver,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        observer.linear_input(LinearInput {
            role,
            tokens: n,
            features: x.len() / n,
            data: x,
        });
        self.weights.matmul_into(role, x, n, y)
    }

    /// cos/sin `[n][rotary_dim]` for positions `past..past+n`, as transformers builds them: `inv_freq` in f32,
    /// `emb = cat(freqs, freqs)`, LongRoPE factors chosen by the total sequence length and the attention factor
    /// applied to both tables (`modeling_rope_utils.py::_compute_longrope_parameters`, `dynamic_rope_update`).
    pub(crate) fn rope_tables(&self, past: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let c = &self.config;
        let dim = c.rotary_dim();
        let total = past + n;
        // Transformers' numerics: the power in f32; the derived attention factor scales both tables.
        let set = FactorSet::for_length(c, total);
        let (inv_freq, scale) = match &c.rope_scaling {
            Some(_) => (
                rope::inv_freq(c, Some(set), Peer::Transformers),
                rope::attention_scale(c, set, Peer::Transformers),
            ),
            None => (rope::inv_freq(c, None, Peer::Transformers), 1.0),
        };
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

    /// The attention of layer `l` on `ws.normed`, into `ws.out`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: usize,
        n: usize,
        past: usize,
        (cos, sin): (&[f32], &[f32]),
        cache: &mut KvCache,
        observer: &mut dyn LinearObserver,
        ws: &mut Workspace,
    ) -> Result<()> {
        let c = &self.config;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (q_dim, kv_dim, rot) = (heads * hd, kv_heads * hd, c.rotary_dim());
        self.linear(
            Role::AttnQkv { layer: l },
            &ws.normed,
            n,
            observer,
            &mut ws.qkv,
        )?;
        let (qkv, q) = (&ws.qkv, &mut ws.q);
        let width = q_dim + 2 * kv_dim;
        q.clear();
        q.resize(n * q_dim, 0.0);
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
        let out = &mut ws.heads;
        out.clear();
        out.resize(n * q_dim, 0.0);
        let shape = AttentionShape {
            past,
            heads,
            group,
            hd,
            kv_dim,
            scale,
            window,
        };
        attend(&shape, n, q, keys, values, out);
        self.linear(
            Role::AttnOut { layer: l },
            &ws.heads,
            n,
            observer,
            &mut ws.out,
        )
    }

    /// The MLP of `layer` on `ws.normed`, into `ws.out`.
    fn mlp(
        &self,
        layer: usize,
        n: usize,
        observer: &mut dyn LinearObserver,
        ws: &mut Workspace,
    ) -> Result<()> {
        let inter = self.config.intermediate_size;
        let gate_up = &mut ws.gate_up;
        self.linear(Role::MlpGateUp { layer }, &ws.normed, n, observer, gate_up)?;
        let act = &mut ws.act;
        act.clear();
        act.resize(n * inter, 0.0);
        act.par_chunks_mut(inter)
            .zip(gate_up.par_chunks(2 * inter))
            .for_each(|(act, row)| {
                let (gate, up) = row.split_at(inter);
                for ((a, g), u) in act.iter_mut().zip(gate).zip(up) {
                    *a = u * (g / (1.0 + (-g).exp()));
                }
            });
        self.linear(Role::MlpDown { layer }, &ws.act, n, observer, &mut ws.out)
    }
}

/// Sizes of one layer's attention.
struct AttentionShape {
    past: usize,
    heads: usize,
    /// Query heads per KV head (GQA).
    group: usize,
    hd: usize,
    kv_dim: usize,
    scale: f32,
    window: usize,
}

/// Every head's attention for the `n` new tokens into `out` (`[n][heads * hd]`). Per head, the scores
/// `Q_h · K_hᵀ` and the weighted values `P · V_h` are two [`gemm`]s over every cached position (one fused
/// multiply-add chain per value, in increasing order: `crate::gemm`); between them, the softmax of each query's
/// scaled scores over the keys its mask keeps (transformers' causal and sliding-window masks: `key ≤ pos` and
/// `pos - key < window`), the other weights exact zeros, which leave a chain as it was. Heads run in parallel;
/// each value is computed the same way whatever the thread count.
fn attend(g: &AttentionShape, n: usize, q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
    let (hd, q_dim, total) = (g.hd, g.heads * g.hd, g.past + n);
    let heads: Vec<Vec<f32>> = (0..g.heads)
        .into_par_iter()
        .map(|h| {
            let cache = KvHead {
                data: keys,
                ld: g.kv_dim,
                offset: (h / g.group) * hd,
                positions: total,
                hd,
            };
            let qh: Vec<f32> = q
                .chunks_exact(q_dim)
                .flat_map(|qt| &qt[h * hd..(h + 1) * hd])
                .copied()
                .collect();
            let mut p = gemm(&qh, n, hd, &KeyRows(&cache));
            for (t, row) in p.chunks_exact_mut(total).enumerate() {
                let pos = g.past + t;
                let first = (pos + 1).saturating_sub(g.window);
                let (before, rest) = row.split_at_mut(first);
                let (kept, after) = rest.split_at_mut(pos + 1 - first);
                before.fill(0.0);
                after.fill(0.0);
                for s in kept.iter_mut() {
                    *s *= g.scale;
                }
                let max = kept.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for s in kept.iter_mut() {
                    *s = exp_nonpositive(*s - max);
                }
                let sum = sum_lanes(kept);
                for s in kept.iter_mut() {
                    *s /= sum;
                }
            }
            gemm(
                &p,
                n,
                total,
                &ValueColumns(&KvHead {
                    data: values,
                    ..cache
                }),
            )
        })
        .collect();
    for (h, oh) in heads.iter().enumerate() {
        for (out_t, o) in out.chunks_exact_mut(q_dim).zip(oh.chunks_exact(hd)) {
            out_t[h * hd..(h + 1) * hd].copy_from_slice(o);
        }
    }
}

/// `eˣ` for the softmax's `x ≤ 0` (NaN stays NaN), within about 2 ulp of the exact value: `x = n·ln 2 + r` with
/// `n` rounded to nearest and `|r| ≤ ln 2 / 2` (Cody–Waite, `ln 2` in two parts), `eʳ` by its Taylor polynomial of
/// degree 7 (truncation below 10⁻⁸), times `2ⁿ` built from the exponent bits. Plain multiplies and adds, no fused
/// ones, so the compiler vectorizes it and every instruction set gives the same bits. Below -87 (where `eˣ` is
/// under f32's smallest normal) it returns `e⁻⁸⁷`, about 1.6·10⁻³⁸: nothing next to the maximum's weight of 1.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    /// `ln 2` rounded to 9 significant bits, so that `n · LN2_HI` is exact for `|n| ≤ 127`, and the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    /// `1.5 · 2²³`: adding it rounds to an integer, held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `n` from the rounded sum's mantissa bits, then `2ⁿ` (n ≥ -126: a normal number).
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `Σ v` in 16 lane sums (lane `l` over the indices `≡ l mod 16`, in order), then the lanes in order: a fixed
/// order that vectorizes.
fn sum_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        lanes[l] += x;
    }
    lanes.iter().fold(0.0, |a, &b| a + b)
}

/// One KV head of a layer's cache: `hd` values from `offset` in each of `positions` rows of `ld` values.
#[derive(Clone, Copy)]
struct KvHead<'a> {
    data: &'a [f32],
    ld: usize,
    offset: usize,
    positions: usize,
    hd: usize,
}

/// The keys of a head as a `[positions, hd]` weight: scores are `Q_h · Kᵀ`.
struct KeyRows<'a>(&'a KvHead<'a>);

impl WeightRows for KeyRows<'_> {
    fn out_dim(&self) -> usize {
        self.0.positions
    }

    fn widen(&self, row: usize, cols: std::ops::Range<usize>, out: &mut [f32]) {
        let at = row * self.0.ld + self.0.offset;
        out.copy_from_slice(&self.0.data[at + cols.start..at + cols.end]);
    }
}

/// The values of a head as a `[hd, positions]` weight: the output is `P · V`.
struct ValueColumns<'a>(&'a KvHead<'a>);

impl WeightRows for ValueColumns<'_> {
    fn out_dim(&self) -> usize {
        self.0.hd
    }

    fn widen(&self, row: usize, cols: std::ops::Range<usize>, out: &mut [f32]) {
        for (o, j) in out.iter_mut().zip(cols) {
            *o = self.0.data[j * self.0.ld + self.0.offset + row];
        }
    }
}

/// `rotate_half` RoPE on the first `cos.len()` channels of one head; the rest pass through (partial rotary).
pub(crate) fn rotate(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len() / 2;
    for i in 0..half {
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos[i] - b * sin[i];
        head[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}
