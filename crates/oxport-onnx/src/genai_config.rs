//! `genai_config.json` as onnxruntime-genai 0.18.0's `Model.make_genai_config` writes it
//! (docs/onnx-genai.md §4; field order as in `fixtures/reference/ort/ort_int4_b128/genai_config.json`).

use std::path::Path;

use oxport_arch::Phi3Config;
use serde_json::{Map, Value, json};

use crate::error::{Result, io};
use crate::options::{ExecutionProvider, ExportOptions};

/// The special-token and search overrides the builder takes from `generation_config.json` when they differ
/// from its defaults (`defaults` dict in `make_genai_config`).
#[derive(Clone, Debug, Default)]
struct Generation {
    bos: Option<u64>,
    eos: Option<Vec<u64>>,
    pad: Option<u64>,
    do_sample: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<u64>,
    top_p: Option<f64>,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(Some(serde_json::from_str(&text)?))
}

fn ids(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| vec![x]),
        Value::Array(a) => a.iter().map(Value::as_u64).collect(),
        _ => None,
    }
}

fn generation(dir: &Path) -> Result<Generation> {
    let Some(g) = read_json(&dir.join("generation_config.json"))? else {
        return Ok(Generation::default());
    };
    Ok(Generation {
        bos: g.get("bos_token_id").and_then(Value::as_u64),
        eos: g.get("eos_token_id").and_then(ids),
        pad: g.get("pad_token_id").and_then(Value::as_u64),
        do_sample: g.get("do_sample").and_then(Value::as_bool).filter(|&b| b),
        temperature: g
            .get("temperature")
            .and_then(Value::as_f64)
            .filter(|&t| t != 1.0),
        top_k: g.get("top_k").and_then(Value::as_u64).filter(|&k| k != 50),
        top_p: g.get("top_p").and_then(Value::as_f64).filter(|&p| p != 1.0),
    })
}

/// The tokenizer's `eos_token` id (`resolve_special_token_ids`: a chat model's end-of-turn token is added to
/// the EOS list when config.json lacks it).
fn tokenizer_eos(dir: &Path) -> Result<Option<u64>> {
    let Some(t) = read_json(&dir.join("tokenizer_config.json"))? else {
        return Ok(None);
    };
    let content = match t.get("eos_token") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let Some(Value::Object(decoder)) = t.get("added_tokens_decoder") else {
        return Ok(None);
    };
    Ok(decoder
        .iter()
        .find(|(_, v)| v.get("content").and_then(Value::as_str) == Some(content.as_str()))
        .and_then(|(id, _)| id.parse().ok()))
}

/// Build genai_config.json for the checkpoint in `dir`.
pub fn genai_config(
    c: &Phi3Config,
    dir: &Path,
    opts: &ExportOptions,
    filename: &str,
) -> Result<Value> {
    let g = generation(dir)?;
    let bos = g.bos.or(c.bos_token_id.map(u64::from)).unwrap_or(1);
    let config_eos: Vec<u64> = c.eos_token_ids.iter().map(|&x| u64::from(x)).collect();
    let mut eos = g.eos.clone().unwrap_or(config_eos);
    if let Some(turn_end) = tokenizer_eos(dir)?
        && !eos.contains(&turn_end)
    {
        eos.insert(0, turn_end);
    }
    let pad = g
        .pad
        .or(c.pad_token_id.map(u64::from))
        .or(eos.first().copied())
        .unwrap_or(0);
    let eos_value = if eos.len() == 1 {
        json!(eos[0])
    } else {
        json!(eos)
    };

    // `Model.ep_attrs` in builders/base.py: DML graph capture is on by default (`enable_dml_graph`), WebGPU's off.
    let provider_options = match opts.execution_provider {
        ExecutionProvider::Cpu => json!([]),
        ExecutionProvider::Cuda => json!([{"cuda": {"enable_cuda_graph": "0"}}]),
        ExecutionProvider::Dml => json!([{"dml": {"enable_graph_capture": "1"}}]),
        ExecutionProvider::WebGpu => {
            json!([{"webgpu": {"enableGraphCapture": "0", "validationMode": "basic"}}])
        }
    };
    let mut inputs = Map::new();
    inputs.insert("input_ids".into(), json!("input_ids"));
    inputs.insert("attention_mask".into(), json!("attention_mask"));
    if !opts.execution_provider.fused_rope() {
        inputs.insert("position_ids".into(), json!("position_ids"));
    }
    inputs.insert("past_key_names".into(), json!("past_key_values.%d.key"));
    inputs.insert("past_value_names".into(), json!("past_key_values.%d.value"));
    let mut decoder = json!({
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": provider_options},
        "filename": filename,
        "head_size": c.head_dim(),
        "hidden_size": c.hidden_size,
        "inputs": inputs,
        "outputs": {
            "logits": "logits",
            "present_key_names": "present.%d.key",
            "present_value_names": "present.%d.value"
        },
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
    });
    // Windowed KV cache on cpu/cuda; `layers` lists HF "sliding_attention" layers, which Phi-3 has none of.
    if let Some(window) = c
        .sliding_window
        .filter(|&w| w > 0 && opts.execution_provider.windowed_kv())
    {
        decoder.as_object_mut().expect("object").insert(
            "sliding_window".into(),
            json!({"window_size": window, "slide_key_value_cache": false, "slide_inputs": false,
                   "layers": [], "cache_slack": 0}),
        );
    }
    let model_type = c
        .architecture
        .split("For")
        .next()
        .unwrap_or(&c.architecture)
        .to_lowercase();
    let mut model = Map::new();
    model.insert("bos_token_id".into(), json!(bos));
    model.insert("context_length".into(), json!(c.max_position_embeddings));
    model.insert("decoder".into(), decoder);
    model.insert("eos_token_id".into(), eos_value);
    model.insert("pad_token_id".into(), json!(pad));
    model.insert("type".into(), json!(model_type));
    model.insert("vocab_size".into(), json!(c.vocab_size));
    Ok(json!({
        "model": model,
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": g.do_sample.unwrap_or(false),
            "early_stopping": true,
            "length_penalty": 1.0,
            "max_length": c.max_position_embeddings,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            // GroupQueryAttention shares the past/present buffer (`past_present_share_buffer`).
            "past_present_share_buffer": true,
            "repetition_penalty": 1.0,
            "temperature": g.temperature.unwrap_or(1.0),
            "top_k": g.top_k.unwrap_or(50),
            "top_p": g.top_p.unwrap_or(1.0)
        }
    }))
}

/// Serialize like Python's `json.dump(indent=4)`.
pub(crate) fn to_pretty_json(v: &Value) -> Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser)?;
    Ok(String::from_utf8(buf).expect("serde_json writes UTF-8"))
}
