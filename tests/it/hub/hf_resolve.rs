//! Hub resolution against a loopback server that answers the hub's file API like huggingface.co does:
//! `GET /{repo}/resolve/{revision}/{file}` → 200 with `X-Repo-Commit` + `ETag` for small files, 302 to a CDN URL
//! with `X-Repo-Commit` + `X-Linked-Etag` for safetensors (LFS) files, 404 for absent files.
//! The environment is passed in a `ResolveOptions`, so these tests never touch process-wide state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oxport_hf::Checkpoint;
use oxport_hub::{ResolveOptions, resolve_model_with};
use oxport_io::{Event, Reporter, Silent};

use crate::support::loopback::{self, header};
use crate::support::{fixture, reference_checkpoint, sha256_hex};

const REPO: &str = "oxport-test/phi3-tiny";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_loopbackSECRETtoken123";

/// Serve `dir` as `REPO` at revisions `main` and `COMMIT`.
fn start_hub(dir: PathBuf) -> loopback::Server {
    loopback::Server::start(move |url, endpoint| answer(&dir, endpoint, url))
}

fn etag_of(bytes: &[u8]) -> String {
    // Any stable per-content string will do for small files (the hub uses the git blob sha1).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

/// Test hook: the CDN serves these files with one byte flipped (a corrupted transfer).
const CORRUPT_MARKER: &str = ".corrupt-on-cdn";

fn answer(dir: &Path, endpoint: &str, url: &str) -> tiny_http::ResponseBox {
    let not_found = || {
        tiny_http::Response::from_string("Entry not found")
            .with_status_code(404)
            .boxed()
    };
    if let Some(file) = url.strip_prefix("/cdn/") {
        return match std::fs::read(dir.join(file)) {
            Ok(mut bytes) => {
                if dir.join(CORRUPT_MARKER).exists() {
                    bytes[100] ^= 1;
                }
                tiny_http::Response::from_data(bytes).boxed()
            }
            Err(_) => not_found(),
        };
    }
    let Some(rest) = url.strip_prefix(&format!("/{REPO}/resolve/")) else {
        return not_found();
    };
    let Some((rev, file)) = rest.split_once('/') else {
        return not_found();
    };
    if rev != "main" && rev != COMMIT {
        return not_found();
    }
    let Ok(bytes) = std::fs::read(dir.join(file)) else {
        return not_found();
    };
    if file.ends_with(".safetensors") {
        // LFS files: the hub's X-Linked-Etag is the content's sha256.
        let etag = sha256_hex(&bytes);
        tiny_http::Response::empty(302)
            .with_header(header("Location", &format!("{endpoint}/cdn/{file}")))
            .with_header(header("X-Repo-Commit", COMMIT))
            .with_header(header("X-Linked-Etag", &format!("\"{etag}\"")))
            .boxed()
    } else {
        let etag = etag_of(&bytes);
        tiny_http::Response::from_data(bytes)
            .with_header(header("X-Repo-Commit", COMMIT))
            .with_header(header("ETag", &format!("\"{etag}\"")))
            .boxed()
    }
}

fn options(endpoint: &str, hf_home: &Path, offline: bool) -> ResolveOptions {
    ResolveOptions {
        cache_dir: hf_home.join("hub"),
        endpoint: endpoint.to_string(),
        token: Some(TOKEN.to_string()),
        offline,
    }
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    bytes: Mutex<u64>,
}

impl Reporter for Recorder {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Begin {
                stage, bytes: true, ..
            } => self.events.lock().unwrap().push(stage.to_string()),
            Event::Advance { units, .. } => *self.bytes.lock().unwrap() += units,
            _ => {}
        }
    }
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file of `src` arrived byte for byte in the snapshot folder `path`, as a relative symlink into blobs/;
/// returns their total size.
fn assert_snapshot_is(src: &Path, path: &Path) -> u64 {
    let mut expected = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        expected.insert(
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    let mut got = BTreeMap::new();
    for e in std::fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let link = std::fs::read_link(e.path()).expect("snapshot entries are symlinks");
        assert!(link.starts_with("../../blobs"), "{}", link.display());
        got.insert(
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(got == expected, "downloaded bytes differ from the fixture");
    expected.values().map(|b| b.len() as u64).sum()
}

/// The token reached the hub on every resolve request, and appears in none of `files` (the cache on disk). After
/// config.json, files are asked for at the commit the hub named, so the snapshot cannot mix revisions.
fn assert_token_sent_but_never_stored(requests: &[(String, Option<String>)], files: &[PathBuf]) {
    let resolves: Vec<_> = requests
        .iter()
        .filter(|(u, _)| u.contains("/resolve/"))
        .collect();
    assert!(resolves.len() >= 5, "{requests:?}");
    for (url, auth) in &resolves {
        assert_eq!(
            auth.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{url}"
        );
    }
    assert!(resolves[0].0.ends_with("/resolve/main/config.json"));
    assert!(
        resolves[1..]
            .iter()
            .all(|(u, _)| u.contains(&format!("/resolve/{COMMIT}/")))
    );
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token written to {}",
            f.display()
        );
    }
}

