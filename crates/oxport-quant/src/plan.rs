//! Plan first, then execute: every checkpoint tensor gets a [`Scheme`] and a reason before any heavy work.
//!
//! [`plan_openvino`] reproduces what `optimum-cli export openvino` + NNCF 3.4 decide (shared/docs/openvino-ir.md
//! §5, §6, §9); [`plan_onnx`] what the onnxruntime-genai builder decides (shared/docs/onnx-genai.md §1.8, §2.2).

use oxport_hf::{Checkpoint, DType, Role, TensorInfo};

use crate::error::QuantError;
use crate::nbits::{NBitsParams, ScaleDtype};
use crate::nncf::NncfMode;
use crate::rows::Rows;
use crate::sensitivity::int8_asym_error_rows;

mod display;

/// How one tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Scheme {
    /// Plain f32.
    F32,
    /// Plain IEEE f16 (round-to-nearest-even, see [`crate::fp16`]).
    F16,
    /// Kept in the checkpoint's own dtype (NNCF group-size fallback `ignore`: "kept with original precision").
    Keep,
    /// ONNX Runtime `MatMulNBits`.
    NBits(NBitsParams),
    /// NNCF weight compression; `group_size` `None` = per output channel.
    Nncf {
        mode: NncfMode,
        group_size: Option<usize>,
    },
}

/// One tensor's decision.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanEntry {
    pub role: Role,
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: Scheme,
    /// Why this scheme (the rule that fired), for `--dry-run`.
    pub reason: String,
    /// NNCF "ratio-defining" weight (a mixed-precision candidate).
    pub ratio_defining: bool,
    /// Data-free sensitivity score used for ranking (NNCF `weight_quantization_error`), when computed.
    pub sensitivity: Option<f64>,
}

impl PlanEntry {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One row of the NNCF-style statistics table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PrecisionStats {
    /// e.g. `int4_sym, group size 128`, `int8_asym, per-channel`, `float`.
    pub label: String,
    pub params: usize,
    pub layers: usize,
    pub ratio_defining_params: usize,
    pub ratio_defining_layers: usize,
}

/// Statistics over the weight layers (MatMul weights and the embedding), as NNCF prints them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PlanStats {
    pub total_params: usize,
    pub total_layers: usize,
    pub ratio_defining_params: usize,
    pub ratio_defining_layers: usize,
    /// In NNCF's order: float, then decreasing bit width, then increasing group size.
    pub rows: Vec<PrecisionStats>,
}

/// The whole plan, entries in the checkpoint's canonical order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuantPlan {
    pub entries: Vec<PlanEntry>,
    pub stats: PlanStats,
}

impl QuantPlan {
    /// The entry for `role`.
    pub fn entry(&self, role: Role) -> Option<&PlanEntry> {
        self.entries.iter().find(|e| e.role == role)
    }
}

/// `--weight-format` of `optimum-cli export openvino`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OvWeightFormat {
    Fp32,
    Fp16,
    Int8,
    Int4,
}

/// NNCF `BackupMode`: what non-int4 weights get in an int4 export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backup {
    /// Keep in the original precision.
    None,
    Int8Sym,
    Int8Asym,
}

/// NNCF `GroupSizeFallbackMode` for K not divisible by the group size (shared/docs/openvino-ir.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// `InvalidGroupSizeError` naming the weights selected for int4.
    Error,
    /// Drop such weights from the candidates; they keep the checkpoint precision.
    Ignore,
    /// Use the largest power of two dividing K if ≥ `min_adjusted_group_size`, else the backup.
    Adjust,
}

/// Options mirroring `optimum-cli export openvino` / NNCF `compress_weights`.
///
/// `group_size` 0 means per-channel int4 (optimum's `--group-size -1`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenVinoPlanOptions {
    pub weight_format: OvWeightFormat,
    /// 128 by default; for int4 only.
    pub group_size: usize,
    /// Fraction of ratio-defining parameters in int4 (1.0 default).
    pub ratio: f64,
    /// int4_sym instead of int4_asym.
    pub sym: bool,
    /// Embedding and last MatMul become candidates too.
    pub all_layers: bool,
    pub backup_precision: Backup,
    pub group_size_fallback: Fallback,
    /// NNCF `min_adjusted_group_size` (32).
    pub min_adjusted_group_size: usize,
}

