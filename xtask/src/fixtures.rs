//! `cargo xtask fixtures`: deterministic tiny Phi-3 checkpoints under `fixtures/<name>/`, and
//! `cargo xtask fixtures --full-size DIR`: a random checkpoint with the exact Phi-3-mini-4k shapes, streamed to disk.
//!
//! Every checkpoint has the layout of the 2024 Hugging Face release (microsoft/Phi-3-mini-4k-instruct):
//! `model-00001-of-00002.safetensors` + `model-00002-of-00002.safetensors` split on a layer boundary,
//! `model.safetensors.index.json`, legacy `config.json` (`rope_theta`/`rope_scaling` at top level, `torch_dtype`),
//! `generation_config.json`, and the tokenizer files with the Phi-3 special tokens and chat template.
//!
//! Values: linear and embedding weights N(0, 0.02), RMSNorm gammas 1 + 0.1·N(0, 1), stored as bf16 (round to
//! nearest even). Each tensor is generated in fixed-size chunks, chunk `i` of tensor `t` from its own ChaCha8 stream,
//! so the bytes do not depend on the number of threads and a 7.6 GB checkpoint never has to be held in memory.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use half::bf16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde_json::{Value, json};

/// Elements generated from one RNG stream; part of the byte-exact definition of the fixtures.
const CHUNK_ELEMS: usize = 1 << 20;
/// Vocabulary of the tiny fixtures: with hidden 320 and an untied lm_head, 1024 keeps every fixture under 5 MB.
const TINY_VOCAB: usize = 1024;
/// The Phi-3 special tokens, renumbered to the top of the vocabulary as in the release (32000..).
const PHI3_SPECIALS: [&str; 5] = [
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
];
const REFERENCE_TOKENIZER_DIR: &str = "fixtures/reference/checkpoints/phi3-tiny-random";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Instead of the tiny fixtures, stream a random checkpoint with the Phi-3-mini-4k shapes
    /// (3.8 B parameters, 7.6 GB bf16) into DIR.
    #[arg(long, value_name = "DIR")]
    full_size: Option<PathBuf>,
    /// Write the tiny fixtures here instead of `<repo>/fixtures`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The hyper-parameters of one generated checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub seed: u64,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub num_hidden_layers: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub original_max_position_embeddings: usize,
    pub sliding_window: usize,
    pub longrope: bool,
    /// `partial_rotary_factor` (written to config.json only when it is not 1.0, as in Phi-4-mini's config).
    pub partial_rotary_factor: f64,
    /// `tie_word_embeddings`: no `lm_head.weight` in the checkpoint (Phi-4-mini).
    pub tied: bool,
    /// Write tokenizer files cut from the reference tokenizer (the full-size checkpoint has none).
    pub tokenizer: bool,
}

impl Spec {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }
}

/// The committed tiny fixtures.
pub(crate) fn tiny_specs() -> Vec<Spec> {
    let tiny = Spec {
        name: "tiny",
        seed: 0x0c5_0001,
        hidden_size: 256,
        intermediate_size: 512,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        num_hidden_layers: 2,
        vocab_size: TINY_VOCAB,
        max_position_embeddings: 4096,
        original_max_position_embeddings: 4096,
        sliding_window: 2047,
        longrope: false,
        partial_rotary_factor: 1.0,
        tied: false,
        tokenizer: true,
    };
    vec![
        tiny.clone(),
        Spec {
            name: "tiny-gqa",
            seed: 0x0c5_0002,
            num_key_value_heads: 2,
            ..tiny.clone()
        },
        Spec {
            name: "tiny-longrope",
            seed: 0x0c5_0003,
            max_position_embeddings: 256,
            original_max_position_embeddings: 64,
            sliding_window: 256,
            longrope: true,
            ..tiny.clone()
        },
        // K = 320 is not a multiple of 128 (qkv, o_proj, gate_up, lm_head); down_proj's K = 384 is.
        Spec {
            name: "tiny-odd",
            seed: 0x0c5_0004,
            hidden_size: 320,
            intermediate_size: 384,
            num_attention_heads: 5,
            num_key_value_heads: 5,
            ..tiny.clone()
        },
        // Phi-4-mini's layout (microsoft/Phi-4-mini-instruct config.json): GQA, partial rotary 0.75, tied
        // embeddings, LongRoPE. head_dim 64 gives a rotary dim of 48 and a cos/sin cache width of 24, a multiple of 8
        // as ONNX Runtime's GroupQueryAttention needs. Intermediate 384: the genai builder 0.18.0 takes any Linear
        // with `out_features == vocab_size` for the LM head (`builders/base.py::has_lm_head`), so gate_up_proj
        // must not have 1024 rows (it has in the other tiny fixtures, whose builder graphs are therefore wrong).
        Spec {
            name: "tiny-phi4",
            seed: 0x0c5_0005,
            intermediate_size: 384,
            num_key_value_heads: 2,
            max_position_embeddings: 256,
            original_max_position_embeddings: 64,
            sliding_window: 256,
            longrope: true,
            partial_rotary_factor: 0.75,
            tied: true,
            ..tiny
        },
    ]
}

