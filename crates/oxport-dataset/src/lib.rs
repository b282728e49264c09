//! oxport-dataset: calibration data for data-aware quantization, token windows built exactly as optimum-intel builds
//! them. The dataset file is fetched through `oxport-hub` (its cache and environment rules); reading it (parquet,
//! `.txt`, `.jsonl`), tokenizing and windowing happen here, so the hub client stays an HTTP client and this crate's
//! parquet and tokenizers dependencies stay out of the checkpoint reader and the quantizer.
//!
//! optimum-intel's causal-LM calibration (`OVCalibrationDatasetBuilder._prepare_causal_lm_calibration_data` and its
//! inner `get_wikitext2` in `huggingface/optimum-intel:optimum/intel/openvino/quantization.py`):
//! 1. `nsamples = num_samples or 128`; `seq_len = 32` unless the dataset spec says `wikitext2:seq_len=N`
//!    (`OVQuantizationConfigBase.__init__` in `optimum/intel/openvino/configuration.py`);
//! 2. rows of `Salesforce/wikitext`, config `wikitext-2-raw-v1`, split `train`; only the first
//!    `limit = nsamples * seq_len // 4` rows are used;
//! 3. `text = "".join([" \n" if s == "" else s for s in rows[:limit]])`;
//! 4. the whole text tokenized once, `tokenizer(text)` (special tokens added; see `hf_tokenizer` for how
//!    transformers 5 rebuilds Phi-3's pipeline);
//! 5. `random.seed(42 - 42)`, then `nsamples` times `i = random.randint(0, len(ids) - seq_len - 1)` and the window
//!    `ids[i:i + seq_len]` ([`PyRandom`] is CPython's generator bit for bit).
//!
//! Local files are an oxport extension with the same windowing: a `.txt` file is the text as it is; a `.jsonl` file
//! is one JSON object per line whose `"text"` fields are rows, limited and joined as in steps 2 and 3 (so a `.jsonl`
//! of wikitext's rows gives optimum's windows).

use std::path::{Path, PathBuf};

use oxport_hub::{ResolveOptions, resolve_dataset_file};
use oxport_io::Reporter;

use crate::error::{io, regular_file};

mod error;
mod hf_tokenizer;
mod parquet_text;
mod pyrandom;

pub use error::{Error, Result};
pub use pyrandom::PyRandom;

/// The hub dataset optimum-intel loads for `wikitext2` (`PREDEFINED_LANGUAGE_DATASETS` in
/// `huggingface/optimum-intel:optimum/intel/openvino/utils.py`).
pub const WIKITEXT2_DATASET: &str = "Salesforce/wikitext";
/// Its configuration (`load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")`).
pub const WIKITEXT2_CONFIG: &str = "wikitext-2-raw-v1";
/// The branch the file is fetched from (what `load_dataset` resolves without a `revision`).
pub const WIKITEXT2_REVISION: &str = "main";
/// The train split as it sits in the hub repository: the repo is stored as parquet, one folder per configuration,
/// `{config}/{split}-00000-of-00001.parquet` (the dataset card's `configs:` `data_files`; the hub URL
/// `https://huggingface.co/datasets/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1/train-00000-of-00001.parquet`).
pub const WIKITEXT2_FILE: &str = "wikitext-2-raw-v1/train-00000-of-00001.parquet";
/// `nsamples = num_samples or 128`.
pub const DEFAULT_NUM_SAMPLES: usize = 128;
/// optimum's `seq_len = seq_len or 32` for wikitext2 (and c4).
pub const DEFAULT_SEQ_LEN: usize = 32;
/// `random.seed(self.seed - 42)` with the builder's default `seed=42`.
const PY_SEED: u64 = 0;

/// Names optimum-intel accepts for causal LMs that oxport does not fetch.
const UNSUPPORTED_PEER_DATASETS: &[&str] = &["c4", "c4-new", "gsm8k", "auto"];

/// Where calibration text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalibrationSource {
    /// [`WIKITEXT2_DATASET`] / [`WIKITEXT2_CONFIG`], train split, through the hub cache.
    Wikitext2,
    /// A UTF-8 text file, used whole.
    TextFile(PathBuf),
    /// One JSON object per line; each `"text"` field is a row.
    JsonlFile(PathBuf),
}

/// What `--dataset` and `--num-samples` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalibrationSpec {
    pub source: CalibrationSource,
    /// `None`: [`DEFAULT_NUM_SAMPLES`].
    pub num_samples: Option<usize>,
    /// `None`: [`DEFAULT_SEQ_LEN`].
    pub seq_len: Option<usize>,
}