impl Default for OpenVinoPlanOptions {
    fn default() -> Self {
        OpenVinoPlanOptions {
            weight_format: OvWeightFormat::Int4,
            group_size: 128,
            ratio: 1.0,
            sym: false,
            all_layers: false,
            backup_precision: Backup::Int8Asym,
            group_size_fallback: Fallback::Error,
            min_adjusted_group_size: 32,
        }
    }
}

/// `-p` of the onnxruntime-genai builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Int4,
    Fp16,
    Fp32,
}

/// Options mirroring the onnxruntime-genai builder's int4 path.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OnnxPlanOptions {
    pub precision: Precision,
    /// MatMulNBits block size (32 default).
    pub block_size: usize,
    pub symmetric: bool,
    /// F32 for cpu, F16 for cuda.
    pub scale_dtype: ScaleDtype,
    /// lm_head as 8-bit MatMulNBits instead of 4-bit (builder `matmul_mixed_precision=last_matmul:int8`).
    pub int8_lm_head: bool,
    /// Fraction of ratio-defining parameters in 4-bit, the rest 8-bit MatMulNBits, ranked like NNCF.
    pub ratio: Option<f64>,
}

impl Default for OnnxPlanOptions {
    fn default() -> Self {
        OnnxPlanOptions {
            precision: Precision::Int4,
            block_size: 32,
            symmetric: true,
            scale_dtype: ScaleDtype::F32,
            int8_lm_head: false,
            ratio: None,
        }
    }
}

/// Told about the slow part of planning (reading candidate weights for the sensitivity ranking).
pub trait PlanProgress: Sync {
    /// `done` of `total` candidate weights scored; `name` is the one just finished.
    fn scored(&self, name: &str, done: usize, total: usize);
}

/// A [`PlanProgress`] that ignores every report.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl PlanProgress for NoProgress {
    fn scored(&self, _: &str, _: usize, _: usize) {}
}

fn entry(t: &TensorInfo, scheme: Scheme, reason: impl Into<String>) -> PlanEntry {
    PlanEntry {
        role: t.role,
        name: t.name.clone(),
        shape: t.shape.clone(),
        scheme,
        reason: reason.into(),
        ratio_defining: false,
        sensitivity: None,
    }
}

/// A weight NNCF compresses: MatMul weights and the embedding (Gather) table.
fn is_weight(role: Role) -> bool {
    role.is_matmul() || role == Role::Embedding
}

/// Plan an OpenVINO IR export.
pub fn plan_openvino(
    ckpt: &Checkpoint,
    opts: &OpenVinoPlanOptions,
) -> Result<QuantPlan, QuantError> {
    plan_openvino_with_progress(ckpt, opts, &NoProgress)
}

/// [`plan_openvino`], reporting the sensitivity scoring to `progress`.
pub fn plan_openvino_with_progress(
    ckpt: &Checkpoint,
    opts: &OpenVinoPlanOptions,
    progress: &dyn PlanProgress,
) -> Result<QuantPlan, QuantError> {
    let tensors = ckpt.tensors();
    let mut entries: Vec<PlanEntry> = match opts.weight_format {
        OvWeightFormat::Fp32 => tensors
            .iter()
            .map(|t| entry(t, Scheme::F32, "--weight-format fp32: every constant f32"))
            .collect(),
        // openvino-ir.md §5.1: every float constant, gammas included, is f16 + a decompression Convert.
        OvWeightFormat::Fp16 => tensors
            .iter()
            .map(|t| {
                entry(
                    t,
                    Scheme::F16,
                    "--weight-format fp16: every float constant f16 (openvino-ir.md §5.1)",
                )
            })
            .collect(),
        // openvino-ir.md §5.2: all weights, embedding and lm_head included, int8 per output channel.
        OvWeightFormat::Int8 => {
            let mode = if opts.sym {
                NncfMode::Int8Sym
            } else {
                NncfMode::Int8Asym
            };
            tensors
                .iter()
                .map(|t| {
                    if is_weight(t.role) {
                        let mut e = entry(
                            t,
                            Scheme::Nncf {
                                mode,
                                group_size: None,
                            },
                            format!("--weight-format int8: {mode} per-channel for every weight"),
                        );
                        e.ratio_defining = true;
                        e
                    } else {
                        entry(
                            t,
                            Scheme::F32,
                            "norm gamma: plain f32 constant in int8/int4 IRs",
                        )
                    }
                })
                .collect()
        }
        OvWeightFormat::Int4 => plan_int4(ckpt, opts, progress)?,
    };
    // Keep the checkpoint's canonical order.
    entries.sort_by_key(|e| tensors.iter().position(|t| t.role == e.role));
    Ok(QuantPlan::new(entries))
}

