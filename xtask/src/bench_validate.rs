//! `cargo xtask bench validate`: the reference forward pass against the speeds it should reach, in one run.
//!
//! Per model (`--smoke`: the tiny fixture; else `--model`, or the SmolLM2 and full-size Phi-3-mini-shape
//! checkpoints that `cargo xtask smol` / `cargo xtask fixtures --full-size` make, when present):
//!
//! * reference prefill tokens/s (`oxport-reference`'s `reference_rss` example) against ONNX Runtime's CPU EP
//!   running the fp32 ONNX export of the same model on the same tokens (the venv's python, `intra_op_num_threads`
//!   = the cores), both with the weights in the page cache;
//! * reference decode tokens/s against the bound a copy-bandwidth probe gives (bytes of matmul weights read per
//!   token ÷ bytes copied per second by all cores);
//! * wall time of `oxport validate` of an int4 export on `fixtures/eval_text.txt` with a fresh reference cache
//!   (computes the reference) and again with the warm cache.
//!
//! Every figure is the median of `--runs` runs (at least 3) with min–max; ratios are ratios of medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::test::{repo_root, run_checked};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The tiny fixture only, few tokens (what CI runs).
    #[arg(long)]
    smoke: bool,
    /// Checkpoint folder(s) to measure instead of the defaults.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Runs per measurement (median reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Prompt tokens for the prefill comparison (default: 512; 64 with --smoke).
    #[arg(long)]
    prefill_tokens: Option<usize>,
    /// Text tokens validate scores (default: 20480; 512 with --smoke).
    #[arg(long)]
    ppl_max_tokens: Option<usize>,
    /// Markdown report.
    #[arg(long, default_value = "target/bench/validate.md")]
    out: PathBuf,
}

