//! `optimum-cli export openvino` / NNCF 3.4 decisions (docs/openvino-ir.md §5, §6, §9).

use oxport_arch::{Model, Role, Tensor};

use super::mixed::{candidate_score, dtype_eps, select_by_ratio};
use super::{
    Backup, Fallback, OnScored, OpenVinoPlanOptions, OvWeightFormat, PlanEntry, QuantPlan, Scheme,
    entry, is_weight,
};
use crate::error::QuantError;
use crate::nncf::NncfMode;

/// Plan an OpenVINO IR export, telling `on_scored` about the sensitivity scoring (the slow part, with `--ratio`
/// below 1).
pub fn plan_openvino(
    ckpt: &Model,
    opts: &OpenVinoPlanOptions,
    on_scored: OnScored<'_>,
) -> Result<QuantPlan, QuantError> {
    let tensors = ckpt.tensors();
    let mut entries: Vec<PlanEntry> = match opts.weight_format {
        OvWeightFormat::Fp32 => tensors
            .iter()
            .map(|t| entry(t, Scheme::F32, "--weight-format fp32: every constant f32"))
            .collect(),
        // docs/openvino-ir.md §5.1: every float constant, gammas included, is f16 + a decompression Convert.
        OvWeightFormat::Fp16 => tensors
            .iter()
            .map(|t| {
                entry(
                    t,
                    Scheme::F16,
                    "--weight-format fp16: every float constant f16 (docs/openvino-ir.md §5.1)",
                )
            })
            .collect(),
        // docs/openvino-ir.md §5.2: all weights, embedding and lm_head included, int8 per output channel.
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
        OvWeightFormat::Int4 => plan_int4(ckpt, opts, on_scored)?,
    };
    // Keep the checkpoint's canonical order.
    entries.sort_by_key(|e| tensors.iter().position(|t| t.role == e.role));
    Ok(QuantPlan::new(entries))
}

/// NNCF `WeightCompression` for an int4 mode, data-free (nncf 3.4 `algorithm.py`:
/// `get_weight_compression_parameters`, `_get_ratio_defining_params`, `_handle_{ignore,adjust}_group_size_fallback`,
/// `apply_mixed_precision`, `validate_group_size`; `mixed_precision.py::DataFreeCriterion`).
fn plan_int4(
    ckpt: &Model,
    opts: &OpenVinoPlanOptions,
    on_scored: OnScored<'_>,
) -> Result<Vec<PlanEntry>, QuantError> {
    if !(opts.ratio > 0.0 && opts.ratio <= 1.0) {
        return Err(QuantError::Options(format!(
            "ratio must be in (0, 1], not {}",
            opts.ratio
        )));
    }
    let mut out = Vec::new();
    let candidates = ratio_defining(ckpt, opts, &mut out);
    let candidates = group_size_fallback(candidates, opts, &mut out);
    let ranking = rank(ckpt, opts, &candidates, on_scored)?;
    let primary_mode = if opts.sym {
        NncfMode::Int4Sym
    } else {
        NncfMode::Int4Asym
    };
    let mut failed = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let ratio_note = if ranking.notes[i].is_empty() {
            String::new()
        } else {
            format!(", {}", ranking.notes[i])
        };
        let mut e = if ranking.primary[i] {
            if let Some(g) = c.group
                && !c.t.shape[1].is_multiple_of(g)
            {
                failed.push((c.t.name.clone(), c.t.shape[1]));
            }
            let gs = c
                .group
                .map_or("per-channel".to_string(), |g| format!("group {g}"));
            entry(
                c.t,
                Scheme::Nncf {
                    mode: primary_mode,
                    group_size: c.group,
                },
                format!("ratio-defining, {primary_mode} {gs}{}{ratio_note}", c.note),
            )
        } else {
            let mut e = backup(opts, c.t, "ratio-defining, not selected by --ratio");
            e.reason.push_str(&ratio_note);
            e
        };
        e.ratio_defining = true;
        e.sensitivity = ranking.scores[i];
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

/// The backup precision's entry for `t` (`--backup-precision`), with `why` as the reason.
fn backup(opts: &OpenVinoPlanOptions, t: &Tensor, why: &str) -> PlanEntry {
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
}

/// NNCF's `_get_ratio_defining_params`: MatMul weights minus the last MatMul unless all_layers; embeddings only with
/// all_layers (appended after the MatMuls). Everything else gets its entry in `out` now (norm gammas f32, the
/// non-candidates the backup precision).
fn ratio_defining<'a>(
    ckpt: &'a Model,
    opts: &OpenVinoPlanOptions,
    out: &mut Vec<PlanEntry>,
) -> Vec<&'a Tensor> {
    let tensors = ckpt.tensors();
    // Graph order of the weight constants: embedding (Gather), the decoder MatMuls, lm_head.
    let matmuls: Vec<&Tensor> = tensors.iter().filter(|t| t.role.is_matmul()).collect();
    let mut candidates: Vec<&Tensor> = Vec::new();
    for t in tensors {
        if !is_weight(t.role) {
            out.push(entry(
                t,
                Scheme::F32,
                "norm gamma: plain f32 constant in int8/int4 IRs",
            ));
        }
    }
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
                opts,
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
                opts,
                emb,
                "embedding is not ratio-defining without --all-layers",
            ));
        }
    }
    candidates
}

