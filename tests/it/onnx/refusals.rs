//! What the ONNX exporter refuses, and that a refused or failed export leaves nothing behind (atomic commit): a
//! NaN weight, a non-empty output folder, invalid options, rotary widths GroupQueryAttention cannot run, a broken
//! tokenizer.json or chat template.

use std::path::Path;

use oxport_onnx::{ExportOptions, OnnxError, Precision};

use super::common::*;
use crate::support::{copy_reference_checkpoint, edit_json, reference_checkpoint};

/// A writable copy of `phi3-tiny-random` at `dst`.
fn checkpoint_copy(dst: &Path) {
    copy_reference_checkpoint("phi3-tiny-random", dst);
}

/// Copy a checkpoint and set the first element of `tensor` to a bf16 NaN.
fn checkpoint_with_nan(dst: &Path, tensor: &str) {
    checkpoint_copy(dst);
    let path = dst.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[tensor]["dtype"], "BF16");
    let start = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 2].copy_from_slice(&0x7fc0u16.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_nan_weight_fails_the_export_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    // The last layer's down_proj: the embedding, caches and most weights are already written when it fails.
    checkpoint_with_nan(&ckpt, "model.layers.1.mlp.down_proj.weight");
    let out_parent = tmp.path().join("exports");
    std::fs::create_dir(&out_parent).unwrap();
    let out = out_parent.join("phi3-int4");
    let err = export_to(&ckpt, &ExportOptions::default(), &out).unwrap_err();
    assert!(
        matches!(&err, OnnxError::Checkpoint(e) if matches!(**e, oxport_hf::Error::NonFinite { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("model.layers.1.mlp.down_proj.weight"),
        "{err}"
    );
    assert!(!out.exists(), "output folder left behind");
    let left: Vec<_> = std::fs::read_dir(&out_parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn an_existing_non_empty_output_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = export_to(
        &reference_checkpoint("phi3-tiny-random"),
        &ExportOptions::default(),
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, OnnxError::OutputExists(_)), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn invalid_options_are_refused_before_any_work() {
    let ckpt = oxport_arch::Model::open(reference_checkpoint("phi3-tiny-random")).unwrap();
    for opts in [
        ExportOptions {
            block_size: 48,
            ..Default::default()
        },
        ExportOptions {
            accuracy_level: Some(7),
            ..Default::default()
        },
        ExportOptions {
            precision: Precision::Fp16,
            qdq: true,
            ..Default::default()
        },
        ExportOptions {
            ratio: Some(1.5),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(oxport_onnx::plan(&ckpt, &opts), Err(OnnxError::Options(_))),
            "{opts:?}"
        );
    }
}

/// Export `ckpt` into `<tmp>/exports/out`, expecting an error; asserts that nothing was left in `exports/`.
fn export_err(tmp: &Path, ckpt: &Path) -> String {
    let parent = tmp.join("exports");
    std::fs::create_dir_all(&parent).unwrap();
    let err = export_to(ckpt, &ExportOptions::default(), &parent.join("out"))
        .expect_err("the export must be refused")
        .to_string();
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?} ({err})");
    err
}

#[test]
fn rotary_widths_group_query_attention_cannot_run_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    checkpoint_copy(&ckpt);
    // 8 heads of 32 (same tensor shapes: MHA qkv rows (8 + 2·8)·32 = (4 + 2·4)·64): 0.75 → rotary 24 → caches 12 wide.
    edit_json(&ckpt.join("config.json"), |c| {
        c["num_attention_heads"] = 8.into();
        c["num_key_value_heads"] = 8.into();
        c["partial_rotary_factor"] = 0.75.into();
    });
    let e = export_err(tmp.path(), &ckpt);
    assert!(
        e.contains("config.json")
            && e.contains("`partial_rotary_factor`")
            && e.contains("head_dim 32")
            && e.contains("multiple of 8"),
        "{e}"
    );
    // The same model with half of each head rotated (caches 8 wide) plans, as does head_dim 64 × 0.75 (Phi-4-mini's
    // factor: caches 24 wide).
    for (heads, factor) in [(8, 0.5), (4, 0.75)] {
        edit_json(&ckpt.join("config.json"), |c| {
            c["num_attention_heads"] = heads.into();
            c["num_key_value_heads"] = heads.into();
            c["partial_rotary_factor"] = factor.into();
        });
        let c = oxport_arch::Model::open(&ckpt).unwrap();
        oxport_onnx::plan(&c, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{heads} heads, factor {factor}: {e}"));
    }
}

#[test]
fn a_tokenizer_json_that_does_not_parse_is_refused_naming_the_file() {
    for (text, what) in [
        ("{\"model\": ", "not valid JSON"),
        (
            "{\"model\": {\"type\": \"Nope\"}}",
            "not a tokenizers tokenizer",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("ckpt");
        checkpoint_copy(&ckpt);
        std::fs::write(ckpt.join("tokenizer.json"), text).unwrap();
        let e = export_err(tmp.path(), &ckpt);
        assert!(e.contains("tokenizer.json") && e.contains(what), "{e}");
    }
}

#[test]
fn an_invalid_chat_template_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    checkpoint_copy(&ckpt);
    edit_json(&ckpt.join("tokenizer_config.json"), |c| {
        c["chat_template"] = "{% for message in messages %}{{ message['content'] }}".into();
    });
    let e = export_err(tmp.path(), &ckpt);
    assert!(
        e.contains("tokenizer_config.json")
            && e.contains("`chat_template`")
            && e.contains("not a valid Jinja template"),
        "{e}"
    );
    // chat_template.jinja (transformers 5's file), copied into the export as it is.
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    checkpoint_copy(&ckpt);
    std::fs::write(
        ckpt.join("chat_template.jinja"),
        "{{ messages[0]['content'] }",
    )
    .unwrap();
    let e = export_err(tmp.path(), &ckpt);
    assert!(
        e.contains("chat_template.jinja") && e.contains("not a valid Jinja template"),
        "{e}"
    );
}
