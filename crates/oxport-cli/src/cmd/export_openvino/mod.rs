//! `oxport export openvino`: optimum-cli's `export openvino` flags, accepted verbatim.
//!
//! Every optimum-cli flag parses; the ones oxport does not implement fail with a message naming the flag instead
//! of being ignored.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use oxport_arch::{Model, Role};
use oxport_openvino::{BackupPrecision, CompressionOptions, GroupSizeFallback, WeightFormat};
use oxport_quant::SensitivityMetric;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Model: a local Phi-3 checkpoint folder or a Hugging Face hub id (`microsoft/Phi-3-mini-4k-instruct`,
    /// taken from the HF cache or downloaded).
    #[arg(short = 'm', long)]
    pub model: String,
    /// Hub revision (branch, tag or commit) when --model is a hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Output folder.
    pub output: PathBuf,
    /// Task; oxport writes the stateful KV-cache model of `text-generation-with-past` (`auto` means that).
    #[arg(long, default_value = "auto")]
    pub task: String,
    /// fp32, fp16, int8 or int4 (optimum-cli's other formats are refused).
    #[arg(long = "weight-format")]
    pub weight_format: Option<String>,
    /// Fraction of the ratio-defining weights compressed to 4 bits (int4; NNCF mixed precision).
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Symmetric compression (int4_sym / int8_sym).
    #[arg(long)]
    pub sym: bool,
    /// Group size along the input dimension for int4 (default 128).
    #[arg(long = "group-size", allow_hyphen_values = true)]
    pub group_size: Option<i64>,
    /// Precision of the weights not compressed to 4 bits: none, int8_sym, int8_asym (default).
    #[arg(long = "backup-precision")]
    pub backup_precision: Option<String>,
    /// Make the embedding and lm_head candidates for 4 bits as well.
    #[arg(long = "all-layers")]
    pub all_layers: bool,
    /// What to do when the group size does not divide a weight's input dimension: error (default), ignore, adjust.
    #[arg(long = "group-size-fallback")]
    pub group_size_fallback: Option<String>,
    /// Accepted for compatibility; Phi-3 needs no remote code.
    #[arg(long = "trust-remote-code")]
    pub trust_remote_code: bool,
    /// Print the compression plan and the files that would be written; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not write openvino_tokenizer/openvino_detokenizer IR (written by default from tokenizer.json);
    /// `--disable-convert-tokenizer` is optimum-cli's name for it.
    #[arg(long = "no-tokenizer", alias = "disable-convert-tokenizer")]
    pub no_tokenizer: bool,
    /// oxport extension: an export for Intel NPUs, the recipe OpenVINO GenAI documents (int4 --sym --ratio 1.0,
    /// --group-size 128 or -1; that is the default when --weight-format is not given). Options the NPU cannot take
    /// (asymmetric int4, other ratios, group sizes or backup modes, --all-layers) are refused before anything is
    /// written. The IR is the same as optimum-cli's for the same flags.
    #[arg(long)]
    pub npu: bool,
    /// `pt` only.
    #[arg(long)]
    pub framework: Option<String>,
    /// `transformers` only.
    #[arg(long)]
    pub library: Option<String>,

    /// optimum-cli flags oxport does not implement: parsed so that using them is an explicit error (boxed: they
    /// are many and almost never set).
    /// AWQ as NNCF applies it, int4 only: down_proj's input channels are rescaled and a Multiply after each Swish
    /// undoes it. Without --dataset NNCF's data-free AWQ (scales from the mean |weight|); with --dataset NNCF's
    /// data-aware search (the groups of the 0.2% most active channels, alpha over 0..0.99), on statistics that
    /// oxport's own forward pass collects.
    #[arg(long)]
    pub awq: bool,
    #[command(flatten)]
    pub calibration: crate::calibration::CalibrationArgs,
    /// How --ratio below 1 ranks the weights, as NNCF: weight_quantization_error (data-free; the default without
    /// --dataset), or with --dataset hessian_input_activation, mean_activation_variance, max_activation_variance
    /// (the default with --dataset) or mean_activation_magnitude, on statistics from oxport's own forward pass.
    #[arg(long = "sensitivity-metric")]
    pub sensitivity_metric: Option<String>,
    /// NNCF's scale estimation on every 4-bit weight (needs --dataset): per group, the scale that best reproduces
    /// the layer's output on the calibration statistics (5 rectification and 5 grid steps, 64 samples).
    #[arg(long = "scale-estimation")]
    pub scale_estimation: bool,
    #[command(flatten)]
    pub unimplemented: Box<Unimplemented>,
}

