//! Our OpenVINO exports of the tiny fixtures, run by oxport-runner's stateful OpenVINO session on CPU (f32 hints),
//! against oxport-runner's Rust reference forward pass of the checkpoint: prompt logits within the format's
//! tolerance, and greedy generation through the KV cache. OpenVINO comes from the PyPI wheel (`$OXPORT_PYTHON`);
//! its absence fails the test, so every test here runs with the `runtimes` feature (`cargo xtask test`) and a plain
//! `cargo test` lists it as ignored.

use std::path::Path;

use oxport_arch::Model;
use oxport_io::{CancelToken, Silent};
use oxport_openvino::{CompressionOptions, GroupSizeFallback, WeightFormat};
use oxport_reference::Reference;
use oxport_runner::backend::openvino::{OvDevice, OvLlm, OvNames};
use oxport_runner::backend::{LlmSession, Precision, ReferenceSession};

use crate::support::{python, repo_root};

fn formats() -> Vec<(&'static str, CompressionOptions, f32)> {
    // max |Δ| of the logits against the f32 reference (random weights, |logits| ≲ 2): fp32/fp16 are exact up to
    // accumulation order (the bf16 weights are exact in f16); int8/int4 add their compression error.
    vec![
        ("fp32", CompressionOptions::new(WeightFormat::Fp32), 1e-4),
        ("fp16", CompressionOptions::new(WeightFormat::Fp16), 1e-3),
        ("int8", CompressionOptions::new(WeightFormat::Int8), 0.06),
        (
            "int4",
            CompressionOptions {
                sym: true,
                group_size: Some(128),
                ratio: Some(0.6),
                group_size_fallback: GroupSizeFallback::Adjust,
                ..CompressionOptions::new(WeightFormat::Int4)
            },
            0.4,
        ),
    ]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

fn prompt(vocab: usize, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| (3 + (i * 37 + 11) % (vocab - 8)) as u32)
        .collect()
}

fn check_fixture(name: &str, prompt_len: usize) {
    python();
    let dir = repo_root().join("fixtures").join(name);
    let ckpt = Model::open(&dir).unwrap();
    let reference = Reference::load(&ckpt).unwrap();
    let vocab = reference.vocab_size();
    let ids = prompt(vocab, prompt_len);
    let mut ref_session = ReferenceSession::new(&reference);
    let want = ref_session.forward(&ids).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (format, opts, tol) in formats() {
        let out = tmp.path().join(format);
        let plan = oxport_openvino::plan(&ckpt, &opts).unwrap();
        oxport_openvino::export(
            &ckpt,
            &plan,
            &out,
            &dir.to_string_lossy(),
            &Silent,
            &CancelToken::new(),
        )
        .unwrap();
        let xml = out.join(oxport_openvino::MODEL_XML);
        let mut ov = OvLlm::open(&xml, OvNames::default(), OvDevice::Cpu, Precision::F32Exact)
            .unwrap_or_else(|e| panic!("{name} {format}: OpenVINO could not load the export: {e}"));
        let got = ov.forward(&ids).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(
            err <= tol,
            "{name} {format}: prompt logits max |Δ| {err} > {tol}"
        );

        // Greedy through the stateful cache vs the same model recomputed from scratch every step.
        let mut seq = ids.clone();
        let mut last = got[got.len() - vocab..].to_vec();
        for step in 0..4 {
            let next = argmax(&last);
            seq.push(next);
            last = ov.forward(&[next]).unwrap();
            assert_eq!(ov.position(), seq.len());
            let mut fresh =
                OvLlm::open(&xml, OvNames::default(), OvDevice::Cpu, Precision::F32Exact).unwrap();
            let full = fresh.forward(&seq).unwrap();
            let full_last = &full[full.len() - vocab..];
            let err = max_abs_diff(&last, full_last);
            assert!(
                err < 1e-4,
                "{name} {format} step {step}: cached vs recomputed logits differ by {err}"
            );
        }
    }
}

fn fixture_exists(name: &str) -> bool {
    Path::new(&repo_root().join("fixtures").join(name).join("config.json")).is_file()
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn tiny_exports_match_the_rust_reference() {
    assert!(fixture_exists("tiny"), "fixtures/tiny is missing");
    check_fixture("tiny", 12);
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn tiny_gqa_exports_match_the_rust_reference() {
    check_fixture("tiny-gqa", 12);
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn tiny_odd_exports_match_the_rust_reference() {
    // hidden 320: int4 with group 128 needs the `adjust` fallback (group 64), as with optimum-cli.
    check_fixture("tiny-odd", 12);
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn tiny_longrope_exports_match_the_rust_reference_past_the_original_context() {
    // 70 positions > original_max_position_embeddings (64): the graph must switch to the long factors.
    check_fixture("tiny-longrope", 70);
}
