//! Which compression each weight gets, decided before any weight is written: optimum-cli's defaults and NNCF's
//! mixed-precision rule (nncf/quantization/algorithms/weight_compression/{algorithm.py,mixed_precision.py};
//! measured in shared/docs/openvino-ir.md §6 and §9).
//!
//! Like `compress`, this is the exporter's own copy until `oxport_quant::plan::plan_openvino` lands.

use oxport_hf::{Checkpoint, Role};

use crate::compress;
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
        }
    }
}

/// How one weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// f32 constant, no decompression.
    F32,
    /// f16 constant + Convert(f32) marked `decompression`.
    F16,
    /// The checkpoint's own dtype (bf16/f16 + decompression Convert; f32 as is): NNCF's "kept in original precision".
    Original,
    Int8Asym,
    Int8Sym,
    Int4Sym {
        group: usize,
    },
    Int4Asym {
        group: usize,
    },
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scheme::F32 => f.write_str("f32"),
            Scheme::F16 => f.write_str("f16"),
            Scheme::Original => f.write_str("original precision"),
            Scheme::Int8Asym => f.write_str("int8_asym per-channel"),
            Scheme::Int8Sym => f.write_str("int8_sym per-channel"),
            Scheme::Int4Sym { group } => write!(f, "int4_sym group {group}"),
            Scheme::Int4Asym { group } => write!(f, "int4_asym group {group}"),
        }
    }
}

/// One weight of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanEntry {
    pub role: Role,
    /// `[n, k]` = `[out, in]` (`[vocab, hidden]` for the embedding).
    pub n: usize,
    pub k: usize,
    pub scheme: Scheme,
    /// int8_asym max-row MSE, for the ratio-defining weights of a mixed-precision plan.
    pub int8_error: Option<f32>,
}

/// What NNCF records in the model's rt_info (`nncf/weight_compression`).
#[derive(Clone, Debug, PartialEq)]
pub struct NncfRecord {
    pub mode: &'static str,
    pub ratio: f64,
    pub group_size: i64,
    pub all_layers: bool,
    pub backup_mode: &'static str,
    pub group_size_fallback: &'static str,
}

/// The whole plan, in the order weights are written (embedding, per layer qkv/o/gate_up/down, lm_head).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub weight_format: WeightFormat,
    pub entries: Vec<PlanEntry>,
    pub nncf: Option<NncfRecord>,
}

impl Plan {
    pub fn scheme(&self, role: Role) -> Option<Scheme> {
        self.entries
            .iter()
            .find(|e| e.role == role)
            .map(|e| e.scheme)
    }

    /// Human-readable plan (`--dry-run`): one line per weight plus the int4 share of the ratio-defining weights.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            let err = e
                .int8_error
                .map(|x| format!("  (int8 error {x:.3e})"))
                .unwrap_or_default();
            s.push_str(&format!(
                "{:<20} [{:>6}, {:>6}]  {}{err}\n",
                e.role.to_string(),
                e.n,
                e.k,
                e.scheme
            ));
        }
        let numel = |f: &dyn Fn(&PlanEntry) -> bool| -> usize {
            self.entries
                .iter()
                .filter(|e| f(e))
                .map(|e| e.n * e.k)
                .sum()
        };
        let total = numel(&|_| true);
        let four = numel(&|e| matches!(e.scheme, Scheme::Int4Sym { .. } | Scheme::Int4Asym { .. }));
        if total > 0 {
            s.push_str(&format!(
                "4-bit: {four} of {total} weight parameters ({:.1}%)\n",
                100.0 * four as f64 / total as f64
            ));
        }
        s
    }
}

fn weight_roles(ckpt: &Checkpoint) -> Vec<Role> {
    Role::all_for(ckpt.config())
        .into_iter()
        .filter(|r| *r == Role::Embedding || r.is_matmul())
        .collect()
}

fn is_four_bit(s: Scheme) -> bool {
    matches!(s, Scheme::Int4Sym { .. } | Scheme::Int4Asym { .. })
}