/// optimum-cli options that oxport parses only to refuse them by name.
#[derive(clap::Args, Debug)]
pub(crate) struct Unimplemented {
    #[arg(long, hide = true)]
    pub gptq: bool,
    #[arg(long = "lora-correction", hide = true)]
    pub lora_correction: bool,
    #[arg(long = "quant-mode", hide = true)]
    pub quant_mode: Option<String>,
    #[arg(long = "quantization-statistics-path", hide = true)]
    pub quantization_statistics_path: Option<String>,
    #[arg(long = "smooth-quant-alpha", hide = true)]
    pub smooth_quant_alpha: Option<String>,
    #[arg(long = "disable-stateful", hide = true)]
    pub disable_stateful: bool,
    #[arg(long = "pad-token-id", hide = true)]
    pub pad_token_id: Option<String>,
    #[arg(long = "cache_dir", alias = "cache-dir", hide = true)]
    pub cache_dir: Option<String>,
    #[arg(long, hide = true)]
    pub variant: Option<String>,
    #[arg(long = "model-kwargs", hide = true)]
    pub model_kwargs: Option<String>,
}

impl Args {
    /// The first optimum-cli flag given that oxport does not implement.
    fn unsupported_flag(&self) -> Option<&'static str> {
        let u = &self.unimplemented;
        let flags: [(&'static str, bool); 10] = [
            ("--gptq", u.gptq),
            ("--lora-correction", u.lora_correction),
            ("--quant-mode", u.quant_mode.is_some()),
            (
                "--quantization-statistics-path",
                u.quantization_statistics_path.is_some(),
            ),
            ("--smooth-quant-alpha", u.smooth_quant_alpha.is_some()),
            ("--disable-stateful", u.disable_stateful),
            ("--pad-token-id", u.pad_token_id.is_some()),
            ("--cache_dir", u.cache_dir.is_some()),
            ("--variant", u.variant.is_some()),
            ("--model-kwargs", u.model_kwargs.is_some()),
        ];
        flags.iter().find(|(_, set)| *set).map(|(name, _)| *name)
    }

    fn options(&self, params: usize) -> anyhow::Result<CompressionOptions> {
        if let Some(flag) = self.unsupported_flag() {
            bail!(
                "{flag} is an optimum-cli option that oxport does not implement (oxport does weight-only \
                 compression of Phi-3 checkpoints: no GPTQ, LoRA correction, activation quantization yet); remove it or use optimum-cli"
            );
        }
        match self.task.as_str() {
            "auto" | "text-generation-with-past" => {}
            other => bail!(
                "--task {other}: oxport exports the stateful KV-cache model of `text-generation-with-past` only"
            ),
        }
        if let Some(f) = self.framework.as_deref().filter(|f| *f != "pt") {
            bail!("--framework {f}: only `pt` (a PyTorch/safetensors checkpoint) is supported");
        }
        if let Some(l) = self.library.as_deref().filter(|l| *l != "transformers") {
            bail!("--library {l}: only `transformers` is supported");
        }
        // Without --weight-format optimum-cli exports fp32 below 1B parameters and int8 above
        // (optimum/exporters/openvino/__main__.py, `_MAX_UNCOMPRESSED_SIZE`).
        let format = match self.weight_format.as_deref() {
            None if self.npu => WeightFormat::Int4,
            None if params >= 1_000_000_000 => WeightFormat::Int8,
            None | Some("fp32") => WeightFormat::Fp32,
            Some("fp16") => WeightFormat::Fp16,
            Some("int8") => WeightFormat::Int8,
            Some("int4") => WeightFormat::Int4,
            Some(other) => bail!(
                "--weight-format {other}: oxport implements fp32, fp16, int8 and int4 (optimum-cli also has mxfp4, \
                 nf4, cb4, … which oxport does not)"
            ),
        };
        let backup = match self.backup_precision.as_deref() {
            None => None,
            Some("none") => Some(BackupPrecision::None),
            Some("int8_sym") => Some(BackupPrecision::Int8Sym),
            Some("int8_asym") => Some(BackupPrecision::Int8Asym),
            Some(other) => {
                bail!("--backup-precision {other}: expected none, int8_sym or int8_asym")
            }
        };
        let fallback = match self.group_size_fallback.as_deref() {
            None | Some("error") => GroupSizeFallback::Error,
            Some("ignore") => GroupSizeFallback::Ignore,
            Some("adjust") => GroupSizeFallback::Adjust,
            Some(other) => bail!("--group-size-fallback {other}: expected error, ignore or adjust"),
        };
        // --npu alone is the whole recipe; with --weight-format the flags keep optimum-cli's meaning (int4 without
        // --sym is int4_asym) and are checked.
        let npu_default = self.npu && self.weight_format.is_none();
        let options = CompressionOptions {
            weight_format: format,
            sym: self.sym || npu_default,
            group_size: self.group_size,
            ratio: self.ratio,
            all_layers: self.all_layers,
            backup,
            group_size_fallback: fallback,
            awq: self.awq,
        };
        if self.npu {
            oxport_openvino::npu::check_options(&options)?;
        }
        self.check_dataset(&options)?;
        Ok(options)
    }
}

