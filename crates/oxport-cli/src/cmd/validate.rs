//! `oxport validate OUT`: run an export on every present device, compare with the f32 reference, report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use oxport_runner::backend::Precision;
use oxport_runner::validate::{self, DeviceFilter, Options, ThresholdOverrides, WeightPrecision};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum DeviceArg {
    All,
    Cpu,
    Cuda,
    Gpu,
    Npu,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum PrecisionArg {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Export folder: model.onnx + genai_config.json, or openvino_model.xml.
    pub output: PathBuf,
    /// Original checkpoint folder (default: the checkpoint the export's oxport_manifest.json names, checked against
    /// its recorded digests; else the folder named by config.json `_name_or_path`).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Devices to validate on; absent ones are listed as skipped with the reason.
    #[arg(long, value_enum, default_value = "all")]
    pub device: DeviceArg,
    /// File with one user prompt per line (rendered with the chat template); default: three built-in prompts.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Text file for perplexity (windows of --ppl-window tokens); no perplexity without it.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Greedy tokens generated per prompt.
    #[arg(long = "max-new-tokens", default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Perplexity window in tokens (each window starts with an empty cache).
    #[arg(long = "ppl-window", default_value_t = 512)]
    pub ppl_window: usize,
    /// Tokens between perplexity window starts (default: the window, i.e. disjoint windows; smaller values give a
    /// sliding window where each window scores only the tokens the previous one did not).
    #[arg(long = "ppl-stride")]
    pub ppl_stride: Option<usize>,
    /// At most this many text tokens are evaluated.
    #[arg(long = "ppl-max-tokens", default_value_t = 4096)]
    pub ppl_max_tokens: usize,
    /// Folder of reference results computed once (by `oxport reference` or an earlier validate): used when it holds
    /// them for exactly this checkpoint, prompts, text, window, stride and caps, else computed and stored there.
    #[arg(long = "reference-cache")]
    pub reference_cache: Option<PathBuf>,
    /// Write the report as JSON here (and the KL plot beside it, as .svg).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the per-position KL plot here (default: beside --json).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Run with the devices' default settings instead of f32-exact ones (bf16 / int8 activations on some CPUs).
    #[arg(long = "device-defaults")]
    pub device_defaults: bool,
    /// Weight precision for the thresholds (default: detected from the export).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Override the max |Δlogit| threshold.
    #[arg(long = "max-abs-logit")]
    pub max_abs_logit: Option<f64>,
    /// Override the mean KL(reference ‖ export) threshold.
    #[arg(long = "max-mean-kl")]
    pub max_mean_kl: Option<f64>,
    /// Override the minimum top-1 agreement (0–1).
    #[arg(long = "min-top1")]
    pub min_top1: Option<f64>,
    /// Override the allowed perplexity increase, percent.
    #[arg(long = "max-ppl-increase")]
    pub max_ppl_increase: Option<f64>,
    /// Require at least this greedy match length on every prompt (default: reported only).
    #[arg(long = "min-greedy-match")]
    pub min_greedy_match: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// One user prompt per non-empty line of `path`.
pub(crate) fn read_prompts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading prompts {}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!prompts.is_empty(), "{}: no prompts", path.display());
    Ok(prompts)
}

/// The checkpoint an oxport export names in its `oxport_manifest.json`: the folder as `--model` gave it, or the hub
/// id at the recorded commit (from the cache, downloaded if missing), checked against the recorded sizes and sha256
/// digests. `None` when the export has no manifest, or names a folder that is not there from here (the runner then
/// tries the export's `config.json`, and asks for `--reference`).
fn reference_from_manifest(export: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(manifest) = oxport_io::Manifest::read(export)? else {
        return Ok(None);
    };
    let source = &manifest.source;
    if source.revision.is_none() && !std::path::Path::new(&source.model).is_dir() {
        return Ok(None);
    }
    let dir =
        super::inspect::resolve(&source.model, source.revision.as_deref()).with_context(|| {
            format!(
                "finding the checkpoint {} names (or pass --reference)",
                export.join(oxport_io::MANIFEST_FILE).display()
            )
        })?;
    source.verify(&dir).with_context(|| {
        format!(
            "{} was made from another checkpoint than {} (pass --reference to validate against this one anyway)",
            export.display(),
            dir.display()
        )
    })?;
    Ok(Some(dir))
}

/// The validate options that the command line gives (everything but the export and the output files).
fn options(args: &Args) -> anyhow::Result<Options> {
    let mut opts = Options::new(&args.output);
    opts.reference = match &args.reference {
        Some(r) => Some(r.clone()),
        None => reference_from_manifest(&args.output)?,
    };
    opts.reference_cache = args.reference_cache.clone();
    opts.devices = match args.device {
        DeviceArg::All => DeviceFilter::All,
        DeviceArg::Cpu => DeviceFilter::Cpu,
        DeviceArg::Cuda => DeviceFilter::Cuda,
        DeviceArg::Gpu => DeviceFilter::Gpu,
        DeviceArg::Npu => DeviceFilter::Npu,
    };
    if let Some(p) = &args.prompts {
        opts.prompts = read_prompts(p)?;
    }
    if let Some(t) = &args.text {
        opts.text = Some(
            std::fs::read_to_string(t).with_context(|| format!("reading text {}", t.display()))?,
        );
    }
    opts.max_new_tokens = args.max_new_tokens;
    opts.ppl_window = args.ppl_window;
    opts.ppl_stride = args.ppl_stride;
    opts.ppl_max_tokens = args.ppl_max_tokens;
    opts.session_precision = if args.device_defaults {
        Precision::DeviceDefault
    } else {
        Precision::F32Exact
    };
    opts.weight_precision = args.precision.map(|p| match p {
        PrecisionArg::Fp32 => WeightPrecision::Fp32,
        PrecisionArg::Fp16 => WeightPrecision::Fp16,
        PrecisionArg::Int8 => WeightPrecision::Int8,
        PrecisionArg::Int4 => WeightPrecision::Int4,
    });
    opts.overrides = ThresholdOverrides {
        max_abs_logit: args.max_abs_logit,
        mean_kl: args.max_mean_kl,
        min_top1: args.min_top1,
        max_ppl_increase_pct: args.max_ppl_increase,
        min_greedy_match: args.min_greedy_match,
    };
    Ok(opts)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = options(&args)?;
    let bars = crate::progress::Bars::new(args.quiet);
    let report = validate::run(&opts, &bars)
        .with_context(|| format!("validating {}", args.output.display()))?;
    print!("{}", validate::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let svg = args
        .svg
        .clone()
        .or_else(|| args.json.as_ref().map(|j| j.with_extension("svg")));
    if let Some(path) = svg {
        std::fs::write(&path, validate::kl_svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
