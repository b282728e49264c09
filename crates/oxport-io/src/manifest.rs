//! `oxport_manifest.json`: what an export was made from and how, written beside the model by both exporters and
//! read back by `oxport validate` (so an export made by oxport names its own reference checkpoint).
//!
//! The source is recorded as the `--model` string as given (a folder, or a hub id with the commit it resolved to)
//! and the name, size and XXH3-128 digest of every checkpoint file an export reads (plus the sha256 where the
//! Hugging Face cache names the file's blob by it). XXH3 rather than sha256 for every file: it runs at memory
//! speed, so digesting a 7.6 GB checkpoint costs about a second instead of several (sha256 with SHA-NI does
//! 1–2 GB/s), and it only has to tell a changed checkpoint from the original, not resist an adversary. Nothing machine-specific is added: the
//! same checkpoint and flags give the same manifest, byte for byte.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_128;

use crate::{IoError, io};

/// The manifest's file name in an export folder.
pub const MANIFEST_FILE: &str = "oxport_manifest.json";

/// One checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub bytes: u64,
    /// XXH3-128 of the content, lowercase hex.
    pub xxh3_128: String,
    /// The sha256 the hub cache names this file's blob by (LFS files of a hub snapshot), lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The checkpoint an export was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `--model` as given: a folder (as typed, relative or absolute) or a hub id.
    pub model: String,
    /// The hub commit the files came from, when the folder is a snapshot of the Hugging Face cache
    /// (`…/models--org--name/snapshots/<commit>`).
    pub revision: Option<String>,
    /// Every `*.safetensors`, `*.json`, `*.jinja` and `tokenizer.model` of the folder, sorted by name.
    pub files: Vec<SourceFile>,
}

/// The whole manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// `oxport <version>`.
    pub writer: String,
    /// `onnx` or `openvino`.
    pub format: String,
    pub source: Source,
    /// The export options, as the exporter's option type serialises them.
    pub options: serde_json::Value,
    /// The quantization plan: every tensor's scheme, reason, ratio-defining flag, sensitivity and transform, and
    /// NNCF's bitwidth statistics.
    pub plan: serde_json::Value,
}

/// A manifest that cannot be read or does not match the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: not an oxport manifest: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error(
        "{}: {name} differs from the file the export was made from ({what}); the checkpoint changed since the export",
        dir.display()
    )]
    Mismatch {
        dir: PathBuf,
        name: String,
        what: String,
    },
}

/// Whether the checkpoint file `name` is part of what an export reads.
fn recorded(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name.ends_with(".json")
        || name.ends_with(".jinja")
        || name == "tokenizer.model"
}

/// The sha256 the Hugging Face cache names `path`'s blob by, when `path` links to `…/blobs/<sha256>` (the hub names
/// LFS files so, and oxport-hub checks that digest when it downloads them).
fn cache_blob_sha256(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    let name = target.file_name()?.to_str()?;
    (name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && target.parent().and_then(Path::file_name) == Some("blobs".as_ref()))
    .then(|| name.to_string())
}

/// XXH3-128 of the content of `path`, lowercase hex.
fn xxh3_of(path: &Path) -> Result<String, IoError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = XxHash3_128::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
    }
    Ok(format!("{:032x}", hasher.finish_128()))
}

/// The hub commit of a folder in the Hugging Face cache layout.
fn cache_revision(dir: &Path) -> Option<String> {
    let commit = dir.file_name()?.to_str()?;
    let snapshots = dir.parent()?;
    let repo = snapshots.parent()?.file_name()?.to_str()?;
    (snapshots.file_name()? == "snapshots" && repo.starts_with("models--"))
        .then(|| commit.to_string())
}

