//! Recognising an export folder: format, model file, weight precision and the checkpoint it came from.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `model.onnx` + `genai_config.json` (onnxruntime-genai layout).
    Onnx,
    /// `openvino_model.xml` + `.bin` (optimum-cli layout).
    OpenVino,
}

/// Weight precision of an export; it picks the default thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrecision {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

impl WeightPrecision {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => WeightPrecision::Fp32,
            "fp16" | "f16" => WeightPrecision::Fp16,
            "int8" | "i8" => WeightPrecision::Int8,
            "int4" | "i4" => WeightPrecision::Int4,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightPrecision::Fp32 => "fp32",
            WeightPrecision::Fp16 => "fp16",
            WeightPrecision::Int8 => "int8",
            WeightPrecision::Int4 => "int4",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Export {
    pub dir: PathBuf,
    pub format: Format,
    /// `model.onnx` or `openvino_model.xml`.
    pub model: PathBuf,
    /// `genai_config.json` when the export has one.
    #[serde(skip)]
    pub genai_config: Option<Value>,
    /// The checkpoint named by the export's `config.json` (`_name_or_path`), when it is a folder that exists.
    pub source: Option<PathBuf>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        msg: format!("not valid JSON: {e}"),
    })
}

/// Recognise the export in `dir`.
pub fn detect(dir: &Path) -> Result<Export> {
    let (onnx, genai, xml) = (
        dir.join("model.onnx"),
        dir.join("genai_config.json"),
        dir.join("openvino_model.xml"),
    );
    let (format, model, genai_config) = if onnx.is_file() && genai.is_file() {
        (Format::Onnx, onnx, Some(read_json(&genai)?))
    } else if xml.is_file() {
        (Format::OpenVino, xml, None)
    } else {
        return Err(Error::Export {
            path: dir.to_path_buf(),
            msg: "not an export: expected model.onnx + genai_config.json, or openvino_model.xml"
                .into(),
        });
    };
    // transformers' `_name_or_path` in config.json, else optimum's `quantization_config.tokenizer` in
    // openvino_config.json (the model argument of the export); relative paths as given, then from the export.
    let named = |file: &str, pointer: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| {
                v.pointer(pointer)
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
            })
    };
    let source = [
        named("config.json", "/_name_or_path"),
        named("openvino_config.json", "/quantization_config/tokenizer"),
    ]
    .into_iter()
    .flatten()
    .flat_map(|p| {
        if p.is_relative() {
            vec![p.clone(), dir.join(&p)]
        } else {
            vec![p]
        }
    })
    .find(|p| p.join("config.json").is_file() && p.as_path() != dir);
    Ok(Export {
        dir: dir.to_path_buf(),
        format,
        model,
        genai_config,
        source,
    })
}

impl Export {
    /// The weight precision: int4 / int8 from the graph (MatMulNBits in ONNX, `quantization_config.bits` in
    /// `openvino_config.json`), else fp16 vs fp32 from bytes of weights per parameter of the source checkpoint.
    pub fn weight_precision(&self, params: usize) -> Result<WeightPrecision> {
        match self.format {
            Format::Onnx => {
                let graph = std::fs::read(&self.model).map_err(|e| Error::io(&self.model, e))?;
                if contains(&graph, b"MatMulNBits") {
                    return Ok(WeightPrecision::Int4);
                }
            }
            Format::OpenVino => {
                // NNCF's rt_info `weight_compression/mode` when present, else the weight constants' element types
                // (`docs/openvino-ir.md` §5: int4 weights are u4/i4, int8 ones u8/i8, fp16 ones f16).
                let xml =
                    std::fs::read_to_string(&self.model).map_err(|e| Error::io(&self.model, e))?;
                let has = |s: &str| xml.contains(s);
                if has("<mode value=\"int4")
                    || has("element_type=\"u4\"")
                    || has("element_type=\"i4\"")
                {
                    return Ok(WeightPrecision::Int4);
                }
                if has("<mode value=\"int8")
                    || has("element_type=\"u8\"")
                    || has("element_type=\"i8\"")
                {
                    return Ok(WeightPrecision::Int8);
                }
                if has("element_type=\"f16\"") {
                    return Ok(WeightPrecision::Fp16);
                }
            }
        }
        let bytes = self.weight_bytes();
        Ok(if bytes as f64 > 3.0 * params as f64 {
            WeightPrecision::Fp32
        } else {
            WeightPrecision::Fp16
        })
    }

    /// Bytes of the model file and its weights (`.bin`, `.data` / external data files).
    fn weight_bytes(&self) -> u64 {
        let tokenizer_ir =
            |n: &str| n.starts_with("openvino_tokenizer") || n.starts_with("openvino_detokenizer");
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                !tokenizer_ir(&n)
                    && (n.ends_with(".bin") || n.ends_with(".data") || n.ends_with(".onnx"))
            })
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .sum()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
