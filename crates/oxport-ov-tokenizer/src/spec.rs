//! tokenizer.json + tokenizer_config.json → the constants and attributes of the openvino-tokenizers pipeline.
//!
//! Every rule here follows openvino-tokenizers 2026.4.1 (`python/openvino_tokenizers/hf_parser.py`,
//! `tokenizer_pipeline.py`, `utils.py`); anything those files would convert differently from HF `tokenizers`, or
//! that we do not build, is refused with [`TokenizerError::Unsupported`] naming the construct.

use std::path::Path;

use serde_json::Value;

use super::TokenizerError;
use super::bytes::{bytes_to_chars, unicode_to_bytes};

/// One entry of the `SpecialTokensSplit` alternation (`tokenizer_pipeline.py` `SpecialToken`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SplitToken {
    pub text: String,
    pub strip_left: bool,
    pub strip_right: bool,
}

/// One group of `CombineSegments` inputs (`CombineSegmentsStep.get_ov_subgraph` groups consecutive equal inputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Special tokens added by the post-processor template.
    Tokens(Vec<i32>),
    /// The tokenized input.
    Sequence,
}

/// One detokenizer step after `VocabDecoder` (`hf_parser.py` `decoding_map`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeStep {
    /// `RegexNormalization` on each token (pattern, replacement), or on the fused text after `Fuse`.
    Regex(String, String),
    ByteFallback,
    /// `FuzeRagged`: the tokens of a row become one string.
    Fuse,
}

/// Everything the two graphs need.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Sorted in reverse, as `SpecialTokensSplit.__post_init__` does.
    pub split_tokens: Vec<SplitToken>,
    /// Metaspace `prepend_scheme: "first"`: one `RegexNormalization` (pattern, replacement; not global) on the whole
    /// input before the special tokens are split off (`TokenizerPipeline.update_metaspace_step_with_special_tokens`).
    pub prepend_first: Option<(String, String)>,
    /// `RegexNormalization` steps (pattern, replacement; global) applied to each non-special segment.
    pub normalizations: Vec<(String, String)>,
    /// The `RegexSplit` pattern of the ByteLevel pre-tokenizer; `None` for SentencePiece-style BPE (no split).
    pub split_pattern: Option<String>,
    /// Vocab for BPETokenizer: byte-level tokens as bytes (tokens that are not byte-to-char encoded become empty),
    /// SentencePiece-style tokens as their UTF-8; added tokens at their ids.
    pub vocab: Vec<Vec<u8>>,
    pub merges_left: Vec<Vec<u8>>,
    pub merges_right: Vec<Vec<u8>>,
    /// Added tokens as BytesToChars would map them, with their ids (tokenizer.json order).
    pub added: Vec<(Vec<u8>, i32)>,
    pub unk_token: String,
    pub fuse_unk: bool,
    pub byte_fallback: bool,
    pub cache_capacity: usize,
    pub max_length: i32,
    pub truncate_right: bool,
    pub segments: Vec<Segment>,
    pub segment_ids: Vec<i32>,
    pub pad_id: i32,
    pub pad_right: bool,
    /// Vocab for VocabDecoder (corrupted tokens kept as UTF-8); for SentencePiece-style BPE the tokenizer's vocab.
    pub detok_vocab: Vec<Vec<u8>>,
    /// Steps after VocabDecoder (before UTF8Validate).
    pub decode_steps: Vec<DecodeStep>,
    pub skip_tokens: Vec<i32>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    pub pad_token_id: Option<i64>,
    pub chat_template: Option<String>,
    pub original_post_processor: Option<String>,
    pub processed_post_processor: String,
}

/// The single ByteLevel regex (`RegexSplitStep.byte_level_splitter`).
const BYTE_LEVEL_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Digits(individual_digits) followed by ByteLevel, merged into one regex (hf_parser.py `pre_tokenization`).
const BYTE_LEVEL_DIGITS_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// `TruncationStep.DISABLE_TRUNCATE_MAX_LENGTH`.
pub(crate) const DISABLE_TRUNCATE_MAX_LENGTH: i32 = i32::MAX - 64;
/// constants.py `MIN_CACHE_CAPACITY` / `VOCAB_SIZE_CACHE_PROPORTION`.
const MIN_CACHE_CAPACITY: usize = 20_000;

