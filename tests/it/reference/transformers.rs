//! The Rust reference forward pass against transformers' fp32 logits (`fixtures/reference/numerics/<model>/`).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

use std::path::PathBuf;

use oxport_reference::{Reference, npy};

use crate::support::fixture;

const MODELS: [&str; 3] = ["phi3-tiny-random", "phi3-tiny-gqa", "phi3-tiny-k320"];

fn fixtures() -> PathBuf {
    fixture("reference")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load(model: &str) -> (Reference, Vec<u32>, Vec<f32>) {
    let ckpt = oxport_arch::Model::open(fixtures().join("checkpoints").join(model)).unwrap();
    let reference = Reference::load(&ckpt).unwrap();
    let dir = fixtures().join("numerics").join(model);
    let ids = npy::read_i64(dir.join("input_ids.npy")).unwrap();
    let logits = npy::read_f32(dir.join("logits_fp32.npy")).unwrap();
    assert_eq!(
        logits.shape,
        vec![1, ids.data.len(), reference.vocab_size()]
    );
    (
        reference,
        ids.data.iter().map(|&i| i as u32).collect(),
        logits.data,
    )
}

#[test]
fn prefill_matches_transformers_fp32_logits_to_1e_4() {
    for model in MODELS {
        let (reference, ids, expected) = load(model);
        let mut cache = reference.new_cache();
        let got = reference.forward(&ids, &mut cache).unwrap();
        let diff = max_abs(&got, &expected);
        eprintln!("{model}: max |Δlogit| vs transformers = {diff:.3e}");
        assert!(diff < 1e-4, "{model}: max |Δlogit| {diff} ≥ 1e-4");
        assert_eq!(cache.len(), ids.len());
    }
}

#[test]
fn kv_cache_decoding_matches_the_full_prefill() {
    let (reference, ids, expected) = load("phi3-tiny-gqa");
    let vocab = reference.vocab_size();
    let mut cache = reference.new_cache();
    let mut got = reference.forward(&ids[..9], &mut cache).unwrap();
    for &id in &ids[9..] {
        got.extend(reference.forward(&[id], &mut cache).unwrap());
    }
    assert_eq!(cache.len(), ids.len());
    let diff = max_abs(&got, &expected);
    assert!(
        diff < 1e-4,
        "incremental decoding drifts from transformers by {diff}"
    );
    // A fresh cache starts a new sequence: the first position's logits come back.
    let first = reference
        .forward(&ids[..1], &mut reference.new_cache())
        .unwrap();
    assert!(max_abs(&first, &expected[..vocab]) < 1e-4);
}
