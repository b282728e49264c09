//! Our export of `fixtures/reference/checkpoints/phi3-tiny-random` against the onnxruntime-genai 0.18.0
//! builder's graphs (`fixtures/reference/ort/{ort_int4_b128,ort_fp32}/model.onnx`, parsed with our prost
//! types) and against ONNX Runtime's own MatMulNBits quantizer (`tests/golden/ort_nbits_phi3-tiny-random.json`, made
//! by `tests/golden/make_ort_nbits_phi3.py`).

use oxport_onnx::proto::ModelProto;
use oxport_onnx::{ExportOptions, Precision};

use super::common::*;
use crate::support::{reference_checkpoint, repo_root};

fn reference(job: &str) -> ModelProto {
    read_model(
        &repo_root()
            .join("fixtures/reference/ort")
            .join(job)
            .join("model.onnx"),
    )
}

fn export(opts: &ExportOptions) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    export_to(&reference_checkpoint("phi3-tiny-random"), opts, &out).expect("export");
    (tmp, out)
}

/// Nodes (order, op, domain, name, inputs, outputs, attributes), graph inputs and outputs, and the
/// initializer table (names, dims, types) are the builder's.
fn assert_same_graph(ours: &ModelProto, theirs: &ModelProto) {
    let (g, r) = (ours.graph.as_ref().unwrap(), theirs.graph.as_ref().unwrap());
    let ours_nodes: Vec<String> = g.node.iter().map(node_signature).collect();
    let their_nodes: Vec<String> = r.node.iter().map(node_signature).collect();
    assert_eq!(ours_nodes.len(), their_nodes.len(), "node count");
    for (i, (a, b)) in ours_nodes.iter().zip(&their_nodes).enumerate() {
        assert_eq!(a, b, "node {i}");
    }
    let io = |v: &[oxport_onnx::proto::ValueInfoProto]| {
        v.iter().map(value_info_signature).collect::<Vec<_>>()
    };
    assert_eq!(io(&g.input), io(&r.input), "graph inputs");
    assert_eq!(io(&g.output), io(&r.output), "graph outputs");
    assert_eq!(
        initializer_table(ours),
        initializer_table(theirs),
        "initializers (name, dims, type)"
    );
}

fn assert_header(m: &ModelProto) {
    assert_eq!(m.ir_version, Some(10));
    let opsets: Vec<(String, i64)> = m
        .opset_import
        .iter()
        .map(|o| (o.domain().to_string(), o.version()))
        .collect();
    assert_eq!(
        opsets,
        vec![(String::new(), 21), ("com.microsoft".to_string(), 1)]
    );
}

/// Every `keys` initializer of our export hashes to the golden bytes.
fn assert_matches_golden(out: &std::path::Path, variant: &str) {
    let golden = golden(variant);
    let ours = initializer_hashes(out);
    let table = initializer_table(&read_model(&out.join("model.onnx")));
    for (name, (dims, sha)) in &golden {
        assert_eq!(&table[name].0, dims, "{name} dims");
        assert_eq!(
            &ours[name], sha,
            "{name}: bytes differ from ONNX Runtime's quantizer"
        );
    }
}

#[test]
fn int4_block128_cpu_graph_and_weights_equal_the_builder() {
    let opts = ExportOptions {
        precision: Precision::Int4,
        block_size: 128,
        ..Default::default()
    };
    let (_tmp, out) = export(&opts);
    let ours = read_model(&out.join("model.onnx"));
    assert_header(&ours);
    assert_same_graph(&ours, &reference("ort_int4_b128"));
    assert_matches_golden(&out, "int4_b128_sym");
}

#[test]
fn fp32_graph_and_weights_equal_the_builder() {
    let opts = ExportOptions {
        precision: Precision::Fp32,
        ..Default::default()
    };
    let (_tmp, out) = export(&opts);
    let ours = read_model(&out.join("model.onnx"));
    assert_header(&ours);
    assert_same_graph(&ours, &reference("ort_fp32"));
    assert_matches_golden(&out, "fp32");
}

#[test]
fn int4_block32_asym_and_int8_weights_equal_onnxruntime_quantizer() {
    for (opts, variant) in [
        (
            ExportOptions {
                block_size: 32,
                ..Default::default()
            },
            "int4_b32_sym",
        ),
        (
            ExportOptions {
                block_size: 128,
                symmetric: false,
                ..Default::default()
            },
            "int4_b128_asym",
        ),
    ] {
        let (_tmp, out) = export(&opts);
        assert_matches_golden(&out, variant);
    }
    // --int8-lm-head: lm_head is 8-bit MatMulNBits (`_Q8`), bytes as quantize_matmul_8bits writes them.
    let opts = ExportOptions {
        block_size: 128,
        int8_lm_head: true,
        ..Default::default()
    };
    let (_tmp, out) = export(&opts);
    let golden8 = golden("int8_b128_sym");
    let ours = initializer_hashes(&out);
    for name in ["lm_head.MatMul.weight_Q8", "lm_head.MatMul.weight_scales"] {
        assert_eq!(ours[name], golden8[name].1, "{name}");
    }
    let m = read_model(&out.join("model.onnx"));
    let lm = m
        .graph
        .unwrap()
        .node
        .into_iter()
        .find(|n| n.name() == "/lm_head/MatMul_Q8")
        .expect("lm_head node");
    assert!(
        lm.attribute
            .iter()
            .any(|a| a.name() == "bits" && a.i == Some(8))
    );
}

#[test]
fn genai_config_equals_the_builder() {
    for (precision, job) in [
        (Precision::Int4, "ort_int4_b128"),
        (Precision::Fp32, "ort_fp32"),
    ] {
        let opts = ExportOptions {
            precision,
            block_size: 128,
            ..Default::default()
        };
        let (_tmp, out) = export(&opts);
        let read = |p: std::path::PathBuf| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let theirs = read(
            repo_root()
                .join("fixtures/reference/ort")
                .join(job)
                .join("genai_config.json"),
        );
        assert_eq!(read(out.join("genai_config.json")), theirs, "{job}");
        // Same text too (4-space indent, builder key order).
        let ours_text = std::fs::read_to_string(out.join("genai_config.json")).unwrap();
        let theirs_text = std::fs::read_to_string(
            repo_root()
                .join("fixtures/reference/ort")
                .join(job)
                .join("genai_config.json"),
        )
        .unwrap();
        assert_eq!(ours_text.trim_end(), theirs_text.trim_end());
    }
}