/// microsoft/Phi-3-mini-4k-instruct's shapes (its config.json, 2024 release).
pub(crate) fn full_size_spec() -> Spec {
    Spec {
        name: "phi3-mini-4k-random",
        seed: 0x0c5_3800,
        hidden_size: 3072,
        intermediate_size: 8192,
        num_attention_heads: 32,
        num_key_value_heads: 32,
        num_hidden_layers: 32,
        vocab_size: 32064,
        max_position_embeddings: 4096,
        original_max_position_embeddings: 4096,
        sliding_window: 2047,
        longrope: false,
        partial_rotary_factor: 1.0,
        tied: false,
        tokenizer: false,
    }
}

pub(crate) fn run(args: Args, repo_root: &Path) -> Result<()> {
    if let Some(dir) = args.full_size {
        let start = std::time::Instant::now();
        let bytes = write_checkpoint(&full_size_spec(), &dir, repo_root)?;
        eprintln!(
            "xtask: wrote {} ({:.2} GB) in {:.1} s",
            dir.display(),
            bytes as f64 / 1e9,
            start.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let out = args.out.unwrap_or_else(|| repo_root.join("fixtures"));
    for spec in tiny_specs() {
        let dir = out.join(spec.name);
        let bytes = write_checkpoint(&spec, &dir, repo_root)?;
        eprintln!("xtask: wrote {} ({bytes} bytes of weights)", dir.display());
    }
    Ok(())
}

/// One tensor of the checkpoint, in the order of the release's shards.
struct TensorSpec {
    name: String,
    shape: Vec<usize>,
    norm: bool,
}

impl TensorSpec {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn tensor_specs(s: &Spec) -> Vec<TensorSpec> {
    let (h, kv) = (s.hidden_size, s.num_key_value_heads * s.head_dim());
    let t = |name: String, shape: Vec<usize>, norm: bool| TensorSpec { name, shape, norm };
    let mut out = vec![t(
        "model.embed_tokens.weight".into(),
        vec![s.vocab_size, h],
        false,
    )];
    for l in 0..s.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.extend([
            t(format!("{p}.input_layernorm.weight"), vec![h], true),
            t(
                format!("{p}.self_attn.qkv_proj.weight"),
                vec![h + 2 * kv, h],
                false,
            ),
            t(format!("{p}.self_attn.o_proj.weight"), vec![h, h], false),
            t(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                true,
            ),
            t(
                format!("{p}.mlp.gate_up_proj.weight"),
                vec![2 * s.intermediate_size, h],
                false,
            ),
            t(
                format!("{p}.mlp.down_proj.weight"),
                vec![h, s.intermediate_size],
                false,
            ),
        ]);
    }
    out.push(t("model.norm.weight".into(), vec![h], true));
    if !s.tied {
        out.push(t("lm_head.weight".into(), vec![s.vocab_size, h], false));
    }
    out
}

/// Shard 1: embedding + the first half of the layers; shard 2: the rest, the final norm and lm_head
/// (the split of microsoft/Phi-3-mini-4k-instruct: on a layer boundary near half the bytes).
fn shard_of(name: &str, num_layers: usize) -> usize {
    let layer: Option<usize> = name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse().ok());
    match (name, layer) {
        ("model.embed_tokens.weight", _) => 0,
        (_, Some(l)) if l < num_layers.div_ceil(2) => 0,
        _ => 1,
    }
}

/// Write the whole checkpoint into `dir` (created; existing files overwritten). Returns the weight bytes.
pub(crate) fn write_checkpoint(spec: &Spec, dir: &Path, repo_root: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tensors = tensor_specs(spec);
    let shard_names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut weight_map = serde_json::Map::new();
    let mut total_bytes = 0u64;
    for (shard, shard_name) in shard_names.iter().enumerate() {
        let members: Vec<(usize, &TensorSpec)> = tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| shard_of(&t.name, spec.num_hidden_layers) == shard)
            .collect();
        total_bytes += write_shard(spec, &dir.join(shard_name), &members)?;
    }
    // The index lists tensors sorted by name, as transformers' `save_pretrained` writes it.
    let mut names: Vec<&TensorSpec> = tensors.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for t in names {
        weight_map.insert(
            t.name.clone(),
            json!(shard_names[shard_of(&t.name, spec.num_hidden_layers)]),
        );
    }
    let index = json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)?;
    write_json(&dir.join("config.json"), &config_json(spec))?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(spec),
    )?;
    if spec.tokenizer {
        write_tokenizer(spec, dir, &repo_root.join(REFERENCE_TOKENIZER_DIR))?;
    }
    Ok(total_bytes)
}

