//! The post-processor of tokenizer.json → `CombineSegments` and the truncation length (openvino-tokenizers 2026.4.1
//! `python/openvino_tokenizers/tokenizer_pipeline.py` `CombineSegmentsStep.from_hf_json_template_postprocessor`,
//! `utils.py` `parse_template_processing`, `hf_parser.py` `add_truncation` / `add_padding`).

use std::path::Path;

use serde_json::Value;

use super::{Segment, is_null, py_json, unsupported};
use crate::TokenizerError;

/// (the TemplateProcessing, if any; the post-processor as Python's `json.dumps` writes it, for rt_info).
pub(super) fn template_of(
    p: &Path,
    tj: &Value,
) -> Result<(Option<Value>, Option<String>), TokenizerError> {
    // Post-processor → CombineSegments (CombineSegmentsStep.from_hf_json_template_postprocessor).
    let pp = tj.get("post_processor").cloned().unwrap_or(Value::Null);
    let (template, original_post_processor) = match pp["type"].as_str() {
        None => (None, None),
        Some("ByteLevel") => (None, Some(py_json(&pp))),
        Some("TemplateProcessing") => (Some(pp.clone()), Some(py_json(&pp))),
        Some("Sequence") => {
            let procs = pp["processors"].as_array().cloned().unwrap_or_default();
            let mut tmpl = None;
            for q in &procs {
                match q["type"].as_str() {
                    Some("ByteLevel") => {}
                    Some("TemplateProcessing") if tmpl.is_none() => tmpl = Some(q.clone()),
                    other => {
                        return Err(unsupported(
                            p,
                            format!("post-processor {} inside a Sequence", other.unwrap_or("?")),
                        ));
                    }
                }
            }
            (tmpl, Some(py_json(&pp)))
        }
        Some(t) => return Err(unsupported(p, format!("post-processor of type {t}"))),
    };
    Ok((template, original_post_processor))
}

/// A template input: (special token id, or `None` for the sequence; type id).
pub(super) type Input = (Option<i32>, i32);

/// The template's inputs in order, (special token id or `None` for the sequence, type id), and the processed
/// post-processor rt_info.
pub(super) fn template_inputs(
    p: &Path,
    template: &Option<Value>,
    token_id: &dyn Fn(&str) -> Option<i64>,
) -> Result<(Vec<Input>, String), TokenizerError> {
    let mut inputs: Vec<(Option<i32>, i32)> = Vec::new(); // (special token id or None for the sequence, type id)
    let mut processed_single = (vec![], vec![]);
    let mut processed_pair = (vec![], vec![]);
    match template {
        None => {
            inputs.push((None, 0));
            processed_single = (vec![-1i64], vec![0i64]);
            processed_pair = (vec![-1, -2], vec![0, 0]);
        }
        Some(t) => {
            let specials = t.get("special_tokens");
            let special_id = |name: &str| -> Result<i64, TokenizerError> {
                specials
                    .and_then(|s| s.get(name))
                    .and_then(|s| s["ids"].get(0))
                    .and_then(Value::as_i64)
                    .or_else(|| token_id(name))
                    .ok_or_else(|| {
                        unsupported(p, format!("template special token {name:?} has no id"))
                    })
            };
            for el in t["single"].as_array().cloned().unwrap_or_default() {
                if let Some(s) = el.get("SpecialToken") {
                    let name = s["id"].as_str().unwrap_or_default();
                    inputs.push((
                        Some(special_id(name)? as i32),
                        s["type_id"].as_i64().unwrap_or(0) as i32,
                    ));
                } else if let Some(s) = el.get("Sequence") {
                    if s["id"].as_str() != Some("A") {
                        return Err(unsupported(
                            p,
                            "single template with a sequence other than A",
                        ));
                    }
                    inputs.push((None, s["type_id"].as_i64().unwrap_or(0) as i32));
                } else {
                    return Err(unsupported(p, format!("template element {el}")));
                }
            }
            // utils.py parse_template_processing: special tokens by vocab id, sequences -1, -2.
            for (which, out) in [
                ("single", &mut processed_single),
                ("pair", &mut processed_pair),
            ] {
                let mut seq = -1i64;
                for el in t[which].as_array().cloned().unwrap_or_default() {
                    if let Some(s) = el.get("SpecialToken") {
                        let name = s["id"].as_str().unwrap_or_default();
                        out.0.push(token_id(name).ok_or_else(|| {
                            unsupported(
                                p,
                                format!("template special token {name:?} is not in the vocab"),
                            )
                        })?);
                        out.1.push(s["type_id"].as_i64().unwrap_or(0));
                    } else if let Some(s) = el.get("Sequence") {
                        out.0.push(seq);
                        seq -= 1;
                        out.1.push(s["type_id"].as_i64().unwrap_or(0));
                    }
                }
            }
        }
    }
    let processed_post_processor = py_json(&serde_json::json!({
        "single": {"ids": processed_single.0, "type_ids": processed_single.1},
        "pair": {"ids": processed_pair.0, "type_ids": processed_pair.1},
    }));
    if inputs.iter().filter(|(id, _)| id.is_none()).count() != 1 {
        return Err(unsupported(
            p,
            "post-processor template without exactly one input sequence",
        ));
    }
    Ok((inputs, processed_post_processor))
}

/// `groupby((type, token_id))` as in `CombineSegmentsStep.get_ov_subgraph`: (segments, their type ids).
pub(super) fn segments(inputs: &[Input]) -> (Vec<Segment>, Vec<i32>) {
    let mut segments: Vec<Segment> = Vec::new();
    let mut segment_ids = Vec::new();
    let mut i = 0;
    while i < inputs.len() {
        let (id, type_id) = inputs[i];
        segment_ids.push(type_id);
        match id {
            None => {
                segments.push(Segment::Sequence);
                i += 1;
            }
            Some(id) => {
                let mut ids = vec![id];
                i += 1;
                while i < inputs.len() && inputs[i].0 == Some(id) {
                    ids.push(id);
                    i += 1;
                }
                // segment_ids index advances by the group length; type ids of one group are taken from its
                // first element.
                segments.push(Segment::Tokens(ids));
            }
        }
    }
    (segments, segment_ids)
}

/// The truncation length: `model_max_length` less what the template adds.
pub(super) fn max_length(
    p: &Path,
    tj: &Value,
    tc: &Value,
    added_by_template: i64,
) -> Result<i32, TokenizerError> {
    // Truncation/padding (hf_parser.py add_truncation/add_padding): tokenizer.json's own must be absent.
    if !is_null(tj.get("padding")) {
        return Err(unsupported(p, "tokenizer.json padding section"));
    }
    if !is_null(tj.get("truncation")) {
        return Err(unsupported(p, "tokenizer.json truncation section"));
    }
    let model_max_length: i64 = match tc.get("model_max_length") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(i64::MAX),
        _ => i64::MAX,
    };
    let max_length = (model_max_length.saturating_sub(added_by_template))
        .min(i32::MAX as i64 - added_by_template) as i32;
    Ok(max_length)
}
