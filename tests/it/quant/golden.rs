//! Bit-exact comparison with bytes produced by ONNX Runtime 1.32's MatMulNBits quantizer and NNCF 3.4's
//! `compress_weights` (tests/golden/make_golden.py; ties at .5, ±0, all-zero blocks, subnormals, values beyond
//! the f16 range, K not divisible by the block).

use oxport_quant::{NBitsParams, NncfMode, ScaleDtype, compress_nncf, quantize_nbits};
use serde_json::Value;

use crate::support::{read_gz_json, repo_root, unhex};

fn golden(name: &str) -> Value {
    read_gz_json(&repo_root().join("tests/golden").join(name))
}

fn matrix(doc: &Value, name: &str) -> (Vec<f32>, usize, usize) {
    let m = &doc["matrices"][name];
    let bytes = unhex(m["f32_le"].as_str().unwrap());
    let w = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (
        w,
        m["n"].as_u64().unwrap() as usize,
        m["k"].as_u64().unwrap() as usize,
    )
}

/// Show where two byte strings first differ.
fn assert_bytes(what: &str, case: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{case}: {what} differs (len {} vs {}), first difference at byte {first:?}: got {:02x?}, want {:02x?}",
            got.len(),
            want.len(),
            first.map(|i| &got[i..(i + 8).min(got.len())]),
            first.map(|i| &want[i..(i + 8).min(want.len())]),
        );
    }
}

#[test]
fn ort_matmul_nbits_bit_exact() {
    let doc = golden("ort_nbits.json.gz");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "golden file has {} cases", cases.len());
    for c in cases {
        let name = c["matrix"].as_str().unwrap();
        let (w, n, k) = matrix(&doc, name);
        let p = NBitsParams {
            bits: c["bits"].as_u64().unwrap() as u32,
            block_size: c["block_size"].as_u64().unwrap() as usize,
            symmetric: c["symmetric"].as_bool().unwrap(),
            scale_dtype: if c["scale_dtype"] == "f16" {
                ScaleDtype::F16
            } else {
                ScaleDtype::F32
            },
        };
        let label = format!("{name} {p:?}");
        let q = quantize_nbits(&w, n, k, &p).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_bytes(
            "B",
            &label,
            &q.packed,
            &unhex(c["packed"].as_str().unwrap()),
        );
        assert_bytes(
            "scales",
            &label,
            &q.scales,
            &unhex(c["scales"].as_str().unwrap()),
        );
        match c["zero_points"].as_str() {
            Some(z) => assert_bytes(
                "zero_points",
                &label,
                q.zero_points.as_deref().unwrap(),
                &unhex(z),
            ),
            None => assert!(
                q.zero_points.is_none(),
                "{label}: symmetric must have no zero points"
            ),
        }
    }
}

#[test]
fn f16_scales_refuse_weights_beyond_f16_range() {
    let doc = golden("ort_nbits.json.gz");
    let (w, n, k) = matrix(&doc, "beyond_f16");
    let p = NBitsParams {
        bits: 4,
        block_size: 32,
        symmetric: true,
        scale_dtype: ScaleDtype::F16,
    };
    let err = quantize_nbits(&w, n, k, &p)
        .unwrap_err()
        .for_tensor("model.layers.0.mlp.down_proj.weight");
    let msg = err.to_string();
    assert!(
        msg.contains("model.layers.0.mlp.down_proj.weight") && msg.contains("f16 range"),
        "{msg}"
    );
}

fn mode(s: &str) -> NncfMode {
    match s {
        "int4_sym" => NncfMode::Int4Sym,
        "int4_asym" => NncfMode::Int4Asym,
        "int8_sym" => NncfMode::Int8Sym,
        "int8_asym" => NncfMode::Int8Asym,
        other => panic!("unknown mode {other}"),
    }
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn nncf_compress_weights_bit_exact() {
    let doc = golden("nncf.json.gz");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "golden file has {} cases", cases.len());
    for c in cases {
        let name = c["matrix"].as_str().unwrap();
        let (w, n, k) = matrix(&doc, name);
        let m = mode(c["mode"].as_str().unwrap());
        let group = c["group_size"].as_u64().map(|g| g as usize);
        let label = format!("{name} {m} group {group:?}");
        let q = compress_nncf(&w, n, k, m, group).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            q.weight_element,
            c["weight_element"].as_str().unwrap(),
            "{label}"
        );
        assert_eq!(q.weight_shape, shape(&c["weight_shape"]), "{label}");
        assert_eq!(c["scale_element"], "f16", "{label}");
        assert_eq!(q.scale_shape, shape(&c["scale_shape"]), "{label}");
        assert_bytes(
            "weight",
            &label,
            &q.weight,
            &unhex(c["weight"].as_str().unwrap()),
        );
        let scale: Vec<u8> = q
            .scale
            .iter()
            .flat_map(|s| s.to_bits().to_le_bytes())
            .collect();
        assert_bytes(
            "scale",
            &label,
            &scale,
            &unhex(c["scale"].as_str().unwrap()),
        );
        match c["zero_point"].as_str() {
            Some(z) => {
                assert_eq!(
                    q.zero_point_element,
                    c["zero_point_element"].as_str(),
                    "{label}"
                );
                assert_eq!(
                    q.zero_point_shape.as_ref().unwrap(),
                    &shape(&c["zero_point_shape"]),
                    "{label}"
                );
                assert_bytes(
                    "zero_point",
                    &label,
                    q.zero_point.as_deref().unwrap(),
                    &unhex(z),
                );
            }
            None => assert!(q.zero_point.is_none(), "{label}: NNCF stored no zero point"),
        }
    }
}
