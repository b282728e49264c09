//! oxport-io: everything an export does to the file system and to its caller while it runs, so that the
//! quantization crate stays pure and the exporters share one implementation of each:
//!
//! * [`OrderedWriter`]: a file written in call order by a background thread;
//! * [`BlobWriter`]: offsets, alignment and de-duplication of constants over it (`model.onnx.data`,
//!   `openvino_model.bin`);
//! * [`Staging`]: the folder an export is built in beside its output, committed by rename with an explicit
//!   [`CommitPolicy`], removed by its Drop guard when the export fails or is cancelled, and the cleanup of folders
//!   left by exports whose process is gone;
//! * [`Manifest`]: `oxport_manifest.json`, the plan and the source checkpoint (with digests) of an export;
//! * [`Reporter`] / [`Event`]: the one progress interface of the libraries, and [`CancelToken`], checked between
//!   tensors, which makes an export return [`Cancelled`].
//!
//! Library code never prints; the CLI implements [`Reporter`] with indicatif and wires signals to the token.

mod blob;
mod manifest;
mod ordered;
mod report;
mod staging;

use std::path::PathBuf;

pub use blob::{BlobLayout, BlobWriter};
pub use manifest::{MANIFEST_FILE, Manifest, ManifestError, Source, SourceFile, SourceJob};
pub use ordered::{OrderedWriter, PENDING_BYTES};
pub use report::{CancelToken, Cancelled, Event, Reporter, Silent};
pub use staging::{CommitPolicy, Staging, claim_and_remove, remove_stale, staging_dir_for};

/// An I/O error with the file or folder it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T, E = IoError> = std::result::Result<T, E>;

/// `map_err` helper for I/O on `path`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError {
        path: path.to_path_buf(),
        source,
    }
}