fn unsupported(path: &Path, construct: impl Into<String>) -> TokenizerError {
    TokenizerError::Unsupported {
        path: path.to_path_buf(),
        construct: construct.into(),
    }
}

fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn is_null(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

/// `utils.py` `apply_unicode_to_bytes`: byte-level chars back to bytes; a token with other chars becomes empty, or its
/// UTF-8 when `keep_corrupted`.
fn unicode_token_to_bytes(token: &str, keep_corrupted: bool) -> Vec<u8> {
    let map = unicode_to_bytes();
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                return if keep_corrupted {
                    token.as_bytes().to_vec()
                } else {
                    Vec::new()
                };
            }
        }
    }
    out
}

/// `TokenizationModelStep.get_vocab_as_list`: tokens at their ids, gaps filled with "".
fn vocab_as_list(
    path: &Path,
    vocab: &serde_json::Map<String, Value>,
) -> Result<Vec<String>, TokenizerError> {
    let mut pairs = Vec::with_capacity(vocab.len());
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            unsupported(path, format!("model.vocab[{token:?}] is not a token id"))
        })?;
        pairs.push((id as usize, token.clone()));
    }
    pairs.sort_by_key(|(id, _)| *id);
    let mut list: Vec<String> = Vec::with_capacity(pairs.len());
    for (id, token) in pairs {
        if list.len() <= id {
            list.resize(id, String::new());
            list.push(token);
        } else {
            list[id] = token;
        }
    }
    Ok(list)
}

/// A `bos_token`-style entry of tokenizer_config.json: a string or `{"content": …}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Python's `json.dumps` with default separators and `ensure_ascii=True`.
pub(crate) fn py_json(v: &Value) -> String {
    fn string(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn go(out: &mut String, v: &Value) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => string(out, s),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    go(out, x);
                }
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    string(out, k);
                    out.push_str(": ");
                    go(out, x);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(&mut out, v);
    out
}

struct Added {
    content: String,
    id: i64,
    special: bool,
    lstrip: bool,
    rstrip: bool,
}

impl Spec {
    /// Read `<dir>/tokenizer.json` and `<dir>/tokenizer_config.json` (and `chat_template.jinja` if present).
    pub(crate) fn from_dir(dir: &Path) -> Result<Spec, TokenizerError> {
        let tj_path = dir.join("tokenizer.json");
        let tc_path = dir.join("tokenizer_config.json");
        let tj = read_json(&tj_path)?;
        let tc = if tc_path.is_file() {
            read_json(&tc_path)?
        } else {
            Value::Object(Default::default())
        };
        let mut chat_template = tc
            .get("chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.is_file() {
            chat_template =
                Some(
                    std::fs::read_to_string(&jinja).map_err(|source| TokenizerError::Io {
                        path: jinja.clone(),
                        source,
                    })?,
                );
        }
        Self::from_json(&tj_path, &tj, &tc, chat_template)
    }