impl Args {
    /// `--dataset` is used by data-aware AWQ; the other data-aware methods NNCF would run with it are refused by
    /// name (never a silent data-free fallback).
    fn check_dataset(&self, options: &CompressionOptions) -> anyhow::Result<()> {
        self.calibration.check()?;
        if self.calibration.dataset.is_none() {
            if self.scale_estimation {
                bail!(
                    "--scale-estimation needs calibration data: add --dataset (NNCF refuses it without one)"
                );
            }
            return Ok(());
        }
        if options.weight_format != WeightFormat::Int4 {
            bail!(
                "--dataset: oxport's data-aware compression is int4 (AWQ, scale estimation, mixed precision); got {}",
                options.weight_format.name()
            );
        }
        Ok(())
    }

    /// `--sensitivity-metric`, or NNCF's default: `max_activation_variance` with a dataset,
    /// `weight_quantization_error` without (`algorithm.py::get_weight_compression_configuration`).
    fn metric(&self) -> anyhow::Result<SensitivityMetric> {
        let dataset = self.calibration.dataset.is_some();
        let Some(name) = &self.sensitivity_metric else {
            return Ok(if dataset {
                SensitivityMetric::MaxActivationVariance
            } else {
                SensitivityMetric::WeightQuantizationError
            });
        };
        let Some(metric) = SensitivityMetric::parse(name) else {
            let all: Vec<_> = SensitivityMetric::ALL.iter().map(|m| m.name()).collect();
            bail!(
                "--sensitivity-metric {name}: expected one of {}",
                all.join(", ")
            );
        };
        if metric.is_data_aware() && !dataset {
            bail!("--sensitivity-metric {name} needs calibration data: add --dataset");
        }
        Ok(metric)
    }

    /// Data-aware AWQ: `--awq` with `--dataset`.
    fn data_aware_awq(&self, options: &CompressionOptions) -> bool {
        options.awq && self.calibration.dataset.is_some()
    }

    /// Data-aware mixed precision: `--ratio` below 1 with a data-aware metric.
    fn data_aware_ratio(&self, options: &CompressionOptions, metric: SensitivityMetric) -> bool {
        options.weight_format == WeightFormat::Int4
            && options.ratio.is_some_and(|r| r < 1.0)
            && metric.is_data_aware()
    }
}

