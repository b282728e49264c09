//! `cargo xtask bench`: export speed, memory and accuracy of oxport side by side with optimum-cli and the
//! onnxruntime-genai model builder, on the same machine in the same run.
//!
//! Every case runs as a child process under the same measurement: wall time, CPU time (wait4 rusage), peak RSS
//! of the whole process tree (sampled from /proc every 20 ms, summed over descendants), bytes read and written
//! (this process's /proc/self/io delta, which includes reaped children), and the output folder's size. The I/O
//! floor (reading the input once and writing a file of the output's size) shows how close a case is to the limit.

mod cases;
mod measure;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::test::{repo_root, run_checked};
use cases::{CASES, Case, Peer, peer_command};
use measure::{
    Measurement, cmd_with_threads, dir_size, measure, measure_repeated, run_interleaved, summarize,
    time_read_dir,
};
use report::{BASELINE_TOOL, Report, write_report};

#[derive(clap::Subcommand)]
pub(crate) enum Kind {
    /// Weights/s of every oxport-quant kernel on an 8192×3072 BF16 matrix, 1 and 2 threads.
    Quant(crate::bench_quant::Args),
    /// Reference prefill against ONNX Runtime on the fp32 export, decode against a copy-bandwidth bound, and the
    /// wall time of a full validate, cold and with a warm reference cache.
    Validate(crate::bench_validate::Args),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    kind: Option<Kind>,
    /// Checkpoint folder to export. Default: the full-size random Phi-3-mini-4k shape, created once under
    /// `.cache/phi3-mini-4k-random` by `cargo xtask fixtures --full-size`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also run optimum-cli and the onnxruntime-genai builder (creates `.venv-peers` from PyPI once).
    #[arg(long)]
    peers: bool,
    /// Quick check on the bundled tiny fixture, no peers, 2 threads (part of `cargo xtask test`).
    #[arg(long)]
    smoke: bool,
    /// Only run the cases whose name contains one of these strings (e.g. `ov-int4,onnx-int4-b32`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Thread counts to run oxport with.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Perplexity of each export on the fixed evaluation text via `oxport validate` (for real checkpoints).
    #[arg(long)]
    accuracy: bool,
    /// Runs of every case (and of the I/O floor); the report gives the median with min–max (smoke: 1).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also run every oxport case with this binary (e.g. a build of main), its runs interleaved with the current
    /// binary's, same repeat count; the report adds both medians and current ÷ baseline for time and peak PSS.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
    /// Markdown report; JSON is written beside it with the `.json` extension.
    #[arg(long, default_value = "target/bench/results.md")]
    out: PathBuf,
}

/// Peer versions pinned to those the reference exports in `fixtures/reference/` were made with.
const PEER_REQUIREMENTS: &str = "\
optimum-intel==2.2.0
optimum==2.3.0
nncf==3.4.0
openvino==2026.4.1
openvino-tokenizers==2026.4.1.0
onnxruntime==1.32.0
onnxruntime-genai==0.18.0
onnx==1.23.2
onnx-ir==1.1.0
transformers==5.5.4
torch==2.15.0
accelerate
sentencepiece
pytest>=8
";

pub(crate) fn run(args: Args) -> Result<()> {
    match args.kind {
        Some(Kind::Quant(a)) => return crate::bench_quant::run(a),
        Some(Kind::Validate(a)) => return crate::bench_validate::run(a),
        None => {}
    }
    let bench = Bench::prepare(&args)?;
    let model_bytes = dir_size(&bench.model);
    let io_floor_read_secs = io_floor(&bench.model, bench.repeat)?;
    let mut results = Vec::new();
    for case in CASES {
        if !args.only.is_empty() && !args.only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        for &t in &bench.threads {
            results.extend(bench.oxport_case(case, t)?);
        }
        if let (Some(py), Some(peer)) = (&bench.peers_python, case.peer) {
            results.push(bench.peer_case(case, py, peer)?);
        }
    }
    let report = Report {
        date: String::from_utf8_lossy(
            &Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d %H:%M UTC")
                .output()?
                .stdout,
        )
        .trim()
        .to_string(),
        machine: report::machine(),
        model: bench.model.display().to_string(),
        model_bytes,
        io_floor_read_secs,
        peer_versions: bench
            .peers_python
            .as_deref()
            .map(report::peer_versions)
            .unwrap_or_default(),
        baseline: bench.baseline.as_ref().map(|b| b.display().to_string()),
        results,
    };
    write_report(&report, &args.out, &bench.root, &bench.work)
}

