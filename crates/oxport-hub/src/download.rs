//! Downloads into the Hugging Face cache, laid out as huggingface_hub lays it out (`file_download.py`): a file's
//! first answer names the commit (`X-Repo-Commit`) and the blob (`X-Linked-Etag`, else `ETag`); the body streams into
//! `blobs/<etag>.<pid>.incomplete` (an LFS file's content checked against its sha256 on the way) and is renamed into
//! place, then `snapshots/<commit>/<file>` links to it. The bearer token goes to the hub's own origin only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io};
use oxport_io::{Event, Reporter};

use crate::options::ResolveOptions;
use crate::resolve::{INDEX_FILE, RepoId, SINGLE_FILE, is_commit_sha, shard_names};

/// Files fetched besides the weights when present (a 404 is fine); `config.json` is required.
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
];

pub(crate) struct Downloader<'a> {
    opts: &'a ResolveOptions,
    repo: &'a RepoId,
    repo_dir: &'a Path,
    progress: &'a dyn Reporter,
    /// Does not follow redirects: the hub's first answer carries `X-Repo-Commit` and the etags.
    first_hop: ureq::Agent,
    /// Follows the redirect to the CDN; never forwards the bearer token (ureq's `RedirectAuthHeaders::Never`).
    follow: ureq::Agent,
}

/// One downloaded file's identity.
pub(crate) struct Fetched {
    pub(crate) commit: String,
}

impl<'a> Downloader<'a> {
    pub(crate) fn new(
        opts: &'a ResolveOptions,
        repo: &'a RepoId,
        repo_dir: &'a Path,
        progress: &'a dyn Reporter,
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

    pub(crate) fn download(&self, revision: &str) -> Result<PathBuf> {
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
    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let ref_path = self.repo_dir.join("refs").join(revision);
        if let Some(parent) = ref_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomically(&ref_path, commit.as_bytes())
    }

    pub(crate) fn url(&self, revision: &str, file: &str) -> String {
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
    pub(crate) fn fetch(
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
        // `total` from `Content-Length` when the server sends it (0: not counted).
        self.progress.report(Event::Begin {
            stage: file,
            total: total.unwrap_or(0),
            bytes: true,
        });
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
                self.progress.report(Event::Advance {
                    item: "",
                    units: n as u64,
                });
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
        self.progress.report(Event::End);
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
