//! The BPE model and the added tokens of tokenizer.json → the vocab, merges and special tokens of `BPETokenizer`
//! and `VocabDecoder` (openvino-tokenizers 2026.4.1 `python/openvino_tokenizers/tokenizer_pipeline.py`:
//! `BPETokenizationStep.finalize`, `VocabDecoderStep`).

use std::path::Path;

use serde_json::Value;

use super::{Added, SplitToken, is_null, unicode_token_to_bytes, unsupported};
use crate::TokenizerError;
use crate::bytes::bytes_to_chars;

/// Refuse BPE options `BPETokenizer` does not have; `byte_fallback`.
pub(super) fn check_model(
    p: &Path,
    model: &Value,
    byte_level: bool,
) -> Result<bool, TokenizerError> {
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
    Ok(byte_fallback)
}

/// A token's bytes: byte-level tokens decoded from their byte-to-char form, SentencePiece-style ones as UTF-8.
pub(super) fn token_bytes(byte_level: bool, t: &str, keep_corrupted: bool) -> Vec<u8> {
    if byte_level {
        unicode_token_to_bytes(t, keep_corrupted)
    } else {
        t.as_bytes().to_vec()
    }
}

/// The left and right halves of every merge, as bytes.
type Merges = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// [`Merges`] of the model.
pub(super) fn merges(p: &Path, model: &Value, byte_level: bool) -> Result<Merges, TokenizerError> {
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
        merges_left.push(token_bytes(byte_level, &a, false));
        merges_right.push(token_bytes(byte_level, &b, false));
    }
    Ok((merges_left, merges_right))
}

/// `added_tokens`, in file order.
pub(super) fn added_tokens(p: &Path, tj: &Value) -> Result<Vec<Added>, TokenizerError> {
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
    Ok(added)
}

/// (vocab for `BPETokenizer`, vocab for `VocabDecoder`).
pub(super) fn vocabs(
    vocab_list: &[String],
    added: &[Added],
    by_id: &[&Added],
    byte_level: bool,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    // BPETokenizationStep.finalize: byte-level vocab, added tokens placed at their ids.
    let mut vocab: Vec<Vec<u8>> = vocab_list
        .iter()
        .map(|t| token_bytes(byte_level, t, false))
        .collect();
    for a in added {
        let idx = a.id as usize;
        if vocab.len() <= idx {
            vocab.resize(idx + 1, Vec::new());
        }
        vocab[idx] = token_bytes(byte_level, &a.content, true);
    }
    // VocabDecoderStep.from_hf_json / add_special_tokens_to_vocab (added_tokens_decoder is ordered by id); a
    // SentencePiece-style vocab is decoded with the tokenizer's own vocab.
    let detok_vocab = if byte_level {
        let mut v: Vec<Vec<u8>> = vocab_list
            .iter()
            .map(|t| unicode_token_to_bytes(t, true))
            .collect();
        for a in by_id {
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
    (vocab, detok_vocab)
}

/// (ids skipped when decoding, tokens split off before tokenizing), from the added tokens ordered by id.
pub(super) fn special_tokens(
    p: &Path,
    by_id: &[&Added],
    byte_level: bool,
) -> Result<(Vec<i32>, Vec<SplitToken>), TokenizerError> {
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
    Ok((skip_tokens, split_tokens))
}

/// Added tokens as `BytesToChars` would map them, with their ids.
pub(super) fn added_chars(added: &[Added], byte_level: bool) -> Vec<(Vec<u8>, i32)> {
    added
        .iter()
        .map(|a| {
            let text = if byte_level {
                bytes_to_chars(a.content.as_bytes())
            } else {
                a.content.as_bytes().to_vec()
            };
            (text, a.id as i32)
        })
        .collect()
}
