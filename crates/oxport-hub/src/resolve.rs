//! `--model` and dataset files → paths in the Hugging Face cache: the cache is looked up first (no network), then,
//! unless offline, the files are downloaded into it (see `download.rs`).

use std::path::{Component, Path, PathBuf};

use crate::download::Downloader;
use crate::error::{Error, Result};
use oxport_io::Reporter;

use crate::options::ResolveOptions;

/// The shard index of a sharded checkpoint (the name `oxport_hf::Checkpoint` opens; huggingface_hub's
/// `SAFETENSORS_INDEX_FILE`).
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";
/// The weights of an unsharded checkpoint (huggingface_hub's `SAFETENSORS_SINGLE_FILE`).
pub(crate) const SINGLE_FILE: &str = "model.safetensors";

/// Resolve `spec` with the process environment; see [`resolve_model_with`].
pub fn resolve_model(
    spec: &str,
    revision: Option<&str>,
    progress: &dyn Reporter,
) -> Result<PathBuf> {
    resolve_model_with(spec, revision, &ResolveOptions::from_env(), progress)
}

/// `spec` is a local folder (returned as is), or a hub id `org/name` at `revision` (default `main`): a complete
/// snapshot in the cache is returned without network access; otherwise, unless offline, the config, tokenizer
/// files, index and every shard it names (or `model.safetensors`) are downloaded into the cache.
pub fn resolve_model_with(
    spec: &str,
    revision: Option<&str>,
    opts: &ResolveOptions,
    progress: &dyn Reporter,
) -> Result<PathBuf> {
    let local = Path::new(spec);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let Some(repo) = RepoId::parse(spec, RepoKind::Model) else {
        return Err(Error::ModelNotFound {
            spec: spec.to_string(),
        });
    };
    let revision = revision.unwrap_or("main");
    check_revision(spec, revision)?;
    let repo_dir = opts.cache_dir.join(repo.cache_folder());
    if let Some(snapshot) = cached_snapshot(&repo_dir, revision) {
        return Ok(snapshot);
    }
    if opts.offline {
        return Err(Error::NotCached {
            repo: spec.to_string(),
            revision: revision.to_string(),
            cache: opts.cache_dir.clone(),
        });
    }
    Downloader::new(opts, &repo, &repo_dir, progress).download(revision)
}

/// A relative path of plain components (no `..`, no root): it stays inside the folder it is joined to.
fn is_relative_plain(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn check_revision(spec: &str, revision: &str) -> Result<()> {
    if is_relative_plain(revision) {
        return Ok(());
    }
    Err(Error::Resolve(format!(
        "{spec}: invalid revision {revision:?}"
    )))
}

/// A file of a hub dataset repository, in the cache.
#[derive(Debug)]
pub struct DatasetFile {
    /// `<cache>/datasets--<org>--<name>/snapshots/<commit>/<file>`.
    pub path: PathBuf,
    pub commit: String,
}

/// `file` of the hub dataset `dataset` (`org/name`) at `revision`: from the cache when the snapshot holds it (no
/// network access), else downloaded into the cache unless offline. The cache layout and the environment rules are
/// the models' (`datasets--<org>--<name>` as huggingface_hub names dataset repositories).
pub fn resolve_dataset_file(
    dataset: &str,
    revision: &str,
    file: &str,
    opts: &ResolveOptions,
    progress: &dyn Reporter,
) -> Result<DatasetFile> {
    let Some(repo) = RepoId::parse(dataset, RepoKind::Dataset) else {
        return Err(Error::Resolve(format!(
            "{dataset}: not a Hugging Face hub dataset id (`org/name`)"
        )));
    };
    check_revision(dataset, revision)?;
    if !is_relative_plain(file) {
        return Err(Error::Resolve(format!(
            "{dataset}: invalid file name {file:?}"
        )));
    }
    let repo_dir = opts.cache_dir.join(repo.cache_folder());
    if let Some(commit) = cached_commit(&repo_dir, revision) {
        let path = repo_dir.join("snapshots").join(&commit).join(file);
        if path.is_file() {
            return Ok(DatasetFile { path, commit });
        }
    }
    if opts.offline {
        return Err(Error::DatasetNotCached {
            dataset: dataset.to_string(),
            file: file.to_string(),
            revision: revision.to_string(),
            cache: opts.cache_dir.clone(),
        });
    }
    let downloader = Downloader::new(opts, &repo, &repo_dir, progress);
    let Some(fetched) = downloader.fetch(revision, None, file)? else {
        return Err(Error::Download {
            url: downloader.url(revision, file),
            msg: format!(
                "dataset {dataset} has no file {file} at revision {revision} (or the repository does not exist)"
            ),
        });
    };
    downloader.write_ref(revision, &fetched.commit)?;
    let path = repo_dir.join("snapshots").join(&fetched.commit).join(file);
    Ok(DatasetFile {
        path,
        commit: fetched.commit,
    })
}

/// Models live at `{endpoint}/{id}` and in `models--…`, datasets at `{endpoint}/datasets/{id}` and in `datasets--…`
/// (huggingface_hub `constants.py` `REPO_TYPES_URL_PREFIXES`, `file_download.py` `repo_folder_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepoKind {
    Model,
    Dataset,
}

