//! `cargo xtask bench`: export speed, memory and accuracy of oxport side by side with optimum-cli and the
//! onnxruntime-genai model builder, on the same machine in the same run.
//!
//! Every case runs as a child process under the same measurement: wall time, CPU time (wait4 rusage), peak RSS
//! of the whole process tree (sampled from /proc every 20 ms, summed over descendants), bytes read and written
//! (this process's /proc/self/io delta, which includes reaped children), and the output folder's size. The I/O
//! floor (reading the input once and writing a file of the output's size) shows how close a case is to the limit.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::test::{repo_root, run_checked};

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
    /// Markdown report; JSON is written beside it with the `.json` extension.
    #[arg(long, default_value = "target/bench/results.md")]
    out: PathBuf,
}

/// One export case: oxport's command line and the equivalent peer command, if any.
struct Case {
    name: &'static str,
    oxport: Oxport,
    peer: Option<Peer>,
}

#[derive(Clone, Copy)]
enum Oxport {
    /// The arguments as given.
    Args(&'static [&'static str]),
    /// `export openvino` with the optimum-cli peer's flags verbatim (oxport accepts optimum-cli's command line).
    OptimumFlags,
}

impl Case {
    /// oxport's arguments before `--model MODEL OUT`.
    fn oxport_args(&self) -> Vec<&'static str> {
        match (self.oxport, self.peer) {
            (Oxport::Args(args), _) => args.to_vec(),
            (Oxport::OptimumFlags, Some(Peer::OptimumCli(flags))) => {
                [&["export", "openvino"][..], flags].concat()
            }
            (Oxport::OptimumFlags, _) => {
                unreachable!("{}: OptimumFlags needs an optimum-cli peer", self.name)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Peer {
    OptimumCli(&'static [&'static str]),
    GenaiBuilder(&'static [&'static str]),
    /// `xtask/scripts/nncf_data_aware.py MODEL OUT --text CALIBRATION_TEXT` plus these flags.
    NncfDataAware(&'static [&'static str]),
}

/// The calibration text of the data-aware cases (relative to the repository root, where cases run).
const CALIBRATION_TEXT: &str = "fixtures/calib_text.txt";

const CASES: &[Case] = &[
    Case {
        name: "ov-int4-sym-g128-r0.6",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int4",
            "--group-size",
            "128",
            "--ratio",
            "0.6",
            "--sym",
        ])),
    },
    // optimum-intel's default int4 recipe for Phi-3.5-mini and Phi-4-mini: data-free AWQ (NNCF), asym, group 64.
    Case {
        name: "ov-int4-asym-g64-awq",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--awq",
        ])),
    },
    // Data-aware AWQ on a local calibration text; the peer is optimum-cli's fp32 export + NNCF on the same windows
    // (`xtask/scripts/nncf_data_aware.py`: optimum-cli itself takes only hub datasets).
    Case {
        name: "ov-int4-asym-g64-awq-data",
        oxport: Oxport::Args(&[
            "export",
            "openvino",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--awq",
            "--dataset",
            CALIBRATION_TEXT,
            "--num-samples",
            "128",
        ]),
        peer: Some(Peer::NncfDataAware(&["--group-size", "64"])),
    },
    // optimum-cli's default for Phi-3-mini-4k, on the local calibration text: scale estimation.
    Case {
        name: "ov-int4-asym-g64-se-data",
        oxport: Oxport::Args(&[
            "export",
            "openvino",
            "--weight-format",
            "int4",
            "--group-size",
            "64",
            "--ratio",
            "1.0",
            "--scale-estimation",
            "--dataset",
            CALIBRATION_TEXT,
            "--num-samples",
            "128",
        ]),
        peer: Some(Peer::NncfDataAware(&[
            "--group-size",
            "64",
            "--no-awq",
            "--scale-estimation",
        ])),
    },
    Case {
        name: "ov-fp16",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "fp16",
        ])),
    },
    Case {
        name: "ov-int8",
        oxport: Oxport::OptimumFlags,
        peer: Some(Peer::OptimumCli(&[
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int8",
        ])),
    },
    Case {
        name: "onnx-int4-b32",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "int4",
            "--execution-provider",
            "cpu",
            "--block-size",
            "32",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "int4", "-e", "cpu"])),
    },
    Case {
        name: "onnx-int4-b128",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "int4",
            "--execution-provider",
            "cpu",
            "--block-size",
            "128",
        ]),
        peer: Some(Peer::GenaiBuilder(&[
            "-p",
            "int4",
            "-e",
            "cpu",
            "--extra_options",
            "int4_block_size=128",
        ])),
    },
    Case {
        // The builder accepts fp16 only for GPU EPs; both sides write the CUDA variant (same graph, fp16 I/O).
        name: "onnx-fp16",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "fp16",
            "--execution-provider",
            "cuda",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "fp16", "-e", "cuda"])),
    },
    Case {
        name: "onnx-fp32",
        oxport: Oxport::Args(&[
            "export",
            "onnx",
            "--precision",
            "fp32",
            "--execution-provider",
            "cpu",
        ]),
        peer: Some(Peer::GenaiBuilder(&["-p", "fp32", "-e", "cpu"])),
    },
];

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