// The cache links snapshots to blobs with symlinks on Unix (copies elsewhere).
#[cfg(unix)]
#[test]
fn downloads_into_the_cache_layout_then_resolves_offline() {
    let hf_home = tempfile::tempdir().unwrap();
    let src = fixture("tiny");
    let hub = start_hub(src.clone());
    let progress = Recorder::default();

    let path = resolve_model_with(
        REPO,
        None,
        &options(&hub.endpoint, hf_home.path(), false),
        &progress,
    )
    .unwrap();
    let repo_dir = hf_home.path().join("hub/models--oxport-test--phi3-tiny");
    assert_eq!(path, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );

    let weight_bytes = assert_snapshot_is(&src, &path);
    assert_eq!(*progress.bytes.lock().unwrap(), weight_bytes);
    assert!(
        progress
            .events
            .lock()
            .unwrap()
            .contains(&"model-00002-of-00002.safetensors".to_string())
    );
    // No leftovers from the temp-file-then-rename protocol.
    let mut files = vec![];
    all_files(hf_home.path(), &mut files);
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_none_or(|e| e != "incomplete")),
        "{files:?}"
    );

    // The checkpoint opens from the snapshot.
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(
        ckpt.info("model.embed_tokens.weight").unwrap().shape[1],
        256,
        "hidden size"
    );

    assert_token_sent_but_never_stored(&hub.requests(), &files);

    // Second resolve: offline, with the server gone.
    let endpoint = hub.endpoint.clone();
    drop(hub);
    let again = resolve_model_with(
        REPO,
        None,
        &options(&endpoint, hf_home.path(), true),
        &Silent,
    )
    .unwrap();
    assert_eq!(again, path);
    // Also by commit sha, and online without any request needed (the server is down: a request would fail).
    let by_sha = resolve_model_with(
        REPO,
        Some(COMMIT),
        &options(&endpoint, hf_home.path(), false),
        &Silent,
    )
    .unwrap();
    assert_eq!(by_sha, path);
}

#[test]
fn offline_without_a_cached_snapshot_names_the_repo_and_the_cache() {
    let hf_home = tempfile::tempdir().unwrap();
    let e = resolve_model_with(
        REPO,
        Some("v2"),
        &options("http://127.0.0.1:9", hf_home.path(), true),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(REPO) && e.contains("v2") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    assert!(
        e.contains(&hf_home.path().join("hub").display().to_string()),
        "{e}"
    );
}

#[test]
fn unknown_repo_or_revision_is_a_clear_error_and_writes_no_snapshot() {
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(fixture("tiny"));
    let opts = options(&hub.endpoint, hf_home.path(), false);
    let e = resolve_model_with("oxport-test/absent", None, &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("oxport-test/absent") && e.contains("config.json"),
        "{e}"
    );
    assert!(!e.contains(TOKEN));
    let e = resolve_model_with(REPO, Some("no-such-branch"), &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-branch"), "{e}");
    assert!(
        !hf_home
            .path()
            .join("hub/models--oxport-test--phi3-tiny/snapshots")
            .exists()
    );
}

#[test]
fn a_hub_index_naming_a_shard_outside_the_snapshot_is_refused_before_download() {
    let src = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.path().join(e.file_name())).unwrap();
    }
    let index = src.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap().replace(
        "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"",
        "\"model.norm.weight\": \"../../../../evil.safetensors\"",
    );
    std::fs::write(&index, text).unwrap();
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(src.path().to_path_buf());
    let e = resolve_model_with(
        REPO,
        None,
        &options(&hub.endpoint, hf_home.path(), false),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("evil.safetensors") && e.contains("model.norm.weight"),
        "{e}"
    );
    assert!(!hub.requests().iter().any(|(u, _)| u.contains("evil")));
    assert!(!hf_home.path().join("evil.safetensors").exists());
}

