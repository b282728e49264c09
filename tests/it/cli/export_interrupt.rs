//! Ctrl-C (SIGINT) and SIGTERM during `oxport export` leave nothing behind: the built binary is signalled while its
//! temporary folder `.NAME.oxport-tmp-PID` exists, and must exit 130 / 143 with neither that folder nor the output
//! there. A later export removes the temporary folders of exports whose process is gone, and only those.
//!
//! The interrupted exports run on a checkpoint generated here (about 400 MB of bf16, fp32 output of about 800 MB),
//! big enough that the export is still writing weights long after its temporary folder appears; no sleep or hook in
//! the product is involved.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{oxport_bin, repo_root, safetensors};

/// Phi-3 shapes with ~200 M parameters: hidden 1024, 8 layers, Phi-3's vocabulary of 32064.
const HIDDEN: usize = 1024;
const INTERMEDIATE: usize = 4096;
const LAYERS: usize = 8;
const VOCAB: usize = 32064;

/// A single-file checkpoint (`model.safetensors` + `config.json`, no tokenizer) with the tensors of a Phi-3 release.
/// Values are finite bf16 in ±[2^-7, 2^-5) from a repeated xorshift block: the exporters refuse NaN/Inf, and the
/// export's speed does not depend on the values.
fn write_big_checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        tensors.extend([
            (format!("{p}.input_layernorm.weight"), vec![HIDDEN]),
            (
                format!("{p}.self_attn.qkv_proj.weight"),
                vec![3 * HIDDEN, HIDDEN],
            ),
            (format!("{p}.self_attn.o_proj.weight"), vec![HIDDEN, HIDDEN]),
            (format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]),
            (
                format!("{p}.mlp.gate_up_proj.weight"),
                vec![2 * INTERMEDIATE, HIDDEN],
            ),
            (
                format!("{p}.mlp.down_proj.weight"),
                vec![HIDDEN, INTERMEDIATE],
            ),
        ]);
    }
    tensors.push(("model.norm.weight".into(), vec![HIDDEN]));
    tensors.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN]));
    tensors.sort();

    // The data is streamed after the header, in header order.
    let mut offset = 0usize;
    let header = safetensors::header(tensors.iter().map(|(name, shape)| {
        let bytes = shape.iter().product::<usize>() * 2;
        offset += bytes;
        (
            name.clone(),
            json!({"dtype": "BF16", "shape": shape}),
            [offset - bytes, offset],
        )
    }));

    let block = random_bf16_block(1 << 20);
    let mut w = BufWriter::with_capacity(
        1 << 22,
        File::create(dir.join("model.safetensors")).unwrap(),
    );
    w.write_all(&header).unwrap();
    for (name, shape) in &tensors {
        let mut left = shape.iter().product::<usize>() * 2;
        if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
            // RMSNorm gammas: 1.0.
            let ones: Vec<u8> = (0..left / 2)
                .flat_map(|_| 0x3f80u16.to_le_bytes())
                .collect();
            w.write_all(&ones).unwrap();
            continue;
        }
        while left > 0 {
            let n = left.min(block.len());
            w.write_all(&block[..n]).unwrap();
            left -= n;
        }
    }
    w.into_inner().unwrap().sync_all().unwrap();

    let mut config: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("fixtures/tiny/config.json")).unwrap(),
    )
    .unwrap();
    for (key, value) in [
        ("hidden_size", HIDDEN),
        ("intermediate_size", INTERMEDIATE),
        ("num_attention_heads", 16),
        ("num_key_value_heads", 16),
        ("num_hidden_layers", LAYERS),
        ("vocab_size", VOCAB),
        ("eos_token_id", 32000),
        ("pad_token_id", 32000),
    ] {
        config[key] = json!(value);
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// `bytes` bytes of bf16 with a random sign, exponent 120..=123 and mantissa.
fn random_bf16_block(bytes: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..bytes / 2)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = (state >> 32) as u16;
            let bits = (r & 0x8000) | ((120 + ((r >> 7) & 3)) << 7) | (r & 0x7f);
            bits.to_le_bytes()
        })
        .collect()
}

/// `.NAME.oxport-tmp-PID` beside `output`: the rule of `oxport_io::staging_dir_for`, for another process's PID.
fn temp_dir_of(output: &Path, pid: u32) -> PathBuf {
    let name = output.file_name().unwrap().to_string_lossy();
    output.with_file_name(format!(".{name}.oxport-tmp-{pid}"))
}