    fn from_json(
        path: &Path,
        tj: &Value,
        tc: &Value,
        chat_template: Option<String>,
    ) -> Result<Spec, TokenizerError> {
        let p = path;
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
        let byte_level = split_pattern.is_some();
        if byte_level && !normalizations.is_empty() {
            return Err(unsupported(
                p,
                "a normalizer together with a ByteLevel pre-tokenizer",
            ));
        }

        // Model: BPE without subword prefixes/suffixes or dropout; byte fallback only with a SentencePiece-style vocab.
        let model = &tj["model"];
        let mtype = model["type"].as_str().unwrap_or("?");
        if mtype != "BPE" {
            return Err(unsupported(p, format!("model of type {mtype}")));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix", "dropout"] {
            if !is_null(model.get(key)) {
                return Err(unsupported(
                    p,
                    format!("BPE model with {key}={}", model[key]),
                ));
            }
        }
        let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
        if byte_fallback && byte_level {
            return Err(unsupported(
                p,
                "BPE model with byte_fallback=true and a ByteLevel pre-tokenizer",
            ));
        }
        // HF takes a word that is in the vocab as one token when ignore_merges is set; the BPETokenizer op has no
        // such switch, so its ids could differ.
        if model["ignore_merges"].as_bool().unwrap_or(false) {
            return Err(unsupported(p, "BPE model with ignore_merges=true"));
        }
        let token_bytes = |t: &str, keep_corrupted: bool| -> Vec<u8> {
            if byte_level {
                unicode_token_to_bytes(t, keep_corrupted)
            } else {
                t.as_bytes().to_vec()
            }
        };
        let vocab_map = model["vocab"]
            .as_object()
            .ok_or_else(|| unsupported(p, "BPE model without a vocab object"))?;
        let vocab_list = vocab_as_list(p, vocab_map)?;
        if byte_fallback {
            // BPETokenizer looks the bytes of an unknown char up as `<0xXX>`, as HF does.
            if let Some(b) = (0..=255u8).find(|b| !vocab_map.contains_key(&format!("<0x{b:02X}>")))
            {
                return Err(unsupported(
                    p,
                    format!("BPE model with byte_fallback=true whose vocab lacks <0x{b:02X}>"),
                ));
            }
        }
        let mut merges_left = Vec::new();
        let mut merges_right = Vec::new();
        for (i, m) in model["merges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let (a, b) = match m {
                Value::String(s) => match s.split_once(' ') {
                    Some((a, b)) if !b.contains(' ') => (a.to_string(), b.to_string()),
                    _ => {
                        return Err(unsupported(
                            p,
                            format!("merge #{i} {s:?} is not two tokens"),
                        ));
                    }
                },
                Value::Array(pair) if pair.len() == 2 => (
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                ),
                other => return Err(unsupported(p, format!("merge #{i} {other}"))),
            };
            merges_left.push(token_bytes(&a, false));
            merges_right.push(token_bytes(&b, false));
        }

        let mut added = Vec::new();
        for t in tj["added_tokens"].as_array().cloned().unwrap_or_default() {
            added.push(Added {
                content: t["content"].as_str().unwrap_or_default().to_string(),
                id: t["id"].as_i64().unwrap_or(-1),
                special: t["special"].as_bool().unwrap_or(false),
                lstrip: t["lstrip"].as_bool().unwrap_or(false),
                rstrip: t["rstrip"].as_bool().unwrap_or(false),
            });
            if t["normalized"].as_bool() == Some(true) && t["special"].as_bool() != Some(true) {
                return Err(unsupported(
                    p,
                    format!("normalized added token {}", t["content"]),
                ));
            }
            if t["single_word"].as_bool() == Some(true) {
                return Err(unsupported(
                    p,
                    format!("single_word added token {}", t["content"]),
                ));
            }
        }
        let mut by_id: Vec<&Added> = added.iter().collect();
        by_id.sort_by_key(|a| a.id);

        // BPETokenizationStep.finalize: byte-level vocab, added tokens placed at their ids.
        let mut vocab: Vec<Vec<u8>> = vocab_list.iter().map(|t| token_bytes(t, false)).collect();
        for a in &added {
            let idx = a.id as usize;
            if vocab.len() <= idx {
                vocab.resize(idx + 1, Vec::new());
            }
            vocab[idx] = token_bytes(&a.content, true);
        }
        // VocabDecoderStep.from_hf_json / add_special_tokens_to_vocab (added_tokens_decoder is ordered by id); a
        // SentencePiece-style vocab is decoded with the tokenizer's own vocab.
        let detok_vocab = if byte_level {
            let mut v: Vec<Vec<u8>> = vocab_list
                .iter()
                .map(|t| unicode_token_to_bytes(t, true))
                .collect();
            for a in &by_id {
                let idx = a.id as usize;
                if v.len() <= idx {
                    v.resize(idx + 1, Vec::new());
                }
                v[idx] = unicode_token_to_bytes(&a.content, true);
            }
            v
        } else {
            vocab.clone()
        };
        let skip_tokens: Vec<i32> = by_id
            .iter()
            .filter(|a| a.special)
            .map(|a| a.id as i32)
            .collect();

        let mut split_tokens: Vec<SplitToken> = by_id
            .iter()
            .map(|a| SplitToken {
                text: a.content.clone(),
                strip_left: a.lstrip,
                strip_right: a.rstrip,
            })
            .collect();
        split_tokens.sort();
        split_tokens.reverse();
        if !byte_level && split_tokens.is_empty() {
            // hf_parser.py hands BPETokenizer the wrong inputs when nothing is split off and nothing pre-tokenizes.
            return Err(unsupported(
                p,
                "a tokenizer without pre-tokenizer and without added tokens",
            ));
        }

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
        let decode_steps = decode_steps(p, tj.get("decoder").unwrap_or(&Value::Null), byte_level)?;

