//! Broken checkpoints: each case gets a clear error naming the file and the tensor (or config field), no panic,
//! and the model folder is left exactly as it was (the loader never writes). Opened through `Model::open`, so
//! the file checks of `oxport_hf::Checkpoint` and the classification here are both exercised.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oxport_arch::{Error, Model, Role};
use serde_json::{Value, json};

use crate::support::safetensors::{self, Entry};
use crate::support::{edit_json, fixture};

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// A writable copy of `fixtures/tiny` in a temp dir (`root/model`, with room for files "outside" it in `root`).
struct TinyCopy {
    root: tempfile::TempDir,
}

impl TinyCopy {
    fn new() -> TinyCopy {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(fixture("tiny")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        TinyCopy { root }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("model")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir().join(file)
    }

    /// Every entry under the temp root with its size, modification time and symlink target.
    fn listing(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, Option<PathBuf>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = p.symlink_metadata().unwrap();
                if m.is_dir() {
                    stack.push(p.clone());
                }
                out.insert(
                    p.clone(),
                    (m.len(), m.modified().unwrap(), std::fs::read_link(&p).ok()),
                );
            }
        }
        out
    }

    /// Open the checkpoint, expecting an error; asserts the folder is unchanged and returns the message.
    fn open_err(&self) -> (Error, String) {
        let before = self.listing();
        let err = Model::open(self.dir()).expect_err("a broken checkpoint must not open");
        assert_eq!(
            before,
            self.listing(),
            "opening a checkpoint must write nothing"
        );
        let msg = err.to_string();
        (err, msg)
    }

    fn edit_json(&self, file: &str, f: impl FnOnce(&mut Value)) {
        edit_json(&self.path(file), f);
    }
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error should name {p:?}: {msg}");
    }
}

#[test]
fn the_fixture_itself_opens() {
    let m = TinyCopy::new();
    let c = Model::open(m.dir()).unwrap();
    assert_eq!(c.tensors().len(), 1 + 2 * 6 + 2);
    assert_eq!(c.tensors()[0].role, Role::Embedding);
    assert!(
        c.read_f32(Role::FinalNorm)
            .unwrap()
            .iter()
            .all(|v| (0.3..1.7).contains(v))
    );
}

#[test]
fn truncated_shard() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let raw = std::fs::read(&p).unwrap();
    std::fs::write(&p, &raw[..raw.len() - 100]).unwrap();
    let (_, e) = m.open_err();
    // The last tensor in the data section is model.norm.weight (names sorted; shard 2 ends with it).
    assert_names(&e, &[SHARD2, "model.norm.weight", "truncated"]);
}

#[test]
fn header_length_larger_than_the_file() {
    let m = TinyCopy::new();
    let p = m.path(SHARD1);
    let mut raw = std::fs::read(&p).unwrap();
    let too_long = raw.len() as u64 * 4;
    raw[..8].copy_from_slice(&too_long.to_le_bytes());
    std::fs::write(&p, raw).unwrap();
    let (_, e) = m.open_err();
    // The header cannot be read, so the tensors are named from the index.
    assert_names(&e, &[SHARD1, "header length", "model.embed_tokens.weight"]);
}

#[test]
fn tensor_offsets_out_of_bounds() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let entries = safetensors::read(&p);
    let total: usize = entries.iter().map(|e| e.2.len()).sum();
    safetensors::write(
        &p,
        &entries,
        Some(("model.norm.weight", [total - 512 + 4096, total + 4096])),
    );
    let (_, e) = m.open_err();
    assert_names(&e, &[SHARD2, "model.norm.weight", "out of bounds"]);
}

#[test]
fn tensor_offsets_overlapping() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let entries = safetensors::read(&p);
    // lm_head.weight sits at [0, 524288); put the final norm's 512 bytes inside it.
    safetensors::write(&p, &entries, Some(("model.norm.weight", [1024, 1536])));
    let (_, e) = m.open_err();
    assert_names(
        &e,
        &[SHARD2, "model.norm.weight", "lm_head.weight", "overlap"],
    );
}

