//! The export's files: determinism, external-data layout, the Q/DQ and LongRoPE graph forms, the tiny fixtures
//! and `--awq`. What the exporter refuses is in `refusals.rs`.

use oxport_onnx::proto::tensor_proto::{DataLocation, DataType};
use oxport_onnx::{ALIGN_THRESHOLD_BYTES, ALIGNMENT_BYTES, ExportOptions, Precision};

use super::common::*;
use crate::support::{folder_bytes, reference_checkpoint, repo_root};

#[test]
fn same_input_gives_byte_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = reference_checkpoint("phi3-tiny-random");
    for precision in [Precision::Int4, Precision::Fp16] {
        let opts = ExportOptions {
            precision,
            ..Default::default()
        };
        let (a, b) = (
            tmp.path().join(format!("{precision:?}-a")),
            tmp.path().join(format!("{precision:?}-b")),
        );
        export_to(&ckpt, &opts, &a).unwrap();
        export_to(&ckpt, &opts, &b).unwrap();
        let (fa, fb) = (folder_bytes(&a), folder_bytes(&b));
        let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "config.json",
                "genai_config.json",
                "generation_config.json",
                "model.onnx",
                "model.onnx.data",
                "oxport_manifest.json",
                "special_tokens_map.json",
                "tokenizer.json",
                "tokenizer_config.json"
            ]
        );
        assert!(
            fa == fb,
            "{precision:?}: two exports of the same checkpoint differ"
        );
    }
}

#[test]
fn every_initializer_is_external_and_large_ones_are_64k_aligned() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = ExportOptions {
        precision: Precision::Fp32,
        ..Default::default()
    };
    export_to(&reference_checkpoint("phi3-tiny-random"), &opts, &out).unwrap();
    let m = read_model(&out.join("model.onnx"));
    let data_len = std::fs::metadata(out.join("model.onnx.data"))
        .unwrap()
        .len();
    let mut ranges = Vec::new();
    let mut aligned_checked = 0;
    for t in &m.graph.as_ref().unwrap().initializer {
        assert_eq!(
            t.data_location,
            Some(DataLocation::External as i32),
            "{}",
            t.name()
        );
        assert!(
            t.raw_data.is_none() && t.float_data.is_empty(),
            "{}: has inline data",
            t.name()
        );
        let location = t
            .external_data
            .iter()
            .find(|e| e.key() == "location")
            .unwrap()
            .value();
        assert_eq!(location, "model.onnx.data");
        let (offset, length) = external_range(t);
        assert!(
            offset + length <= data_len,
            "{} overruns the data file",
            t.name()
        );
        if length > ALIGN_THRESHOLD_BYTES {
            assert_eq!(offset % ALIGNMENT_BYTES, 0, "{} at {offset}", t.name());
            aligned_checked += 1;
        }
        ranges.push((offset, length));
    }
    assert!(
        aligned_checked >= 2,
        "the fp32 embedding and lm_head (8 MiB each) are over the threshold"
    );
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlapping tensors {w:?}");
    }
}

#[test]
fn qdq_writes_blocked_int4_dequantize_linear_with_transposed_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = ExportOptions {
        block_size: 128,
        qdq: true,
        ..Default::default()
    };
    export_to(&reference_checkpoint("phi3-tiny-random"), &opts, &out).unwrap();
    let m = read_model(&out.join("model.onnx"));
    let g = m.graph.as_ref().unwrap();
    let dq = g
        .node
        .iter()
        .find(|n| n.name() == "/model/layers.0/attn/qkv_proj/MatMul_DQ_Q4")
        .expect("DQ node");
    assert_eq!(dq.op_type(), "DequantizeLinear");
    assert_eq!(
        dq.input,
        [
            "model.layers.0.attn.qkv_proj.MatMul.weight_DQ_Q4",
            "model.layers.0.attn.qkv_proj.MatMul.weight_DQ_scales"
        ]
    );
    let attrs: Vec<(String, i64)> = dq
        .attribute
        .iter()
        .map(|a| (a.name().to_string(), a.i()))
        .collect();
    assert_eq!(
        attrs,
        [("axis".to_string(), 0), ("block_size".to_string(), 128)]
    );
    let table = initializer_table(&m);
    assert_eq!(
        table["model.layers.0.attn.qkv_proj.MatMul.weight_DQ_Q4"],
        (vec![256, 768], DataType::Int4 as i32)
    );
    assert_eq!(
        table["model.layers.0.attn.qkv_proj.MatMul.weight_DQ_scales"],
        (vec![2, 768], DataType::Float as i32)
    );
    assert!(
        g.node
            .iter()
            .all(|n| n.op_type() != "MatMulNBits" && n.op_type() != "SimplifiedLayerNormalization")
    );
}