        let token_id = |text: &str| -> Option<i64> {
            added
                .iter()
                .find(|a| a.content == text)
                .map(|a| a.id)
                .or_else(|| vocab_map.get(text).and_then(Value::as_i64))
        };

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
                                format!(
                                    "post-processor {} inside a Sequence",
                                    other.unwrap_or("?")
                                ),
                            ));
                        }
                    }
                }
                (tmpl, Some(py_json(&pp)))
            }
            Some(t) => return Err(unsupported(p, format!("post-processor of type {t}"))),
        };
        let mut inputs: Vec<(Option<i32>, i32)> = Vec::new(); // (special token id or None for the sequence, type id)
        let mut processed_single = (vec![], vec![]);
        let mut processed_pair = (vec![], vec![]);
        match &template {
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
        // groupby((type, token_id)) as in CombineSegmentsStep.get_ov_subgraph.
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
        let added_by_template = inputs.iter().filter(|(id, _)| id.is_some()).count() as i64;

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
        // optimum-intel (`exporters/openvino/convert.py` `maybe_convert_tokenizers`) sets padding_side and
        // truncation_side to "left" on the transformers object for text-generation before converting, whatever
        // tokenizer_config.json says.
        let (pad_right, truncation_side) = (false, "left");

        let bos_token_id = token_text(tc.get("bos_token")).and_then(|t| token_id(&t));
        let eos_token_id = token_text(tc.get("eos_token")).and_then(|t| token_id(&t));
        let pad_token_id = token_text(tc.get("pad_token")).and_then(|t| token_id(&t));
        if tc
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(unsupported(
                &path.with_file_name("tokenizer_config.json"),
                "clean_up_tokenization_spaces=true",
            ));
        }

        let added_chars = added
            .iter()
            .map(|a| {
                let text = if byte_level {
                    bytes_to_chars(a.content.as_bytes())
                } else {
                    a.content.as_bytes().to_vec()
                };
                (text, a.id as i32)
            })
            .collect();
        let cache_capacity = model
            .get("cache_capacity")
            .and_then(Value::as_u64)
            .map(|c| c as usize)
            .unwrap_or(vocab_list.len() / 5)
            .max(MIN_CACHE_CAPACITY);
        Ok(Spec {
            split_tokens,
            prepend_first,
            normalizations,
            split_pattern: split_pattern.map(str::to_string),
            vocab,
            merges_left,
            merges_right,
            added: added_chars,
            unk_token: model["unk_token"].as_str().unwrap_or_default().to_string(),
            fuse_unk: model["fuse_unk"].as_bool().unwrap_or(false),
            byte_fallback,
            cache_capacity,
            max_length,
            truncate_right: truncation_side == "right",
            segments,
            segment_ids,
            pad_id: pad_token_id.unwrap_or(0) as i32,
            pad_right,
            detok_vocab,
            decode_steps,
            skip_tokens,
            bos_token_id,
            eos_token_id,
            pad_token_id,
            chat_template,
            original_post_processor,
            processed_post_processor,
        })
    }
}

/// Regex metacharacters of the PCRE2 patterns RegexNormalization runs.
const REGEX_META: &[char] = &[
    '\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}',
];

/// A literal as a RegexNormalization pattern: as is when it has no metacharacter (what openvino-tokenizers writes,
/// which passes `Replace` strings through unescaped), else escaped so that it still matches literally.
fn literal_pattern(s: &str) -> String {
    if s.contains(REGEX_META) {
        quote_meta(s)
    } else {
        s.to_string()
    }
}

/// A literal as a RegexNormalization replacement; `$` and `\` would be read as group references/escapes.
fn replacement(path: &Path, s: &str) -> Result<String, TokenizerError> {
    if s.contains(['$', '\\']) {
        return Err(unsupported(
            path,
            format!("replacement text {s:?} containing $ or \\"),
        ));
    }
    Ok(s.to_string())
}

