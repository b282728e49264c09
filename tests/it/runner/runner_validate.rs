//! `oxport validate` end to end: export a tiny checkpoint with oxport's own exporters (library calls), validate it
//! on every device against the Rust reference, and check that a damaged export fails naming the metric.
//! Absent devices must be reported as skipped with a reason, never as passed. The tests that run a runtime need the
//! `runtimes` feature (`cargo xtask test`); a plain `cargo test` lists them as ignored.

use std::path::{Path, PathBuf};
use std::process::Command;

use oxport_io::{CancelToken, Silent};
use oxport_runner::validate::{self, DeviceFilter, Options, Report, Status, WeightPrecision};

use crate::support::{python, repo_root};

const MODEL: &str = "phi3-tiny-gqa";

fn checkpoint_dir() -> PathBuf {
    repo_root()
        .join("fixtures/reference/checkpoints")
        .join(MODEL)
}

fn export_onnx(out: &Path, precision: oxport_onnx::Precision) {
    let ckpt = oxport_arch::Model::open(checkpoint_dir()).unwrap();
    let opts = oxport_onnx::ExportOptions {
        precision,
        ..Default::default()
    };
    oxport_onnx::export(&ckpt, &opts, out, &Silent, &CancelToken::new()).unwrap();
}

fn export_openvino(out: &Path, format: oxport_openvino::WeightFormat) {
    let ckpt = oxport_arch::Model::open(checkpoint_dir()).unwrap();
    let mut opts = oxport_openvino::CompressionOptions::new(format);
    if format == oxport_openvino::WeightFormat::Int4 {
        // optimum-cli --weight-format int4 --group-size 128 --ratio 0.6 --sym (the reference fixtures' job).
        opts.sym = true;
        opts.group_size = Some(128);
        opts.ratio = Some(0.6);
    }
    let plan = oxport_openvino::plan(&ckpt, &opts).unwrap();
    let model_arg = checkpoint_dir().display().to_string();
    oxport_openvino::export(&ckpt, &plan, out, &model_arg, &Silent, &CancelToken::new()).unwrap();
}

fn options(dir: &Path) -> Options {
    python();
    let text = std::fs::read_to_string(repo_root().join("fixtures/eval_text.txt")).unwrap();
    let mut o = Options::new(dir);
    o.reference = Some(checkpoint_dir());
    o.prompts = vec![
        "Tell me a joke about computers.".into(),
        "What is 2 + 2?".into(),
    ];
    o.max_new_tokens = 8;
    o.text = Some(text.chars().take(3000).collect());
    o.ppl_window = 64;
    o.ppl_max_tokens = 256;
    o
}

/// CPU ran and passed; every other device is skipped (or passed where present), and skipped ones say why.
fn assert_passed_on_cpu(report: &Report, what: &str) {
    let table = validate::table(report);
    assert!(report.passed, "{what} failed validation:\n{table}");
    let cpu = report
        .targets
        .iter()
        .find(|t| t.target.class() == "cpu")
        .unwrap();
    assert_eq!(cpu.status, Status::Passed, "{what}:\n{table}");
    let m = cpu.metrics.as_ref().unwrap();
    assert!(
        m.perplexity.is_some() && m.prefill_tokens_per_s > 0.0 && m.decode_tokens_per_s > 0.0,
        "{what}: {m:?}"
    );
    assert_eq!(m.greedy_match.len(), 2);
    for t in &report.targets {
        assert_ne!(
            t.status,
            Status::Error,
            "{what}: {} errored:\n{table}",
            t.label
        );
        if t.status == Status::Skipped {
            assert!(
                t.reason.as_deref().is_some_and(|r| !r.is_empty()),
                "{what}: {} skipped silently",
                t.label
            );
            assert!(table.contains("skipped"), "{table}");
        }
    }
}

fn damage(dir: &Path) {
    let status = Command::new(python())
        .arg(repo_root().join("tests/it/runner/data/damage_scales.py"))
        .arg(dir)
        .status()
        .expect("run damage_scales.py with $OXPORT_PYTHON");
    assert!(status.success());
}

