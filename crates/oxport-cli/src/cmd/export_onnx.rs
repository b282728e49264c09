//! `oxport export onnx`: the onnxruntime-genai model builder's output (`python -m
//! onnxruntime_genai.models.builder -p int4 -e cpu`), written by streaming one tensor at a time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use oxport_arch::Model;
use oxport_onnx::{ExecutionProvider, ExportOptions, Precision};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum PrecisionArg {
    Int4,
    Fp16,
    Fp32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum EpArg {
    Cpu,
    Cuda,
    Dml,
    Webgpu,
}

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A Phi-3 checkpoint folder (config.json, safetensors, tokenizer files) or a Hugging Face hub id.
    #[arg(short = 'm', long)]
    pub model: String,
    /// Hub revision (branch, tag or commit) when --model is a hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Output folder (must not exist or be empty); written atomically.
    pub output: PathBuf,
    /// Weight precision: int4 (MatMulNBits), fp16 or fp32.
    #[arg(short = 'p', long, value_enum, default_value = "int4")]
    pub precision: PrecisionArg,
    /// Execution provider the graph targets: cpu (fp32 I/O for int4), cuda, dml (DirectML: separate Q/K/V and
    /// RotaryEmbedding, position_ids input) or webgpu; all but cpu use fp16 I/O.
    #[arg(
        short = 'e',
        long = "execution-provider",
        value_enum,
        default_value = "cpu"
    )]
    pub execution_provider: EpArg,
    /// MatMulNBits block size along K: 16, 32, 64, 128 or 256.
    #[arg(long = "block-size", default_value_t = 32)]
    pub block_size: usize,
    /// Symmetric int4 (default): no zero points, zero point 8.
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric int4: uint4 with per-block zero points.
    #[arg(long)]
    pub asym: bool,
    /// MatMulNBits accuracy_level 0-4 (default 4 on cpu/webgpu, 0 on cuda/dml; 4 quantizes activations to int8).
    #[arg(long = "accuracy-level")]
    pub accuracy_level: Option<u32>,
    /// Quantize lm_head to 8 bits instead of 4.
    #[arg(long = "int8-lm-head")]
    pub int8_lm_head: bool,
    /// Fraction of the ratio-defining weights in 4 bits; the rest become 8-bit MatMulNBits.
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Standard ops: DequantizeLinear (INT4) + MatMul and a decomposed first norm; passes onnx.checker.
    #[arg(long)]
    pub qdq: bool,
    /// AWQ as NNCF computes it (an oxport extension: the genai builder has none): down_proj's input channels
    /// scaled, up_proj's output rows by the inverse; int4 only, same graph. Data-free (scales from the mean
    /// |weight|) or, with --dataset, NNCF's data-aware search on statistics from oxport's own forward pass.
    #[arg(long)]
    pub awq: bool,
    #[command(flatten)]
    pub calibration: crate::calibration::CalibrationArgs,
    /// Print the quantization plan and the graph summary; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

impl Args {
    fn options(&self) -> ExportOptions {
        ExportOptions {
            precision: match self.precision {
                PrecisionArg::Int4 => Precision::Int4,
                PrecisionArg::Fp16 => Precision::Fp16,
                PrecisionArg::Fp32 => Precision::Fp32,
            },
            execution_provider: match self.execution_provider {
                EpArg::Cpu => ExecutionProvider::Cpu,
                EpArg::Cuda => ExecutionProvider::Cuda,
                EpArg::Dml => ExecutionProvider::Dml,
                EpArg::Webgpu => ExecutionProvider::WebGpu,
            },
            block_size: self.block_size,
            symmetric: !self.asym,
            accuracy_level: self.accuracy_level,
            int8_lm_head: self.int8_lm_head,
            ratio: self.ratio,
            qdq: self.qdq,
            awq: self.awq,
            awq_stats: None,
            model_arg: Some(self.model.clone()),
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = args.options();
    args.calibration.check()?;
    if args.calibration.dataset.is_some() && !args.awq {
        anyhow::bail!("--dataset is used by data-aware AWQ only: add --awq");
    }
    let model_dir = resolve(&args)?;
    let ckpt =
        Model::open(&model_dir).with_context(|| format!("opening {}", model_dir.display()))?;
    opts.validate()?;
    if args.awq && args.calibration.dataset.is_some() && !args.dry_run {
        let want = |r: oxport_arch::Role| match r {
            oxport_arch::Role::MlpGateUp { .. } | oxport_arch::Role::MlpDown { .. } => {
                oxport_reference::Observe::Means
            }
            _ => oxport_reference::Observe::Nothing,
        };
        let calibrated = args.calibration.collect(&model_dir, &ckpt, &want)?;
        opts.awq_stats = Some(std::sync::Arc::new(calibrated.stats));
    }

    if args.dry_run {
        let mut plan = oxport_onnx::plan(&ckpt, &opts)?;
        let layout = oxport_onnx::layout(&ckpt, &opts, &plan)?;
        // A dry run collects no statistics; the AWQ targets are still searched on the data at export.
        for e in &mut plan.entries {
            if let oxport_quant::Transform::Awq { data_aware, .. } = &mut e.transform {
                *data_aware = args.calibration.dataset.is_some();
            }
        }
        print!("{plan}");
        let mut ops = std::collections::BTreeMap::<String, usize>::new();
        for n in &layout.nodes {
            let op = n.op_type.clone().unwrap_or_default();
            let key = match n.domain.as_deref() {
                Some(d) if !d.is_empty() => format!("{d}:{op}"),
                _ => op,
            };
            *ops.entry(key).or_default() += 1;
        }
        println!(
            "graph: {} nodes, opset {} + com.microsoft 1, IR {}",
            layout.nodes.len(),
            oxport_onnx::OPSET,
            oxport_onnx::IR_VERSION
        );
        for (op, count) in ops {
            println!("  {op:<45} {count}");
        }
        println!(
            "would write {} with {}, {}, {}, {} and the tokenizer files",
            args.output.display(),
            oxport_onnx::MODEL_FILE,
            oxport_onnx::DATA_FILE,
            oxport_onnx::GENAI_CONFIG_FILE,
            oxport_io::MANIFEST_FILE
        );
        return Ok(ExitCode::SUCCESS);
    }

    let bars = crate::progress::Bars::new(false);
    let started = Instant::now();
    let summary = crate::interrupt::run_export(&args.output, |cancel| {
        let exported = oxport_onnx::export(&ckpt, &opts, &args.output, &bars, cancel);
        exported.with_context(|| {
            format!(
                "exporting {} to {}",
                model_dir.display(),
                args.output.display()
            )
        })
    })?;
    bars.finish();
    let total: u64 = summary.files.values().sum();
    println!(
        "wrote {} in {:.1} s: {} nodes, {} initializers, {:.1} MB",
        summary.output.display(),
        started.elapsed().as_secs_f64(),
        summary.nodes,
        summary.initializers,
        total as f64 / 1e6
    );
    for (name, bytes) in &summary.files {
        println!("  {name:<28} {bytes:>14} bytes");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--model`: a local folder, or a hub id resolved through the Hugging Face cache (downloaded if missing).
fn resolve(args: &Args) -> anyhow::Result<PathBuf> {
    super::inspect::resolve(&args.model, args.revision.as_deref())
}
