//! `tokenizer(text)["input_ids"]` as transformers 5.5 computes it (the version the peers' venv pins,
//! `xtask/src/bench/mod.rs` `PEER_REQUIREMENTS`), from a checkpoint's `tokenizer.json` and `tokenizer_config.json`.
//!
//! transformers 5 loads `tokenizer.json` as it is for `PreTrainedTokenizerFast` and classes without their own
//! `__init__`, but a class with one rebuilds part of the pipeline (`TokenizersBackend.convert_to_native_format` in
//! `huggingface/transformers:src/transformers/tokenization_utils_tokenizers.py`). Phi-3's `LlamaTokenizer`
//! (`src/transformers/models/llama/tokenization_llama.py`) drops the normalizer and pre-tokenizes with
//! `Metaspace("▁", prepend_scheme, split=False)`, where `prepend_scheme` is `first` unless `legacy` is true
//! (`always`) or `add_prefix_space` is false (`never`) (`_get_prepend_scheme` in `tokenization_utils_base.py`).
//! Phi-3's own `tokenizer.json` prepends `▁` with a normalizer instead, which adds one token before a leading
//! space (wikitext's text starts with `" \n"`), so without this rebuild every window would be shifted by one.
//! Other classes with their own `__init__` (e.g. `GPT2Tokenizer`) are not rebuilt here.

use std::path::Path;

use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};

use crate::error::{Error, Result, io, regular_file};

/// The ids of `text` with special tokens added, no truncation and no padding (transformers'
/// `set_truncation_and_padding` turns off any that the file sets).
pub(crate) fn encode(tokenizer_json: &Path, text: &str) -> Result<Vec<u32>> {
    let bad = |msg: String| Error::Tokenizer {
        path: tokenizer_json.to_path_buf(),
        msg,
    };
    regular_file(tokenizer_json)?;
    let mut tokenizer = tokenizers::Tokenizer::from_file(tokenizer_json)
        .map_err(|e| bad(format!("not a tokenizers tokenizer: {e}")))?;
    let config = tokenizer_json.with_file_name("tokenizer_config.json");
    if let Some(scheme) = llama_prepend_scheme(&config)? {
        tokenizer.with_normalizer(None::<NormalizerWrapper>);
        tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
    }
    tokenizer
        .with_truncation(None)
        .map_err(|e| bad(format!("turning truncation off: {e}")))?;
    tokenizer.with_padding(None);
    let encoding = tokenizer
        .encode(text, true)
        .map_err(|e| bad(format!("encoding the calibration text: {e}")))?;
    Ok(encoding.get_ids().to_vec())
}

/// `Some(scheme)` when `tokenizer_config.json` names transformers' `LlamaTokenizer` (or its `…Fast` alias), whose
/// `__init__` replaces the pre-tokenizer; `None` when the file is absent or names another class.
fn llama_prepend_scheme(config: &Path) -> Result<Option<PrependScheme>> {
    if !config.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(config).map_err(io(config))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: config.to_path_buf(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let class = value.get("tokenizer_class").and_then(|c| c.as_str());
    if !matches!(class, Some("LlamaTokenizer" | "LlamaTokenizerFast")) {
        return Ok(None);
    }
    let flag =
        |key: &str, default: bool| value.get(key).and_then(|v| v.as_bool()).unwrap_or(default);
    Ok(Some(
        match (flag("add_prefix_space", true), flag("legacy", false)) {
            (false, _) => PrependScheme::Never,
            (true, true) => PrependScheme::Always,
            (true, false) => PrependScheme::First,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(dir: &str, text: &str) -> Vec<u32> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(dir)
            .join("tokenizer.json");
        encode(&path, text).unwrap()
    }

    /// transformers 5.5.4's `AutoTokenizer.from_pretrained("fixtures/tokenizers/phi3-sp")(text)["input_ids"]`;
    /// the raw `tokenizer.json` gives `[1, 341, 385, …]` for the first (one `▁` token more).
    #[test]
    fn llama_class_pre_tokenizes_as_transformers_5() {
        let dir = "tokenizers/phi3-sp";
        assert_eq!(
            ids(dir, " \n = A = \n"),
            [1, 385, 341, 285, 441, 341, 285, 385]
        );
        assert_eq!(ids(dir, "hi  there"), [1, 482, 323, 341, 955]);
        assert_eq!(ids(dir, "<|user|>\n hi<|end|>"), [1, 1021, 322, 323, 1023]);
        assert_eq!(
            ids(dir, "  two leading"),
            [1, 341, 342, 337, 329, 387, 319, 315, 551]
        );
        assert_eq!(ids(dir, "x"), [1, 341, 338]);
        // Already a Metaspace pipeline: the same ids either way.
        assert_eq!(
            ids("tokenizers/phi3-sp-metaspace", " \n = A = \n"),
            [1, 385, 341, 285, 441, 341, 285, 385]
        );
    }
}