/// NNCF `WeightCompression` for an int4 mode, data-free (nncf 3.4 `algorithm.py`:
/// `get_weight_compression_parameters`, `_get_ratio_defining_params`, `_handle_{ignore,adjust}_group_size_fallback`,
/// `apply_mixed_precision`, `validate_group_size`; `mixed_precision.py::DataFreeCriterion`).
fn plan_int4(
    ckpt: &Checkpoint,
    opts: &OpenVinoPlanOptions,
    progress: &dyn PlanProgress,
) -> Result<Vec<PlanEntry>, QuantError> {
    if !(opts.ratio > 0.0 && opts.ratio <= 1.0) {
        return Err(QuantError::Options(format!(
            "ratio must be in (0, 1], not {}",
            opts.ratio
        )));
    }
    let primary_mode = if opts.sym {
        NncfMode::Int4Sym
    } else {
        NncfMode::Int4Asym
    };
    let group = (opts.group_size != 0).then_some(opts.group_size);
    let backup = |t: &TensorInfo, why: &str| -> PlanEntry {
        match opts.backup_precision {
            Backup::Int8Asym => entry(
                t,
                Scheme::Nncf {
                    mode: NncfMode::Int8Asym,
                    group_size: None,
                },
                format!("{why}: backup int8_asym"),
            ),
            Backup::Int8Sym => entry(
                t,
                Scheme::Nncf {
                    mode: NncfMode::Int8Sym,
                    group_size: None,
                },
                format!("{why}: backup int8_sym"),
            ),
            Backup::None => entry(
                t,
                Scheme::Keep,
                format!("{why}: backup none, original precision"),
            ),
        }
    };

    let tensors = ckpt.tensors();
    let mut out = Vec::new();
    // Graph order of the weight constants: embedding (Gather), the decoder MatMuls, lm_head.
    let matmuls: Vec<&TensorInfo> = tensors.iter().filter(|t| t.role.is_matmul()).collect();
    let mut candidates: Vec<&TensorInfo> = Vec::new();
    for t in tensors {
        if !is_weight(t.role) {
            out.push(entry(
                t,
                Scheme::F32,
                "norm gamma: plain f32 constant in int8/int4 IRs",
            ));
        }
    }
    // `_get_ratio_defining_params`: MatMul weights minus the last MatMul unless all_layers; embeddings only
    // with all_layers (appended after the MatMuls).
    // With tied embeddings lm_head's MatMul shares the embedding constant: NNCF skips it as a duplicate weight
    // (`is_last_layer_skipped`) and then keeps every decoder MatMul ratio-defining.
    let last_matmul = if ckpt.config().tie_word_embeddings {
        None
    } else {
        matmuls.last().map(|t| t.role)
    };
    for t in &matmuls {
        if opts.all_layers || Some(t.role) != last_matmul {
            candidates.push(t);
        } else {
            out.push(backup(
                t,
                "last MatMul (lm_head) is not ratio-defining without --all-layers",
            ));
        }
    }
    if let Some(emb) = tensors.iter().find(|t| t.role == Role::Embedding) {
        if opts.all_layers {
            candidates.push(emb);
        } else {
            out.push(backup(
                emb,
                "embedding is not ratio-defining without --all-layers",
            ));
        }
    }

    // Group-size fallbacks happen before ranking (openvino-ir.md §9).
    let mut group_of: Vec<Option<usize>> = Vec::with_capacity(candidates.len());
    let mut notes: Vec<String> = Vec::with_capacity(candidates.len());
    let mut kept = Vec::with_capacity(candidates.len());
    for t in candidates {
        let k = t.shape[1];
        match group {
            Some(g) if !k.is_multiple_of(g) => match opts.group_size_fallback {
                Fallback::Error => {
                    kept.push(t);
                    group_of.push(Some(g));
                    notes.push(String::new());
                }
                Fallback::Ignore => out.push(entry(
                    t,
                    Scheme::Keep,
                    format!(
                        "K={k} not divisible by group size {g}: --group-size-fallback ignore keeps it in the \
                         original precision and out of the ratio"
                    ),
                )),
                Fallback::Adjust => {
                    // The largest power of two dividing K.
                    let adjusted = k & k.wrapping_neg();
                    if adjusted >= opts.min_adjusted_group_size {
                        kept.push(t);
                        group_of.push(Some(adjusted));
                        notes.push(format!(", group size adjusted {g} -> {adjusted} (K={k})"));
                    } else {
                        out.push(backup(
                            t,
                            &format!(
                                "K={k} not divisible by group size {g} and adjusted group {adjusted} < {}",
                                opts.min_adjusted_group_size
                            ),
                        ));
                    }
                }
            },
            _ => {
                kept.push(t);
                group_of.push(group);
                notes.push(String::new());
            }
        }
    }
    let candidates = kept;

    // Mixed precision: only when ratio < 1 (`apply_mixed_precision`).
    let mut primary = vec![true; candidates.len()];
    let mut scores: Vec<Option<f64>> = vec![None; candidates.len()];
    let mut rank_note: Vec<String> = vec![String::new(); candidates.len()];
    if opts.ratio < 1.0 && !candidates.is_empty() {
        let mut s = Vec::with_capacity(candidates.len());
        for (i, t) in candidates.iter().enumerate() {
            let err = candidate_error(ckpt, t)?;
            // score = 1 / (error + eps), eps = finfo(weight dtype).eps; the IR keeps the checkpoint dtype.
            let score = 1.0 / (err as f64 + dtype_eps(t.dtype));
            s.push(score);
            scores[i] = Some(score);
            progress.scored(&t.name, i + 1, candidates.len());
        }
        let chosen = select_by_ratio(
            &s,
            &candidates.iter().map(|t| t.numel()).collect::<Vec<_>>(),
            opts.ratio,
        );
        for (rank, (i, is_primary)) in chosen.iter().enumerate() {
            primary[*i] = *is_primary;
            rank_note[*i] = format!(
                "sensitivity rank {rank} (int8 error {:.4e})",
                1.0 / s[*i] - dtype_eps(candidates[*i].dtype)
            );
        }
    }

    let mut failed = Vec::new();
    for (i, t) in candidates.iter().enumerate() {
        let ratio_note = if rank_note[i].is_empty() {
            String::new()
        } else {
            format!(", {}", rank_note[i])
        };
        let mut e = if primary[i] {
            let g = group_of[i];
            if let Some(g) = g
                && !t.shape[1].is_multiple_of(g)
            {
                failed.push((t.name.clone(), t.shape[1]));
            }
            let gs = g.map_or("per-channel".to_string(), |g| format!("group {g}"));
            entry(
                t,
                Scheme::Nncf {
                    mode: primary_mode,
                    group_size: g,
                },
                format!(
                    "ratio-defining, {primary_mode} {gs}{}{ratio_note}",
                    notes[i]
                ),
            )
        } else {
            let mut e = backup(t, "ratio-defining, not selected by --ratio");
            e.reason.push_str(&ratio_note);
            e
        };
        e.ratio_defining = true;
        e.sensitivity = scores[i];
        out.push(e);
    }
    // `validate_group_size`: after the assignment, only weights that got int4.
    if !failed.is_empty() {
        return Err(QuantError::InvalidGroupSizes {
            group_size: opts.group_size,
            failed,
        });
    }
    Ok(out)
}

