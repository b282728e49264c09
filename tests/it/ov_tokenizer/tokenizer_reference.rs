//! The native tokenizer/detokenizer IR against the openvino-tokenizers 2026.4.1 export of the reference checkpoint
//! (fixtures/reference/exports/phi3-tiny-random/ov_fp16): identical `.bin`, the same layers, attributes, ports and
//! edges, and the rt_info that openvino.genai reads.

use std::path::{Path, PathBuf};

use oxport_ov_tokenizer::{
    DETOKENIZER_BIN, DETOKENIZER_XML, TOKENIZER_BIN, TOKENIZER_XML, TokenizerError,
    write_tokenizer_irs,
};

use crate::support::repo_root as repo;

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

/// Our IRs of the tokenizer in `model` against openvino-tokenizers' own in `reference`: identical `.bin`, the same
/// normalized XML.
fn assert_matches_reference(model: &Path, reference: &Path) {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer_irs(model, dir.path()).unwrap();
    for (xml, bin) in [
        (TOKENIZER_XML, TOKENIZER_BIN),
        (DETOKENIZER_XML, DETOKENIZER_BIN),
    ] {
        let ours = std::fs::read(dir.path().join(bin)).unwrap();
        let theirs = std::fs::read(reference.join(bin)).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{bin} size");
        assert!(ours == theirs, "{bin} differs from the reference");
        let ours = std::fs::read_to_string(dir.path().join(xml)).unwrap();
        let theirs = std::fs::read_to_string(reference.join(xml)).unwrap();
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
fn reference_tokenizer_irs_match_openvino_tokenizers() {
    assert_matches_reference(
        &repo().join("fixtures/reference/checkpoints/phi3-tiny-random"),
        &reference(),
    );
}

/// The Phi-3-mini layout (BPE with byte fallback, Prepend/Replace normalizer, Replace/ByteFallback/Fuse/Strip
/// decoder): the same IR as openvino-tokenizers 2026.4.1 (fixtures/scripts/sp_tokenizer.py made it).
#[test]
fn sentencepiece_style_tokenizer_matches_openvino_tokenizers() {
    let dir = repo().join("fixtures/tokenizers/phi3-sp");
    assert_matches_reference(&dir, &dir.join("openvino-tokenizers"));
}

/// The Metaspace(prepend_scheme=first) form: the same graph as openvino-tokenizers except the prepend pattern, which
/// also leaves a text that starts with "▁" alone (as HF does).
#[test]
fn metaspace_tokenizer_matches_openvino_tokenizers_but_the_prepend_pattern() {
    let dir = repo().join("fixtures/tokenizers/phi3-sp-metaspace");
    let out = tempfile::tempdir().unwrap();
    write_tokenizer_irs(&dir, out.path()).unwrap();
    let peer = dir.join("openvino-tokenizers");
    let ours = std::fs::read(out.path().join(TOKENIZER_BIN)).unwrap();
    let theirs = std::fs::read(peer.join(TOKENIZER_BIN)).unwrap();
    let theirs_pat = "| |$)|(?=[\\r\\n\\t\\f\\v]))";
    let ours_pat = "| |\u{2581}|$)|(?=[\\r\\n\\t\\f\\v]))";
    let find = |hay: &[u8], needle: &str| {
        hay.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap_or_else(|| panic!("{needle} not in the bin"))
    };
    let (i, j) = (find(&ours, ours_pat), find(&theirs, theirs_pat));
    assert_eq!(i, j, "the prepend pattern sits at the same offset");
    assert_eq!(ours[..i], theirs[..j]);
    assert_eq!(ours[i + ours_pat.len()..], theirs[j + theirs_pat.len()..]);
    let d = std::fs::read(out.path().join(DETOKENIZER_BIN)).unwrap();
    assert!(d == std::fs::read(peer.join(DETOKENIZER_BIN)).unwrap());
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

/// SentencePiece-style constructs the converter does not build (or that openvino-tokenizers would convert
/// differently from HF) are refused, naming the construct, and nothing is written.
#[test]
fn unsupported_sentencepiece_constructs_fail_naming_them() {
    let src = repo().join("fixtures/tokenizers/phi3-sp");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 9] = [
        (
            |t| t["normalizer"]["normalizers"][1]["pattern"] = serde_json::json!({"Regex": " +"}),
            "normalizer Replace with pattern",
        ),
        (
            |t| t["normalizer"]["normalizers"][0]["prepend"] = serde_json::json!("$"),
            "replacement text \"$\"",
        ),
        (
            |t| t["decoder"]["decoders"][3]["start"] = serde_json::json!(2),
            "decoder Strip",
        ),
        (
            |t| t["decoder"] = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}"}),
            "decoder of type Metaspace",
        ),
        (
            |t| {
                t["decoder"]["decoders"].as_array_mut().unwrap().remove(2);
            },
            "decoder Strip",
        ),
        (
            |t| {
                t["normalizer"] = serde_json::Value::Null;
                t["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}",
                    "prepend_scheme": "first", "split": true});
            },
            "Metaspace pre-tokenizer with split=true",
        ),
        (
            |t| {
                t["normalizer"] = serde_json::Value::Null;
                t["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}",
                    "add_prefix_space": true, "split": false});
            },
            "without prepend_scheme",
        ),
        (
            |t| {
                t["model"]["vocab"]
                    .as_object_mut()
                    .unwrap()
                    .remove("<0x7F>");
            },
            "lacks <0x7F>",
        ),
        (
            |t| {
                t["pre_tokenizer"] =
                    serde_json::json!({"type": "ByteLevel", "add_prefix_space": false})
            },
            "a normalizer together with a ByteLevel pre-tokenizer",
        ),
    ];
    for (edit, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            src.join("tokenizer_config.json"),
            dir.path().join("tokenizer_config.json"),
        )
        .unwrap();
        let mut tj = base.clone();
        edit(&mut tj);
        std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let e = write_tokenizer_irs(dir.path(), out.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, TokenizerError::Unsupported { .. }) && msg.contains(want),
            "want {want:?}: {msg}"
        );
        assert!(
            std::fs::read_dir(out.path()).unwrap().next().is_none(),
            "{want}: files written"
        );
    }
}