/// The windows, ready to feed the model one at a time (batch size 1, all-ones attention mask, as optimum's
/// `prepare_dataset` batches them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalibrationSet {
    /// `num_samples` windows of `seq_len` token ids each.
    pub samples: Vec<Vec<u32>>,
    /// Where the windows came from and their shape, for logs: e.g. `wikitext2 (Salesforce/wikitext
    /// wikitext-2-raw-v1 train, rev <sha>): 128 windows of 32 tokens from 1024 rows (30512 tokens)`.
    pub description: String,
}

impl CalibrationSpec {
    /// Parse `--dataset`: `wikitext2`, optionally with optimum's option syntax `wikitext2:seq_len=N`, or the path of
    /// an existing `.txt` / `.jsonl` file (which may take the same `:seq_len=N` suffix). `num_samples` is left
    /// `None`; the caller sets it from `--num-samples`.
    pub fn parse(dataset: &str) -> Result<Self> {
        let spec_error = |msg: String| Error::DatasetSpec {
            spec: dataset.to_string(),
            msg,
        };
        // optimum splits at the first `:` (`dataset.split(":", 1)`); a file path may itself hold colons, so for a
        // path the options start at the last one. Dataset names win over files of the same name.
        let (name, options) = dataset.split_once(':').unwrap_or((dataset, ""));
        if name == "wikitext2" {
            return Ok(Self::new(
                CalibrationSource::Wikitext2,
                parse_options(dataset, options)?,
            ));
        }
        if UNSUPPORTED_PEER_DATASETS.contains(&name) {
            return Err(spec_error(format!(
                "optimum-intel's {name:?} calibration dataset is not supported by oxport; {ACCEPTED}"
            )));
        }
        if Path::new(dataset).is_file() {
            return Ok(Self::new(file_source(Path::new(dataset), dataset)?, None));
        }
        if let Some((path, options)) = dataset.rsplit_once(':')
            && Path::new(path).is_file()
        {
            let seq_len = parse_options(dataset, options)?;
            return Ok(Self::new(file_source(Path::new(path), dataset)?, seq_len));
        }
        Err(spec_error(format!(
            "no such file, and not a known calibration dataset; {ACCEPTED}"
        )))
    }

    fn new(source: CalibrationSource, seq_len: Option<usize>) -> Self {
        CalibrationSpec {
            source,
            num_samples: None,
            seq_len,
        }
    }
}

const ACCEPTED: &str = "accepted: `wikitext2`, `wikitext2:seq_len=N`, or the path of an existing .txt or .jsonl \
    file (optimum-intel's c4, c4-new, gsm8k and auto are not supported)";

fn file_source(path: &Path, spec: &str) -> Result<CalibrationSource> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("txt") => Ok(CalibrationSource::TextFile(path.to_path_buf())),
        Some("jsonl") => Ok(CalibrationSource::JsonlFile(path.to_path_buf())),
        _ => Err(Error::DatasetSpec {
            spec: spec.to_string(),
            msg: format!(
                "{}: calibration files must end in .txt (the whole text) or .jsonl (one {{\"text\": …}} per line)",
                path.display()
            ),
        }),
    }
}

/// optimum's `key=value,key=value` options after the `:`; only `seq_len` exists. Unlike optimum, which turns
/// `seq_len=0` into the default (`seq_len or 32`), zero is refused.
fn parse_options(spec: &str, options: &str) -> Result<Option<usize>> {
    let spec_error = |msg: String| Error::DatasetSpec {
        spec: spec.to_string(),
        msg,
    };
    let mut seq_len = None;
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let Some((key, value)) = option.split_once('=') else {
            return Err(spec_error(format!(
                "malformed option {option:?}; expected `key=value`"
            )));
        };
        if key.trim() != "seq_len" {
            return Err(spec_error(format!(
                "unsupported option {:?}; only `seq_len` is supported",
                key.trim()
            )));
        }
        match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => seq_len = Some(n),
            _ => {
                return Err(spec_error(format!(
                    "seq_len {:?} is not a positive integer",
                    value.trim()
                )));
            }
        }
    }
    Ok(seq_len)
}