/// `--weight-format int4` and none of optimum-cli's compression flags: optimum-cli's per-model default recipe
/// (`oxport_openvino::defaults`), applied as it applies it and said on stderr; a data-aware default oxport cannot
/// reproduce is refused rather than replaced by a data-free one.
fn apply_default_recipe(
    args: &mut Args,
    mut options: CompressionOptions,
) -> anyhow::Result<CompressionOptions> {
    use oxport_openvino::defaults::{GENERIC, MatchedBy, Recipe, default_4bit};
    // `no_compression_parameter_provided` (optimum/commands/export/openvino.py); the data-aware ones are refused
    // before this point.
    let flags_given = args.ratio.is_some()
        || args.group_size.is_some()
        || args.sym
        || args.all_layers
        || args.awq
        || args.backup_precision.is_some()
        || args.group_size_fallback.is_some()
        || args.calibration.dataset.is_some()
        || args.calibration.num_samples.is_some()
        || args.sensitivity_metric.is_some()
        || args.scale_estimation;
    if options.weight_format != WeightFormat::Int4 || flags_given || args.npu {
        return Ok(options);
    }
    let (recipe, why) = match default_4bit(&args.model) {
        Some((key, recipe, by)) => {
            let how = match by {
                MatchedBy::ModelId => "the model id".to_string(),
                MatchedBy::NameOrPath(n) => format!("config.json `_name_or_path` {n}"),
                MatchedBy::FolderName(f) => format!("the folder name {f}"),
            };
            (
                recipe,
                format!("optimum-cli's default for {key} (matched by {how})"),
            )
        }
        None => (
            GENERIC,
            "optimum-cli's generic int4 default (no per-model entry)".to_string(),
        ),
    };
    match recipe {
        Recipe::DataAware {
            sym,
            group_size,
            ratio,
            awq,
            scale_estimation,
            dataset,
        } => {
            options.sym = sym;
            options.group_size = Some(group_size);
            options.ratio = Some(ratio);
            options.awq = awq;
            args.scale_estimation = scale_estimation;
            args.calibration.dataset = Some(dataset.to_string());
            eprintln!(
                "note: applying {why}: int4_{}, group {group_size}, ratio {ratio}{}{}, calibrated on {dataset} \
                 (128 samples)",
                if sym { "sym" } else { "asym" },
                if awq { ", AWQ" } else { "" },
                if scale_estimation {
                    ", scale estimation"
                } else {
                    ""
                },
            );
        }
        Recipe::DataFree {
            sym,
            group_size,
            ratio,
            awq,
        } => {
            options.sym = sym;
            options.group_size = Some(group_size);
            options.ratio = Some(ratio);
            options.awq = awq;
            eprintln!(
                "note: applying {why}: int4_{}, group {group_size}, ratio {ratio}{}",
                if sym { "sym" } else { "asym" },
                if awq { ", data-free AWQ" } else { "" }
            );
        }
    }
    Ok(options)
}

