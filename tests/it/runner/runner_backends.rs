//! Both runtimes load from the PyPI wheels and run a tiny decoder through oxport-runner's LLM sessions on CPU:
//! the ORT session with the genai layout (past KV in, present out) and the OpenVINO session with the stateful
//! interface (position_ids, beam_idx, state in the infer request). The toy models' logits are closed-form
//! (`tests/it/runner/data/make_toy.py`), so every number is checked. Every test here needs the wheels:
//! it runs with the `runtimes` feature (`cargo xtask test`), and a plain `cargo test` lists it as ignored.

use std::path::Path;
use std::process::Command;

use oxport_runner::backend::onnxruntime::{GenaiNames, OrtDevice, OrtLlm};
use oxport_runner::backend::openvino::{OvDevice, OvLlm, OvNames};
use oxport_runner::backend::{LlmSession, Precision};

use crate::support::{python, repo_root};

const VOCAB: usize = 16;

fn make_toys(dir: &Path) {
    let status = Command::new(python())
        .arg(repo_root().join("tests/it/runner/data/make_toy.py"))
        .arg(dir)
        .status()
        .expect("run make_toy.py with $OXPORT_PYTHON");
    assert!(status.success(), "make_toy.py failed");
}

/// `logits[t, v] = id_t·v + Σ cached ids + 100·total (+ 10000·position)`.
fn expected(new: &[u32], past: &[u32], with_positions: bool) -> Vec<f32> {
    let total = past.len() + new.len();
    let sum: u32 = past.iter().chain(new).sum();
    let mut out = Vec::new();
    for (t, &id) in new.iter().enumerate() {
        let pos = if with_positions {
            10000.0 * (past.len() + t) as f32
        } else {
            0.0
        };
        out.extend(
            (0..VOCAB).map(|v| (id as usize * v) as f32 + sum as f32 + 100.0 * total as f32 + pos),
        );
    }
    out
}

fn run_sequence(session: &mut dyn LlmSession, with_positions: bool) {
    let prompt = [3, 5, 1];
    assert_eq!(
        session.forward(&prompt).unwrap(),
        expected(&prompt, &[], with_positions)
    );
    assert_eq!(session.vocab_size(), VOCAB);
    let mut past = prompt.to_vec();
    for id in [7, 2] {
        assert_eq!(
            session.forward(&[id]).unwrap(),
            expected(&[id], &past, with_positions),
            "after {past:?}"
        );
        past.push(id);
    }
    assert_eq!(session.position(), 5);
    session.reset().unwrap();
    assert_eq!(session.position(), 0);
    assert_eq!(
        session.forward(&[4]).unwrap(),
        expected(&[4], &[], with_positions),
        "reset keeps old KV"
    );
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn onnxruntime_cpu_runs_a_genai_layout_decoder_with_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    make_toys(dir.path());
    let model = dir.path().join("toy_genai.onnx");
    let mut s = OrtLlm::open(
        &model,
        GenaiNames::default(),
        OrtDevice::Cpu,
        Precision::F32Exact,
    )
    .unwrap();
    assert_eq!(s.layers(), 2);
    run_sequence(&mut s, false);
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn openvino_cpu_runs_a_stateful_decoder_one_request_per_sequence() {
    let dir = tempfile::tempdir().unwrap();
    make_toys(dir.path());
    let xml = dir.path().join("toy_stateful.xml");
    let mut s = OvLlm::open(&xml, OvNames::default(), OvDevice::Cpu, Precision::F32Exact).unwrap();
    run_sequence(&mut s, true);
    let mut s = OvLlm::open(
        &xml,
        OvNames::default(),
        OvDevice::Cpu,
        Precision::DeviceDefault,
    )
    .unwrap();
    run_sequence(&mut s, true);
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn a_missing_input_is_reported_with_the_model_path() {
    let dir = tempfile::tempdir().unwrap();
    make_toys(dir.path());
    let names = GenaiNames {
        input_ids: "tokens".into(),
        ..GenaiNames::default()
    };
    let model = dir.path().join("toy_genai.onnx");
    let e = OrtLlm::open(&model, names, OrtDevice::Cpu, Precision::F32Exact)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("toy_genai.onnx") && e.contains("\"tokens\""),
        "{e}"
    );
}
