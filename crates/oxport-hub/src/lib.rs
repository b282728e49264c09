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
//! The `hf-hub` crate is not used. 1.x is async (reqwest/tokio), a second HTTP stack. 0.5's blocking API (`ureq` 3,
//! the client used here) was tried in place of `download.rs` (huggingface/hf-hub `src/api/sync.rs`):
//! * it asks each file's metadata with `Range: bytes=0-0` and requires `Content-Range`, then fetches the body in a
//!   second request, so config.json's commit and its bytes come from two answers (a branch moving in between mixes
//!   them), and the loopback hub of `tests/hf_resolve.rs` had to learn ranges before anything downloaded;
//! * its metadata request to an LFS file's CDN (another origin) carries the `Authorization` header;
//! * it does not check the content against `X-Linked-Etag` (the sha256 would have to be wrapped around it);
//! * a failed download leaves `blobs/<etag>.part` (kept for resuming) and every download a `blobs/<etag>.lock`;
//! * its `ureq` feature pulls in `indicatif`, which library crates must not depend on.
//!
//! This crate is a leaf: only the CLI (and the calibration data crate) link it, so that the checkpoint reader, the
//! quantizer and the exporters build without an HTTP or TLS stack.

mod download;
mod error;
mod options;
mod resolve;

pub use error::{Error, Result};
pub use options::{DEFAULT_ENDPOINT, ResolveOptions};
pub use resolve::{DatasetFile, resolve_dataset_file, resolve_model, resolve_model_with};