/// Build the calibration windows `spec` asks for with the checkpoint's `tokenizer.json`. wikitext2 is fetched
/// through the hub cache under the same rules as models (`HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`,
/// `HF_HUB_OFFLINE`, as carried by `resolve`), so a second run needs no network.
pub fn calibration_samples(
    spec: &CalibrationSpec,
    tokenizer_json: &Path,
    resolve: &ResolveOptions,
    progress: &dyn Reporter,
) -> Result<CalibrationSet> {
    // `num_samples or 128`, `seq_len or 32`: zero means the default, as in Python.
    let num_samples = spec
        .num_samples
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_NUM_SAMPLES);
    let seq_len = spec.seq_len.filter(|&n| n > 0).unwrap_or(DEFAULT_SEQ_LEN);
    let text = source_text(spec, num_samples, seq_len, resolve, progress)?;
    let ids = hf_tokenizer::encode(tokenizer_json, &text.text)?;
    let mut rng = PyRandom::new(PY_SEED);
    let Some(samples) = sample_windows(&ids, num_samples, seq_len, &mut rng) else {
        return Err(Error::Calibration {
            path: text.path,
            msg: format!(
                "the calibration text is {} tokens long with {}; windows of {seq_len} tokens need at least {}",
                ids.len(),
                tokenizer_json.display(),
                seq_len.saturating_add(1)
            ),
        });
    };
    let description = format!(
        "{}: {num_samples} windows of {seq_len} tokens from {} ({} tokens)",
        text.origin,
        text.extent,
        ids.len()
    );
    Ok(CalibrationSet {
        samples,
        description,
    })
}

/// The text to tokenize and where it came from.
struct SourceText {
    text: String,
    /// The file errors name.
    path: PathBuf,
    origin: String,
    /// `1024 rows`, `the first 1024 of 5000 rows`, `12345 bytes`.
    extent: String,
}

fn source_text(
    spec: &CalibrationSpec,
    num_samples: usize,
    seq_len: usize,
    resolve: &ResolveOptions,
    progress: &dyn Reporter,
) -> Result<SourceText> {
    // `limit = nsamples * seqlen // 4`.
    let row_limit = num_samples.checked_mul(seq_len).map(|n| n / 4);
    let too_many = |path: &Path| Error::Calibration {
        path: path.to_path_buf(),
        msg: format!("{num_samples} windows of {seq_len} tokens is too many"),
    };
    match &spec.source {
        CalibrationSource::Wikitext2 => {
            let file = resolve_dataset_file(
                WIKITEXT2_DATASET,
                WIKITEXT2_REVISION,
                WIKITEXT2_FILE,
                resolve,
                progress,
            )?;
            let limit = row_limit.ok_or_else(|| too_many(&file.path))?;
            let rows = parquet_text::read_text_column(&file.path, "text", limit)?;
            Ok(SourceText {
                text: join_rows(&rows),
                origin: format!(
                    "wikitext2 ({WIKITEXT2_DATASET} {WIKITEXT2_CONFIG} train, rev {})",
                    file.commit
                ),
                extent: format!("{} rows", rows.len()),
                path: file.path,
            })
        }
        CalibrationSource::TextFile(path) => {
            let text = read_text(path)?;
            Ok(SourceText {
                origin: path.display().to_string(),
                extent: format!("{} bytes", text.len()),
                text,
                path: path.clone(),
            })
        }
        CalibrationSource::JsonlFile(path) => {
            let limit = row_limit.ok_or_else(|| too_many(path))?;
            let rows = jsonl_rows(path, &read_text(path)?)?;
            let used = rows.len().min(limit);
            Ok(SourceText {
                text: join_rows(&rows[..used]),
                origin: path.display().to_string(),
                extent: format!("the first {used} of {} rows", rows.len()),
                path: path.clone(),
            })
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    regular_file(path)?;
    std::fs::read_to_string(path).map_err(io(path))
}

/// `"".join([" \n" if s == "" else s for s in rows])`: wikitext's empty rows (paragraph breaks) become `" \n"`;
/// every other row already ends in its own newline.
pub(crate) fn join_rows(rows: &[String]) -> String {
    rows.iter()
        .map(|row| if row.is_empty() { " \n" } else { row.as_str() })
        .collect()
}

/// The `"text"` string of each non-blank line, in order.
fn jsonl_rows(path: &Path, content: &str) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for (index, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::Calibration {
            path: path.to_path_buf(),
            msg: format!("line {}: {msg}", index + 1),
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match value.get("text") {
            Some(serde_json::Value::String(text)) => rows.push(text.clone()),
            Some(_) => return Err(bad("`text` is not a string".into())),
            None => return Err(bad("no `text` field (expected {\"text\": \"…\"})".into())),
        }
    }
    Ok(rows)
}

/// `num_samples` times `i = random.randint(0, len(ids) - seq_len - 1)`, window `ids[i:i + seq_len]`. `None` when
/// the text is shorter than `seq_len + 1` tokens (where Python's `randint` raises).
pub(crate) fn sample_windows(
    ids: &[u32],
    num_samples: usize,
    seq_len: usize,
    rng: &mut PyRandom,
) -> Option<Vec<Vec<u32>>> {
    let last_start = ids.len().checked_sub(seq_len)?.checked_sub(1)?;
    (0..num_samples)
        .map(|_| {
            let start = rng.randint(0, last_start as u64)? as usize;
            Some(ids[start..start + seq_len].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests;