pub(crate) fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    // Refuse unimplemented flags before touching the model.
    args.options(0)?;
    let start = Instant::now();
    let dir = super::inspect::resolve(&args.model, args.revision.as_deref())?;
    let ckpt = Model::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let options = args.options(ckpt.total_params())?;
    let options = apply_default_recipe(&mut args, options)?;
    let bars = crate::progress::Bars::new(false);
    let metric = args.metric()?;
    let (awq_data, ratio_data, se) = (
        args.data_aware_awq(&options),
        args.data_aware_ratio(&options, metric),
        args.scale_estimation,
    );
    if args.calibration.dataset.is_some() && !awq_data && !ratio_data && !se {
        eprintln!(
            "note: --dataset is not used: no data-aware method was asked for (--awq, --scale-estimation, or --ratio \
             below 1), as NNCF ignores it then"
        );
    }
    let data = calibration_data(&args, &dir, &ckpt, &options, metric)?;
    let mut plan = oxport_openvino::plan_data_aware(&ckpt, &options, &bars, data.as_ref())
        .context("planning the weight compression")?;
    bars.finish();
    if let Some(data) = data.as_ref().filter(|_| awq_data && !args.dry_run) {
        oxport_openvino::awq::apply_data_aware_awq(&ckpt, &mut plan, &data.stats, &mut |_, _| {})
            .context("searching the AWQ scales")?;
    }
    if se {
        let stats = data
            .as_ref()
            .filter(|_| !args.dry_run)
            .map(|d| d.stats.clone());
        plan.enable_scale_estimation(stats);
    }
    if args.npu {
        oxport_openvino::npu::check_plan(&plan)?;
    }
    if !args.no_tokenizer && !dir.join("tokenizer.json").is_file() {
        // oxport-ov-tokenizer converts tokenizer.json only; say so rather than silently writing no tokenizer IR.
        eprintln!(
            "note: {} has no tokenizer.json, so no openvino_tokenizer/openvino_detokenizer IR is written (OpenVINO \
             GenAI's LLMPipeline needs them; oxport converts tokenizer.json only)",
            dir.display()
        );
    }
    if args.dry_run {
        print_dry_run(&args, &options, &plan);
        return Ok(ExitCode::SUCCESS);
    }
    let model_arg = args.model.as_str();
    // The tokenizer IR (oxport-ov-tokenizer) is written into the export folder before the weights, so a tokenizer
    // that cannot be converted fails the export with nothing written.
    let tokenizer_irs = |staging: &Path| {
        oxport_ov_tokenizer::write_tokenizer_irs(ckpt.dir(), staging).map_err(Into::into)
    };
    let with_tokenizer = !args.no_tokenizer && ckpt.dir().join("tokenizer.json").is_file();
    let summary = crate::interrupt::run_export(&args.output, |cancel| {
        let exported = oxport_openvino::export_with(
            &ckpt,
            &plan,
            &args.output,
            model_arg,
            &bars,
            cancel,
            with_tokenizer.then_some(&tokenizer_irs as oxport_openvino::ExtraFiles<'_>),
        );
        exported.with_context(|| format!("exporting to {}", args.output.display()))
    })?;
    bars.finish();
    let total: u64 = summary.files.iter().map(|f| f.1).sum();
    eprintln!(
        "wrote {} ({} files, {:.2} MB) in {:.2}s",
        summary.output.display(),
        summary.files.len(),
        total as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The calibration statistics, collected before planning when the ranking needs them, and for AWQ's and scale
/// estimation's searches (not in a dry run, which then only says that those are searched at export).
fn calibration_data(
    args: &Args,
    dir: &Path,
    ckpt: &Model,
    options: &CompressionOptions,
    metric: SensitivityMetric,
) -> anyhow::Result<Option<oxport_openvino::DataAware>> {
    let (awq_data, ratio_data, se) = (
        args.data_aware_awq(options),
        args.data_aware_ratio(options, metric),
        args.scale_estimation,
    );
    Ok(if ratio_data || ((awq_data || se) && !args.dry_run) {
        let all_layers = options.all_layers;
        let candidate = |r: Role| r.is_matmul() && (r != Role::LmHead || all_layers);
        let want = |r: Role| match r {
            Role::MlpDown { .. } if awq_data => oxport_reference::Observe::Means,
            r if se && candidate(r) => oxport_reference::Observe::Means,
            r if ratio_data && candidate(r) => oxport_reference::Observe::Scalars,
            _ => oxport_reference::Observe::Nothing,
        };
        let calibrated = args.calibration.collect(dir, ckpt, &want)?;
        Some(oxport_openvino::DataAware {
            stats: std::sync::Arc::new(calibrated.stats),
            metric,
            dataset: oxport_openvino::DatasetRecord {
                name: calibrated.dataset,
                num_samples: calibrated.num_samples,
            },
        })
    } else if awq_data || se {
        Some(oxport_openvino::DataAware {
            stats: Default::default(),
            metric,
            dataset: oxport_openvino::DatasetRecord {
                name: args.calibration.dataset.clone().unwrap_or_default(),
                num_samples: args.calibration.num_samples.unwrap_or(128),
            },
        })
    } else {
        None
    })
}

/// `--dry-run`: the plan table (the same as the ONNX export's) and the files an export would write.
fn print_dry_run(args: &Args, options: &CompressionOptions, plan: &oxport_openvino::Plan) {
    println!(
        "oxport export openvino (dry run): {} → {} ({})",
        args.model,
        args.output.display(),
        options.weight_format.name()
    );
    print!("{plan}");
    let mut files = vec![
        "openvino_model.xml",
        "openvino_model.bin",
        "config.json",
        "generation_config.json",
    ];
    files.extend([
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ]);
    if !args.no_tokenizer {
        files.extend([
            "openvino_tokenizer.xml",
            "openvino_tokenizer.bin",
            "openvino_detokenizer.xml",
            "openvino_detokenizer.bin",
        ]);
    }
    if plan.nncf.is_some() {
        files.push("openvino_config.json");
    }
    files.push(oxport_io::MANIFEST_FILE);
    println!(
        "would write (where the checkpoint has the source): {}",
        files.join(", ")
    );
}

#[cfg(test)]
mod tests;
