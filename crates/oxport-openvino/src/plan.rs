//! Which compression each weight gets, decided before any weight is written: optimum-cli's defaults and option
//! rules here, NNCF's mixed-precision selection and group-size fallbacks from `oxport_quant::plan_openvino`
//! (nncf/quantization/algorithms/weight_compression/{algorithm.py,mixed_precision.py}; docs/openvino-ir.md §6, §9).

use oxport_arch::{Model, Role};
use oxport_io::{Event, Reporter};
use oxport_quant::{Backup, Fallback, OpenVinoPlanOptions, OvWeightFormat, QuantError, QuantPlan};
pub use oxport_quant::{PlanEntry, Scheme, Transform};

use crate::error::{Error, Result};

/// `--weight-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Fp32 => "fp32",
            WeightFormat::Fp16 => "fp16",
            WeightFormat::Int8 => "int8",
            WeightFormat::Int4 => "int4",
        }
    }
}

/// `--backup-precision`: what the non-4-bit weights get in an int4 export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupPrecision {
    /// Left in the checkpoint's precision.
    None,
    Int8Sym,
    Int8Asym,
}

impl BackupPrecision {
    fn nncf_name(self) -> &'static str {
        match self {
            BackupPrecision::None => "none",
            BackupPrecision::Int8Sym => "int8_sym",
            BackupPrecision::Int8Asym => "int8_asym",
        }
    }
}

/// `--group-size-fallback`: what to do with a 4-bit weight whose K the group size does not divide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSizeFallback {
    Error,
    Ignore,
    Adjust,
}

impl GroupSizeFallback {
    fn nncf_name(self) -> &'static str {
        match self {
            GroupSizeFallback::Error => "error",
            GroupSizeFallback::Ignore => "ignore",
            GroupSizeFallback::Adjust => "adjust",
        }
    }
}

/// The compression options, as optimum-cli's flags give them (`None` = optimum-cli's default).
#[derive(Clone, Debug, PartialEq)]
pub struct CompressionOptions {
    pub weight_format: WeightFormat,
    pub sym: bool,
    /// `--group-size`; int4 default 128 (optimum-intel `_DEFAULT_4BIT_WQ_CONFIG`), int8 is per-channel (-1).
    pub group_size: Option<i64>,
    /// `--ratio`; default 1.0.
    pub ratio: Option<f64>,
    pub all_layers: bool,
    pub backup: Option<BackupPrecision>,
    pub group_size_fallback: GroupSizeFallback,
    /// `--awq` without a dataset: NNCF's data-free AWQ on every 4-bit weight fed by an activation (in Phi-3:
    /// `down_proj`, through Swish → Multiply; `awq.py`, `awq_patterns.py`).
    pub awq: bool,
}

impl CompressionOptions {
    pub fn new(weight_format: WeightFormat) -> Self {
        CompressionOptions {
            weight_format,
            sym: false,
            group_size: None,
            ratio: None,
            all_layers: false,
            backup: None,
            group_size_fallback: GroupSizeFallback::Error,
            awq: false,
        }
    }
}

/// What NNCF records in the model's rt_info (`nncf/weight_compression`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NncfRecord {
    pub mode: &'static str,
    pub ratio: f64,
    pub group_size: i64,
    pub all_layers: bool,
    pub backup_mode: &'static str,
    pub group_size_fallback: &'static str,
    pub awq: bool,
    /// The calibration data of a data-aware export (`None`: data-free). NNCF's default sensitivity metric becomes
    /// `max_activation_variance` with a dataset (`algorithm.py::get_weight_compression_configuration`).
    pub dataset: Option<DatasetRecord>,
    /// NNCF's name of the mixed-precision criterion (`weight_quantization_error` without a dataset,
    /// `max_activation_variance` by default with one).
    pub sensitivity_metric: &'static str,
    /// `--scale-estimation`.
    pub scale_estimation: bool,
}

/// What a data-aware plan is built from: the calibration statistics and the mixed-precision criterion.
#[derive(Clone, Debug)]
pub struct DataAware {
    pub stats: std::sync::Arc<oxport_quant::ActivationStats>,
    pub metric: oxport_quant::SensitivityMetric,
    pub dataset: DatasetRecord,
}

/// The calibration dataset as optimum-intel records it (`openvino_config.json` `quantization_config`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DatasetRecord {
    /// `wikitext2`, or the local file's path.
    pub name: String,
    pub num_samples: usize,
}

