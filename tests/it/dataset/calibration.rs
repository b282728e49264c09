//! wikitext2 calibration through a loopback hub that answers like huggingface.co does for a dataset's LFS file:
//! `GET /datasets/{repo}/resolve/{revision}/{file}` → 302 to a CDN URL with `X-Repo-Commit` and `X-Linked-Etag`
//! (the content's sha256), 404 for anything else. The parquet file is written here with the `parquet` crate, as
//! the hub's is (an optional UTF-8 `text` column, snappy), in two row groups.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxport_dataset::{CalibrationSource, CalibrationSpec, WIKITEXT2_FILE, calibration_samples};
use oxport_hub::ResolveOptions;
use oxport_io::Silent;

use crate::support::loopback::{self, header};
use crate::support::{fixture, sha256_hex};

const COMMIT: &str = "b08601e04326c79dfdd32d625aee71d232d685c3";
const REPO_PATH: &str = "/datasets/Salesforce/wikitext/resolve/";

// The rows and their expected windows, shared with oxport-dataset's unit tests (`crates/oxport-dataset/src/tests.rs`).
include!("../../../crates/oxport-dataset/src/tests/wiki_rows.rs");

fn parquet_bytes(rows: &[&str]) -> Vec<u8> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { optional binary text (STRING); }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    for chunk in rows.chunks(5) {
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = chunk.iter().map(|r| ByteArray::from(*r)).collect();
        let def_levels = vec![1i16; chunk.len()];
        column
            .typed::<ByteArrayType>()
            .write_batch(&values, Some(&def_levels), None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
    }
    writer.close().unwrap();
    out
}

/// Serve `body` as `Salesforce/wikitext`'s `file` at `main` and `COMMIT`.
fn start_hub(file: &'static str, body: Vec<u8>) -> loopback::Server {
    loopback::Server::start(move |url, endpoint| answer(url, file, &body, endpoint))
}

fn answer(url: &str, file: &str, body: &[u8], endpoint: &str) -> tiny_http::ResponseBox {
    if url == "/cdn/blob" {
        return tiny_http::Response::from_data(body.to_vec()).boxed();
    }
    let served = [format!("main/{file}"), format!("{COMMIT}/{file}")];
    match url.strip_prefix(REPO_PATH) {
        Some(rest) if served.iter().any(|s| s == rest) => {
            let sha = sha256_hex(body);
            tiny_http::Response::empty(302)
                .with_header(header("Location", &format!("{endpoint}/cdn/blob")))
                .with_header(header("X-Repo-Commit", COMMIT))
                .with_header(header("X-Linked-Etag", &format!("\"{sha}\"")))
                .boxed()
        }
        _ => tiny_http::Response::from_string("Entry not found")
            .with_status_code(404)
            .boxed(),
    }
}

fn options(endpoint: &str, hf_home: &Path, offline: bool) -> ResolveOptions {
    ResolveOptions {
        cache_dir: hf_home.join("hub"),
        endpoint: endpoint.to_string(),
        token: None,
        offline,
    }
}

fn tokenizer() -> PathBuf {
    fixture("tokenizers/phi3-sp/tokenizer.json")
}

fn wikitext(num_samples: usize, seq_len: usize) -> CalibrationSpec {
    CalibrationSpec {
        source: CalibrationSource::Wikitext2,
        num_samples: Some(num_samples),
        seq_len: Some(seq_len),
    }
}

#[cfg(unix)]
#[test]
fn wikitext2_downloads_into_the_dataset_cache_then_works_offline() {
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(WIKITEXT2_FILE, parquet_bytes(WIKI_ROWS));
    let online = options(&hub.endpoint, hf_home.path(), false);
    let set = calibration_samples(&wikitext(4, 8), &tokenizer(), &online, &Silent).unwrap();
    assert_eq!(set.samples, WIKI_WINDOWS_4X8);
    assert_eq!(
        set.description,
        format!(
            "wikitext2 (Salesforce/wikitext wikitext-2-raw-v1 train, rev {COMMIT}): 4 windows of 8 tokens from 8 rows (283 tokens)"
        )
    );
    assert_eq!(
        hub.urls(),
        [
            format!("{REPO_PATH}main/{WIKITEXT2_FILE}"),
            "/cdn/blob".into()
        ]
    );

    // huggingface_hub's layout: refs/main, snapshots/<sha>/<folder>/<file> → ../../../blobs/<sha256>.
    let repo_dir = hf_home.path().join("hub/datasets--Salesforce--wikitext");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let link = repo_dir.join("snapshots").join(COMMIT).join(WIKITEXT2_FILE);
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.starts_with("../../../blobs"), "{}", target.display());
    assert!(link.is_file());

    // All 12 rows when the limit allows: 8 * 8 // 4 = 16 > 12, read across both row groups.
    let set = calibration_samples(&wikitext(8, 8), &tokenizer(), &online, &Silent).unwrap();
    assert!(
        set.description.contains("from 12 rows"),
        "{}",
        set.description
    );

    drop(hub);
    for offline in [true, false] {
        // Served from the cache without a request (the hub is gone; a request would fail).
        let opts = options("http://127.0.0.1:9", hf_home.path(), offline);
        let set = calibration_samples(&wikitext(4, 8), &tokenizer(), &opts, &Silent).unwrap();
        assert_eq!(set.samples, WIKI_WINDOWS_4X8);
    }
}

#[test]
fn offline_without_the_file_names_the_dataset_and_file() {
    let hf_home = tempfile::tempdir().unwrap();
    let opts = options("http://127.0.0.1:9", hf_home.path(), true);
    let e = calibration_samples(&wikitext(4, 8), &tokenizer(), &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dataset Salesforce/wikitext"), "{e}");
    assert!(
        e.contains(WIKITEXT2_FILE) && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_a_404_naming_the_dataset_and_file() {
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub("wikitext-2-raw-v1/other.parquet", parquet_bytes(WIKI_ROWS));
    let opts = options(&hub.endpoint, hf_home.path(), false);
    let e = calibration_samples(&wikitext(4, 8), &tokenizer(), &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{}{REPO_PATH}main/{WIKITEXT2_FILE}", hub.endpoint)),
        "{e}"
    );
    assert!(
        e.contains(
            "dataset Salesforce/wikitext has no file wikitext-2-raw-v1/train-00000-of-00001.parquet"
        ),
        "{e}"
    );
}

#[test]
fn a_network_failure_names_the_url() {
    let hf_home = tempfile::tempdir().unwrap();
    // Bound, then closed: nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = options(&format!("http://127.0.0.1:{port}"), hf_home.path(), false);
    let e = calibration_samples(&wikitext(4, 8), &tokenizer(), &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "downloading http://127.0.0.1:{port}/datasets/Salesforce/wikitext/resolve/main/{WIKITEXT2_FILE}"
        )),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let hf_home = tempfile::tempdir().unwrap();
    let hub = start_hub(WIKITEXT2_FILE, b"<html>not parquet</html>".to_vec());
    let opts = options(&hub.endpoint, hf_home.path(), false);
    let e = calibration_samples(&wikitext(4, 8), &tokenizer(), &opts, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("datasets--Salesforce--wikitext") && e.contains("train-00000-of-00001.parquet"),
        "{e}"
    );
    assert!(e.contains("not a readable parquet file"), "{e}");
}