fn assert_fails_naming_a_metric(report: &Report) {
    let table = validate::table(report);
    assert!(!report.passed, "a damaged export passed:\n{table}");
    let cpu = report
        .targets
        .iter()
        .find(|t| t.target.class() == "cpu")
        .unwrap();
    assert_eq!(cpu.status, Status::Failed, "{table}");
    let reason = cpu.reason.as_deref().unwrap();
    assert!(
        reason.contains("mean_kl"),
        "the failure must name the metric: {reason}"
    );
    assert!(
        table.contains("FAIL") && table.contains("mean_kl"),
        "{table}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn onnx_int4_fp16_fp32_exports_validate_on_cpu() {
    use oxport_onnx::Precision::*;
    let tmp = tempfile::tempdir().unwrap();
    for (precision, expected) in [
        (Int4, WeightPrecision::Int4),
        (Fp16, WeightPrecision::Fp16),
        (Fp32, WeightPrecision::Fp32),
    ] {
        let dir = tmp.path().join(expected.name());
        export_onnx(&dir, precision);
        let report = validate::run(&options(&dir), &Silent).unwrap();
        assert_eq!(report.weight_precision, expected, "precision detection");
        assert_passed_on_cpu(&report, &format!("onnx {}", expected.name()));
        if expected == WeightPrecision::Fp32 {
            let m = report.targets[0].metrics.as_ref().unwrap();
            assert!(
                m.max_abs_logit < 1e-4,
                "fp32 ONNX vs reference: {}",
                m.max_abs_logit
            );
            assert_eq!(m.greedy_match, vec![8, 8]);
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn openvino_int4_int8_fp16_fp32_exports_validate_on_cpu() {
    use oxport_openvino::WeightFormat::*;
    let tmp = tempfile::tempdir().unwrap();
    for (format, expected) in [
        (Int4, WeightPrecision::Int4),
        (Int8, WeightPrecision::Int8),
        (Fp16, WeightPrecision::Fp16),
        (Fp32, WeightPrecision::Fp32),
    ] {
        let dir = tmp.path().join(expected.name());
        export_openvino(&dir, format);
        let report = validate::run(&options(&dir), &Silent).unwrap();
        assert_eq!(report.weight_precision, expected, "precision detection");
        assert_passed_on_cpu(&report, &format!("openvino {}", expected.name()));
        // GPU and NPU are listed either way: run where present, skipped with the reason where not.
        assert_eq!(report.targets.len(), 3);
    }
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn damaged_onnx_int4_scales_fail_naming_the_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("int4");
    export_onnx(&dir, oxport_onnx::Precision::Int4);
    damage(&dir);
    let mut o = options(&dir);
    o.devices = DeviceFilter::Cpu;
    assert_fails_naming_a_metric(&validate::run(&o, &Silent).unwrap());
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn damaged_openvino_int4_scales_fail_naming_the_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("int4");
    export_openvino(&dir, oxport_openvino::WeightFormat::Int4);
    damage(&dir);
    let mut o = options(&dir);
    o.devices = DeviceFilter::Cpu;
    assert_fails_naming_a_metric(&validate::run(&o, &Silent).unwrap());
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn the_report_serializes_with_skipped_devices_and_plots_kl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("int8");
    export_openvino(&dir, oxport_openvino::WeightFormat::Int8);
    // The reference comes from the export itself (optimum's openvino_config.json, written for int4 / int8 exports,
    // names the model argument).
    let mut o = options(&dir);
    o.reference = None;
    let report = validate::run(&o, &Silent).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets[0]["status"], "passed");
    // Mean KL per offset within the 64-token perplexity window.
    assert_eq!(targets[0]["kl_per_position"].as_array().unwrap().len(), 64);
    for t in targets.iter().filter(|t| t["status"] == "skipped") {
        assert!(
            t["reason"].as_str().unwrap().contains("available_devices"),
            "{t}"
        );
    }
    assert!(json["reference"]["perplexity"].as_f64().unwrap() > 1.0);
    let svg = validate::kl_svg(&report);
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("openvino/CPU"));
}

#[test]
fn a_folder_that_is_not_an_export_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = validate::run(&options(tmp.path()), &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an export"), "{e}");
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn longrope_reference_agrees_with_the_fp32_onnx_export_below_and_beyond_the_original_context() {
    // fixtures/tiny-longrope: original_max_position_embeddings 64, max 256. Windows of 48 use the short factors,
    // windows of 128 the long ones (chosen by total length, as transformers and the genai builder do).
    let ckpt_dir = repo_root().join("fixtures/tiny-longrope");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fp32");
    let ckpt = oxport_arch::Model::open(&ckpt_dir).unwrap();
    assert!(ckpt.config().rope_scaling.is_some());
    let opts = oxport_onnx::ExportOptions {
        precision: oxport_onnx::Precision::Fp32,
        ..Default::default()
    };
    oxport_onnx::export(&ckpt, &opts, &dir, &Silent, &CancelToken::new()).unwrap();
    for window in [48, 128] {
        let mut o = options(&dir);
        o.reference = Some(ckpt_dir.clone());
        o.devices = DeviceFilter::Cpu;
        o.ppl_window = window;
        o.ppl_max_tokens = 2 * window;
        let report = validate::run(&o, &Silent).unwrap();
        let m = report.targets[0].metrics.as_ref().unwrap();
        assert!(report.passed, "{}", validate::table(&report));
        assert!(
            m.max_abs_logit < 1e-4,
            "window {window}: max |Δlogit| {}",
            m.max_abs_logit
        );
    }
}

/// The Phi-4-mini-layout fixture (GQA, partial rotary 0.75, tied embeddings, LongRoPE) exports at every precision
/// for every ONNX target and every OpenVINO weight format, and each export validates on the CPU against the Rust
/// reference. The dml/webgpu graphs run on ONNX Runtime's CPU EP here (no DirectML or WebGPU device).
#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn tiny_phi4_exports_at_every_precision_and_target_validate_on_cpu() {
    use oxport_onnx::ExecutionProvider as Ep;
    let src = repo_root().join("fixtures/tiny-phi4");
    let ckpt = oxport_arch::Model::open(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path, what: &str| {
        let mut o = options(dir);
        o.reference = Some(src.clone());
        let report = validate::run(&o, &Silent).unwrap();
        assert_passed_on_cpu(&report, what);
        report
    };
    for ep in [Ep::Cpu, Ep::Cuda, Ep::Dml, Ep::WebGpu] {
        for precision in [
            oxport_onnx::Precision::Int4,
            oxport_onnx::Precision::Fp16,
            oxport_onnx::Precision::Fp32,
        ] {
            let what = format!("onnx {} {precision:?}", ep.name());
            let dir = tmp.path().join(what.replace(' ', "-"));
            let opts = oxport_onnx::ExportOptions {
                precision,
                execution_provider: ep,
                ..Default::default()
            };
            oxport_onnx::export(&ckpt, &opts, &dir, &Silent, &CancelToken::new()).unwrap();
            let report = run(&dir, &what);
            if precision == oxport_onnx::Precision::Fp32 {
                let m = report.targets[0].metrics.as_ref().unwrap();
                assert!(m.max_abs_logit < 1e-4, "{what}: {}", m.max_abs_logit);
            }
        }
    }
    use oxport_openvino::WeightFormat::*;
    for format in [Int4, Int8, Fp16, Fp32] {
        let what = format!("openvino {format:?}");
        let dir = tmp.path().join(what.replace(' ', "-"));
        let opts = oxport_openvino::CompressionOptions::new(format);
        let plan = oxport_openvino::plan(&ckpt, &opts).unwrap();
        let model_arg = src.display().to_string();
        oxport_openvino::export(&ckpt, &plan, &dir, &model_arg, &Silent, &CancelToken::new())
            .unwrap();
        run(&dir, &what);
    }
}