/// Median, min and max of a sample.
#[derive(Clone, Copy, Debug)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Stat {
        v.sort_by(f64::total_cmp);
        Stat {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

fn repeat(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Stat> {
    Ok(Stat::of((0..runs).map(|_| f()).collect::<Result<_>>()?))
}

pub(crate) fn run(args: Args) -> Result<()> {
    let root = repo_root();
    let runs = args.runs.max(3);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "oxport-cli",
        "-p",
        "oxport-reference",
        "--example",
        "reference_rss",
    ]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bins = Bins {
        oxport: target.join("release/oxport"),
        reference: target.join("release/examples/reference_rss"),
        python: std::env::var_os("OXPORT_PYTHON")
            .map_or_else(|| root.join(".venv/bin/python"), PathBuf::from),
    };
    let models: Vec<PathBuf> = if !args.model.is_empty() {
        args.model.clone()
    } else if args.smoke {
        vec![root.join("fixtures/tiny")]
    } else {
        [".cache/smol-phi3", ".cache/phi3-mini-4k-random"]
            .iter()
            .map(|m| root.join(m))
            .filter(|m| m.join("config.json").exists())
            .collect()
    };
    if models.is_empty() {
        bail!(
            "no model: run `cargo xtask smol` or `cargo xtask fixtures --full-size`, or pass --model DIR"
        );
    }
    let prefill_tokens = args
        .prefill_tokens
        .unwrap_or(if args.smoke { 64 } else { 512 });
    let ppl_max_tokens = args
        .ppl_max_tokens
        .unwrap_or(if args.smoke { 512 } else { 20480 });
    let copy_bytes_per_s = repeat(runs, copy_bandwidth)?;
    let mut report = format!(
        "# cargo xtask bench validate\n\n{} cores; copy bandwidth {} GB/s; medians of {runs} runs (min–max)\n\n\
         | model | reference prefill tok/s | ORT fp32 prefill tok/s | ratio | reference decode tok/s | \
         bandwidth bound tok/s | ratio | validate cold s | validate warm s |\n|---|---|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        Stat {
            median: copy_bytes_per_s.median / 1e9,
            min: copy_bytes_per_s.min / 1e9,
            max: copy_bytes_per_s.max / 1e9
        }
        .show(1)
    );
    let scratch = target.join("bench/validate");
    for model in &models {
        let row = measure(&bins, model, &scratch, runs, prefill_tokens, ppl_max_tokens)
            .with_context(|| format!("benchmarking {}", model.display()))?;
        let bound = copy_bytes_per_s.median / row.weight_bytes_per_token;
        report += &format!(
            "| {} | {} | {} | {:.2}× | {} | {:.1} | {:.0}% | {} | {} |\n",
            model.file_name().unwrap_or_default().to_string_lossy(),
            row.prefill.show(1),
            row.ort_prefill.show(1),
            row.prefill.median / row.ort_prefill.median,
            row.decode.show(1),
            bound,
            100.0 * row.decode.median / bound,
            row.validate_cold.show(2),
            row.validate_warm.show(2),
        );
    }
    report += &format!(
        "\nPrefill: {prefill_tokens} tokens in one forward call. Validate: int4 ONNX export, `--text \
         fixtures/eval_text.txt --ppl-max-tokens {ppl_max_tokens}`, on the CPU; cold = empty `--reference-cache`, \
         warm = the cache the cold run wrote.\n"
    );
    print!("{report}");
    let out = root.join(&args.out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

struct Bins {
    oxport: PathBuf,
    reference: PathBuf,
    python: PathBuf,
}

struct Row {
    prefill: Stat,
    ort_prefill: Stat,
    decode: Stat,
    weight_bytes_per_token: f64,
    validate_cold: Stat,
    validate_warm: Stat,
}

fn measure(
    bins: &Bins,
    model: &Path,
    scratch: &Path,
    runs: usize,
    prefill_tokens: usize,
    ppl_max_tokens: usize,
) -> Result<Row> {
    let name = model.file_name().unwrap_or_default().to_string_lossy();
    let dir = scratch.join(name.as_ref());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (fp32, int4) = (dir.join("onnx-fp32"), dir.join("onnx-int4"));
    for (out, precision) in [(&fp32, "fp32"), (&int4, "int4")] {
        run_checked(
            Command::new(&bins.oxport)
                .args(["export", "onnx", "-m"])
                .arg(model)
                .args(["-p", precision])
                .arg(out),
        )?;
    }
    // One unmeasured run of each, so that both find the weights in the page cache.
    reference_speeds(bins, model, prefill_tokens)?;
    ort_prefill(bins, &fp32, prefill_tokens)?;
    let (mut prefill, mut decode, mut ort) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (p, d) = reference_speeds(bins, model, prefill_tokens)?;
        prefill.push(p);
        decode.push(d);
        ort.push(ort_prefill(bins, &fp32, prefill_tokens)?);
    }
    let validate = |cache: &Path| -> Result<f64> {
        let t = Instant::now();
        let status = Command::new(&bins.oxport)
            .arg("validate")
            .arg(&int4)
            .arg("--reference")
            .arg(model)
            .args(["--device", "cpu", "--quiet", "--text"])
            .arg(repo_root().join("fixtures/eval_text.txt"))
            .arg("--ppl-max-tokens")
            .arg(ppl_max_tokens.to_string())
            .arg("--reference-cache")
            .arg(cache)
            .stdout(std::process::Stdio::null())
            .status()?;
        // A failed check is a result, not a bench failure (int4 on a random model); a crash is.
        if status.code().is_none_or(|c| c > 1) {
            bail!("oxport validate failed with {status}");
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let cache = dir.join(format!("reference-cache-{run}"));
        cold.push(validate(&cache)?);
        warm.push(validate(&cache)?);
    }
    Ok(Row {
        prefill: Stat::of(prefill),
        ort_prefill: Stat::of(ort),
        decode: Stat::of(decode),
        weight_bytes_per_token: matmul_weight_bytes(model)?,
        validate_cold: Stat::of(cold),
        validate_warm: Stat::of(warm),
    })
}

/// (prefill, decode) tokens/s of the reference: `prefill_tokens` in one call, then 16 greedy tokens.
fn reference_speeds(bins: &Bins, model: &Path, prefill_tokens: usize) -> Result<(f64, f64)> {
    let out = Command::new(&bins.reference)
        .arg(model)
        .arg("17")
        .args(["--prompt", &prefill_tokens.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("reference_rss: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = |label: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(label))
            .with_context(|| format!("no {label} line in {text}"))?;
        let inside = line.rsplit_once('(').map_or("", |(_, r)| r);
        Ok(inside.split_whitespace().next().unwrap_or("").parse()?)
    };
    Ok((rate("prefill")?, rate("decode")?))
}

/// ONNX Runtime prefill tokens/s on the fp32 export: one call with `prefill_tokens` tokens and an empty KV cache,
/// the median of 3 after a warm-up, as many intra-op threads as cores.
fn ort_prefill(bins: &Bins, export: &Path, prefill_tokens: usize) -> Result<f64> {
    let script = r#"
import sys, time, json, numpy as np, onnxruntime as ort, os
path, n = sys.argv[1], int(sys.argv[2])
dec = json.load(open(os.path.join(path, "genai_config.json")))["model"]["decoder"]
so = ort.SessionOptions(); so.intra_op_num_threads = os.cpu_count()
s = ort.InferenceSession(os.path.join(path, "model.onnx"), so, providers=["CPUExecutionProvider"])
feeds = {}
for i in s.get_inputs():
    if i.name == "input_ids": feeds[i.name] = (np.arange(n, dtype=np.int64) % 90 + 3).reshape(1, n)
    elif i.name == "attention_mask": feeds[i.name] = np.ones((1, n), np.int64)
    elif i.name == "position_ids": feeds[i.name] = np.arange(n, dtype=np.int64).reshape(1, n)
    else:
        dtype = np.float16 if "float16" in i.type else np.float32
        feeds[i.name] = np.zeros((1, dec["num_key_value_heads"], 0, dec["head_size"]), dtype)
s.run(None, feeds)
ts = []
for _ in range(3):
    t = time.perf_counter(); s.run(None, feeds); ts.append(time.perf_counter() - t)
print(n / sorted(ts)[1])
"#;
    let out = Command::new(&bins.python)
        .args(["-c", script])
        .arg(export)
        .arg(prefill_tokens.to_string())
        .output()
        .context("running ONNX Runtime (OXPORT_PYTHON or .venv)")?;
    if !out.status.success() {
        bail!("onnxruntime: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Bytes per second that all cores copy between two 256 MiB buffers (each byte read once and written once).
fn copy_bandwidth() -> Result<f64> {
    use rayon::prelude::*;
    let len = 256 << 20;
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let chunk = len / rayon::current_num_threads().max(1);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
    let t = Instant::now();
    for _ in 0..4 {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
    std::hint::black_box(&dst);
    Ok(4.0 * len as f64 / t.elapsed().as_secs_f64())
}

/// Bytes of the weights one decoded token reads: every layer's qkv, o, gate_up and down, and the lm_head (the
/// embedding when tied), in the checkpoint's dtype.
fn matmul_weight_bytes(model: &Path) -> Result<f64> {
    let checkpoint = oxport_arch::Model::open(model)?;
    let bytes: usize = checkpoint
        .tensors()
        .iter()
        .filter(|t| {
            !matches!(
                t.role,
                oxport_arch::Role::Embedding
                    | oxport_arch::Role::InputNorm { .. }
                    | oxport_arch::Role::PostAttnNorm { .. }
                    | oxport_arch::Role::FinalNorm
            )
        })
        .map(|t| t.shape.iter().product::<usize>() * t.dtype.size_bytes())
        .sum();
    let tied = checkpoint.info(oxport_arch::Role::LmHead).is_none();
    let embedding = checkpoint
        .info(oxport_arch::Role::Embedding)
        .map_or(0, |t| {
            t.shape.iter().product::<usize>() * t.dtype.size_bytes()
        });
    Ok((bytes + if tied { embedding } else { 0 }) as f64)
}