/// A ratio-defining weight after the group-size fallback: its group (`None` per-channel) and a note for the reason.
struct Candidate<'a> {
    t: &'a Tensor,
    group: Option<usize>,
    note: String,
}

/// The group-size fallbacks, before ranking (docs/openvino-ir.md §9): `error` keeps the weight (refused later if it
/// gets int4), `ignore` keeps it in the original precision and out of the ratio, `adjust` takes the largest power of
/// two dividing K if at least `min_adjusted_group_size`, else the backup.
fn group_size_fallback<'a>(
    candidates: Vec<&'a Tensor>,
    opts: &OpenVinoPlanOptions,
    out: &mut Vec<PlanEntry>,
) -> Vec<Candidate<'a>> {
    let group = (opts.group_size != 0).then_some(opts.group_size);
    let mut kept = Vec::with_capacity(candidates.len());
    for t in candidates {
        let k = t.shape[1];
        let keep = |group, note| Candidate { t, group, note };
        match group {
            Some(g) if !k.is_multiple_of(g) => match opts.group_size_fallback {
                Fallback::Error => kept.push(keep(Some(g), String::new())),
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
                        kept.push(keep(
                            Some(adjusted),
                            format!(", group size adjusted {g} -> {adjusted} (K={k})"),
                        ));
                    } else {
                        out.push(backup(
                            opts,
                            t,
                            &format!(
                                "K={k} not divisible by group size {g} and adjusted group {adjusted} < {}",
                                opts.min_adjusted_group_size
                            ),
                        ));
                    }
                }
            },
            _ => kept.push(keep(group, String::new())),
        }
    }
    kept
}

/// Mixed precision (`apply_mixed_precision`, only when ratio < 1): which candidates get the primary 4-bit mode,
/// their scores and the rank note of each.
struct Ranking {
    primary: Vec<bool>,
    scores: Vec<Option<f64>>,
    notes: Vec<String>,
}

fn rank(
    ckpt: &Model,
    opts: &OpenVinoPlanOptions,
    candidates: &[Candidate<'_>],
    on_scored: OnScored<'_>,
) -> Result<Ranking, QuantError> {
    let n = candidates.len();
    let mut ranking = Ranking {
        primary: vec![true; n],
        scores: vec![None; n],
        notes: vec![String::new(); n],
    };
    if opts.ratio >= 1.0 || candidates.is_empty() {
        return Ok(ranking);
    }
    let mut s = Vec::with_capacity(n);
    for (i, c) in candidates.iter().enumerate() {
        // score = 1 / (error + eps), eps = finfo(weight dtype).eps (the IR keeps the checkpoint dtype), times the
        // activation factor of a data-aware criterion.
        let activation = opts
            .activation
            .as_ref()
            .and_then(|a| a.activation_score(c.t.role, opts.sensitivity_metric));
        let score = candidate_score(ckpt, c.t, opts.sensitivity_metric, activation)?;
        s.push(score);
        ranking.scores[i] = Some(score);
        on_scored(&c.t.name, i + 1, n);
    }
    let numels: Vec<usize> = candidates.iter().map(|c| c.t.numel()).collect();
    for (rank, (i, is_primary)) in select_by_ratio(&s, &numels, opts.ratio)
        .into_iter()
        .enumerate()
    {
        ranking.primary[i] = is_primary;
        ranking.notes[i] = if opts.sensitivity_metric.is_data_aware() {
            format!(
                "sensitivity rank {rank} ({} score {:.4e})",
                opts.sensitivity_metric.name(),
                s[i]
            )
        } else {
            format!(
                "sensitivity rank {rank} (int8 error {:.4e})",
                1.0 / s[i] - dtype_eps(candidates[i].t.dtype)
            )
        };
    }
    Ok(ranking)
}
