//! Errors of the calibration data; each names the file (or the `--dataset` value) and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, socket or device given as a calibration or tokenizer file: reading one could block for ever.
    #[error("{path}: not a regular file ({kind})")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// Fetching the dataset from the hub or its cache.
    #[error(transparent)]
    Hub(#[from] oxport_hub::Error),
    /// A `--dataset` value that names no calibration source oxport knows.
    #[error("--dataset {spec:?}: {msg}")]
    DatasetSpec { spec: String, msg: String },
    /// A calibration text or parquet file that cannot be used (`path` is the file, `msg` says why).
    #[error("{path}: {msg}")]
    Calibration { path: PathBuf, msg: String },
    /// `tokenizer.json` / `tokenizer_config.json` that cannot tokenize the calibration text.
    #[error("{path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// Refuse anything but a regular file (after symlinks) before opening `path`: `File::open` on a FIFO blocks until a
/// writer appears (the same rule as `oxport_hf`'s checkpoint files).
pub(crate) fn regular_file(path: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(Error::NotAFile {
        path: path.to_path_buf(),
        kind,
    })
}