/// `Replace` with a `String` pattern (normalizer or decoder) → (pattern, replacement).
fn replace_step(path: &Path, v: &Value, what: &str) -> Result<(String, String), TokenizerError> {
    let Some(pattern) = v["pattern"]["String"].as_str() else {
        return Err(unsupported(
            path,
            format!(
                "{what} Replace with pattern {} (only String patterns are supported)",
                v["pattern"]
            ),
        ));
    };
    if pattern.is_empty() {
        return Err(unsupported(
            path,
            format!("{what} Replace with an empty pattern"),
        ));
    }
    let content = v["content"].as_str().unwrap_or_default();
    Ok((literal_pattern(pattern), replacement(path, content)?))
}

/// The decoder as detokenizer steps (hf_parser.py `decoding`): ByteLevel for a byte-level vocab (CharsToBytes is
/// folded into the vocab, FuseStep takes its place); for a SentencePiece-style vocab none (Fuse) or a Sequence of
/// Replace / ByteFallback / Fuse / Strip(content, 1, 0) with Fuse present, Strip only after it.
fn decode_steps(
    path: &Path,
    dec: &Value,
    byte_level: bool,
) -> Result<Vec<DecodeStep>, TokenizerError> {
    let p = path;
    let dtype = dec["type"].as_str();
    if byte_level {
        return match dtype {
            Some("ByteLevel") => Ok(vec![DecodeStep::Fuse]),
            other => Err(unsupported(
                p,
                format!(
                    "decoder {} with a ByteLevel pre-tokenizer (ByteLevel expected)",
                    other.unwrap_or("none")
                ),
            )),
        };
    }
    let list: Vec<Value> = match dtype {
        None => return Ok(vec![DecodeStep::Fuse]),
        Some("Sequence") => dec["decoders"].as_array().cloned().unwrap_or_default(),
        Some(t) => return Err(unsupported(p, format!("decoder of type {t}"))),
    };
    let mut steps = Vec::new();
    for d in &list {
        let fused = steps.contains(&DecodeStep::Fuse);
        match d["type"].as_str() {
            Some("Replace") if !fused => {
                let (pat, rep) = replace_step(p, d, "decoder")?;
                steps.push(DecodeStep::Regex(pat, rep));
            }
            Some("ByteFallback") if !fused => steps.push(DecodeStep::ByteFallback),
            Some("Fuse") if !fused => steps.push(DecodeStep::Fuse),
            // RegexDecodingStep.parse_strip_dict: `^content` removed once from the fused text.
            Some("Strip") if fused => {
                let content = d["content"].as_str().unwrap_or_default();
                if content.chars().count() != 1
                    || d["start"].as_u64() != Some(1)
                    || d["stop"].as_u64() != Some(0)
                {
                    return Err(unsupported(
                        p,
                        format!("decoder Strip {d} (only one leading char is supported)"),
                    ));
                }
                steps.push(DecodeStep::Regex(
                    format!("^{}", literal_pattern(content)),
                    String::new(),
                ));
            }
            other => {
                return Err(unsupported(
                    p,
                    format!(
                        "decoder {} at this place of the Sequence (supported: Replace, ByteFallback, Fuse, then Strip)",
                        other.unwrap_or("?")
                    ),
                ));
            }
        }
    }
    if !steps.contains(&DecodeStep::Fuse) {
        return Err(unsupported(p, "decoder Sequence without Fuse"));
    }
    Ok(steps)
}

/// `utils.py` `quote_meta`: backslash before every char that is not alphanumeric, `_`, `▁` or `｜`.
pub(crate) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if !c.is_alphanumeric() && !matches!(c, '_' | '▁' | '｜') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `SpecialTokensSplit` pattern (`SpecialTokensSplit.get_ov_subgraph`): tokens grouped by their strip flags in
/// first-seen order.
pub(crate) fn special_split_pattern(tokens: &[SplitToken]) -> String {
    let mut groups: Vec<((bool, bool), Vec<&str>)> = Vec::new();
    for t in tokens {
        let key = (t.strip_left, t.strip_right);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(&t.text),
            None => groups.push((key, vec![&t.text])),
        }
    }
    groups
        .iter()
        .map(|((l, r), toks)| {
            let alt: Vec<String> = toks.iter().map(|t| quote_meta(t)).collect();
            format!(
                "{}({}){}",
                if *l { r"(?:\s*)" } else { "" },
                alt.join("|"),
                if *r { r"(?:\s*)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("|")
}
