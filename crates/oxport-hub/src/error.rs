//! Errors of the hub client; each names the repository, file or URL involved, never the token.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A hub id, revision or file name that cannot name anything in the cache (`org/name`, plain relative paths).
    #[error("{0}")]
    Resolve(String),
    #[error("{spec}: no such model folder, and not a Hugging Face hub id (`org/name`)")]
    ModelNotFound { spec: String },
    #[error(
        "{repo} at revision {revision} is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
        cache.display()
    )]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
    },
    #[error(
        "dataset {dataset}: {file} at revision {revision} is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
        cache.display()
    )]
    DatasetNotCached {
        dataset: String,
        file: String,
        revision: String,
        cache: PathBuf,
    },
    /// A downloaded shard index whose shard names cannot be fetched safely.
    #[error("{path}: invalid shard index: {msg}")]
    Index { path: PathBuf, msg: String },
    /// `url` never holds a token: tokens travel only in the `Authorization` header.
    #[error("downloading {url}: {msg}")]
    Download { url: String, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