impl Source {
    /// Digest the checkpoint in `dir`, recorded under the `--model` string `model`.
    pub fn of_folder(dir: &Path, model: &str) -> Result<Source, IoError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if recorded(&name) && entry.path().is_file() {
                names.push(name);
            }
        }
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
            files.push(SourceFile {
                xxh3_128: xxh3_of(&path)?,
                sha256: cache_blob_sha256(&path),
                name,
                bytes,
            });
        }
        Ok(Source {
            model: model.to_string(),
            revision: cache_revision(dir),
            files,
        })
    }

    /// [`Source::of_folder`] on a thread of its own, so that digesting the checkpoint overlaps the export's work
    /// (both read the same pages); [`SourceJob::join`] waits for it.
    pub fn spawn(dir: &Path, model: &str) -> SourceJob {
        let (dir, model) = (dir.to_path_buf(), model.to_string());
        SourceJob(
            std::thread::Builder::new()
                .name("oxport-digest".into())
                .spawn(move || Source::of_folder(&dir, &model))
                .map_err(|e| io(Path::new("oxport-digest thread"))(e)),
        )
    }

    /// Check that `dir` holds the recorded files with the recorded sizes and digests (files added since are
    /// ignored); the error names the first file that differs.
    pub fn verify(&self, dir: &Path) -> Result<(), ManifestError> {
        let mismatch = |name: &str, what: String| ManifestError::Mismatch {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            what,
        };
        for f in &self.files {
            let path = dir.join(&f.name);
            let Ok(meta) = std::fs::metadata(&path) else {
                return Err(mismatch(&f.name, "missing".into()));
            };
            if meta.len() != f.bytes {
                return Err(mismatch(
                    &f.name,
                    format!("{} bytes, the export recorded {}", meta.len(), f.bytes),
                ));
            }
            let digest = xxh3_of(&path)?;
            if digest != f.xxh3_128 {
                return Err(mismatch(
                    &f.name,
                    format!("XXH3-128 {digest}, the export recorded {}", f.xxh3_128),
                ));
            }
        }
        Ok(())
    }
}

/// A [`Source`] being digested on its own thread.
pub struct SourceJob(Result<std::thread::JoinHandle<Result<Source, IoError>>, IoError>);

impl SourceJob {
    /// The digested source.
    pub fn join(self) -> Result<Source, IoError> {
        match self.0?.join() {
            Ok(source) => source,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Manifest {
    /// A manifest written by this version of oxport.
    pub fn new(
        format: &str,
        source: Source,
        options: serde_json::Value,
        plan: serde_json::Value,
    ) -> Manifest {
        Manifest {
            writer: format!("oxport {}", env!("CARGO_PKG_VERSION")),
            format: format.to_string(),
            source,
            options,
            plan,
        }
    }

    /// Write it into the export folder `dir` (pretty JSON, one trailing newline).
    pub fn write(&self, dir: &Path) -> Result<(), IoError> {
        let path = dir.join(MANIFEST_FILE);
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| io(&path)(std::io::Error::other(e)))?;
        text.push('\n');
        std::fs::write(&path, text).map_err(io(&path))
    }

    /// The manifest of the export in `dir`, or `None` when it has none (an export not made by oxport, or by an
    /// older oxport).
    pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ManifestError::Invalid {
                path,
                msg: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XXH3_128_ABC: &str = "06b05ab6733a618578af5f94892f3950";

    #[test]
    fn records_the_checkpoint_files_and_detects_a_changed_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join("model.safetensors"), b"abc").unwrap();
        std::fs::write(dir.join("README.md"), "not read by an export").unwrap();
        let source = Source::of_folder(dir, "my-model").unwrap();
        let names: Vec<_> = source.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["config.json", "model.safetensors"]);
        // XXH3-128("abc") as the reference implementation prints it (`xxhsum -H2`).
        assert_eq!(source.files[1].xxh3_128, XXH3_128_ABC);
        assert_eq!(source.files[1].sha256, None);
        assert_eq!(source.revision, None);
        source.verify(dir).unwrap();

        std::fs::write(dir.join("model.safetensors"), b"abd").unwrap();
        let err = source.verify(dir).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("XXH3-128"),
            "{err}"
        );
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let err = source.verify(dir).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors differs") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn a_cache_snapshot_names_its_commit_and_takes_blob_digests_from_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--name");
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        let snap = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(repo.join("blobs").join(sha), b"abc").unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(sha),
            snap.join("model.safetensors"),
        )
        .unwrap();
        let source = Source::of_folder(&snap, "org/name").unwrap();
        assert_eq!(source.revision.as_deref(), Some("0123abcd"));
        assert_eq!(source.files[0].sha256.as_deref(), Some(sha));
        assert_eq!(source.files[0].xxh3_128, XXH3_128_ABC);
        assert_eq!(source.files[0].bytes, 3);
    }

    #[test]
    fn round_trips_and_reports_an_invalid_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Manifest::read(tmp.path()).unwrap().is_none());
        let m = Manifest::new(
            "onnx",
            Source {
                model: "m".into(),
                revision: None,
                files: vec![],
            },
            serde_json::json!({"block_size": 32}),
            serde_json::json!({"entries": []}),
        );
        m.write(tmp.path()).unwrap();
        let back = Manifest::read(tmp.path()).unwrap().unwrap();
        assert_eq!(back.source, m.source);
        assert_eq!(back.options, m.options);
        std::fs::write(tmp.path().join(MANIFEST_FILE), "{").unwrap();
        let err = Manifest::read(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }
}
