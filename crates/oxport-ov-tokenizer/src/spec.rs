//! tokenizer.json + tokenizer_config.json → the constants and attributes of the openvino-tokenizers pipeline.
//!
//! Every rule here follows openvino-tokenizers 2026.4.1 (`python/openvino_tokenizers/hf_parser.py`,
//! `tokenizer_pipeline.py`, `utils.py`); anything those files would convert differently from HF `tokenizers`, or
//! that we do not build, is refused with [`TokenizerError::Unsupported`] naming the construct.

use std::path::Path;

use serde_json::Value;

use super::TokenizerError;
use super::bytes::unicode_to_bytes;

mod model;
mod post;
mod pre;

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
        let mut normalizations = pre::normalizations(p, tj)?;
        let (split_pattern, metaspace) = pre::pre_tokenizer(p, tj)?;
        let byte_level = split_pattern.is_some();
        if byte_level && !normalizations.is_empty() {
            return Err(unsupported(
                p,
                "a normalizer together with a ByteLevel pre-tokenizer",
            ));
        }

        // Model: BPE without subword prefixes/suffixes or dropout; byte fallback only with a SentencePiece-style vocab.
        let model = &tj["model"];
        let byte_fallback = model::check_model(p, model, byte_level)?;
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
        let (merges_left, merges_right) = model::merges(p, model, byte_level)?;
        let added = model::added_tokens(p, tj)?;
        let mut by_id: Vec<&Added> = added.iter().collect();
        by_id.sort_by_key(|a| a.id);

        let (vocab, detok_vocab) = model::vocabs(&vocab_list, &added, &by_id, byte_level);
        let (skip_tokens, split_tokens) = model::special_tokens(p, &by_id, byte_level)?;
        let prepend_first =
            pre::metaspace_steps(p, &metaspace, &split_tokens, &mut normalizations)?;
        let decode_steps = decode_steps(p, tj.get("decoder").unwrap_or(&Value::Null), byte_level)?;

        let token_id = |text: &str| -> Option<i64> {
            added
                .iter()
                .find(|a| a.content == text)
                .map(|a| a.id)
                .or_else(|| vocab_map.get(text).and_then(Value::as_i64))
        };

        let (template, original_post_processor) = post::template_of(p, tj)?;
        let (inputs, processed_post_processor) = post::template_inputs(p, &template, &token_id)?;
        let (segments, segment_ids) = post::segments(&inputs);
        let added_by_template = inputs.iter().filter(|(id, _)| id.is_some()).count() as i64;
        let max_length = post::max_length(p, tj, tc, added_by_template)?;
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

        let added_chars = model::added_chars(&added, byte_level);
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