#[test]
fn longrope_caches_live_in_one_if_node_and_plain_rope_in_initializers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("longrope");
    export_to(
        &repo_root().join("fixtures/tiny-longrope"),
        &ExportOptions::default(),
        &out,
    )
    .unwrap();
    let m = read_model(&out.join("model.onnx"));
    let g = m.graph.as_ref().unwrap();
    let greater = g
        .node
        .iter()
        .find(|n| n.op_type() == "Greater")
        .expect("Greater");
    assert_eq!(
        greater.input[0],
        "/model/attn_mask_reformat/attn_mask_subgraph/Gather/output_0"
    );
    assert_eq!(
        greater.input[1], "/model/constants/INT64/64",
        "original_max_position_embeddings of tiny-longrope"
    );
    let iff = g.node.iter().find(|n| n.op_type() == "If").expect("If");
    assert_eq!(iff.output, ["cos_cache", "sin_cache"]);
    let branch_rows = |attr: &str| {
        let b = iff
            .attribute
            .iter()
            .find(|a| a.name() == attr)
            .unwrap()
            .g
            .as_ref()
            .unwrap();
        b.node[0].attribute[0].t.as_ref().unwrap().dims.clone()
    };
    assert_eq!(
        branch_rows("then_branch"),
        [256, 32],
        "long caches cover max_position_embeddings"
    );
    assert_eq!(
        branch_rows("else_branch"),
        [64, 32],
        "short caches cover original_max_position_embeddings"
    );
    assert!(!initializer_table(&m).contains_key("cos_cache"));

    let out = tmp.path().join("plain");
    export_to(
        &repo_root().join("fixtures/tiny"),
        &ExportOptions::default(),
        &out,
    )
    .unwrap();
    let table = initializer_table(&read_model(&out.join("model.onnx")));
    assert_eq!(table["cos_cache"], (vec![4096, 32], DataType::Float as i32));
}

#[test]
fn gqa_and_odd_fixtures_get_their_head_counts_and_padded_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gqa");
    export_to(
        &repo_root().join("fixtures/tiny-gqa"),
        &ExportOptions::default(),
        &out,
    )
    .unwrap();
    let m = read_model(&out.join("model.onnx"));
    let gqa = m
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type() == "GroupQueryAttention")
        .unwrap();
    let attr = |name: &str| gqa.attribute.iter().find(|a| a.name() == name).unwrap().i();
    assert_eq!((attr("num_heads"), attr("kv_num_heads")), (4, 2));

    // hidden 320 with block 128: K = 320 is padded to 3 blocks (ORT pads K with zeros).
    let out = tmp.path().join("odd");
    let opts = ExportOptions {
        block_size: 128,
        ..Default::default()
    };
    export_to(&repo_root().join("fixtures/tiny-odd"), &opts, &out).unwrap();
    let table = initializer_table(&read_model(&out.join("model.onnx")));
    assert_eq!(
        table["model.layers.0.attn.o_proj.MatMul.weight_Q4"].0,
        vec![320, 3, 64]
    );
}