/// The OpenVINO export's plan: oxport-quant's [`QuantPlan`] (every tensor's scheme, reason, ratio-defining flag,
/// sensitivity and cross-tensor transform; the one plan type both exporters print and record) plus what only the IR
/// carries: NNCF's rt_info record and the statistics scale estimation searches on.
#[derive(Clone, Debug)]
pub struct Plan {
    pub weight_format: WeightFormat,
    pub quant: QuantPlan,
    pub nncf: Option<NncfRecord>,
    /// `--scale-estimation`: the calibration statistics every 4-bit weight's scales are searched on at export
    /// (`oxport_quant::scale_estimation`, after AWQ; one weight at a time, so memory stays at one layer's).
    pub scale_estimation: Option<std::sync::Arc<oxport_quant::ActivationStats>>,
}

impl Plan {
    /// The entry of `role`.
    pub fn entry(&self, role: Role) -> Option<&PlanEntry> {
        self.quant.entry(role)
    }

    pub fn scheme(&self, role: Role) -> Option<Scheme> {
        self.entry(role).map(|e| e.scheme)
    }

    /// The weights in the order they are written (embedding, per layer qkv/o/gate_up/down, lm_head).
    pub fn weights(&self) -> impl Iterator<Item = &PlanEntry> {
        self.quant.weights()
    }

    /// `--scale-estimation`: every 4-bit weight is marked, NNCF's record says so, and `stats` (absent in a dry run)
    /// are what the scales are searched on.
    pub fn enable_scale_estimation(
        &mut self,
        stats: Option<std::sync::Arc<oxport_quant::ActivationStats>>,
    ) {
        let Some(record) = self.nncf.as_mut() else {
            return;
        };
        record.scale_estimation = true;
        for e in &mut self.quant.entries {
            e.scale_estimation = e.scheme.is_nncf_four_bit();
        }
        self.scale_estimation = stats;
    }
}

/// `--dry-run`: the same table as the ONNX export's (oxport-quant's), with NNCF's bitwidth statistics.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.quant.fmt(f)
    }
}

fn quant_error(e: QuantError) -> Error {
    match e {
        QuantError::InvalidGroupSizes { group_size, failed } => Error::InvalidGroupSize {
            group_size,
            failed: failed
                .into_iter()
                .map(|(name, k)| format!("{name} (channel size {k})"))
                .collect(),
        },
        QuantError::Checkpoint { source, .. } => Error::Checkpoint(*source),
        other => Error::Quant {
            tensor: "plan".into(),
            source: Box::new(other),
        },
    }
}

/// Build the plan for `ckpt`. Reads the ratio-defining weights once (one at a time) when `ratio < 1`.
pub fn plan(ckpt: &Model, opts: &CompressionOptions) -> Result<Plan> {
    plan_data_aware(ckpt, opts, &oxport_io::Silent, None)
}

/// [`plan`] with calibration data (or `None`): `--ratio` below 1 ranks by `data.metric` (NNCF's data-aware mixed
/// precision), and the NNCF record names the dataset. Each ratio-defining weight is reported to `reporter` as its
/// sensitivity is computed (the slow part on big models), as the stage "sensitivities".
pub fn plan_data_aware(
    ckpt: &Model,
    opts: &CompressionOptions,
    reporter: &dyn Reporter,
    data: Option<&DataAware>,
) -> Result<Plan> {
    check_int4_only(opts)?;
    let quant_opts = quant_options(opts, int4_group_size(opts)?, data);
    let mut on_scored = |name: &str, done: usize, total: usize| {
        if done == 1 {
            reporter.report(Event::stage("sensitivities", total as u64));
        }
        reporter.report(Event::item(name));
        if done == total {
            reporter.report(Event::End);
        }
    };
    let mut quant =
        oxport_quant::plan_openvino(ckpt, &quant_opts, &mut on_scored).map_err(quant_error)?;
    // AWQ's target is the last MatMul of a matched pattern and must be 4-bit (`AWQ._get_awq_data`); in the Phi-3
    // graph only `down_proj` matches (Swish → Multiply → MatMul, `Act_Mul_MatMul`).
    for e in &mut quant.entries {
        if opts.awq && e.scheme.is_nncf_four_bit() && matches!(e.role, Role::MlpDown { .. }) {
            e.transform = Transform::Awq {
                data_aware: data.is_some(),
                scales: None,
            };
        }
    }
    for role in Role::all_for(ckpt.config()) {
        if (role == Role::Embedding || role.is_matmul()) && quant.entry(role).is_none() {
            return Err(Error::MissingTensor(role.to_string()));
        }
    }
    Ok(Plan {
        weight_format: opts.weight_format,
        quant,
        nncf: nncf_record(opts, &quant_opts, data.map(|d| d.dataset.clone())),
        scale_estimation: None,
    })
}