/// Build the plan for `ckpt`. Reads the ratio-defining weights once (one at a time) when `ratio < 1`.
pub fn plan(ckpt: &Checkpoint, opts: &CompressionOptions) -> Result<Plan> {
    let roles = weight_roles(ckpt);
    let shape = |role: Role| -> Result<(usize, usize)> {
        let info = ckpt
            .info(role)
            .ok_or_else(|| Error::MissingTensor(role.to_string()))?;
        Ok((info.shape[0], info.shape[1]))
    };
    let uniform = |scheme: Scheme| -> Result<Vec<PlanEntry>> {
        roles
            .iter()
            .map(|&role| {
                let (n, k) = shape(role)?;
                Ok(PlanEntry {
                    role,
                    n,
                    k,
                    scheme,
                    int8_error: None,
                })
            })
            .collect()
    };
    let reject = |flag: &str| -> Result<()> {
        Err(Error::Options(format!(
            "{flag} applies to --weight-format int4 only (got {})",
            opts.weight_format.name()
        )))
    };
    match opts.weight_format {
        WeightFormat::Fp32 | WeightFormat::Fp16 | WeightFormat::Int8 => {
            if opts.ratio.is_some_and(|r| r != 1.0) {
                reject("--ratio")?;
            }
            if opts.all_layers {
                // optimum-cli passes all_layers to NNCF, where it only changes mixed precision; harmless here.
            }
            if opts.backup.is_some() {
                reject("--backup-precision")?;
            }
            if opts.weight_format == WeightFormat::Int8 && opts.group_size.is_some_and(|g| g != -1)
            {
                return Err(Error::Options(
                    "--group-size: int8 compression is per-channel (-1) only".into(),
                ));
            }
        }
        WeightFormat::Int4 => {}
    }
    match opts.weight_format {
        WeightFormat::Fp32 => {
            return Ok(Plan {
                weight_format: opts.weight_format,
                entries: uniform(Scheme::F32)?,
                nncf: None,
            });
        }
        WeightFormat::Fp16 => {
            return Ok(Plan {
                weight_format: opts.weight_format,
                entries: uniform(Scheme::F16)?,
                nncf: None,
            });
        }
        WeightFormat::Int8 => {
            let (scheme, mode) = if opts.sym {
                (Scheme::Int8Sym, "int8_sym")
            } else {
                (Scheme::Int8Asym, "int8_asym")
            };
            return Ok(Plan {
                weight_format: opts.weight_format,
                entries: uniform(scheme)?,
                nncf: Some(NncfRecord {
                    mode,
                    ratio: 1.0,
                    group_size: -1,
                    all_layers: opts.all_layers,
                    backup_mode: "int8_asym",
                    group_size_fallback: opts.group_size_fallback.nncf_name(),
                }),
            });
        }
        WeightFormat::Int4 => {}
    }

    let group_size = opts.group_size.unwrap_or(128);
    if group_size <= 0 || group_size % 2 != 0 {
        return Err(Error::Options(format!(
            "--group-size {group_size}: oxport supports positive even group sizes for int4 (per-channel int4, -1, is not implemented)"
        )));
    }
    let group = group_size as usize;
    let ratio = opts.ratio.unwrap_or(1.0);
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(Error::Options(format!("--ratio {ratio} must be in (0, 1]")));
    }
    let backup = opts.backup.unwrap_or(BackupPrecision::Int8Asym);
    let backup_scheme = match backup {
        BackupPrecision::None => Scheme::Original,
        BackupPrecision::Int8Sym => Scheme::Int8Sym,
        BackupPrecision::Int8Asym => Scheme::Int8Asym,
    };
    let four = |g: usize| {
        if opts.sym {
            Scheme::Int4Sym { group: g }
        } else {
            Scheme::Int4Asym { group: g }
        }
    };
    let last = roles.len() - 1;
    let mut entries = Vec::with_capacity(roles.len());
    for (i, &role) in roles.iter().enumerate() {
        let (n, k) = shape(role)?;
        entries.push(PlanEntry {
            role,
            n,
            k,
            scheme: backup_scheme,
            int8_error: None,
        });
        let _ = i;
    }
    // Ratio-defining weights: every MatMul except the last one (lm_head), and no embedding, unless --all-layers.
    let mut candidates: Vec<usize> = (0..entries.len())
        .filter(|&i| opts.all_layers || (entries[i].role != Role::Embedding && i != last))
        .collect();
    // Group size fallback before ranking (NNCF 3.4 `_handle_group_size_fallback`): ignore drops the weight to its
    // original precision, adjust picks the largest power of two dividing K (if ≥ min_adjusted_group_size = 32).
    let mut group_of = vec![group; entries.len()];
    match opts.group_size_fallback {
        GroupSizeFallback::Error => {}
        GroupSizeFallback::Ignore => candidates.retain(|&i| {
            let ok = entries[i].k % group == 0;
            if !ok {
                entries[i].scheme = Scheme::Original;
            }
            ok
        }),
        GroupSizeFallback::Adjust => candidates.retain(|&i| {
            let k = entries[i].k;
            if k % group == 0 {
                return true;
            }
            let adjusted = k & k.wrapping_neg();
            group_of[i] = adjusted;
            adjusted >= 32
        }),
    }
    if ratio >= 1.0 {
        for &i in &candidates {
            entries[i].scheme = four(group_of[i]);
        }
    } else {
        for &i in &candidates {
            let e = &entries[i];
            let w = ckpt.read_f32(e.role)?;
            let err = compress::int8_asym_error(&w, e.n, e.k);
            ckpt.release(e.role);
            entries[i].int8_error = Some(err);
        }
        // score = 1 / (error + eps), ascending, stable: the largest backup error goes first (mixed_precision.py).
        let mut ranked = candidates.clone();
        ranked.sort_by(|&a, &b| {
            let sa = 1.0 / (entries[a].int8_error.unwrap() + f32::EPSILON);
            let sb = 1.0 / (entries[b].int8_error.unwrap() + f32::EPSILON);
            sa.total_cmp(&sb)
        });
        let total: usize = candidates
            .iter()
            .map(|&i| entries[i].n * entries[i].k)
            .sum();
        let mut n4 = 0usize;
        for &i in &ranked {
            let numel = entries[i].n * entries[i].k;
            if (n4 + numel) as f64 / total as f64 >= ratio {
                break;
            }
            n4 += numel;
            entries[i].scheme = four(group_of[i]);
        }
    }
    // Group-size validation after the assignment, on the 4-bit weights only (algorithm.py).
    let failed: Vec<String> = entries
        .iter()
        .filter(|e| {
            is_four_bit(e.scheme)
                && match e.scheme {
                    Scheme::Int4Sym { group } | Scheme::Int4Asym { group } => e.k % group != 0,
                    _ => false,
                }
        })
        .map(|e| format!("{} (channel size {})", e.role.name(), e.k))
        .collect();
    if !failed.is_empty() {
        return Err(Error::InvalidGroupSize {
            group_size: group,
            failed,
        });
    }
    Ok(Plan {
        weight_format: WeightFormat::Int4,
        entries,
        nncf: Some(NncfRecord {
            mode: if opts.sym { "int4_sym" } else { "int4_asym" },
            ratio,
            group_size,
            all_layers: opts.all_layers,
            backup_mode: backup.nncf_name(),
            group_size_fallback: opts.group_size_fallback.nncf_name(),
        }),
    })
}