/// A safetensors file: u64 LE header length, JSON header (tensors sorted by name, `__metadata__` first, padded
/// with spaces to 8 bytes as the safetensors crate does), then each tensor's bytes in header order.
/// Tensors are generated chunk by chunk and written as they come (peak memory: one batch of chunks).
fn write_shard(spec: &Spec, path: &Path, members: &[(usize, &TensorSpec)]) -> Result<u64> {
    let mut sorted: Vec<(usize, &TensorSpec)> = members.to_vec();
    sorted.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (_, t) in &sorted {
        let bytes = t.numel() * 2;
        header.insert(
            t.name.clone(),
            json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&Value::Object(header))?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');

    let tmp = path.with_extension("safetensors.part");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    // Generate a batch of chunks in parallel, write them in order, repeat.
    let batch_chunks = rayon::current_num_threads().max(1) * 4;
    let mut buf = vec![0u8; batch_chunks * CHUNK_ELEMS * 2];
    for (tensor_idx, t) in &sorted {
        let numel = t.numel();
        let chunks = numel.div_ceil(CHUNK_ELEMS);
        for first in (0..chunks).step_by(batch_chunks) {
            let last = (first + batch_chunks).min(chunks);
            let elems = (last * CHUNK_ELEMS).min(numel) - first * CHUNK_ELEMS;
            let out = &mut buf[..elems * 2];
            out.par_chunks_mut(CHUNK_ELEMS * 2)
                .enumerate()
                .for_each(|(i, bytes)| {
                    fill_chunk(spec.seed, *tensor_idx, first + i, t.norm, bytes);
                });
            w.write_all(out)
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(offset as u64)
}

/// Chunk `chunk` of tensor `tensor_idx`: its own ChaCha8 stream, so chunks can be generated in any order.
fn fill_chunk(seed: u64, tensor_idx: usize, chunk: usize, norm: bool, out: &mut [u8]) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tensor_idx as u64);
    rng.set_stream(chunk as u64);
    let (mean, std) = if norm { (1.0f32, 0.1f32) } else { (0.0, 0.02) };
    for b in out.chunks_exact_mut(2) {
        let z: f32 = StandardNormal.sample(&mut rng);
        b.copy_from_slice(&bf16::from_f32(mean + std * z).to_bits().to_le_bytes());
    }
}

/// `config.json` in the legacy layout of the 2024 release (keys sorted, as transformers writes them).
fn config_json(s: &Spec) -> Value {
    let (endoftext, _, _, _, _) = special_ids(s);
    let rope_scaling = if s.longrope {
        // Phi-3-mini-128k-instruct's shape of `rope_scaling`: `type` plus one factor per rotary frequency.
        let half = s.rotary_dim() / 2;
        let short: Vec<f64> = (0..half)
            .map(|i| round4(1.0 + 0.05 * i as f64 / half as f64))
            .collect();
        let long: Vec<f64> = (0..half)
            .map(|i| round4(1.0 + 15.0 * (i as f64 / half as f64).powi(2)))
            .collect();
        json!({"long_factor": long, "short_factor": short, "type": "longrope"})
    } else {
        Value::Null
    };
    let mut c = json!({
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": endoftext,
        "hidden_act": "silu",
        "hidden_size": s.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate_size,
        "max_position_embeddings": s.max_position_embeddings,
        "model_type": "phi3",
        "num_attention_heads": s.num_attention_heads,
        "num_hidden_layers": s.num_hidden_layers,
        "num_key_value_heads": s.num_key_value_heads,
        "original_max_position_embeddings": s.original_max_position_embeddings,
        "pad_token_id": endoftext,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-5,
        "rope_scaling": rope_scaling,
        "rope_theta": 10000.0,
        "sliding_window": s.sliding_window,
        "tie_word_embeddings": s.tied,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.2",
        "use_cache": true,
        "vocab_size": s.vocab_size,
    });
    if s.partial_rotary_factor != 1.0 {
        c["partial_rotary_factor"] = json!(s.partial_rotary_factor);
    }
    sort_keys(&mut c);
    c
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// `generation_config.json`: eos = `<|endoftext|>`, `<|assistant|>`, `<|end|>` like the release's [32000, 32001, 32007]
/// maps onto the reference tiny checkpoint's renumbered specials.
fn generation_config_json(s: &Spec) -> Value {
    let (endoftext, _, _, assistant, end) = special_ids(s);
    json!({
        "_from_model_config": true,
        "bos_token_id": 1,
        "eos_token_id": [endoftext, assistant, end],
        "pad_token_id": endoftext,
        "transformers_version": "4.40.2",
    })
}

/// Ids of `<|endoftext|>`, `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`. The tiny fixtures' cut tokenizer
/// puts them at the top five ids; the full-size checkpoint uses the release's ids (its tokenizer.json: 32000 for
/// `<|endoftext|>`, 32001 `<|assistant|>`, 32006 `<|system|>`, 32007 `<|end|>`, 32010 `<|user|>`; vocab padded to 32064).
fn special_ids(s: &Spec) -> (usize, usize, usize, usize, usize) {
    if !s.tokenizer && s.vocab_size == 32064 {
        return (32000, 32006, 32010, 32001, 32007);
    }
    let b = s.vocab_size - PHI3_SPECIALS.len();
    (b, b + 1, b + 2, b + 3, b + 4)
}

/// Cut the reference byte-level BPE tokenizer to `vocab_size`: keep `<unk>`, `<s>`, `</s>`, the 256 byte tokens and
/// the first merges (merge `i` produces id `259 + i` in the reference), drop every merge whose parts or result did not
/// survive, and renumber the Phi-3 special tokens to the top five ids.
fn write_tokenizer(s: &Spec, dir: &Path, reference: &Path) -> Result<()> {
    let model_vocab = s.vocab_size - PHI3_SPECIALS.len();
    let mut tok = read_json(&reference.join("tokenizer.json"))?;
    let model = tok
        .get_mut("model")
        .and_then(Value::as_object_mut)
        .context("tokenizer.json: no `model`")?;
    ensure!(
        model.get("type") == Some(&json!("BPE")),
        "reference tokenizer is not BPE"
    );
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .context("tokenizer.json: no vocab")?;
    let mut kept = serde_json::Map::new();
    for (token, id) in vocab {
        if id.as_u64().is_some_and(|id| (id as usize) < model_vocab) {
            kept.insert(token.clone(), id.clone());
        }
    }
    ensure!(
        kept.len() == model_vocab,
        "reference vocab has holes below {model_vocab}"
    );
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .context("tokenizer.json: no merges")?;
    let mut kept_merges = Vec::new();
    for m in merges {
        let (a, b) = match m {
            Value::Array(p) if p.len() == 2 => (p[0].as_str(), p[1].as_str()),
            Value::String(p) => match p.split_once(' ') {
                Some((a, b)) => (Some(a), Some(b)),
                None => (None, None),
            },
            _ => (None, None),
        };
        let (Some(a), Some(b)) = (a, b) else {
            bail!("tokenizer.json: malformed merge {m}")
        };
        if kept.contains_key(a) && kept.contains_key(b) && kept.contains_key(&format!("{a}{b}")) {
            kept_merges.push(m.clone());
        }
    }
    model.insert("vocab".into(), Value::Object(kept));
    model.insert("merges".into(), Value::Array(kept_merges));

    let added = tok
        .get_mut("added_tokens")
        .and_then(Value::as_array_mut)
        .context("tokenizer.json: no added_tokens")?;
    for t in added.iter_mut() {
        let content = t
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(pos) = PHI3_SPECIALS.iter().position(|s| *s == content) {
            t["id"] = json!(model_vocab + pos);
        }
    }
    let found = added
        .iter()
        .filter(|t| {
            t["id"]
                .as_u64()
                .is_some_and(|id| id as usize >= model_vocab)
        })
        .count();
    ensure!(
        found == PHI3_SPECIALS.len(),
        "reference tokenizer lacks some Phi-3 special tokens"
    );
    write_json(&dir.join("tokenizer.json"), &tok)?;

    let mut cfg = read_json(&reference.join("tokenizer_config.json"))?;
    let decoder = cfg
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
        .context("tokenizer_config.json: no added_tokens_decoder")?;
    let mut renumbered = serde_json::Map::new();
    for (id, entry) in decoder {
        let content = entry
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = match PHI3_SPECIALS.iter().position(|s| *s == content) {
            Some(pos) => (model_vocab + pos).to_string(),
            None => id.clone(),
        };
        renumbered.insert(id, entry.clone());
    }
    cfg["added_tokens_decoder"] = Value::Object(renumbered);
    cfg["model_max_length"] = json!(s.max_position_embeddings);
    write_json(&dir.join("tokenizer_config.json"), &cfg)?;
    let map = read_json(&reference.join("special_tokens_map.json"))?;
    write_json(&dir.join("special_tokens_map.json"), &map)?;
    Ok(())
}

fn sort_keys(v: &mut Value) {
    if let Value::Object(o) = v {
        let mut entries: Vec<(String, Value)> = std::mem::take(o).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        o.extend(entries);
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Pretty JSON with a trailing newline, written to a temp file and renamed into place.
fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    let tmp = path.with_extension("json.part");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// The committed fixtures are exactly what the generator writes: regenerating reproduces every byte.
    #[test]
    fn regenerating_reproduces_the_committed_fixtures() {
        let root = repo_root();
        let tmp = tempfile::tempdir().unwrap();
        for spec in tiny_specs() {
            let dir = tmp.path().join(spec.name);
            write_checkpoint(&spec, &dir, &root).unwrap();
            let committed = root.join("fixtures").join(spec.name);
            let mut generated: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            generated.sort();
            let mut on_disk: Vec<_> = std::fs::read_dir(&committed)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            on_disk.sort();
            assert_eq!(generated, on_disk, "{}: file list differs", spec.name);
            let mut total = 0;
            for name in generated {
                let a = std::fs::read(dir.join(&name)).unwrap();
                let b = std::fs::read(committed.join(&name)).unwrap();
                total += b.len();
                assert!(
                    a == b,
                    "{}/{}: regenerated bytes differ from the committed file",
                    spec.name,
                    name.display()
                );
            }
            assert!(
                total < 5_000_000,
                "{}: {total} bytes, over the 5 MB budget",
                spec.name
            );
        }
    }

    #[test]
    fn chunks_do_not_depend_on_the_batching() {
        let mut a = vec![0u8; 2 * CHUNK_ELEMS];
        fill_chunk(7, 3, 5, false, &mut a);
        let mut b = vec![0u8; 2 * CHUNK_ELEMS];
        fill_chunk(7, 3, 5, false, &mut b);
        assert_eq!(a, b);
        fill_chunk(7, 3, 6, false, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn full_size_matches_phi3_mini_4k() {
        let s = full_size_spec();
        let params: usize = tensor_specs(&s).iter().map(TensorSpec::numel).sum();
        // Phi-3-mini-4k-instruct: 3,821,079,552 parameters (index total_size 7,642,159,104 bytes in bf16).
        assert_eq!(params, 3_821_079_552);
    }
}
