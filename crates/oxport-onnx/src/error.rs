//! Errors of the ONNX exporter; each names the file, tensor or option involved.

use std::path::PathBuf;

/// Why an ONNX export failed. A failed export leaves no output folder and no temporary folder behind.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint could not be read (missing tensor, NaN/Inf weight, bad header).
    #[error(transparent)]
    Checkpoint(Box<oxport_hf::Error>),
    /// Planning or quantizing a tensor failed.
    #[error("tensor {tensor}: {source}")]
    Quant {
        tensor: String,
        #[source]
        source: Box<oxport_quant::QuantError>,
    },
    /// Planning failed before any tensor was touched.
    #[error("planning the ONNX export: {0}")]
    Plan(#[source] Box<oxport_quant::QuantError>),
    /// The plan asks for a scheme this writer cannot express in ONNX.
    #[error("tensor {tensor}: scheme {scheme} cannot be written to ONNX")]
    UnsupportedScheme { tensor: String, scheme: String },
    /// A tensor's shape differs from what the config implies.
    #[error("tensor {tensor}: shape {actual:?}, expected {expected:?}")]
    Shape {
        tensor: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A config.json value the exported graph cannot run with (`field` is the config key).
    #[error("{path}: `{field}`: {msg}")]
    Config {
        path: PathBuf,
        field: &'static str,
        msg: String,
    },
    /// Options that contradict each other or the model.
    #[error("invalid export options: {0}")]
    Options(String),
    /// The output folder exists already.
    #[error("{0}: output folder exists and is not empty (remove it or pick another)")]
    OutputExists(PathBuf),
    /// model.onnx would exceed protobuf's 2 GiB message limit.
    #[error("model.onnx graph is {bytes} bytes, over protobuf's 2 GiB limit")]
    TooLarge { bytes: usize },
    #[error("genai_config.json: {0}")]
    Json(#[from] serde_json::Error),
    /// The export's cancel token was cancelled; the staging folder is removed.
    #[error("export cancelled")]
    Cancelled(#[from] oxport_io::Cancelled),
}

impl From<oxport_io::IoError> for OnnxError {
    fn from(e: oxport_io::IoError) -> Self {
        OnnxError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl From<oxport_hf::Error> for OnnxError {
    fn from(e: oxport_hf::Error) -> Self {
        OnnxError::Checkpoint(Box::new(e))
    }
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;

/// `map_err` helper for I/O on `path`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OnnxError + '_ {
    move |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    }
}