fn send(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a PID of a child we spawned and have not yet reaped.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Wait for `child`, killing it (and failing) after `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("oxport did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes of the regular files directly in `dir` (0 when it is gone).
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Run `oxport export <args> -m <big checkpoint> <work>/out/model`, send `signal` once its temporary folder holds
/// weight bytes, and check the exit status, the stderr line and that `<work>/out` is left empty.
fn interrupt_export(export_args: &[&str], signal: i32, expected_code: i32) {
    let work = tempfile::tempdir().unwrap();
    let ckpt = work.path().join("ckpt");
    write_big_checkpoint(&ckpt);
    let out_parent = work.path().join("out");
    std::fs::create_dir(&out_parent).unwrap();
    let output = out_parent.join("model");
    let stderr_path = work.path().join("stderr.txt");

    let mut child = Command::new(oxport_bin())
        .arg("export")
        .args(export_args)
        .arg("-m")
        .arg(&ckpt)
        .arg(&output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let temp_dir = temp_dir_of(&output, child.id());

    // Signal while weights are being written: the folder exists and has bytes in it.
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "oxport exited ({status}) before it could be interrupted; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        if bytes_in(&temp_dir) > 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} never received any bytes", temp_dir.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    send(&child, signal);
    let status = wait_at_most(&mut child, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();

    assert_eq!(
        status.code(),
        Some(expected_code),
        "{status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("interrupted; removed {}", temp_dir.display())),
        "stderr:\n{stderr}"
    );
    assert!(!temp_dir.exists(), "{} is left", temp_dir.display());
    assert!(!output.exists(), "{} exists", output.display());
    // Nothing else either (e.g. the claimed `.interrupted` folder).
    let left: Vec<_> = std::fs::read_dir(&out_parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left in {}: {left:?}",
        out_parent.display()
    );
}

#[test]
fn sigint_during_an_onnx_export_removes_the_temp_folder_and_exits_130() {
    interrupt_export(&["onnx", "--precision", "fp32"], libc::SIGINT, 130);
}

#[test]
fn sigterm_during_an_openvino_export_removes_the_temp_folder_and_exits_143() {
    interrupt_export(
        &["openvino", "--weight-format", "fp32", "--no-tokenizer"],
        libc::SIGTERM,
        143,
    );
}

/// The PID of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Stale folders of `output` for a dead and a live PID (this test's own), plus look-alikes that are not the
/// export's: after one export only the dead PID's folders are gone, each reported on stderr.
fn stale_folders_are_removed_live_ones_kept(export_args: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("model");
    let dead = dead_pid();
    let stale = temp_dir_of(&output, dead);
    let stale_claimed = PathBuf::from(format!("{}.interrupted", stale.display()));
    let live = temp_dir_of(&output, std::process::id());
    let other_output = temp_dir_of(&work.path().join("model2"), dead);
    let not_a_pid = work.path().join(format!(".model.oxport-tmp-{dead}x"));
    for dir in [&stale, &stale_claimed, &live, &other_output, &not_a_pid] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("model.onnx.data"), b"partial").unwrap();
    }

    let out = Command::new(oxport_bin())
        .arg("export")
        .args(export_args)
        .arg("-m")
        .arg(repo_root().join("fixtures/tiny"))
        .arg(&output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert!(output.is_dir());

    for gone in [&stale, &stale_claimed] {
        assert!(!gone.exists(), "{} is left", gone.display());
        assert!(
            stderr.contains(&format!("removed stale {}", gone.display())),
            "stderr:\n{stderr}"
        );
    }
    for kept in [&live, &other_output, &not_a_pid] {
        assert!(
            kept.join("model.onnx.data").is_file(),
            "{} was touched",
            kept.display()
        );
        assert!(
            !stderr.contains(&kept.display().to_string()),
            "stderr:\n{stderr}"
        );
    }
}

#[test]
fn onnx_export_removes_stale_folders_of_dead_exports_only() {
    stale_folders_are_removed_live_ones_kept(&["onnx"]);
}

#[test]
fn openvino_export_removes_stale_folders_of_dead_exports_only() {
    stale_folders_are_removed_live_ones_kept(&[
        "openvino",
        "--weight-format",
        "int8",
        "--no-tokenizer",
    ]);
}
