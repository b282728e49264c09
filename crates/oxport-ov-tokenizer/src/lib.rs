//! oxport-ov-tokenizer: OpenVINO tokenizer / detokenizer IR, written natively the way openvino-tokenizers 2026.4.1
//! converts a BPE `tokenizer.json` (`python/openvino_tokenizers/hf_parser.py` in openvinotoolkit/openvino_tokenizers):
//! `openvino_tokenizer.xml` (string → `input_ids`, `attention_mask`) and `openvino_detokenizer.xml` (ids → string,
//! special tokens skipped).
//!
//! Supported: BPE models with a ByteLevel pre-tokenizer (or `Sequence[Digits(individual_digits), ByteLevel]`), no
//! normalizer, a ByteLevel decoder, and a TemplateProcessing / ByteLevel post-processor. Anything else fails with
//! [`TokenizerError::Unsupported`] naming the construct, so that no tokenizer that differs from HF is written.
//!
//! The IR itself is written with `oxport_openvino::ir`; the OpenVINO exporter knows nothing of tokenizers. The CLI
//! hands [`write_tokenizer_irs`] to `oxport_openvino::export_with` as the files written before the weights, so a
//! tokenizer that cannot be converted still fails the export before anything is written.

mod bytes;
mod graph;
mod spec;

use std::path::{Path, PathBuf};

pub const TOKENIZER_XML: &str = "openvino_tokenizer.xml";
pub const TOKENIZER_BIN: &str = "openvino_tokenizer.bin";
pub const DETOKENIZER_XML: &str = "openvino_detokenizer.xml";
pub const DETOKENIZER_BIN: &str = "openvino_detokenizer.bin";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: reading the tokenizer: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the tokenizer file is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: cannot convert {construct} to an OpenVINO tokenizer; pass --no-tokenizer to export the model without \
         openvino_tokenizer/openvino_detokenizer"
    )]
    Unsupported { path: PathBuf, construct: String },
    #[error("writing the tokenizer IR {path}: {source}")]
    Ir {
        path: PathBuf,
        #[source]
        source: Box<oxport_openvino::Error>,
    },
}

/// Write `openvino_tokenizer.{xml,bin}` and `openvino_detokenizer.{xml,bin}` into `out_dir` from the tokenizer files
/// in `model_dir` (`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`).
pub fn write_tokenizer_irs(model_dir: &Path, out_dir: &Path) -> Result<(), TokenizerError> {
    let spec = spec::Spec::from_dir(model_dir)?;
    graph::write_tokenizer(&spec, out_dir)?;
    graph::write_detokenizer(&spec, out_dir)
}
