//! The normalizer, pre-tokenizer and Metaspace of tokenizer.json → `RegexNormalization` / `RegexSplit` steps
//! (openvino-tokenizers 2026.4.1 `python/openvino_tokenizers/hf_parser.py`: `normalizers_map`,
//! `pre_tokenization_map`, `parse_metaspace`).

use std::path::Path;

use serde_json::Value;

use super::{
    BYTE_LEVEL_DIGITS_PATTERN, BYTE_LEVEL_PATTERN, SplitToken, quote_meta, replace_step,
    replacement, unsupported,
};
use crate::TokenizerError;

/// (pattern, replacement) of each normalizer step.
pub(super) fn normalizations(
    p: &Path,
    tj: &Value,
) -> Result<Vec<(String, String)>, TokenizerError> {
    // Normalizer: none (byte-level), or Prepend / Replace(String) steps as Phi-3-mini's
    // `Sequence[Prepend("▁"), Replace(" " → "▁")]` (hf_parser.py `normalizers_map`).
    let mut normalizations: Vec<(String, String)> = Vec::new();
    let norm = tj.get("normalizer").cloned().unwrap_or(Value::Null);
    let norm_steps: Vec<Value> = match norm["type"].as_str() {
        None => vec![],
        Some("Sequence") => norm["normalizers"].as_array().cloned().unwrap_or_default(),
        Some(_) => vec![norm.clone()],
    };
    for n in &norm_steps {
        match n["type"].as_str() {
            // RegexNormalizationStep.prepend_regex; HF Prepend leaves an empty string empty, as does the regex.
            Some("Prepend") => {
                let what = n["prepend"].as_str().unwrap_or_default();
                normalizations.push((
                    r"(?:^)([\s\S])".into(),
                    format!("{}$1", replacement(p, what)?),
                ));
            }
            Some("Replace") => normalizations.push(replace_step(p, n, "normalizer")?),
            other => {
                return Err(unsupported(
                    p,
                    format!("normalizer of type {}", other.unwrap_or("?")),
                ));
            }
        }
    }
    Ok(normalizations)
}

/// Metaspace's (replacement, prepend_scheme).
pub(super) type Metaspace = (String, String);

/// The `RegexSplit` pattern (byte-level BPE) and the Metaspace (replacement, prepend_scheme), at most one of them.
pub(super) fn pre_tokenizer(
    p: &Path,
    tj: &Value,
) -> Result<(Option<&'static str>, Option<Metaspace>), TokenizerError> {
    // Pre-tokenizer: ByteLevel, Sequence[Digits(individual_digits), ByteLevel], Metaspace(split=false) or none.
    let byte_level_ok = |b: &Value| -> Result<(), TokenizerError> {
        if b["add_prefix_space"].as_bool().unwrap_or(false) {
            return Err(unsupported(
                p,
                "ByteLevel pre-tokenizer with add_prefix_space=true",
            ));
        }
        if !b.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
            return Err(unsupported(
                p,
                "ByteLevel pre-tokenizer with use_regex=false",
            ));
        }
        Ok(())
    };
    let pre = tj.get("pre_tokenizer").cloned().unwrap_or(Value::Null);
    let mut metaspace: Option<(String, String)> = None; // (replacement, prepend_scheme)
    let split_pattern = match pre["type"].as_str() {
        Some("ByteLevel") => {
            byte_level_ok(&pre)?;
            Some(BYTE_LEVEL_PATTERN)
        }
        Some("Sequence") => {
            let steps = pre["pretokenizers"].as_array().cloned().unwrap_or_default();
            let types: Vec<&str> = steps
                .iter()
                .map(|s| s["type"].as_str().unwrap_or("?"))
                .collect();
            if types == ["Digits", "ByteLevel"]
                && steps[0]["individual_digits"].as_bool() == Some(true)
            {
                byte_level_ok(&steps[1])?;
                Some(BYTE_LEVEL_DIGITS_PATTERN)
            } else {
                return Err(unsupported(
                    p,
                    format!(
                        "pre-tokenizer Sequence[{}] (supported: ByteLevel, Sequence[Digits(individual_digits), \
                         ByteLevel], Metaspace)",
                        types.join(", ")
                    ),
                ));
            }
        }
        Some("Metaspace") => {
            if pre["split"].as_bool().unwrap_or(true) {
                return Err(unsupported(p, "Metaspace pre-tokenizer with split=true"));
            }
            // The pre-0.19 form (`add_prefix_space`) is converted differently from HF by openvino-tokenizers.
            let Some(scheme) = pre["prepend_scheme"].as_str() else {
                return Err(unsupported(
                    p,
                    "Metaspace pre-tokenizer without prepend_scheme (the old add_prefix_space form)",
                ));
            };
            let rep = pre["replacement"].as_str().unwrap_or("▁").to_string();
            if rep.chars().count() != 1 {
                return Err(unsupported(
                    p,
                    format!("Metaspace replacement {rep:?} (one char expected)"),
                ));
            }
            metaspace = Some((rep, scheme.to_string()));
            None
        }
        Some(t) => return Err(unsupported(p, format!("pre-tokenizer of type {t}"))),
        None => None,
    };
    Ok((split_pattern, metaspace))
}

/// Metaspace's steps appended to `normalizations`; the `prepend_scheme: "first"` step, applied before the special
/// tokens are split off, returned.
pub(super) fn metaspace_steps(
    p: &Path,
    metaspace: &Option<Metaspace>,
    split_tokens: &[SplitToken],
    normalizations: &mut Vec<(String, String)>,
) -> Result<Option<(String, String)>, TokenizerError> {
    // Metaspace (hf_parser.py `parse_metaspace`): spaces become the replacement in every segment; `always`
    // prepends it to each segment that does not start with it, `first` only to the start of the input when no
    // special token starts there.
    let mut prepend_first = None;
    if let Some((rep, scheme)) = &metaspace {
        let r = replacement(p, rep)?;
        normalizations.push((" ".into(), r.clone()));
        match scheme.as_str() {
            "never" => {}
            "always" => {
                normalizations.push((format!("(^)([^{}])", quote_meta(rep)), format!("{r}$2")))
            }
            "first" => {
                if split_tokens.iter().any(|t| t.strip_left) {
                    return Err(unsupported(
                        p,
                        "Metaspace prepend_scheme=first with an lstrip added token",
                    ));
                }
                // `update_metaspace_step_with_special_tokens`, plus the replacement itself in the look-ahead: HF
                // prepends only when the text, spaces replaced, does not already start with it (openvino-tokenizers
                // 2026.4.1 leaves it out and tokenizes a leading "▁" differently from HF).
                let specials: Vec<String> =
                    split_tokens.iter().map(|t| quote_meta(&t.text)).collect();
                prepend_first = Some((
                    format!(
                        r"(^)((?!{}| |{}|$)|(?=[\r\n\t\f\v]))",
                        specials.join("|"),
                        quote_meta(rep)
                    ),
                    format!("{r}$2"),
                ));
            }
            other => {
                return Err(unsupported(p, format!("Metaspace prepend_scheme={other}")));
            }
        }
    }
    Ok(prepend_first)
}