/// What every case of one bench run shares.
struct Bench<'a> {
    args: &'a Args,
    root: PathBuf,
    /// The binary under test.
    oxport: PathBuf,
    /// The binary it is compared with (`--baseline`).
    baseline: Option<PathBuf>,
    model: PathBuf,
    /// Outputs and logs of the cases (`target/bench/work`, emptied first).
    work: PathBuf,
    peers_python: Option<PathBuf>,
    threads: Vec<usize>,
    repeat: usize,
}

impl<'a> Bench<'a> {
    /// Resolve the binaries and the model, empty the work folder, create the peers' venv when asked.
    fn prepare(args: &'a Args) -> Result<Self> {
        let root = repo_root();
        // `OXPORT_BIN` benchmarks a given binary (e.g. a saved build); otherwise the current tree is built.
        let oxport = match std::env::var_os("OXPORT_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => crate::test::build_oxport(&root)?,
        };
        let baseline = match &args.baseline {
            Some(b) => Some(
                b.canonicalize()
                    .with_context(|| format!("baseline binary {}", b.display()))?,
            ),
            None => None,
        };
        let model = match (&args.model, args.smoke) {
            (Some(m), _) => m.clone(),
            (None, true) => root.join("fixtures/tiny"),
            (None, false) => ensure_full_size(&root)?,
        };
        let model = model
            .canonicalize()
            .with_context(|| format!("model folder {}", model.display()))?;
        let work = root.join("target/bench/work");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;

        let peers_python = if args.peers && !args.smoke {
            Some(ensure_peer_venv(&root)?)
        } else {
            None
        };
        let threads = if args.smoke {
            vec![2]
        } else {
            args.threads.clone()
        };
        let repeat = if args.smoke { 1 } else { args.repeat.max(1) };
        Ok(Bench {
            args,
            root,
            oxport,
            baseline,
            model,
            work,
            peers_python,
            threads,
            repeat,
        })
    }

    /// One oxport case on `t` threads: the current binary, and the baseline's runs interleaved with its runs.
    fn oxport_case(&self, case: &Case, t: usize) -> Result<Vec<Measurement>> {
        let mut variants = vec![("oxport", "oxport", &self.oxport)];
        if let Some(b) = &self.baseline {
            variants.push((BASELINE_TOOL, "baseline", b));
        }
        let mut runs = Vec::new();
        for (_, prefix, bin) in &variants {
            let out = self.work.join(format!("{prefix}-{}-t{t}", case.name));
            let log = self.work.join(format!("{prefix}-{}-t{t}.log", case.name));
            let mut cmd = Command::new(bin);
            cmd.current_dir(&self.root)
                .args(case.oxport_args())
                .arg("--model")
                .arg(&self.model)
                .arg(&out)
                .env("RAYON_NUM_THREADS", t.to_string());
            runs.push((out, log, cmd));
        }
        let against = if self.baseline.is_some() {
            ", interleaved with the baseline's"
        } else {
            ""
        };
        let repeat = self.repeat;
        eprintln!(
            "bench: oxport {} ({t} threads, {repeat} runs{against})",
            case.name
        );
        let all = run_interleaved(repeat, runs.len(), |i| {
            let (out, log, cmd) = &mut runs[i];
            let _ = fs::remove_dir_all(&*out);
            measure(cmd_with_threads(cmd), out, log)
        })?;
        let mut results = Vec::new();
        for ((tool, _, _), (runs_of, (out, _, _))) in
            variants.iter().zip(all.into_iter().zip(&runs))
        {
            let mut m = summarize(runs_of, out);
            m.tool = (*tool).into();
            m.case = case.name.into();
            m.threads = Some(t);
            if self.args.smoke && !m.ok {
                bail!("smoke bench: {tool} {} failed:\n{}", case.name, m.log);
            }
            // The baseline's exports are the same bytes (`cargo xtask digests`): its perplexity is not measured.
            if self.args.accuracy && m.ok && *tool == "oxport" {
                m.perplexity = perplexity(&self.oxport, out, &self.model, &self.root);
            }
            results.push(m);
            let _ = fs::remove_dir_all(out);
        }
        Ok(results)
    }

