//! oxport-hub: the Hugging Face hub client. A `--model` becomes a local folder (as given, a snapshot in the Hugging
//! Face cache, or a download into that cache) and a dataset file a path in the cache.
//!
//! The cache layout is huggingface_hub's (`huggingface_hub/file_download.py`, `constants.py`):
//! `<cache>/models--<org>--<name>/refs/<revision>` holds the commit sha, `snapshots/<sha>/<file>` is a relative
//! symlink to `blobs/<etag>`. Files come from `{endpoint}/{repo}/resolve/{revision}/{file}`; the first response's
//! `X-Repo-Commit` names the snapshot and `X-Linked-Etag` (LFS files, answered with a redirect to a CDN; it is the
//! content's sha256, checked while streaming) or `ETag` names the blob. Downloads stream into
//! `blobs/<etag>.<pid>.incomplete` and are renamed into place when complete.
//!
//! * [`ResolveOptions`]: the environment (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`),
//!   read once, or given explicitly (tests pass their own, so nothing reads or mutates process-wide state).
//! * [`resolve_model`] / [`resolve_model_with`]: a model snapshot (config, tokenizer files, weights).
//! * [`resolve_dataset_file`]: one file of a dataset repository (the calibration data of `oxport-dataset`).
//!
//! The `hf-hub` crate is not used: its blocking (`ureq`) feature pulls in `indicatif`, which library crates must not
//! depend on, and it reads the environment itself.
//!
//! This crate is a leaf: only the CLI (and the calibration data crate) link it, so that the checkpoint reader, the
//! quantizer and the exporters build without an HTTP or TLS stack.

mod download;
mod error;
mod options;
mod resolve;

pub use error::{Error, Result};
pub use options::{DEFAULT_ENDPOINT, DownloadProgress, NoProgress, ResolveOptions};
pub use resolve::{DatasetFile, resolve_dataset_file, resolve_model, resolve_model_with};
