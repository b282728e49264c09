//! The native tokenizer/detokenizer IR against the openvino-tokenizers 2026.4.1 export of the reference checkpoint
//! (fixtures/reference/exports/phi3-tiny-random/ov_fp16): identical `.bin`, the same layers, attributes, ports and
//! edges, and the rt_info that openvino.genai reads.

use std::path::{Path, PathBuf};

use oxport_openvino::tokenizer::{
    DETOKENIZER_BIN, DETOKENIZER_XML, TOKENIZER_BIN, TOKENIZER_XML, TokenizerError,
    write_tokenizer_irs,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> PathBuf {
    repo().join("fixtures/reference/exports/phi3-tiny-random/ov_fp16")
}

/// The XML without what legitimately differs: layer names, tensor names of the string Parameter/Result and the
/// version entries of rt_info; edges as a sorted set (OpenVINO lists a producer's edges in consumer order).
fn normalized(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut edges = Vec::new();
    for line in xml.lines() {
        let t = line.trim();
        if t.starts_with("<info name=\"OpenVINO Runtime\"")
            || t.contains("_version value=")
            || t.starts_with("<oxport>")
            || t.starts_with("</oxport>")
            || t.starts_with("<version value=")
        {
            continue;
        }
        let mut s = t.to_string();
        for attr in [" name=\"", " names=\"", " output_names=\""] {
            while let Some(i) = s.find(attr) {
                let rest = &s[i + attr.len()..];
                let j = rest.find('"').unwrap();
                s = format!("{}{}", &s[..i], &rest[j + 1..]);
            }
        }
        if s.starts_with("<edge ") {
            edges.push(s);
        } else {
            out.push(s);
        }
    }
    edges.sort();
    out.extend(edges);
    out
}

fn names(xml: &str) -> Vec<&str> {
    xml.lines()
        .filter_map(|l| l.split(" names=\"").nth(1))
        .map(|r| r.split('"').next().unwrap())
        .collect()
}

#[test]
fn reference_tokenizer_irs_match_openvino_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer_irs(
        &repo().join("fixtures/reference/checkpoints/phi3-tiny-random"),
        dir.path(),
    )
    .unwrap();
    for (xml, bin) in [
        (TOKENIZER_XML, TOKENIZER_BIN),
        (DETOKENIZER_XML, DETOKENIZER_BIN),
    ] {
        let ours = std::fs::read(dir.path().join(bin)).unwrap();
        let theirs = std::fs::read(reference().join(bin)).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{bin} size");
        assert!(ours == theirs, "{bin} differs from the reference");
        let ours = std::fs::read_to_string(dir.path().join(xml)).unwrap();
        let theirs = std::fs::read_to_string(reference().join(xml)).unwrap();
        let (a, b) = (normalized(&ours), normalized(&theirs));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{xml} line {i}");
        }
        assert_eq!(a.len(), b.len(), "{xml} line count");
        assert!(
            ours.contains("<version value=\""),
            "oxport/version in {xml}"
        );
        assert!(!ours.contains("openvino_tokenizers_version"), "{xml}");
    }
    let tok = std::fs::read_to_string(dir.path().join(TOKENIZER_XML)).unwrap();
    let tensor_names = names(&tok);
    assert!(tensor_names.contains(&"input_ids") && tensor_names.contains(&"attention_mask"));
}

#[test]
fn unsupported_constructs_fail_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("fixtures/tiny");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let path = dir.path().join("tokenizer.json");
    let mut tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tj["normalizer"] = serde_json::json!({"type": "NFKC"});
    std::fs::write(&path, tj.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = write_tokenizer_irs(dir.path(), out.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("normalizer of type NFKC") && msg.contains("--no-tokenizer"),
        "{msg}"
    );
    assert!(!out.path().join(TOKENIZER_XML).exists());

    tj["normalizer"] = serde_json::Value::Null;
    tj["model"]["ignore_merges"] = serde_json::json!(true);
    std::fs::write(&path, tj.to_string()).unwrap();
    let msg = write_tokenizer_irs(dir.path(), out.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("ignore_merges"), "{msg}");
}
