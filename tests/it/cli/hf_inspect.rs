//! `oxport inspect` as a user runs it: the built binary on the committed fixtures, a hub id in the HF cache
//! (offline), and a missing model.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{oxport_bin, repo_root};

fn oxport(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new(oxport_bin());
    cmd.args(args).current_dir(repo_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "oxport failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_report_describes_every_tensor() {
    let v: Value = serde_json::from_str(&ok_stdout(oxport(
        &["inspect", "fixtures/tiny-gqa", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(v["architecture"], "Phi3ForCausalLM");
    assert_eq!(v["config"]["num_key_value_heads"], 2);
    assert_eq!(v["derived"]["qkv_rows"], 512);
    assert_eq!(v["derived"]["gqa_group"], 2);
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 15);
    assert_eq!(tensors[0]["name"], "model.embed_tokens.weight");
    assert_eq!(tensors[0]["shard"], "model-00001-of-00002.safetensors");
    assert_eq!(tensors[14]["role"], "lm_head");
    let qkv = tensors.iter().find(|t| t["role"] == "attn_qkv[1]").unwrap();
    assert_eq!(qkv["shape"], serde_json::json!([512, 256]));
    assert_eq!(qkv["dtype"], "BF16");
    assert_eq!(qkv["layer"], 1);
    assert_eq!(qkv["shard"], "model-00002-of-00002.safetensors");
    let params: u64 = tensors
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(v["total_params"], params);
    assert_eq!(v["total_bytes"], 2 * params);
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("fixtures/tiny-gqa/model.safetensors.index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(v["total_bytes"], index["metadata"]["total_size"]);
}

#[test]
fn text_report_has_dims_rope_table_and_totals() {
    let text = ok_stdout(oxport(&["inspect", "fixtures/tiny-longrope"], &[]));
    for needle in [
        "Phi3ForCausalLM",
        "2 layers, hidden 256, intermediate 512, vocab 1024",
        "4 heads, 4 kv heads, head_dim 64",
        "longrope (32 short factors",
        "attention factor 1.154701",
        "256 (original 64)",
        "model.layers.1.mlp.gate_up_proj.weight",
        "mlp_gate_up[1]",
        "1024 x 256",
        "model-00002-of-00002.safetensors",
        "15 tensors, 1836288 parameters",
        "3672576 bytes",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let odd = ok_stdout(oxport(&["inspect", "fixtures/tiny-odd"], &[]));
    assert!(
        odd.contains("hidden 320, intermediate 384") && odd.contains("960 x 320"),
        "{odd}"
    );
}

// Builds the cache with Unix symlinks.
#[cfg(unix)]
#[test]
fn hub_id_resolves_from_the_cache_offline() {
    // A cache laid out like huggingface_hub writes it: refs/main → sha, snapshots/<sha>/* → ../../blobs/*.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--oxport--tiny");
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let snapshot = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    for (i, e) in std::fs::read_dir(repo_root().join("fixtures/tiny"))
        .unwrap()
        .enumerate()
    {
        let e = e.unwrap();
        let blob = format!("blob{i:02}");
        std::fs::copy(e.path(), repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(&blob),
            snapshot.join(e.file_name()),
        )
        .unwrap();
    }
    let offline = OsStr::new("1");
    let v: Value = serde_json::from_str(&ok_stdout(oxport(
        &["inspect", "oxport/tiny", "--json"],
        &[
            ("HF_HUB_CACHE", cache.path().as_os_str()),
            ("HF_HUB_OFFLINE", offline),
        ],
    )))
    .unwrap();
    assert_eq!(v["model_dir"].as_str().unwrap(), snapshot.to_str().unwrap());
    assert_eq!(v["tensors"].as_array().unwrap().len(), 15);

    // An unknown revision is not in the cache, and offline mode forbids the download.
    let out = oxport(
        &["inspect", "oxport/tiny", "--revision", "v9"],
        &[
            ("HF_HUB_CACHE", cache.path().as_os_str()),
            ("HF_HUB_OFFLINE", offline),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oxport/tiny") && err.contains("v9") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn missing_model_fails_with_its_name() {
    // Two slashes: not a hub id either, so nothing is looked up online.
    let out = oxport(&["inspect", "fixtures/no/such-model"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fixtures/no/such-model") && err.contains("no such model folder"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