    /// The peer command of one case.
    fn peer_case(&self, case: &Case, py: &Path, peer: Peer) -> Result<Measurement> {
        let work = &self.work;
        let repeat = self.repeat;
        let out = work.join(format!("peer-{}", case.name));
        let (tool, mut cmd) = peer_command(py, peer, &self.model, &out, work);
        eprintln!(
            "bench: {tool} {} ({repeat} runs; this can take minutes)",
            case.name
        );
        let mut m = measure_repeated(repeat, &out, || {
            let _ = fs::remove_dir_all(&out);
            // The NNCF script writes the fp32 IR beside OUT first.
            let _ = fs::remove_dir_all(out.with_file_name(format!(
                "{}-fp32",
                out.file_name().unwrap_or_default().to_string_lossy()
            )));
            measure(
                cmd_with_threads(&mut cmd),
                &out,
                &work.join(format!("peer-{}.log", case.name)),
            )
        })?;
        m.tool = tool.into();
        m.case = case.name.into();
        if self.args.accuracy && m.ok {
            m.perplexity = perplexity(&self.oxport, &out, &self.model, &self.root);
        }
        let _ = fs::remove_dir_all(&out);
        Ok(m)
    }
}

/// Seconds to read the model once from the page cache. The cases find the model in the page cache (each reads it,
/// and repeats follow): the floor is measured in the same state — one read to warm the cache, then the median of
/// `repeat` (at least 3) timed reads.
fn io_floor(model: &Path, repeat: usize) -> Result<f64> {
    time_read_dir(model)?;
    let mut floors = (0..repeat.max(3))
        .map(|_| time_read_dir(model))
        .collect::<Result<Vec<_>>>()?;
    floors.sort_by(f64::total_cmp);
    Ok(floors[floors.len() / 2])
}

fn ensure_full_size(root: &Path) -> Result<PathBuf> {
    let dir = root.join(".cache/phi3-mini-4k-random");
    if !dir.join("model.safetensors.index.json").exists() {
        create_full_size(root, &dir)?;
    }
    // The random checkpoint has no tokenizer of its own; the peers refuse a folder without one, so it borrows
    // the tiny fixture's (a smaller vocabulary than the model's, which every exporter accepts).
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        if !dir.join(f).exists() {
            fs::copy(root.join("fixtures/tiny").join(f), dir.join(f))?;
        }
    }
    Ok(dir)
}

fn create_full_size(root: &Path, dir: &Path) -> Result<()> {
    eprintln!(
        "bench: creating the full-size random Phi-3-mini-4k checkpoint in {} (once)",
        dir.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(
        Command::new(&cargo)
            .current_dir(root)
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "xtask",
                "--",
                "fixtures",
                "--full-size",
            ])
            .arg(dir),
    )
}

/// The peers' venv (`.venv-peers`), created once; also used by `cargo xtask test` for the optimum-intel test.
pub(crate) fn ensure_peer_venv(root: &Path) -> Result<PathBuf> {
    crate::test::ensure_venv_from(&root.join(".venv-peers"), PEER_REQUIREMENTS, &[])
}
fn perplexity(oxport: &Path, export: &Path, model: &Path, root: &Path) -> Option<f64> {
    let text = root.join("fixtures/eval_text.txt");
    let json = export.with_extension("validate.json");
    let status = Command::new(oxport)
        .arg("validate")
        .arg(export)
        .arg("--reference")
        .arg(model)
        .args(["--device", "cpu", "--text"])
        .arg(&text)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    let _ = status;
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).ok()?).ok()?;
    find_number(&v, "perplexity")
}

fn find_number(v: &serde_json::Value, key: &str) -> Option<f64> {
    match v {
        serde_json::Value::Object(o) => o
            .get(key)
            .and_then(|x| x.as_f64())
            .or_else(|| o.values().find_map(|x| find_number(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_number(x, key)),
        _ => None,
    }
}