#[test]
fn local_folders_are_returned_as_is_and_bad_specs_are_named() {
    let opts = options("http://127.0.0.1:9", Path::new("/nonexistent"), true);
    let dir = fixture("tiny");
    assert_eq!(
        resolve_model_with(dir.to_str().unwrap(), None, &opts, &Silent).unwrap(),
        dir
    );
    let e = resolve_model_with("./no/such/folder", None, &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("./no/such/folder"), "{e}");
}

#[test]
fn token_comes_from_hf_token_else_the_token_file() {
    let hf_home = tempfile::tempdir().unwrap();
    std::fs::write(hf_home.path().join("token"), "hf_fromFILE\n").unwrap();
    let home = hf_home.path().to_str().unwrap().to_string();
    let vars = |with_env_token: bool| {
        let home = home.clone();
        move |k: &str| match k {
            "HF_HOME" => Some(home.clone()),
            "HF_TOKEN" if with_env_token => Some("hf_fromENV".to_string()),
            _ => None,
        }
    };
    assert_eq!(
        ResolveOptions::from_vars(vars(false)).token.as_deref(),
        Some("hf_fromFILE")
    );
    assert_eq!(
        ResolveOptions::from_vars(vars(true)).token.as_deref(),
        Some("hf_fromENV")
    );
    assert_eq!(
        ResolveOptions::from_vars(vars(false)).cache_dir,
        hf_home.path().join("hub")
    );
}

#[test]
fn an_interrupted_download_leaves_no_blob_and_no_snapshot() {
    use std::io::{Read, Write};
    // A server that promises 1000 bytes, sends 10 and hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Repo-Commit: {COMMIT}\r\nETag: \"abc123\"\r\n\r\n0123456789"
        );
        conn.write_all(head.as_bytes()).unwrap();
    });
    let hf_home = tempfile::tempdir().unwrap();
    let e = resolve_model_with(
        REPO,
        None,
        &options(&endpoint, hf_home.path(), false),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    server.join().unwrap();
    assert!(e.contains("config.json"), "{e}");
    let repo_dir = hf_home.path().join("hub/models--oxport-test--phi3-tiny");
    let mut files = vec![];
    if repo_dir.exists() {
        all_files(&repo_dir, &mut files);
    }
    assert!(files.is_empty(), "left behind: {files:?}");
}

/// A repository without an index: the single `model.safetensors` is fetched instead (after the index's 404).
#[cfg(unix)]
#[test]
fn single_file_repositories_download_model_safetensors() {
    let src = reference_checkpoint("phi3-tiny-random");
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(src.clone());
    let path = resolve_model_with(
        REPO,
        Some("main"),
        &options(&hub.endpoint, hf_home.path(), false),
        &Silent,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(path.join("model.safetensors")).unwrap(),
        std::fs::read(src.join("model.safetensors")).unwrap()
    );
    assert!(!path.join("model.safetensors.index.json").exists());
    assert!(
        hub.requests()
            .iter()
            .any(|(u, _)| u.ends_with("/model.safetensors.index.json"))
    );
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(
        ckpt.info("model.embed_tokens.weight").unwrap().shape[0],
        8192,
        "vocab size"
    );
}

/// A shard whose bytes do not hash to the hub's X-Linked-Etag (sha256) is refused and leaves no blob.
#[test]
fn corrupted_lfs_transfer_fails_the_sha256_check() {
    let src = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.path().join(e.file_name())).unwrap();
    }
    std::fs::write(src.path().join(CORRUPT_MARKER), "").unwrap();
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(src.path().to_path_buf());
    let e = resolve_model_with(
        REPO,
        None,
        &options(&hub.endpoint, hf_home.path(), false),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model-00001-of-00002.safetensors") && e.contains("sha256"),
        "{e}"
    );
    let blobs = hf_home
        .path()
        .join("hub/models--oxport-test--phi3-tiny/blobs");
    let expected =
        sha256_hex(&std::fs::read(src.path().join("model-00001-of-00002.safetensors")).unwrap());
    assert!(!blobs.join(&expected).exists());
    let leftovers: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
