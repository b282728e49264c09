//! Errors of the runner; each names the file, tensor, device or metric it is about.

use std::path::PathBuf;

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
    #[error(transparent)]
    Model(#[from] oxport_arch::Error),
    #[error(transparent)]
    Reference(#[from] oxport_reference::Error),
    #[error("{runtime} library not found; tried: {tried}")]
    LibraryNotFound {
        runtime: &'static str,
        tried: String,
    },
    #[error("{runtime}: {msg}")]
    Runtime { runtime: &'static str, msg: String },
    #[error("{path}: {msg}")]
    Export { path: PathBuf, msg: String },
    #[error("tensor {tensor}: expected shape {expected:?}, got {got:?}")]
    Shape {
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{path}: tokenizer: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{path}: chat template: {msg}")]
    Template { path: PathBuf, msg: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn ort(e: impl std::fmt::Display) -> Self {
        Error::Runtime {
            runtime: "ONNX Runtime",
            msg: e.to_string(),
        }
    }

    pub(crate) fn ov(e: impl std::fmt::Display) -> Self {
        Error::Runtime {
            runtime: "OpenVINO",
            msg: e.to_string(),
        }
    }
}
