//! Integration tests for oxport live in `tests/tests/*.rs`; helpers shared by them live here.

use std::path::{Path, PathBuf};

/// The repository root (the fixtures are found relative to it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `OXPORT_BIN` (set by `cargo xtask test`), else the `oxport` beside the running test's target folder.
pub fn oxport_bin() -> PathBuf {
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

/// Every file of `dir` (not recursive) with its bytes, sorted by name: two exports compare equal byte for byte.
pub fn folder_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
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