#[test]
fn index_naming_a_shard_outside_the_folder() {
    for outside in ["../x.safetensors", "ABSOLUTE", "sub/../../x.safetensors"] {
        let m = TinyCopy::new();
        let copy = m.root.path().join("x.safetensors");
        std::fs::copy(m.path(SHARD2), &copy).unwrap();
        let target = if outside == "ABSOLUTE" {
            copy.display().to_string()
        } else {
            outside.to_string()
        };
        m.edit_json(INDEX, |v| {
            for (_, shard) in v["weight_map"].as_object_mut().unwrap() {
                if shard == SHARD2 {
                    *shard = json!(target);
                }
            }
        });
        let (err, e) = m.open_err();
        assert!(
            matches!(
                err,
                Error::Checkpoint(oxport_hf::Error::ShardEscapes { .. })
            ),
            "{e}"
        );
        assert_names(
            &e,
            &[INDEX, &target, "lm_head.weight", "outside the model folder"],
        );
    }
}

// Symlinks: Unix only (CI runs Linux).
#[cfg(unix)]
#[test]
fn shard_symlink_leaving_the_folder() {
    let m = TinyCopy::new();
    let outside = m.root.path().join("elsewhere.safetensors");
    std::fs::rename(m.path(SHARD2), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, m.path(SHARD2)).unwrap();
    let (err, e) = m.open_err();
    assert!(
        matches!(
            err,
            Error::Checkpoint(oxport_hf::Error::ShardEscapes { .. })
        ),
        "{e}"
    );
    assert_names(&e, &[INDEX, SHARD2, "lm_head.weight"]);
    // A symlink that stays inside the folder is fine.
    let m = TinyCopy::new();
    std::fs::rename(m.path(SHARD2), m.path("real.bin")).unwrap();
    std::os::unix::fs::symlink("real.bin", m.path(SHARD2)).unwrap();
    Model::open(m.dir()).unwrap();
}

#[test]
fn missing_shard_file() {
    let m = TinyCopy::new();
    std::fs::remove_file(m.path(SHARD2)).unwrap();
    let (_, e) = m.open_err();
    assert_names(&e, &[INDEX, SHARD2, "missing", "lm_head.weight"]);
}

/// Replace `file` of a fresh fixture copy by a FIFO and open the checkpoint on a thread: opening a FIFO for reading
/// blocks until a writer comes, so a loader that does that would never return. Returns the error message.
fn open_with_fifo(file: &str) -> String {
    let m = TinyCopy::new();
    std::fs::remove_file(m.path(file)).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(m.path(file))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let dir = m.dir();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Model::open(dir).map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("Model::open blocked on a FIFO {file}"));
    result.expect_err("a FIFO must be refused")
}

#[test]
fn shard_index_or_config_that_is_a_fifo_is_refused_without_blocking() {
    let e = open_with_fifo(SHARD2);
    assert_names(&e, &[SHARD2, "not a regular file", "FIFO"]);
    for file in [INDEX, "config.json"] {
        assert_names(&open_with_fifo(file), &[file, "not a regular file", "FIFO"]);
    }
}

#[test]
fn missing_tensor() {
    // Gone from both the shard and the index: the config still requires it.
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let entries: Vec<Entry> = safetensors::read(&p)
        .into_iter()
        .filter(|e| e.0 != "model.norm.weight")
        .collect();
    safetensors::write(&p, &entries, None);
    m.edit_json(INDEX, |v| {
        v["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("model.norm.weight");
    });
    let (err, e) = m.open_err();
    assert!(
        matches!(
            err,
            Error::Checkpoint(oxport_hf::Error::MissingTensors { .. })
        ),
        "{e}"
    );
    assert_names(&e, &["model", "missing tensors", "model.norm.weight"]);

    // Listed by the index but in no shard.
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let entries: Vec<Entry> = safetensors::read(&p)
        .into_iter()
        .filter(|e| e.0 != "model.norm.weight")
        .collect();
    safetensors::write(&p, &entries, None);
    let (_, e) = m.open_err();
    assert_names(&e, &[INDEX, "listed but in no shard", "model.norm.weight"]);
}

#[test]
fn tensor_not_part_of_phi3() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let mut entries = safetensors::read(&p);
    entries.push((
        "model.layers.1.self_attn.rotary_emb.inv_freq".into(),
        json!({"dtype": "F32", "shape": [32]}),
        vec![0; 128],
    ));
    safetensors::write(&p, &entries, None);
    m.edit_json(INDEX, |v| {
        v["weight_map"]["model.layers.1.self_attn.rotary_emb.inv_freq"] = json!(SHARD2)
    });
    let (_, e) = m.open_err();
    assert_names(
        &e,
        &[
            SHARD2,
            "model.layers.1.self_attn.rotary_emb.inv_freq",
            "unknown tensor",
        ],
    );
}

