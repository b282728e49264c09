//! `--model` → a local folder: a folder as given, a hub id found in the Hugging Face cache, or a download into it.
//!
//! The cache layout is huggingface_hub's (`huggingface_hub/file_download.py`, `constants.py`):
//! `<cache>/models--<org>--<name>/refs/<revision>` holds the commit sha, `snapshots/<sha>/<file>` is a relative
//! symlink to `blobs/<etag>`. Files come from `{endpoint}/{repo}/resolve/{revision}/{file}`; the first response's
//! `X-Repo-Commit` names the snapshot and `X-Linked-Etag` (LFS files, answered with a redirect to a CDN; it is the
//! content's sha256, checked while streaming) or `ETag` names the blob. Downloads stream into
//! `blobs/<etag>.<pid>.incomplete` and are renamed into place when complete.
//!
//! The `hf-hub` crate is not used: its blocking (`ureq`) feature pulls in `indicatif`, which library crates must not
//! depend on, and it reads the environment itself. [`ResolveOptions`] carries the environment explicitly instead.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, Result, io};

/// Default hub endpoint (`HF_ENDPOINT` overrides it).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Files fetched besides the weights when present (a 404 is fine); `config.json` is required.
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
];

/// Download progress, implemented by the CLI (indicatif); the library never prints.
pub trait DownloadProgress: Sync {
    /// A file starts downloading; `total_bytes` from `Content-Length` when the server sends it.
    fn file_started(&self, _file: &str, _total_bytes: Option<u64>) {}
    fn bytes_received(&self, _bytes: u64) {}
    fn file_finished(&self, _file: &str) {}
}

/// A [`DownloadProgress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;
impl DownloadProgress for NoProgress {}

/// Where and how to resolve hub ids. Built from the environment by [`ResolveOptions::from_env`], or explicitly
/// (tests pass their own, so nothing reads or mutates process-wide state).
#[derive(Clone)]
pub struct ResolveOptions {
    /// The hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// `$HF_ENDPOINT` without a trailing slash, else [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// `$HF_TOKEN`, else the token file (`$HF_TOKEN_PATH`, else `$HF_HOME/token`). Sent as a bearer header only.
    pub token: Option<String>,
    /// `$HF_HUB_OFFLINE` set to 1/true/yes/on: never touch the network.
    pub offline: bool,
}

impl std::fmt::Debug for ResolveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolveOptions")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl ResolveOptions {
    /// Read `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH`,
    /// `HF_HUB_OFFLINE` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The same rules as [`from_env`](Self::from_env) over any variable lookup (huggingface_hub `constants.py`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        ResolveOptions {
            cache_dir,
            endpoint,
            token,
            offline,
        }
    }
}

