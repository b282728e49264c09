//! Errors of the OpenVINO exporter; each names the file, tensor or option involved.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] oxport_hf::Error),
    #[error("compressing {tensor}: {source}")]
    Quant {
        tensor: String,
        #[source]
        source: Box<oxport_quant::QuantError>,
    },
    #[error("checkpoint has no tensor for role {0}")]
    MissingTensor(String),
    /// NNCF's `InvalidGroupSizeError` (nncf/quantization/algorithms/weight_compression/algorithm.py): a weight chosen
    /// for group-wise 4-bit has a reduction dimension that the group size does not divide.
    #[error(
        "failed to apply group-wise quantization with group size {group_size}: the group size must divide the \
         channel size; use --group-size-fallback ignore or adjust. Failed weights: {}",
        failed.join(", ")
    )]
    InvalidGroupSize {
        group_size: usize,
        failed: Vec<String>,
    },
    /// The caller's [`crate::ExtraFiles`] failed (the CLI's: the tokenizer IR converter, whose errors name
    /// `tokenizer.json` and the construct it cannot convert).
    #[error(transparent)]
    ExtraFiles(Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid export options: {0}")]
    Options(String),
    #[error("graph: {0}")]
    Graph(String),
    #[error("output {path} is a file, not a folder")]
    OutputExists { path: PathBuf },
    /// The export's cancel token was cancelled; the staging folder is removed.
    #[error("export cancelled")]
    Cancelled(#[from] oxport_io::Cancelled),
}

impl From<oxport_io::IoError> for Error {
    fn from(e: oxport_io::IoError) -> Self {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