#[test]
fn ratio_mixes_4_and_8_bit_matmul_nbits_by_parameter_share() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let opts = ExportOptions {
        block_size: 128,
        ratio: Some(0.5),
        ..Default::default()
    };
    export_to(&reference_checkpoint("phi3-tiny-random"), &opts, &out).unwrap();
    let m = read_model(&out.join("model.onnx"));
    let mut params = [0i64; 2]; // 4-bit, 8-bit, over the ratio-defining layers (all but lm_head)
    for n in &m.graph.as_ref().unwrap().node {
        if n.op_type() != "MatMulNBits" || n.name().starts_with("/lm_head") {
            continue;
        }
        let attr = |name: &str| n.attribute.iter().find(|a| a.name() == name).unwrap().i();
        let bits = attr("bits");
        assert!(n.name().ends_with(&format!("_Q{bits}")), "{}", n.name());
        params[usize::from(bits == 8)] += attr("K") * attr("N");
    }
    assert!(
        params[0] > 0 && params[1] > 0,
        "both 4-bit and 8-bit layers: {params:?}"
    );
    let share = params[0] as f64 / (params[0] + params[1]) as f64;
    assert!((0.3..=0.7).contains(&share), "4-bit share {share}");
}

/// `--awq`: down_proj's input columns scaled by `1 / max(mean_i |W[i, j]|, eps)` and up_proj's output rows by the
/// inverse (NNCF's data-free step, folded into the preceding MatMul), computed here with plain loops; every other
/// weight is the plain int4 export's, byte for byte.
#[test]
fn awq_rescales_down_proj_columns_and_up_proj_rows_only() {
    let tmp = tempfile::tempdir().unwrap();
    let src = reference_checkpoint("phi3-tiny-random");
    let plain = ExportOptions {
        block_size: 128,
        ..Default::default()
    };
    let awq = ExportOptions {
        awq: true,
        ..plain.clone()
    };
    export_to(&src, &plain, &tmp.path().join("plain")).unwrap();
    export_to(&src, &awq, &tmp.path().join("awq")).unwrap();
    let (a, b) = (
        initializer_hashes(&tmp.path().join("plain")),
        initializer_hashes(&tmp.path().join("awq")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, hash) in &a {
        let rescaled = name.contains("down_proj") || name.contains("up_proj");
        assert_eq!(hash != &b[name], rescaled, "{name}");
    }

    let ckpt = oxport_arch::Model::open(&src).unwrap();
    let c = ckpt.config().clone();
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let down = ckpt
        .read_f32(oxport_arch::Role::MlpDown { layer: 0 })
        .unwrap(); // [h, inter]
    let gate_up = ckpt
        .read_f32(oxport_arch::Role::MlpGateUp { layer: 0 })
        .unwrap(); // [2 inter, h]
    let mut mean = vec![0f32; inter];
    for i in 0..h {
        for j in 0..inter {
            mean[j] += down[i * inter + j].abs();
        }
    }
    let scale: Vec<f32> = mean
        .iter()
        .map(|m| 1.0 / (m / h as f32).max(f32::EPSILON))
        .collect();
    let mut down_scaled = down.clone();
    for i in 0..h {
        for j in 0..inter {
            down_scaled[i * inter + j] *= scale[j];
        }
    }
    let mut up_scaled = gate_up[inter * h..].to_vec();
    for j in 0..inter {
        for v in &mut up_scaled[j * h..(j + 1) * h] {
            *v *= 1.0 / scale[j];
        }
    }
    let p = oxport_quant::NBitsParams {
        bits: 4,
        block_size: 128,
        symmetric: true,
        scale_dtype: oxport_quant::ScaleDtype::F32,
    };
    let data = std::fs::read(tmp.path().join("awq/model.onnx.data")).unwrap();
    let m = read_model(&tmp.path().join("awq/model.onnx"));
    let bytes = |name: &str| {
        let t = m
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap();
        let (o, l) = external_range(t);
        data[o as usize..(o + l) as usize].to_vec()
    };
    for (name, w, n, k) in [
        (
            "model.layers.0.mlp.down_proj.MatMul.weight",
            &down_scaled,
            h,
            inter,
        ),
        (
            "model.layers.0.mlp.up_proj.MatMul.weight",
            &up_scaled,
            inter,
            h,
        ),
    ] {
        let q = oxport_quant::quantize_nbits(w, n, k, &p).unwrap();
        assert_eq!(bytes(&format!("{name}_Q4")), q.packed, "{name}_Q4");
        assert_eq!(bytes(&format!("{name}_scales")), q.scales, "{name}_scales");
    }
    let err = oxport_onnx::plan(
        &ckpt,
        &ExportOptions {
            awq: true,
            precision: Precision::Fp16,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--awq"), "{err}");
}
