//! An f32 forward pass of the original Phi-3 checkpoint, written independently of the exporters.
//!
//! It follows transformers' `models/phi3/modeling_phi3.py` (Phi3RMSNorm, Phi3Attention with the fused `qkv_proj`
//! split Q|K|V, partial rotary on the first `rotary_dim` channels with `rotate_half`, GQA by repeating KV heads,
//! Phi3MLP with the fused `gate_up_proj` split gate|up and SiLU) and `modeling_rope_utils.py`
//! (`_compute_longrope_parameters`: short factors up to `original_max_position_embeddings`, long factors beyond, cos/sin
//! scaled by the attention factor).
//!
//! The matmul weights are never copied: they stay in the checkpoint's mmap, each matmul widens them to f32 a row at a
//! time (in parallel over output rows) and then releases the tensor's mapped pages, so a 3.8 B-parameter model runs
//! in about one tensor of resident weights plus activations and the KV cache ([`weights`]). Norm vectors are
//! widened once at load.

mod weights;

use oxport_hf::{Checkpoint, Phi3Config, Role};
use rayon::prelude::*;

use crate::error::Result;
use weights::{Mapped, Weights};

/// One decoder layer's norm weights in f32 (its matmul weights stay in the checkpoint).
struct LayerNorms {
    input: Vec<f32>,
    post_attention: Vec<f32>,
}