/// NNCF's data-free error of one candidate, read straight from the checkpoint's mapped bytes (one row at a
/// time); the mapped pages are released afterwards so planning a large model stays at a small RSS.
fn candidate_error(ckpt: &Checkpoint, t: &TensorInfo) -> Result<f32, QuantError> {
    let view = ckpt
        .view(t.role)
        .ok_or_else(|| QuantError::Options(format!("{}: not in the checkpoint", t.name)))?;
    let rows = Rows::Encoded {
        bytes: view.bytes,
        dtype: view.info.dtype,
    };
    let err = int8_asym_error_rows(rows, t.shape[0], t.shape[1]).map_err(|e| e.for_tensor(&t.name));
    ckpt.release(t.role);
    err
}

/// `np.finfo(dtype).eps` of the weight as NNCF sees it.
fn dtype_eps(d: DType) -> f64 {
    match d {
        DType::BF16 => 2f64.powi(-7),
        DType::F16 => 2f64.powi(-10),
        DType::F32 => f32::EPSILON as f64,
    }
}

/// `MixedPrecisionCriterion.apply`: walk the candidates by ascending score (stable: graph order on ties);
/// stop at the first one that would bring the primary share to `ratio` or above (`break`, not `continue`).
/// Returns `(candidate index, gets primary)` in rank order.
pub fn select_by_ratio(scores: &[f64], numels: &[usize], ratio: f64) -> Vec<(usize, bool)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let total: usize = numels.iter().sum();
    let mut in_primary = 0usize;
    let mut open = true;
    order
        .into_iter()
        .map(|i| {
            if open && ((in_primary + numels[i]) as f64 / total as f64) < ratio {
                in_primary += numels[i];
                (i, true)
            } else {
                open = false;
                (i, false)
            }
        })
        .collect()
}

