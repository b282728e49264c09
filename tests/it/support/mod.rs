//! Helpers the integration tests share: where the repository, its fixtures and the `oxport` binary are, the
//! runtimes' Python, writable copies of checkpoints, and small byte and JSON utilities. The safetensors writer
//! and the loopback hub server live in the submodules.

use std::path::{Path, PathBuf};

pub(crate) mod loopback;
pub(crate) mod safetensors;

/// The repository root (the fixtures are found relative to it).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `fixtures/<name>` (a tiny checkpoint such as `tiny`, `tiny-gqa`, or a path below `fixtures/`).
pub(crate) fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// `fixtures/reference/checkpoints/<name>`, the checkpoints the peers' reference exports were made from.
pub(crate) fn reference_checkpoint(name: &str) -> PathBuf {
    fixture("reference/checkpoints").join(name)
}

/// A writable copy of the reference checkpoint `name` at `dst` (its files, not recursive).
pub(crate) fn copy_reference_checkpoint(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(reference_checkpoint(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// `OXPORT_BIN` (set by `cargo xtask test`), else the `oxport` beside the running test's target folder.
pub(crate) fn oxport_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("OXPORT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .join("oxport");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p oxport-cli` (with --release for `cargo test --release`) first, or set \
         OXPORT_BIN",
        bin.display()
    );
    bin
}

/// `$OXPORT_PYTHON`, else the repo's venv, which it then sets for the runtimes' loaders (the test runner sets the
/// variable; CI installs the venv). One `Once` for the whole binary: the variable is set at most once, before any
/// runtime is loaded.
pub(crate) fn python() -> PathBuf {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("OXPORT_PYTHON").is_none() {
            // SAFETY: runs once, before any runtime is loaded; the tests that read the variable call this first.
            unsafe { std::env::set_var("OXPORT_PYTHON", repo_root().join(".venv/bin/python")) };
        }
    });
    PathBuf::from(std::env::var_os("OXPORT_PYTHON").unwrap())
}

/// Every file of `dir` (not recursive) with its bytes, sorted by name: two exports compare equal byte for byte.
pub(crate) fn folder_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Edit the JSON file at `path` in place (written back pretty-printed).
pub(crate) fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (the golden files store bytes as hex).
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// sha256 of `bytes` as lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The JSON document in the gzip file at `path` (the golden files of the quantizers).
pub(crate) fn read_gz_json(path: &Path) -> serde_json::Value {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