#[test]
fn shape_disagreeing_with_config() {
    let m = TinyCopy::new();
    m.edit_json("config.json", |v| v["intermediate_size"] = json!(640));
    let (err, e) = m.open_err();
    assert!(matches!(err, Error::Shape { .. }), "{e}");
    // Tensors are checked in name order: layer 0's down_proj is the first whose shape depends on intermediate_size.
    assert_names(
        &e,
        &[
            SHARD1,
            "model.layers.0.mlp.down_proj.weight",
            "config.json",
            "[256, 512]",
            "[256, 640]",
        ],
    );
}

#[test]
fn unsupported_dtype() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let mut entries = safetensors::read(&p);
    let norm = entries
        .iter_mut()
        .find(|e| e.0 == "model.norm.weight")
        .unwrap();
    norm.1["dtype"] = json!("I8");
    norm.2.truncate(256);
    safetensors::write(&p, &entries, None);
    let (err, e) = m.open_err();
    assert!(
        matches!(
            err,
            Error::Checkpoint(oxport_hf::Error::UnsupportedDtype { .. })
        ),
        "{e}"
    );
    assert_names(&e, &[SHARD2, "model.norm.weight", "I8", "BF16, F16, F32"]);

    // A dtype the safetensors format does not know at all.
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let mut entries = safetensors::read(&p);
    entries
        .iter_mut()
        .find(|e| e.0 == "model.norm.weight")
        .unwrap()
        .1["dtype"] = json!("Q4_K");
    safetensors::write(&p, &entries, None);
    let (_, e) = m.open_err();
    assert_names(&e, &[SHARD2, "model.norm.weight", "Q4_K"]);
}

#[test]
fn byte_size_disagreeing_with_dtype_and_shape() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let mut entries = safetensors::read(&p);
    entries
        .iter_mut()
        .find(|e| e.0 == "model.norm.weight")
        .unwrap()
        .1["shape"] = json!([255]);
    safetensors::write(&p, &entries, None);
    let (_, e) = m.open_err();
    assert_names(&e, &[SHARD2, "model.norm.weight", "[255]", "needs 510"]);
}

#[test]
fn malformed_config() {
    let m = TinyCopy::new();
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), &text[..text.len() / 2]).unwrap();
    let (err, e) = m.open_err();
    assert!(matches!(err, Error::Config { .. }), "{e}");
    assert_names(&e, &["config.json", "not valid JSON"]);

    let m = TinyCopy::new();
    m.edit_json("config.json", |v| {
        v.as_object_mut().unwrap().remove("num_hidden_layers");
    });
    let (_, e) = m.open_err();
    assert_names(&e, &["config.json", "num_hidden_layers"]);

    let m = TinyCopy::new();
    m.edit_json("config.json", |v| {
        v["architectures"] = json!(["Phi3VForCausalLM"])
    });
    let (_, e) = m.open_err();
    assert_names(&e, &["config.json", "Phi3VForCausalLM", "Phi3ForCausalLM"]);
}

#[test]
fn malformed_index() {
    let m = TinyCopy::new();
    std::fs::write(m.path(INDEX), "{\"weight_map\": 3}").unwrap();
    let (_, e) = m.open_err();
    assert_names(&e, &[INDEX, "weight_map"]);
}

#[test]
fn nan_weight_is_refused_by_read_f32() {
    let m = TinyCopy::new();
    let p = m.path(SHARD2);
    let mut entries = safetensors::read(&p);
    let head = entries
        .iter_mut()
        .find(|e| e.0 == "lm_head.weight")
        .unwrap();
    // bf16 NaN (0x7fc0) at element 70_000, +Inf (0x7f80) at element 200_000, little-endian; both past the first
    // 65536-element decode chunk, so the reported index must include the chunk offset.
    head.2[140_000..140_002].copy_from_slice(&[0xc0, 0x7f]);
    head.2[400_000..400_002].copy_from_slice(&[0x80, 0x7f]);
    safetensors::write(&p, &entries, None);
    let before = m.listing();
    let c = Model::open(m.dir()).expect("metadata is fine; values are checked when read");
    let err = c.read_f32(Role::LmHead).unwrap_err();
    let e = err.to_string();
    assert!(
        matches!(
            err,
            oxport_hf::Error::NonFinite {
                count: 2,
                first: 70_000,
                ..
            }
        ),
        "{e}"
    );
    assert_names(
        &e,
        &[SHARD2, "lm_head.weight", "2 non-finite", "element 70000"],
    );
    c.read_f32(Role::FinalNorm).unwrap();
    assert_eq!(before, m.listing());
}
