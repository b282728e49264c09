//! `cargo xtask digests [--bless]`: the restructuring's safety net. Exports every fixture in every format,
//! precision and flag set the tests cover, hashes every file written (sha256), and compares the list with the
//! committed one (`tests/golden/export-digests.txt`). A refused export is recorded as its exit code, so a change
//! that starts refusing (or accepting) a combination shows up too. `--bless` rewrites the list.
//!
//! Paths are given relative to the repository root, so a clone anywhere gives the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::test::repo_root;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Rewrite the committed list instead of comparing with it.
    #[arg(long)]
    bless: bool,
    /// The oxport binary to run (default: build `target/release/oxport`).
    #[arg(long)]
    bin: Option<PathBuf>,
}

const LIST: &str = "tests/golden/export-digests.txt";

const FIXTURES: &[&str] = &[
    "fixtures/tiny",
    "fixtures/tiny-gqa",
    "fixtures/tiny-longrope",
    "fixtures/tiny-odd",
    "fixtures/tiny-phi4",
    "fixtures/reference/checkpoints/phi3-tiny-random",
    "fixtures/reference/checkpoints/phi3-tiny-gqa",
    "fixtures/reference/checkpoints/phi3-tiny-k320",
];

const CALIB: &[&str] = &["--dataset", "fixtures/calib_text.txt", "--num-samples", "8"];

/// (case name, subcommand, flags). Every flag set a test exercises, data-free and data-aware.
fn cases() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let with_calib = |flags: &[&'static str]| -> Vec<&'static str> {
        flags.iter().chain(CALIB).copied().collect()
    };
    vec![
        (
            "ov-int4-default",
            "openvino",
            vec!["--weight-format", "int4"],
        ),
        (
            "ov-int4-asym-g64",
            "openvino",
            vec!["--weight-format", "int4", "--group-size", "64"],
        ),
        (
            "ov-int4-sym-g128-r0.6-adjust",
            "openvino",
            vec![
                "--weight-format",
                "int4",
                "--sym",
                "--group-size",
                "128",
                "--ratio",
                "0.6",
                "--group-size-fallback",
                "adjust",
            ],
        ),
        (
            "ov-int4-g64-awq",
            "openvino",
            vec!["--weight-format", "int4", "--group-size", "64", "--awq"],
        ),
        (
            "ov-int4-all-layers-int8-backup",
            "openvino",
            vec![
                "--weight-format",
                "int4",
                "--all-layers",
                "--backup-precision",
                "int8_sym",
            ],
        ),
        (
            "ov-int4-g64-awq-data",
            "openvino",
            with_calib(&["--weight-format", "int4", "--group-size", "64", "--awq"]),
        ),
        (
            "ov-int4-g64-se-data",
            "openvino",
            with_calib(&[
                "--weight-format",
                "int4",
                "--group-size",
                "64",
                "--scale-estimation",
            ]),
        ),
        (
            "ov-int4-r0.8-data",
            "openvino",
            with_calib(&["--weight-format", "int4", "--ratio", "0.8"]),
        ),
        ("ov-int8", "openvino", vec!["--weight-format", "int8"]),
        ("ov-fp16", "openvino", vec!["--weight-format", "fp16"]),
        ("ov-npu", "openvino", vec!["--npu"]),
        ("ov-no-tokenizer", "openvino", vec!["--no-tokenizer"]),
        ("onnx-int4", "onnx", vec![]),
        (
            "onnx-int4-asym-b128-awq",
            "onnx",
            vec!["--asym", "--block-size", "128", "--awq"],
        ),
        ("onnx-int4-awq-data", "onnx", with_calib(&["--awq"])),
        ("onnx-int4-r0.8", "onnx", vec!["--ratio", "0.8"]),
        ("onnx-int4-qdq", "onnx", vec!["--qdq"]),
        ("onnx-int4-int8-lm-head", "onnx", vec!["--int8-lm-head"]),
        ("onnx-int4-cuda", "onnx", vec!["-e", "cuda"]),
        ("onnx-fp16-dml", "onnx", vec!["-p", "fp16", "-e", "dml"]),
        ("onnx-int4-webgpu", "onnx", vec!["-e", "webgpu"]),
        ("onnx-fp32", "onnx", vec!["-p", "fp32"]),
    ]
}

fn sha256_hex(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn files_under(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type()?.is_dir() {
            files_under(&e.path(), &format!("{name}/"), out)?;
        } else {
            out.push((name, e.path()));
        }
    }
    Ok(())
}

pub(crate) fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let bin = match args.bin {
        Some(b) => b,
        None => crate::test::build_oxport(&root)?,
    };
    let work = root.join("target/digests");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;

    // line key ("fixture case file") → digest or "exit N"
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for fixture in FIXTURES {
        let short = Path::new(fixture).file_name().unwrap().to_string_lossy();
        for (case, sub, flags) in cases() {
            let out = work.join(format!("{short}--{case}"));
            let output = Command::new(&bin)
                .current_dir(&root)
                .env("HF_HUB_OFFLINE", "1")
                .args(["export", sub, "--model", fixture])
                .args(&flags)
                .arg(&out)
                .output()
                .with_context(|| format!("running {}", bin.display()))?;
            let key = format!("{short} {case}");
            if !output.status.success() {
                let code = output.status.code().unwrap_or(-1);
                got.insert(format!("{key} -"), format!("exit {code}"));
                if out.exists() {
                    bail!("{key}: failed with exit {code} but left {}", out.display());
                }
                continue;
            }
            let mut files = Vec::new();
            files_under(&out, "", &mut files)?;
            for (name, path) in files {
                got.insert(format!("{key} {name}"), sha256_hex(&path)?);
            }
            std::fs::remove_dir_all(&out)?;
        }
    }
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let list = root.join(LIST);
    if args.bless {
        std::fs::write(&list, &text)?;
        eprintln!(
            "xtask digests: wrote {} ({} lines)",
            list.display(),
            got.len()
        );
        return Ok(());
    }
    let want_text = std::fs::read_to_string(&list)
        .with_context(|| format!("reading {} (make it with --bless)", list.display()))?;
    let want: BTreeMap<String, String> = want_text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            // "exit N" holds a space: keep it whole.
            if k.ends_with(" exit") {
                let (k2, _) = k.rsplit_once(' ')?;
                Some((k2.to_string(), format!("exit {v}")))
            } else {
                Some((k.to_string(), v.to_string()))
            }
        })
        .collect();
    let mut diffs = Vec::new();
    for (k, v) in &want {
        match got.get(k) {
            None => diffs.push(format!("missing now: {k} (was {v})")),
            Some(g) if g != v => diffs.push(format!("changed: {k}: {v} → {g}")),
            _ => {}
        }
    }
    for (k, g) in &got {
        if !want.contains_key(k) {
            diffs.push(format!("new: {k} {g}"));
        }
    }
    if !diffs.is_empty() {
        bail!(
            "{} of {} export digests differ from {LIST}:\n  {}",
            diffs.len(),
            want.len(),
            diffs.join("\n  ")
        );
    }
    eprintln!(
        "xtask digests: {} files over {} fixtures × {} cases, all as committed",
        got.len(),
        FIXTURES.len(),
        cases().len()
    );
    Ok(())
}
