use std::path::PathBuf;

/// Errors of the architecture layer: a config or a tensor table that is not a model oxport knows. Errors of the
/// files themselves (I/O, safetensors headers, the shard index, dtypes, non-finite values) come from `oxport-hf`
/// unchanged. Each names the file and, where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Checkpoint(#[from] oxport_hf::Error),
    #[error("{path}: malformed config: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error(
        "{path}: unsupported architecture {arch:?}; oxport supports {supported}",
        supported = crate::config::SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture { path: PathBuf, arch: String },
    #[error(
        "{path}: tensor {tensor}: shape {actual:?} disagrees with config.json, which implies {expected:?}"
    )]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{path}: unknown tensor {tensor} (not part of a Phi-3 checkpoint)")]
    UnknownTensor { path: PathBuf, tensor: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