/// Resolve `spec` with the process environment; see [`resolve_model_with`].
pub fn resolve_model(
    spec: &str,
    revision: Option<&str>,
    progress: &dyn DownloadProgress,
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
    progress: &dyn DownloadProgress,
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
pub(crate) struct DatasetFile {
    /// `<cache>/datasets--<org>--<name>/snapshots/<commit>/<file>`.
    pub path: PathBuf,
    pub commit: String,
}

/// `file` of the hub dataset `dataset` (`org/name`) at `revision`: from the cache when the snapshot holds it (no
/// network access), else downloaded into the cache unless offline. The cache layout and the environment rules are
/// the models' (`datasets--<org>--<name>` as huggingface_hub names dataset repositories).
pub(crate) fn resolve_dataset_file(
    dataset: &str,
    revision: &str,
    file: &str,
    opts: &ResolveOptions,
    progress: &dyn DownloadProgress,
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
enum RepoKind {
    Model,
    Dataset,
}

/// `org/name` (one slash; letters, digits, `-`, `_`, `.`; no `..`).
struct RepoId {
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
    fn url_path(&self) -> String {
        match self.kind {
            RepoKind::Model => self.id(),
            RepoKind::Dataset => format!("datasets/{}", self.id()),
        }
    }

    fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
}

fn is_commit_sha(s: &str) -> bool {
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
fn shard_names(index_text: &str) -> std::result::Result<Vec<String>, String> {
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

struct Downloader<'a> {
    opts: &'a ResolveOptions,
    repo: &'a RepoId,
    repo_dir: &'a Path,
    progress: &'a dyn DownloadProgress,
    /// Does not follow redirects: the hub's first answer carries `X-Repo-Commit` and the etags.
    first_hop: ureq::Agent,
    /// Follows the redirect to the CDN; never forwards the bearer token (ureq's `RedirectAuthHeaders::Never`).
    follow: ureq::Agent,
}

/// One downloaded file's identity.
struct Fetched {
    commit: String,
}

impl<'a> Downloader<'a> {
    fn new(
        opts: &'a ResolveOptions,
        repo: &'a RepoId,
        repo_dir: &'a Path,
        progress: &'a dyn DownloadProgress,
    ) -> Self {
        let agent = |redirects: u32| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_connect(Some(Duration::from_secs(30)))
                .user_agent(concat!("oxport/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        };
        Downloader {
            opts,
            repo,
            repo_dir,
            progress,
            first_hop: agent(0),
            follow: agent(10),
        }
    }

    fn download(&self, revision: &str) -> Result<PathBuf> {
        let repo_id = self.repo.id();
        // config.json first: its answer names the commit, and every later file is asked for at that commit so the
        // snapshot cannot mix two revisions.
        let Some(first) = self.fetch(revision, None, "config.json")? else {
            return Err(Error::Download {
                url: self.url(revision, "config.json"),
                msg: format!(
                    "{repo_id} has no config.json at revision {revision} (or the repository does not exist)"
                ),
            });
        };
        let commit = first.commit;
        for file in OPTIONAL_FILES {
            self.fetch(&commit, Some(&commit), file)?;
        }
        let snapshot = self.repo_dir.join("snapshots").join(&commit);
        if self.fetch(&commit, Some(&commit), INDEX_FILE)?.is_some() {
            let index = snapshot.join(INDEX_FILE);
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let shards = shard_names(&text).map_err(|msg| Error::Index {
                path: index.clone(),
                msg,
            })?;
            for shard in &shards {
                if self.fetch(&commit, Some(&commit), shard)?.is_none() {
                    return Err(Error::Download {
                        url: self.url(&commit, shard),
                        msg: format!("{INDEX_FILE} names {shard}, but the hub has no such file"),
                    });
                }
            }
        } else if self.fetch(&commit, Some(&commit), SINGLE_FILE)?.is_none() {
            return Err(Error::Download {
                url: self.url(&commit, SINGLE_FILE),
                msg: format!("{repo_id} has neither {INDEX_FILE} nor {SINGLE_FILE}"),
            });
        }
        self.write_ref(revision, &commit)?;
        Ok(snapshot)
    }

    /// `refs/<revision>` → `commit`, for a branch or tag name (a sha needs no ref).
    fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let ref_path = self.repo_dir.join("refs").join(revision);
        if let Some(parent) = ref_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomically(&ref_path, commit.as_bytes())
    }

    fn url(&self, revision: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.opts.endpoint,
            self.repo.url_path(),
            revision,
            file
        )
    }

    /// Download `file` at `revision` into the cache. `Ok(None)` when the hub answers 404 (the file does not exist).
    /// `expected_commit` is the snapshot the file must belong to (after the first file).
    fn fetch(
        &self,
        revision: &str,
        expected_commit: Option<&str>,
        file: &str,
    ) -> Result<Option<Fetched>> {
        let url = self.url(revision, file);
        let fail = |msg: String| Error::Download {
            url: url.clone(),
            msg,
        };
        let mut req = self.first_hop.get(&url);
        if let Some(token) = &self.opts.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let resp = req.call().map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        match status {
            404 => return Ok(None),
            401 | 403 => {
                return Err(fail(format!(
                    "HTTP {status}: access denied (a gated or private repository needs a token: HF_TOKEN or `$HF_HOME/token`)"
                )));
            }
            200..=399 => {}
            _ => return Err(fail(format!("HTTP {status}"))),
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let commit = header("x-repo-commit")
            .or_else(|| expected_commit.map(str::to_string))
            .or_else(|| is_commit_sha(revision).then(|| revision.to_string()))
            .ok_or_else(|| {
                fail("the server sent no X-Repo-Commit header, so the snapshot is unknown".into())
            })?;
        if !is_commit_sha(&commit) {
            return Err(fail(format!(
                "X-Repo-Commit {commit:?} is not a commit sha"
            )));
        }
        if let Some(expected) = expected_commit
            && expected != commit
        {
            return Err(fail(format!(
                "file belongs to commit {commit}, expected {expected}"
            )));
        }
        let linked_etag = header("x-linked-etag").map(|e| normalize_etag(&e));
        // An LFS file's X-Linked-Etag is the sha256 of its content (the LFS oid; huggingface_hub
        // `file_download.py` names the blob after it): verified while streaming.
        let expected_sha256 = linked_etag
            .clone()
            .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|e| e.to_ascii_lowercase());
        let etag = linked_etag.or_else(|| header("etag").map(|e| normalize_etag(&e)));
        let blob_name = match etag {
            Some(e)
                if !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                e
            }
            // No usable etag: a blob per (commit, file) still keeps snapshots separate.
            _ => format!(
                "{commit}-{}",
                file.replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_")
            ),
        };

        let blobs = self.repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let blob = blobs.join(&blob_name);
        if !blob.is_file() {
            let body_resp = if (300..400).contains(&status) {
                let location = header("location")
                    .ok_or_else(|| fail(format!("HTTP {status} without Location")))?;
                let target = self.absolute(&location);
                let mut req = self.follow.get(&target);
                // Only the hub itself gets the token; a CDN on another origin never does.
                if let Some(token) = &self.opts.token
                    && same_origin(&target, &self.opts.endpoint)
                {
                    req = req.header("Authorization", format!("Bearer {token}"));
                }
                let r = req
                    .call()
                    .map_err(|e| fail(format!("following the redirect: {e}")))?;
                if r.status().as_u16() != 200 {
                    return Err(fail(format!(
                        "HTTP {} from the redirect target",
                        r.status().as_u16()
                    )));
                }
                r
            } else {
                resp
            };
            self.stream_to_blob(body_resp, &blob, file, &url, expected_sha256.as_deref())?;
        }
        self.link(&commit, file, &blob_name, &blob)?;
        Ok(Some(Fetched { commit }))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!(
                "{}{}",
                origin(&self.opts.endpoint),
                if location.starts_with('/') { "" } else { "/" }
            ) + location
        }
    }

    /// Stream the body into `<blob>.incomplete`, then rename it into place (a failed download leaves no blob).
    fn stream_to_blob(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        blob: &Path,
        file: &str,
        url: &str,
        expected_sha256: Option<&str>,
    ) -> Result<()> {
        let fail = |msg: String| Error::Download {
            url: url.to_string(),
            msg,
        };
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        self.progress.file_started(file, total);
        // Per-process temp name: two oxport runs fetching the same blob never write into one file.
        let tmp = incomplete_path(blob);
        let result = (|| {
            let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut reader = resp.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut received = 0u64;
            let mut hasher = Sha256::new();
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| fail(format!("reading the body: {e}")))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(io(&tmp))?;
                if expected_sha256.is_some() {
                    hasher.update(&buf[..n]);
                }
                received += n as u64;
                self.progress.bytes_received(n as u64);
            }
            if let Some(total) = total
                && total != received
            {
                return Err(fail(format!("got {received} of {total} bytes")));
            }
            if let Some(expected) = expected_sha256 {
                let got: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if got != expected {
                    return Err(fail(format!(
                        "content sha256 {got} differs from the hub's X-Linked-Etag {expected}"
                    )));
                }
            }
            out.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, blob).map_err(io(blob))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        self.progress.file_finished(file);
        result
    }

    /// `snapshots/<commit>/<file>` → `../../blobs/<blob>` (a copy where symlinks are unavailable). A file in a
    /// subfolder (dataset files: `wikitext-2-raw-v1/train-….parquet`) climbs one `..` more per folder.
    fn link(&self, commit: &str, file: &str, blob_name: &str, blob: &Path) -> Result<()> {
        let dest = self.repo_dir.join("snapshots").join(commit).join(file);
        let parent = dest.parent().unwrap_or(self.repo_dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        if dest.symlink_metadata().is_ok() {
            std::fs::remove_file(&dest).map_err(io(&dest))?;
        }
        #[cfg(unix)]
        {
            let _ = blob;
            let depth = Path::new(file).components().count();
            let mut target: PathBuf = std::iter::repeat_n("..", depth + 1).collect();
            target.push("blobs");
            target.push(blob_name);
            std::os::unix::fs::symlink(&target, &dest).map_err(io(&dest))?;
        }
        #[cfg(not(unix))]
        {
            let _ = blob_name;
            std::fs::copy(blob, &dest).map_err(io(&dest))?;
        }
        Ok(())
    }
}

fn normalize_etag(e: &str) -> String {
    e.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a).eq_ignore_ascii_case(origin(b))
}

/// `<path>.<pid>.incomplete`, beside `path`.
fn incomplete_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.incomplete", std::process::id()));
    PathBuf::from(name)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = incomplete_path(path);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_rules_follow_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = ResolveOptions::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert!(!o.offline);
        let o = ResolveOptions::from_vars(vars(&[
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(o.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        assert!(o.offline);
        let o = ResolveOptions::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_OFFLINE", "0"),
        ]));
        assert_eq!(o.cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(!o.offline);
        assert!(
            !format!("{o:?}").contains("hf_abc"),
            "Debug must not show the token"
        );
        let o = ResolveOptions::from_vars(vars(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]));
        assert_eq!(o.cache_dir, PathBuf::from("/cache"));
    }

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

    #[test]
    fn origins() {
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert!(same_origin(
            "https://huggingface.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_origin(
            "https://cdn-lfs.hf.co/x",
            "https://huggingface.co"
        ));
        assert_eq!(normalize_etag("W/\"abc-1\""), "abc-1");
    }
}