/// Plan an ONNX (onnxruntime-genai layout) export.
///
/// The builder quantizes every MatMul (lm_head included) with `MatMulNBits` and keeps the embedding and the
/// norms in the graph's float dtype: f32 on cpu (f32 scales), f16 on cuda (f16 scales)
/// (shared/docs/onnx-genai.md §1.8, §2.2). With tied embeddings the builder still emits an lm_head MatMul,
/// so the plan has an `LmHead` entry that reads the embedding.
pub fn plan_onnx(ckpt: &Checkpoint, opts: &OnnxPlanOptions) -> Result<QuantPlan, QuantError> {
    let c = ckpt.config();
    let float = match (opts.precision, opts.scale_dtype) {
        (Precision::Fp32, _) => Scheme::F32,
        (Precision::Fp16, _) => Scheme::F16,
        (Precision::Int4, ScaleDtype::F32) => Scheme::F32,
        (Precision::Int4, ScaleDtype::F16) => Scheme::F16,
    };
    let nbits = |bits: u32| NBitsParams {
        bits,
        block_size: opts.block_size,
        symmetric: opts.symmetric,
        scale_dtype: opts.scale_dtype,
    };
    if opts.precision == Precision::Int4 {
        nbits(4).validate().map_err(QuantError::Options)?;
    }
    let mut infos: Vec<TensorInfo> = ckpt.tensors().to_vec();
    if c.tie_word_embeddings && !infos.iter().any(|t| t.role == Role::LmHead) {
        let emb = ckpt
            .info(Role::Embedding)
            .expect("every checkpoint has an embedding");
        infos.push(TensorInfo {
            name: Role::LmHead.name(),
            role: Role::LmHead,
            ..emb.clone()
        });
    }
    let mut entries = Vec::with_capacity(infos.len());
    let mut candidates = Vec::new();
    for t in &infos {
        let e = match (t.role.is_matmul(), opts.precision) {
            (false, _) => entry(
                t,
                float,
                "embedding and norms stay in the graph dtype (op_types_to_quantize=MatMul)",
            ),
            (true, Precision::Int4) if t.role == Role::LmHead && opts.int8_lm_head => entry(
                t,
                Scheme::NBits(nbits(8)),
                "--int8-lm-head (matmul_mixed_precision=last_matmul:int8)",
            ),
            (true, Precision::Int4) if t.role == Role::LmHead || opts.ratio.is_none() => entry(
                t,
                Scheme::NBits(nbits(4)),
                "int4: every MatMul weight (builder -p int4)",
            ),
            (true, Precision::Int4) => {
                candidates.push(entries.len());
                entry(t, Scheme::NBits(nbits(4)), "")
            }
            (true, _) => entry(t, float, "float precision"),
        };
        entries.push(e);
    }
    if let (Some(ratio), false) = (opts.ratio, candidates.is_empty()) {
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(QuantError::Options(format!(
                "ratio must be in (0, 1], not {ratio}"
            )));
        }
        // The same data-free ranking NNCF uses (int8 asym per-channel error), deciding 4-bit vs 8-bit NBits.
        let mut scores = Vec::with_capacity(candidates.len());
        for &i in &candidates {
            let t = &infos[i];
            let err = candidate_error(ckpt, t)?;
            scores.push(1.0 / (err as f64 + dtype_eps(t.dtype)));
        }
        let numels: Vec<usize> = candidates.iter().map(|&i| infos[i].numel()).collect();
        let chosen = if ratio >= 1.0 {
            (0..candidates.len()).map(|i| (i, true)).collect()
        } else {
            select_by_ratio(&scores, &numels, ratio)
        };
        for (rank, (ci, four)) in chosen.into_iter().enumerate() {
            let e = &mut entries[candidates[ci]];
            e.ratio_defining = true;
            e.sensitivity = Some(scores[ci]);
            e.scheme = Scheme::NBits(nbits(if four { 4 } else { 8 }));
            e.reason = format!(
                "ratio-defining, sensitivity rank {rank}: {}-bit MatMulNBits (--ratio {ratio})",
                if four { 4 } else { 8 }
            );
        }
    }
    Ok(QuantPlan::new(entries))
}