/// The int4-only flags, refused with another `--weight-format`.
fn check_int4_only(opts: &CompressionOptions) -> Result<()> {
    if opts.weight_format == WeightFormat::Int4 {
        return Ok(());
    }
    let given = [
        ("--awq", opts.awq),
        ("--ratio", opts.ratio.is_some_and(|r| r != 1.0)),
        ("--backup-precision", opts.backup.is_some()),
        ("--group-size", opts.group_size.is_some_and(|g| g != -1)),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((flag, _)) => Err(Error::Options(format!(
            "{flag} applies to --weight-format int4 only (got {})",
            opts.weight_format.name()
        ))),
        None => Ok(()),
    }
}

/// `--group-size` as oxport-quant takes it: default 128, `-1` per-channel (0); 0 for the other formats.
fn int4_group_size(opts: &CompressionOptions) -> Result<usize> {
    if opts.weight_format != WeightFormat::Int4 {
        return Ok(0);
    }
    match opts.group_size.unwrap_or(128) {
        -1 => Ok(0),
        g if g > 0 && g % 2 == 0 => Ok(g as usize),
        g => Err(Error::Options(format!(
            "--group-size {g}: int4 takes a positive even group size, or -1 for per-channel"
        ))),
    }
}

/// optimum-cli's flags as oxport-quant's NNCF planner takes them.
fn quant_options(
    opts: &CompressionOptions,
    group_size: usize,
    data: Option<&DataAware>,
) -> OpenVinoPlanOptions {
    OpenVinoPlanOptions {
        weight_format: match opts.weight_format {
            WeightFormat::Fp32 => OvWeightFormat::Fp32,
            WeightFormat::Fp16 => OvWeightFormat::Fp16,
            WeightFormat::Int8 => OvWeightFormat::Int8,
            WeightFormat::Int4 => OvWeightFormat::Int4,
        },
        group_size,
        ratio: opts.ratio.unwrap_or(1.0),
        sym: opts.sym,
        all_layers: opts.all_layers,
        backup_precision: match opts.backup.unwrap_or(BackupPrecision::Int8Asym) {
            BackupPrecision::None => Backup::None,
            BackupPrecision::Int8Sym => Backup::Int8Sym,
            BackupPrecision::Int8Asym => Backup::Int8Asym,
        },
        group_size_fallback: match opts.group_size_fallback {
            GroupSizeFallback::Error => Fallback::Error,
            GroupSizeFallback::Ignore => Fallback::Ignore,
            GroupSizeFallback::Adjust => Fallback::Adjust,
        },
        sensitivity_metric: data.map_or(
            oxport_quant::SensitivityMetric::WeightQuantizationError,
            |d| d.metric,
        ),
        activation: data.map(|d| d.stats.clone()),
        ..OpenVinoPlanOptions::default()
    }
}

/// NNCF's rt_info record of a compressed export (`None` for fp32/fp16).
fn nncf_record(
    opts: &CompressionOptions,
    quant: &OpenVinoPlanOptions,
    dataset: Option<DatasetRecord>,
) -> Option<NncfRecord> {
    let int8 = opts.weight_format == WeightFormat::Int8;
    let mode = match (opts.weight_format, opts.sym) {
        (WeightFormat::Fp32 | WeightFormat::Fp16, _) => return None,
        (WeightFormat::Int8, true) => "int8_sym",
        (WeightFormat::Int8, false) => "int8_asym",
        (WeightFormat::Int4, true) => "int4_sym",
        (WeightFormat::Int4, false) => "int4_asym",
    };
    Some(NncfRecord {
        mode,
        ratio: if int8 { 1.0 } else { quant.ratio },
        group_size: if int8 || quant.group_size == 0 {
            -1
        } else {
            quant.group_size as i64
        },
        all_layers: opts.all_layers,
        backup_mode: if int8 {
            "int8_asym"
        } else {
            opts.backup.unwrap_or(BackupPrecision::Int8Asym).nncf_name()
        },
        group_size_fallback: opts.group_size_fallback.nncf_name(),
        awq: !int8 && opts.awq,
        dataset,
        sensitivity_metric: quant.sensitivity_metric.name(),
        scale_estimation: false,
    })
}