/// `org/name` (one slash; letters, digits, `-`, `_`, `.`; no `..`).
pub(crate) struct RepoId {
    kind: RepoKind,
    org: String,
    name: String,
}

impl RepoId {
    fn parse(spec: &str, kind: RepoKind) -> Option<RepoId> {
        let (org, name) = spec.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (ok(org) && ok(name)).then(|| RepoId {
            kind,
            org: org.into(),
            name: name.into(),
        })
    }

    fn cache_folder(&self) -> String {
        let prefix = match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        };
        format!("{prefix}--{}--{}", self.org, self.name)
    }

    /// The id as it appears in hub URLs: `org/name` or `datasets/org/name`.
    pub(crate) fn url_path(&self) -> String {
        match self.kind {
            RepoKind::Model => self.id(),
            RepoKind::Dataset => format!("datasets/{}", self.id()),
        }
    }

    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
}

pub(crate) fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `revision` names in the cache: itself when it is a sha, else what `refs/<revision>` holds.
fn cached_commit(repo_dir: &Path, revision: &str) -> Option<String> {
    let commit = if is_commit_sha(revision) {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(revision))
            .ok()?
            .trim()
            .to_string()
    };
    is_commit_sha(&commit).then_some(commit)
}

/// The snapshot for `revision` if it holds a config and every weight file (the index's shards, or the single file).
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let commit = cached_commit(repo_dir, revision)?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.join("config.json").is_file() {
        return None;
    }
    let index = snapshot.join(INDEX_FILE);
    if index.is_file() {
        let text = std::fs::read_to_string(&index).ok()?;
        let shards = shard_names(&text).ok()?;
        shards
            .iter()
            .all(|s| snapshot.join(s).is_file())
            .then_some(snapshot)
    } else {
        snapshot.join(SINGLE_FILE).is_file().then_some(snapshot)
    }
}

/// The distinct shard file names of an index, each a plain file name (a name with a folder part could write
/// outside the snapshot when downloaded, so it is refused here; `Checkpoint::open` reports it for local folders).
pub(crate) fn shard_names(index_text: &str) -> std::result::Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(index_text).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("missing `weight_map` object")?;
    let mut names = Vec::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| format!("weight_map[{tensor:?}] is not a file name"))?;
        let mut comps = Path::new(shard).components();
        if !matches!(
            (comps.next(), comps.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(format!(
                "shard {shard:?} (for {tensor}) is not a plain file name"
            ));
        }
        names.push(shard.to_string());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert_eq!(
            RepoId::parse("microsoft/Phi-3-mini-4k-instruct", RepoKind::Model)
                .unwrap()
                .cache_folder(),
            "models--microsoft--Phi-3-mini-4k-instruct"
        );
        let wikitext = RepoId::parse("Salesforce/wikitext", RepoKind::Dataset).unwrap();
        assert_eq!(wikitext.cache_folder(), "datasets--Salesforce--wikitext");
        assert_eq!(wikitext.url_path(), "datasets/Salesforce/wikitext");
        for bad in ["a", "a/b/c", "../b", "a/..", "/abs", "a/", "a/b c"] {
            assert!(RepoId::parse(bad, RepoKind::Model).is_none(), "{bad}");
        }
    }

    #[test]
    fn index_shard_names_must_be_plain_file_names() {
        let ok = r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#;
        assert_eq!(shard_names(ok).unwrap().len(), 2);
        for bad in [
            "../x.safetensors",
            "/etc/x.safetensors",
            "sub/x.safetensors",
            "..",
        ] {
            let text = format!(r#"{{"weight_map":{{"t":"{bad}"}}}}"#);
            let e = shard_names(&text).unwrap_err();
            assert!(e.contains(bad) && e.contains('t'), "{e}");
        }
    }
}
