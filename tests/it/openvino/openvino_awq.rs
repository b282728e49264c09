//! `--awq` without a dataset is optimum-cli's data-free AWQ (NNCF 3.4), byte for byte: for every reference checkpoint
//! and tiny fixture, oxport's `--weight-format int4 --group-size 64 --ratio 1.0 --awq` export has exactly the weight
//! constants optimum-cli writes for the same flags — same element types, shapes and bytes (sha256), the rescaled
//! `down_proj` weights and the `…/awq_mul/scale` constants included — and the same `awq_mul` Multiply nodes
//! (`tests/golden/optimum_awq.json`, made by `tests/golden/make_awq_golden.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxport_arch::Model;
use oxport_io::{CancelToken, Silent};
use oxport_openvino::{CompressionOptions, WeightFormat};
use sha2::{Digest, Sha256};

use crate::support::repo_root;

fn model_dir(model: &str) -> PathBuf {
    if model.starts_with("phi3-") {
        repo_root()
            .join("fixtures/reference/checkpoints")
            .join(model)
    } else {
        repo_root().join("fixtures").join(model)
    }
}

/// `value="…"` of attribute `key` in one XML tag.
fn attr<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {key}=\""))? + key.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// The weight constants (`self.…`) and AWQ scales (`…/awq_mul/scale`) of `openvino_model.xml`: name → (element type,
/// shape, sha256).
fn named_constants(dir: &Path) -> BTreeMap<String, (String, Vec<u64>, String)> {
    let xml = std::fs::read_to_string(dir.join("openvino_model.xml")).unwrap();
    let bin = std::fs::read(dir.join("openvino_model.bin")).unwrap();
    let mut out = BTreeMap::new();
    let mut rest = xml.as_str();
    while let Some(i) = rest.find("<layer ") {
        rest = &rest[i..];
        let layer = &rest[..rest.find('>').unwrap()];
        rest = &rest[layer.len()..];
        if attr(layer, "type") != Some("Const") {
            continue;
        }
        let name = attr(layer, "name").unwrap();
        if !(name.starts_with("self.") || name.contains("/awq_mul/")) {
            continue;
        }
        let data_at = rest.find("<data ").unwrap();
        let data = &rest[data_at..data_at + rest[data_at..].find("/>").unwrap()];
        let offset: usize = attr(data, "offset").unwrap().parse().unwrap();
        let size: usize = attr(data, "size").unwrap().parse().unwrap();
        let shape: Vec<u64> = attr(data, "shape")
            .unwrap()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let sha = format!("{:x}", Sha256::digest(&bin[offset..offset + size]));
        out.insert(
            name.to_string(),
            (attr(data, "element_type").unwrap().to_string(), shape, sha),
        );
    }
    out
}

#[test]
fn data_free_awq_equals_nncf_on_every_checkpoint_and_fixture() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/golden/optimum_awq.json")).unwrap(),
    )
    .unwrap();
    let cases = golden["cases"].as_object().unwrap();
    assert_eq!(
        cases.len(),
        8,
        "every reference checkpoint and tiny fixture"
    );
    let tmp = tempfile::tempdir().unwrap();
    for (model, case) in cases {
        let ckpt = Model::open(model_dir(model)).unwrap();
        let opts = CompressionOptions {
            group_size: Some(64),
            ratio: Some(1.0),
            awq: true,
            ..CompressionOptions::new(WeightFormat::Int4)
        };
        let plan = oxport_openvino::plan(&ckpt, &opts).unwrap();
        let out = tmp.path().join(model);
        oxport_openvino::export_with(
            &ckpt,
            &plan,
            &out,
            model,
            &Silent,
            &CancelToken::new(),
            None,
        )
        .unwrap();
        let ours = named_constants(&out);
        let theirs: BTreeMap<String, (String, Vec<u64>, String)> = case["constants"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, c)| {
                let shape = c["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect();
                let t = (
                    c["type"].as_str().unwrap().to_string(),
                    shape,
                    c["sha256"].as_str().unwrap().to_string(),
                );
                (name.clone(), t)
            })
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{model}: named constants"
        );
        for (name, want) in &theirs {
            assert_eq!(&ours[name], want, "{model}: {name} differs from NNCF's");
        }
        let xml = std::fs::read_to_string(out.join("openvino_model.xml")).unwrap();
        for mul in case["awq_mul"].as_array().unwrap() {
            let tag = format!("name=\"{}\" type=\"Multiply\"", mul.as_str().unwrap());
            assert!(xml.contains(&tag), "{model}: no {tag}");
        }
        assert_eq!(
            xml.matches("/awq_mul\" type=\"Multiply\"").count(),
            case["awq_mul"].as_array().unwrap().len(),
            "{model}: awq_mul count"
        );
        assert!(
            xml.contains("<awq value=\"True\" />"),
            "{model}: rt_info awq"
        );
    }
}

#[test]
fn awq_is_refused_outside_int4_and_leaves_other_weights_alone() {
    let ckpt = Model::open(model_dir("tiny")).unwrap();
    for format in [WeightFormat::Int8, WeightFormat::Fp16, WeightFormat::Fp32] {
        let opts = CompressionOptions {
            awq: true,
            ..CompressionOptions::new(format)
        };
        let err = oxport_openvino::plan(&ckpt, &opts).unwrap_err().to_string();
        assert!(err.contains("--awq"), "{format:?}: {err}");
    }
    // With --ratio 0.6 some down_proj weights are 8-bit: AWQ applies only to the 4-bit ones (NNCF's
    // `num_bits == 4` condition), and never to qkv/o/gate_up/lm_head.
    let opts = CompressionOptions {
        sym: true,
        ratio: Some(0.6),
        awq: true,
        ..CompressionOptions::new(WeightFormat::Int4)
    };
    let plan = oxport_openvino::plan(&ckpt, &opts).unwrap();
    for e in plan.weights() {
        let four = e.scheme.label().starts_with("int4");
        let down = matches!(e.role, oxport_arch::Role::MlpDown { .. });
        assert_eq!(
            e.transform.is_awq(),
            four && down,
            "{:?} {}",
            e.role,
            e.scheme.label()
        );
    }
    assert!(plan.to_string().contains("+ data-free AWQ"));
}