/// The reference model: the checkpoint's weights and the config they came from.
pub struct Reference {
    config: Phi3Config,
    weights: Box<dyn Weights>,
    layers: Vec<LayerNorms>,
    final_norm: Vec<f32>,
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

/// Dot product with 8 independent accumulators so that the compiler vectorizes it.
/// The mapped and the widened weights share it, so both sum in the same order.
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

/// The `[out, in]` weights the forward pass multiplies by, with the embedding table.
fn matmul_roles(config: &Phi3Config) -> Vec<Role> {
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
fn read_norms(checkpoint: &Checkpoint) -> Result<(Vec<LayerNorms>, Vec<f32>)> {
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
    pub fn load(checkpoint: &Checkpoint) -> Result<Self> {
        Self::from_checkpoint(Checkpoint::open(checkpoint.dir())?)
    }

    /// The reference owning `checkpoint`. Refuses NaN/Inf in any weight now, as widening at load used to (one
    /// read of the mapped bytes, released tensor by tensor), and widens the norm vectors.
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Result<Self> {
        let (layers, final_norm) = read_norms(&checkpoint)?;
        for role in matmul_roles(checkpoint.config()) {
            let view = checkpoint
                .view(role)
                .ok_or_else(|| oxport_hf::Error::MissingTensors {
                    dir: checkpoint.dir().to_path_buf(),
                    names: vec![role.name()],
                })?;
            view.check_finite()?;
            checkpoint.release(view.info.role);
        }
        Ok(Reference {
            config: checkpoint.config().clone(),
            weights: Box::new(Mapped { checkpoint }),
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
        let c = &self.config;
        let (h, n) = (c.hidden_size, ids.len());
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            if id as usize >= c.vocab_size {
                return Err(crate::Error::Invalid(format!(
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
        }
        self.weights.embed(ids, &mut x)?;
        let past = cache.len;
        let (cos, sin) = self.rope_tables(past, n);
        let eps = c.rms_norm_eps as f32;
        for (l, norms) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &norms.input, eps);
            let attn = self.attention(l, &normed, n, past, &cos, &sin, cache)?;
            for (a, b) in x.iter_mut().zip(&attn) {
                *a += b;
            }
            let normed = rms_norm(&x, &norms.post_attention, eps);
            let mlp = self.mlp(l, &normed, n)?;
            for (a, b) in x.iter_mut().zip(&mlp) {
                *a += b;
            }
        }
        cache.len += n;
        let normed = rms_norm(&x, &self.final_norm, eps);
        self.weights.matmul(Role::LmHead, &normed, n)
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
        x: &[f32],
        n: usize,
        past: usize,
        cos: &[f32],
        sin: &[f32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let (q_dim, kv_dim, rot) = (heads * hd, kv_heads * hd, c.rotary_dim());
        let qkv = self.weights.matmul(Role::AttnQkv { layer: l }, x, n)?;
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
        self.weights.matmul(Role::AttnOut { layer: l }, &out, n)
    }

    fn mlp(&self, layer: usize, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let inter = self.config.intermediate_size;
        let gate_up = self.weights.matmul(Role::MlpGateUp { layer }, x, n)?;
        let mut act = vec![0f32; n * inter];
        for t in 0..n {
            let row = &gate_up[t * 2 * inter..(t + 1) * 2 * inter];
            let (gate, up) = row.split_at(inter);
            for ((a, g), u) in act[t * inter..(t + 1) * inter].iter_mut().zip(gate).zip(up) {
                *a = u * (g / (1.0 + (-g).exp()));
            }
        }
        self.weights.matmul(Role::MlpDown { layer }, &act, n)
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
    use std::path::{Path, PathBuf};

    use super::*;
    use weights::{Widened, matmul};

    #[test]
    fn widened_matmul_matches_naive() {
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
            weights: Box::new(Widened::default()),
            layers: vec![],
            final_norm: vec![],
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

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(path)
    }

    /// The reference as it was before the weights stayed mapped: every matmul weight widened to f32 at load.
    fn widened(checkpoint: &Checkpoint) -> Reference {
        let (layers, final_norm) = read_norms(checkpoint).unwrap();
        Reference {
            config: checkpoint.config().clone(),
            weights: Box::new(Widened::load(checkpoint).unwrap()),
            layers,
            final_norm,
        }
    }

    /// Logits of a 60-token prefill, then 8 one-token decode steps (past position 64, where tiny-longrope switches
    /// to its long factors).
    fn run(reference: &Reference) -> Vec<u32> {
        let vocab = reference.vocab_size() as u32;
        let ids: Vec<u32> = (0..68u32)
            .map(|i| 3 + (i * 37 + 11) % (vocab - 8))
            .collect();
        let mut cache = reference.new_cache();
        let mut logits = reference.forward(&ids[..60], &mut cache).unwrap();
        for &id in &ids[60..] {
            logits.extend(reference.forward(&[id], &mut cache).unwrap());
        }
        assert_eq!(cache.len(), ids.len());
        logits.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn mapped_weights_give_bit_identical_logits_to_widened_weights() {
        for path in [
            "tiny",
            "tiny-gqa",
            "tiny-longrope",
            "reference/checkpoints/phi3-tiny-random",
            "reference/checkpoints/phi3-tiny-k320",
        ] {
            let checkpoint = Checkpoint::open(fixture(path)).unwrap();
            let old = run(&widened(&checkpoint));
            let new = run(&Reference::load(&checkpoint).unwrap());
            assert_eq!(old.len(), 68 * checkpoint.config().vocab_size, "{path}");
            let differ = old.iter().zip(&new).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{path}: {differ} logits differ in their bits");
        }
    }

    #[test]
    fn no_tokens_give_no_logits_and_leave_the_cache_alone() {
        let checkpoint = Checkpoint::open(fixture("tiny")).unwrap();
        let reference = Reference::load(&checkpoint).unwrap();
        let mut cache = reference.new_cache();
        assert!(reference.forward(&[], &mut cache).unwrap().is_empty());
        assert!(cache.is_empty());
    }

    /// A copy of a fixture checkpoint in a temporary folder, so that its mappings are this test's alone.
    fn copy_fixture(path: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture(path)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
        tmp
    }

    /// Resident bytes of every mapping of a file under `dir` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn mapped_rss_bytes(dir: &Path) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let dir = dir.to_string_lossy();
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                // A mapping's header line: `start-end perms offset dev inode [path]`.
                ours = line.contains(dir.as_ref());
            } else if ours && let Some(rest) = line.strip_prefix("Rss:") {
                kib += rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .unwrap();
            }
        }
        kib * 1024
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn forward_releases_the_weight_pages_it_read() {
        let tmp = copy_fixture("reference/checkpoints/phi3-tiny-random");
        let checkpoint = Checkpoint::open(tmp.path()).unwrap();
        let weight_bytes = checkpoint.total_bytes();
        let reference = Reference::load(&checkpoint).unwrap();
        run(&reference);
        // Every weight was read (8 MiB of embedding and lm_head alone); what stays mapped is the headers and the
        // pages around tensor boundaries, not the tensors.
        let resident = mapped_rss_bytes(tmp.path());
        assert!(
            resident < weight_bytes / 8,
            "{resident} bytes of the checkpoint stay resident after the forward pass ({weight_bytes} bytes of weights)"
        );
    }

    #[test]
    fn a_nan_weight_is_refused_at_load_naming_the_tensor() {
        let tmp = copy_fixture("tiny");
        let (file, offset) = {
            let checkpoint = Checkpoint::open(tmp.path()).unwrap();
            let info = checkpoint.info(Role::MlpDown { layer: 1 }).unwrap();
            let file = checkpoint.shard_paths()[info.shard].to_path_buf();
            (file, info.file_offset + 2 * 5)
        };
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[offset..offset + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
        std::fs::write(&file, bytes).unwrap();
        let checkpoint = Checkpoint::open(tmp.path()).unwrap();
        let err = Reference::load(&checkpoint)
            .err()
            .expect("NaN refused")
            .to_string();
        assert!(
            err.contains("model.layers.1.mlp.down_proj.weight"),
            "error names the tensor: {err}"
        );
    }
}
