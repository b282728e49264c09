//! insta snapshots of the IR graph text ([`crate::graph_text`], built without reading a weight) for every tiny
//! Phi-3 checkpoint in `fixtures/` (the ones `cargo xtask digests` exports): int4 with optimum-cli's defaults
//! (where those refuse the checkpoint, the refusal, and the graph with `--group-size-fallback adjust`), and int8,
//! fp16 and int4 group 64 with data-free AWQ for `fixtures/tiny`; plus a check that the graph reads no weight.
//! The snapshots live in `src/snapshots/`; a graph change shows as their diff.
//!
//! To accept an intended change (`cargo insta` is not needed):
//! `INSTA_UPDATE=always cargo test -p oxport-openvino graph_snapshots`, then review `git diff src/snapshots/`.
//! With `CI=true` and no `INSTA_UPDATE`, a mismatch fails instead of writing `.snap.new` files.

use std::path::{Path, PathBuf};

use oxport_arch::Model;

use crate::plan::{CompressionOptions, GroupSizeFallback, WeightFormat};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny checkpoints: the folders of `fixtures/` and `fixtures/reference/checkpoints/` holding a `config.json`.
fn fixtures() -> Vec<PathBuf> {
    let root = repo_root().join("fixtures");
    let mut out = Vec::new();
    for dir in [root.clone(), root.join("reference/checkpoints")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.join("config.json").is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 8, "fixtures: {out:?}");
    out
}

fn name_of(fixture: &Path) -> String {
    fixture.file_name().unwrap().to_string_lossy().into_owned()
}

/// The graph text of `fixture` under `opts`, or the refusal.
fn text(ckpt: &Model, opts: &CompressionOptions) -> Result<String, String> {
    let plan = crate::plan(ckpt, opts).map_err(|e| e.to_string())?;
    crate::graph_text(ckpt, &plan).map_err(|e| e.to_string())
}

/// Snapshot `value` as `name`, with the checkout's absolute path and the crate version filtered.
fn snapshot(name: &str, value: &str) {
    let root = repo_root().canonicalize().unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(&regex_escape(&root.to_string_lossy()), "[ROOT]");
    settings.add_filter(r#"version = "[^"]*""#, r#"version = "[VERSION]""#);
    settings.bind(|| insta::assert_snapshot!(name, value));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn int4_default_graph_of_every_fixture() {
    for fixture in fixtures() {
        let name = name_of(&fixture);
        let ckpt = Model::open(&fixture).unwrap();
        let opts = CompressionOptions::new(WeightFormat::Int4);
        match text(&ckpt, &opts) {
            Ok(t) => snapshot(&format!("ov_int4_{name}"), &t),
            Err(refusal) => {
                snapshot(&format!("ov_int4_{name}_refused"), &refusal);
                let adjust = CompressionOptions {
                    group_size_fallback: GroupSizeFallback::Adjust,
                    ..opts
                };
                snapshot(
                    &format!("ov_int4_adjust_{name}"),
                    &text(&ckpt, &adjust).unwrap(),
                );
            }
        }
    }
}

#[test]
fn int8_fp16_and_awq_graphs_of_the_tiny_fixture() {
    let ckpt = Model::open(repo_root().join("fixtures/tiny")).unwrap();
    for (format, label) in [(WeightFormat::Int8, "int8"), (WeightFormat::Fp16, "fp16")] {
        let t = text(&ckpt, &CompressionOptions::new(format)).unwrap();
        snapshot(&format!("ov_{label}_tiny"), &t);
    }
    // Data-free AWQ: the `…/awq_mul/scale` constants are deferred like the weights.
    let awq = CompressionOptions {
        group_size: Some(64),
        awq: true,
        ..CompressionOptions::new(WeightFormat::Int4)
    };
    snapshot("ov_int4_g64_awq_tiny", &text(&ckpt, &awq).unwrap());
}

/// The graph is built from the checkpoint's header alone: a checkpoint whose last tensor (the final norm) ends in
/// NaN gives the same graph text, and only the export, which streams the weights, refuses it, naming the tensor.
#[test]
fn the_graph_is_built_without_reading_a_weight() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("fixtures/tiny");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    // All-ones BF16 is NaN; model.norm.weight is the shard's last tensor.
    bytes[n - 4..].fill(0xff);
    std::fs::write(&shard, bytes).unwrap();

    let opts = CompressionOptions::new(WeightFormat::Int4);
    let intact = Model::open(&src).unwrap();
    let broken = Model::open(dir.path()).unwrap();
    assert_eq!(text(&broken, &opts), text(&intact, &opts));

    let plan = crate::plan(&broken, &opts).unwrap();
    let out = dir.path().join("out");
    let cancel = oxport_io::CancelToken::new();
    let e = crate::export(&broken, &plan, &out, "tiny", &oxport_io::Silent, &cancel)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.norm.weight"), "{e}");
    assert!(!out.exists());
}
