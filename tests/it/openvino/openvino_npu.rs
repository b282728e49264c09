//! `oxport export openvino --npu` as a user runs it (the built binary): the recipe OpenVINO GenAI documents for Intel
//! NPUs gives the bytes of the same optimum-cli flags, its channel-wise form validates on the CPU, options the NPU
//! cannot take are refused before anything is written, and `--device npu` names an absent NPU with the reason.
//! Also the exporter's note when a checkpoint has no tokenizer.json, and the error when its tokenizer cannot be
//! converted. The one test that runs OpenVINO needs the `runtimes` feature (`cargo xtask test`); a plain `cargo test`
//! lists it as ignored.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{folder_bytes, oxport_bin, python, repo_root};
use oxport_io::Silent;
use oxport_runner::validate::{self, DeviceFilter, Options, Status};

fn checkpoint() -> PathBuf {
    repo_root().join("fixtures/reference/checkpoints/phi3-tiny-gqa")
}

fn export(args: &[&str], out: &Path) -> Output {
    let ckpt = checkpoint();
    Command::new(oxport_bin())
        .args(["export", "openvino", "--model"])
        .arg(&ckpt)
        .args(args)
        .arg(out)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "oxport failed: {stderr}");
    stderr
}

#[test]
fn npu_gives_the_bytes_of_optimum_clis_recipe_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let (npu, flags) = (tmp.path().join("npu"), tmp.path().join("flags"));
    ok(export(&["--npu"], &npu));
    ok(export(
        &[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int4",
            "--sym",
            "--ratio",
            "1.0",
            "--group-size",
            "128",
        ],
        &flags,
    ));
    assert_eq!(
        folder_bytes(&npu),
        folder_bytes(&flags),
        "--npu must write exactly what the recipe's optimum-cli flags write"
    );
    // The same with the recipe given verbatim after --npu.
    let again = tmp.path().join("again");
    ok(export(
        &[
            "--npu",
            "--weight-format",
            "int4",
            "--sym",
            "--ratio",
            "1.0",
            "--group-size",
            "128",
        ],
        &again,
    ));
    assert_eq!(folder_bytes(&npu), folder_bytes(&again));
}

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn npu_channel_wise_export_validates_on_cpu_and_an_absent_npu_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("npu-cw");
    // The seed's NPU library quantized per output channel, symmetric: --group-size -1.
    ok(export(
        &[
            "--npu",
            "--weight-format",
            "int4",
            "--sym",
            "--ratio",
            "1.0",
            "--group-size",
            "-1",
        ],
        &out,
    ));
    let xml = std::fs::read_to_string(out.join("openvino_model.xml")).unwrap();
    for rt in [
        "<mode value=\"int4_sym\"",
        "<group_size value=\"-1\"",
        "<ratio value=\"1.0\"",
        "<backup_mode value=\"int8_asym\"",
    ] {
        assert!(xml.contains(rt), "rt_info lacks {rt}");
    }
    python();
    let text = std::fs::read_to_string(repo_root().join("fixtures/eval_text.txt")).unwrap();
    let mut o = Options::new(&out);
    o.reference = Some(checkpoint());
    o.prompts = vec!["What is 2 + 2?".into()];
    o.max_new_tokens = 8;
    o.text = Some(text.chars().take(3000).collect());
    o.ppl_window = 64;
    o.ppl_max_tokens = 256;
    o.devices = DeviceFilter::Cpu;
    let report = validate::run(&o, &Silent).unwrap();
    assert!(report.passed, "{}", validate::table(&report));
    assert_eq!(report.targets[0].status, Status::Passed);

    // --device npu: run where an NPU is present; otherwise skipped with the reason, and nothing passed.
    o.devices = DeviceFilter::Npu;
    let report = validate::run(&o, &Silent).unwrap();
    assert_eq!(report.targets.len(), 1, "{}", validate::table(&report));
    let npu = &report.targets[0];
    assert_eq!(npu.label, "openvino/NPU");
    if npu.status == Status::Skipped {
        let reason = npu.reason.as_deref().unwrap_or_default();
        assert!(
            reason.contains("NPU") && reason.contains("available_devices"),
            "{reason}"
        );
        assert!(!report.passed, "a run where no device ran must not pass");
    } else {
        assert_eq!(npu.status, Status::Passed, "{}", validate::table(&report));
    }
}

#[test]
fn npu_refusals_name_the_flag_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, name) in [
        (
            &["--weight-format", "int4", "--group-size", "128"][..],
            "--sym",
        ),
        (
            &["--weight-format", "int4", "--sym", "--ratio", "0.6"],
            "--ratio 0.6",
        ),
        (&["--group-size", "64"], "--group-size 64"),
        (&["--backup-precision", "none"], "--backup-precision none"),
    ] {
        let parent = tmp.path().join("exports");
        let out = parent.join("out");
        let mut argv = vec!["--npu"];
        argv.extend_from_slice(flags);
        let r = export(&argv, &out);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{flags:?} was accepted");
        assert!(
            stderr.contains("--npu") && stderr.contains(name),
            "{flags:?}: {stderr}"
        );
        assert!(!parent.exists(), "{flags:?}: something was written");
    }
}

#[test]
fn an_openvino_export_without_tokenizer_json_says_no_tokenizer_ir_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    for e in std::fs::read_dir(checkpoint()).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "tokenizer.json" {
            std::fs::copy(e.path(), ckpt.join(e.file_name())).unwrap();
        }
    }
    let out = tmp.path().join("out");
    let r = Command::new(oxport_bin())
        .args(["export", "openvino", "--weight-format", "fp16", "--model"])
        .arg(&ckpt)
        .arg(&out)
        .output()
        .unwrap();
    let stderr = ok(r);
    assert!(
        stderr.contains("no tokenizer.json") && stderr.contains("openvino_tokenizer"),
        "{stderr}"
    );
    assert!(out.join("openvino_model.xml").is_file());
    assert!(!out.join("openvino_tokenizer.xml").exists());
    // --no-tokenizer asked for that: no note.
    let r = Command::new(oxport_bin())
        .args([
            "export",
            "openvino",
            "--no-tokenizer",
            "--weight-format",
            "fp16",
            "--model",
        ])
        .arg(&ckpt)
        .arg(tmp.path().join("out2"))
        .output()
        .unwrap();
    assert!(!ok(r).contains("no tokenizer.json"));
}

/// A tokenizer the IR converter cannot convert (oxport-ov-tokenizer) is reported as a tokenizer error naming
/// tokenizer.json and the construct, not as an export option, and nothing is written.
#[test]
fn an_openvino_export_with_an_unconvertible_tokenizer_names_the_file_and_the_construct() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    for e in std::fs::read_dir(checkpoint()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), ckpt.join(e.file_name())).unwrap();
    }
    let path = ckpt.join("tokenizer.json");
    let mut tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tj["normalizer"] = serde_json::json!({"type": "NFKC"});
    std::fs::write(&path, tj.to_string()).unwrap();
    let out = tmp.path().join("out");
    let r = Command::new(oxport_bin())
        .args(["export", "openvino", "--weight-format", "fp16", "--model"])
        .arg(&ckpt)
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot convert normalizer of type NFKC to an OpenVINO tokenizer",
            path.display()
        )) && stderr.contains("--no-tokenizer"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid export options"), "{stderr}");
    assert!(!out.exists());
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().count() == 1,
        "only ckpt remains"
    );
}