#[derive(Serialize, Clone, Default)]
pub(crate) struct Measurement {
    pub tool: String,
    pub case: String,
    pub threads: Option<usize>,
    pub ok: bool,
    /// Median over the runs (`wall_min_secs`–`wall_max_secs`).
    pub wall_secs: f64,
    pub wall_min_secs: f64,
    pub wall_max_secs: f64,
    pub runs: usize,
    pub cpu_secs: f64,
    /// Peak of the summed proportional set size (PSS) of the process tree: pages shared between the processes of a
    /// multi-process peer count once (median over the runs).
    pub peak_pss_tree_bytes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub output_bytes: u64,
    pub perplexity: Option<f64>,
    pub log: String,
}

#[derive(Serialize)]
struct Report {
    date: String,
    machine: Machine,
    model: String,
    model_bytes: u64,
    io_floor_read_secs: f64,
    peer_versions: Vec<(String, String)>,
    results: Vec<Measurement>,
}

#[derive(Serialize)]
struct Machine {
    cores: usize,
    ram_gib: f64,
    cpu: String,
}

pub(crate) fn run(args: Args) -> Result<()> {
    match args.kind {
        Some(Kind::Quant(a)) => return crate::bench_quant::run(a),
        Some(Kind::Validate(a)) => return crate::bench_validate::run(a),
        None => {}
    }
    let root = repo_root();
    // `OXPORT_BIN` benchmarks a given binary (e.g. a saved build); otherwise the current tree is built.
    let oxport = match std::env::var_os("OXPORT_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => crate::test::build_oxport(&root)?,
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

    let model_bytes = dir_size(&model);
    // The cases find the model in the page cache (each reads it, and repeats follow): the floor is measured in the
    // same state — one read to warm the cache, then the median of `repeat` timed reads.
    let repeat = if args.smoke { 1 } else { args.repeat.max(1) };
    time_read_dir(&model)?;
    let mut floors = (0..repeat.max(3))
        .map(|_| time_read_dir(&model))
        .collect::<Result<Vec<_>>>()?;
    floors.sort_by(f64::total_cmp);
    let io_floor_read_secs = floors[floors.len() / 2];
    let mut results = Vec::new();
    for case in CASES {
        if !args.only.is_empty() && !args.only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        for &t in &threads {
            let out = work.join(format!("oxport-{}-t{t}", case.name));
            let mut cmd = Command::new(&oxport);
            cmd.current_dir(&root)
                .args(case.oxport_args())
                .arg("--model")
                .arg(&model)
                .arg(&out)
                .env("RAYON_NUM_THREADS", t.to_string());
            eprintln!("bench: oxport {} ({t} threads, {repeat} runs)", case.name);
            let mut m = measure_repeated(repeat, &out, || {
                let _ = fs::remove_dir_all(&out);
                measure(
                    cmd_with_threads(&mut cmd),
                    &out,
                    &work.join(format!("oxport-{}-t{t}.log", case.name)),
                )
            })?;
            m.tool = "oxport".into();
            m.case = case.name.into();
            m.threads = Some(t);
            if args.smoke && !m.ok {
                bail!("smoke bench: oxport {} failed:\n{}", case.name, m.log);
            }
            if args.accuracy && m.ok {
                m.perplexity = perplexity(&oxport, &out, &model, &root);
            }
            results.push(m);
            let _ = fs::remove_dir_all(&out);
        }
        if let (Some(py), Some(peer)) = (&peers_python, case.peer) {
            let out = work.join(format!("peer-{}", case.name));
            let (tool, mut cmd) = peer_command(py, peer, &model, &out, &work);
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
            if args.accuracy && m.ok {
                m.perplexity = perplexity(&oxport, &out, &model, &root);
            }
            results.push(m);
            let _ = fs::remove_dir_all(&out);
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
        machine: machine(),
        model: model.display().to_string(),
        model_bytes,
        io_floor_read_secs,
        peer_versions: peers_python
            .as_deref()
            .map(peer_versions)
            .unwrap_or_default(),
        results,
    };
    let md = render_markdown(&report)?;
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&out, &md)?;
    fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and {}",
        out.display(),
        out.with_extension("json").display()
    );
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|m| !m.ok)
        .map(|m| format!("{} {}", m.tool, m.case))
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "bench: failed cases (logs under {}): {}",
            work.display(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// A fresh copy of `cmd` (program, arguments, environment, working folder), so that a case can run again.
fn cmd_with_threads(cmd: &mut Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
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

fn peer_command(
    python: &Path,
    peer: Peer,
    model: &Path,
    out: &Path,
    work: &Path,
) -> (&'static str, Command) {
    let bin = python.parent().expect("venv bin");
    match peer {
        Peer::OptimumCli(args) => {
            let mut c = Command::new(bin.join("optimum-cli"));
            c.args(["export", "openvino", "--model"])
                .arg(model)
                .args(args)
                .arg(out);
            c.env("HF_HUB_OFFLINE", "1");
            ("optimum-cli", c)
        }
        Peer::GenaiBuilder(args) => {
            let mut c = Command::new(python);
            c.args(["-m", "onnxruntime_genai.models.builder", "-i"])
                .arg(model)
                .arg("-o")
                .arg(out)
                .arg("-c")
                .arg(work.join("genai-cache"))
                .args(args);
            c.env("HF_HUB_OFFLINE", "1");
            ("genai-builder", c)
        }
        Peer::NncfDataAware(args) => {
            let root = repo_root();
            let mut c = Command::new(python);
            c.arg(root.join("xtask/scripts/nncf_data_aware.py"))
                .arg(model)
                .arg(out)
                .arg("--text")
                .arg(root.join(CALIBRATION_TEXT))
                .args(args);
            c.env("HF_HUB_OFFLINE", "1");
            ("optimum-cli+nncf", c)
        }
    }
}

fn peer_versions(python: &Path) -> Vec<(String, String)> {
    let script = "import importlib.metadata as m\nfor p in ['optimum-intel','nncf','openvino','onnxruntime-genai','onnxruntime','torch','transformers']:\n  print(p, m.version(p))";
    Command::new(python)
        .args(["-c", script])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    l.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
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

/// Run `cmd`, sampling the RSS of its whole process tree until it exits.
/// `run` `repeat` times (stopping at the first failure); wall, CPU and memory are the medians, with the wall
/// time's min and max.
fn measure_repeated(
    repeat: usize,
    out: &Path,
    mut run: impl FnMut() -> Result<Measurement>,
) -> Result<Measurement> {
    let mut all = Vec::new();
    for _ in 0..repeat {
        let m = run()?;
        let ok = m.ok;
        all.push(m);
        if !ok {
            break;
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let walls: Vec<f64> = all.iter().map(|m| m.wall_secs).collect();
    let mut m = all.last().cloned().expect("at least one run");
    m.runs = all.len();
    m.wall_secs = median(walls.clone());
    m.wall_min_secs = walls.iter().copied().fold(f64::INFINITY, f64::min);
    m.wall_max_secs = walls.iter().copied().fold(0.0, f64::max);
    m.cpu_secs = median(all.iter().map(|m| m.cpu_secs).collect());
    m.peak_pss_tree_bytes =
        median(all.iter().map(|m| m.peak_pss_tree_bytes as f64).collect()) as u64;
    m.output_bytes = dir_size(out).max(m.output_bytes);
    Ok(m)
}

fn measure(mut cmd: Command, out: &Path, log_path: &Path) -> Result<Measurement> {
    let log = fs::File::create(log_path)?;
    cmd.stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    let io_before = self_io();
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as i32;
    let mut peak = 0u64;
    let mut last_note = Instant::now();
    let (status, rusage) = loop {
        let mut status = 0i32;
        // SAFETY: plain wait4 on our own child with valid out-pointers.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru);
        }
        if r < 0 {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        peak = peak.max(tree_pss(pid));
        if last_note.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "bench:   … {:.0} s, PSS {:.2} GB",
                start.elapsed().as_secs_f64(),
                peak as f64 / 1e9
            );
            last_note = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall_secs = start.elapsed().as_secs_f64();
    let io_after = self_io();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // A process too short-lived to be sampled: its ru_maxrss (KiB; RSS of the largest single process) stands in.
    if peak == 0 {
        peak = rusage.ru_maxrss as u64 * 1024;
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let log_text = fs::read_to_string(log_path).unwrap_or_default();
    let tail: String = log_text
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Measurement {
        ok,
        wall_secs,
        cpu_secs: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        wall_min_secs: wall_secs,
        wall_max_secs: wall_secs,
        runs: 1,
        peak_pss_tree_bytes: peak,
        read_bytes: io_after.0.saturating_sub(io_before.0),
        write_bytes: io_after.1.saturating_sub(io_before.1),
        output_bytes: dir_size(out),
        log: tail,
        ..Default::default()
    })
}

/// (read_bytes + rchar-from-page-cache not counted, write_bytes) of this process including reaped children.
fn self_io() -> (u64, u64) {
    let text = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// Sum of VmRSS over `root` and all its descendants.
/// Summed PSS (`/proc/PID/smaps_rollup`) of `root` and its descendants: a page shared by N of them counts 1/N in
/// each, so a multi-process peer's shared model pages count once (the summed RSS once reported 47 GB on a 24 GB
/// machine).
fn tree_pss(root: i32) -> u64 {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let mut it = rest.split_whitespace();
            let _state = it.next();
            let Some(ppid) = it.next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .sum()
}

fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = fs::metadata(p) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Seconds to read every file of the input once (page cache as it is; the caller warms it first, as the cases find it).
fn time_read_dir(dir: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for e in fs::read_dir(dir)?.flatten() {
        if e.path().is_file() {
            let mut f = fs::File::open(e.path())?;
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds to write `bytes` to a fresh file (no fsync, like the exporters).
fn time_write(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("io-floor.tmp");
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut f = std::io::BufWriter::new(fs::File::create(&path)?);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    let secs = start.elapsed().as_secs_f64();
    fs::remove_file(&path)?;
    Ok(secs)
}

fn machine() -> Machine {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let ram_kb = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ram_gib: ram_kb / 1024.0 / 1024.0,
        cpu,
    }
}

fn render_markdown(r: &Report) -> Result<String> {
    let work = repo_root().join("target/bench/work");
    let mut s = String::new();
    use std::fmt::Write as _;
    writeln!(
        s,
        "Measured {} on {} cores, {:.0} GiB RAM ({}).",
        r.date, r.machine.cores, r.machine.ram_gib, r.machine.cpu
    )?;
    writeln!(
        s,
        "Model: `{}` ({:.2} GB). Reading it once from the page cache takes {:.2} s (median). Times are medians of \
         the runs (min–max); memory is the peak summed PSS of the process tree.",
        r.model,
        r.model_bytes as f64 / 1e9,
        r.io_floor_read_secs
    )?;
    if !r.peer_versions.is_empty() {
        let v: Vec<String> = r
            .peer_versions
            .iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect();
        writeln!(s, "Peers: {}.", v.join(", "))?;
    }
    writeln!(s)?;
    writeln!(
        s,
        "| case | tool | threads | ok | runs | wall s (min–max) | CPU s | peak PSS GB | out GB | I/O floor s | × floor | peer ÷ oxport time | peer ÷ oxport PSS | ppl |"
    )?;
    writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for m in &r.results {
        let floor = r.io_floor_read_secs + time_write(&work, m.output_bytes).unwrap_or(0.0);
        let best_oxport = r
            .results
            .iter()
            .filter(|o| o.tool == "oxport" && o.case == m.case && o.ok)
            .min_by(|a, b| a.wall_secs.total_cmp(&b.wall_secs));
        let (rt, rm) = match (m.tool != "oxport", best_oxport) {
            (true, Some(o)) if m.ok => (
                format!("{:.1}×", m.wall_secs / o.wall_secs),
                format!(
                    "{:.1}×",
                    m.peak_pss_tree_bytes as f64 / o.peak_pss_tree_bytes.max(1) as f64
                ),
            ),
            _ => (String::new(), String::new()),
        };
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            m.case,
            m.tool,
            m.threads
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            if m.ok { "yes" } else { "FAILED" },
            m.runs,
            m.wall_secs,
            m.wall_min_secs,
            m.wall_max_secs,
            m.cpu_secs,
            m.peak_pss_tree_bytes as f64 / 1e9,
            m.output_bytes as f64 / 1e9,
            floor,
            m.wall_secs / floor.max(1e-9),
            rt,
            rm,
            m.perplexity.map(|p| format!("{p:.3}")).unwrap_or_default(),
        )?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvino_cases_run_oxport_with_optimum_clis_flags() {
        let case = CASES
            .iter()
            .find(|c| c.name == "ov-int4-sym-g128-r0.6")
            .unwrap();
        assert_eq!(
            case.oxport_args(),
            [
                "export",
                "openvino",
                "--task",
                "text-generation-with-past",
                "--weight-format",
                "int4",
                "--group-size",
                "128",
                "--ratio",
                "0.6",
                "--sym",
            ]
        );
        for c in CASES {
            assert!(!c.oxport_args().is_empty(), "{}", c.name);
        }
    }
}
