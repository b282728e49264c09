//! Statistics and the `--dry-run` table: per tensor, then NNCF's "Statistics of the bitwidth distribution"
//! (nncf 3.4 `algorithm.py::get_bitwidth_distribution_str`: share of parameters and of layers per precision,
//! over all weights and over the ratio-defining ones).

use std::collections::BTreeMap;
use std::fmt;

use super::{PlanEntry, PlanStats, PrecisionStats, QuantPlan, Scheme, Transform, is_weight};

impl Scheme {
    /// Short label: `int4_sym, group size 128`, `int8_asym, per-channel`, `int4 MatMulNBits block 32 sym`,
    /// `f32`, `f16`, `original dtype`.
    pub fn label(&self) -> String {
        match self {
            Scheme::F32 => "f32".into(),
            Scheme::F16 => "f16".into(),
            Scheme::Keep => "original dtype".into(),
            Scheme::NBits(p) => format!(
                "int{} MatMulNBits block {} {} {}-scales",
                p.bits,
                p.block_size,
                if p.symmetric { "sym" } else { "asym" },
                match p.scale_dtype {
                    crate::ScaleDtype::F32 => "f32",
                    crate::ScaleDtype::F16 => "f16",
                }
            ),
            Scheme::Nncf {
                mode,
                group_size: Some(g),
            } => format!("{mode}, group size {g}"),
            Scheme::Nncf {
                mode,
                group_size: None,
            } => format!("{mode}, per-channel"),
        }
    }

    /// The row of NNCF's statistics table this scheme counts in (`float` for every uncompressed weight).
    pub fn stats_label(&self) -> String {
        match self {
            Scheme::F32 | Scheme::F16 | Scheme::Keep => "float".into(),
            other => other.label(),
        }
    }
}

impl PlanStats {
    /// Count the weights (MatMul weights and the embedding; norms are not weights for NNCF).
    pub fn of(entries: &[PlanEntry]) -> PlanStats {
        // NNCF's row order: float first, then by decreasing bit width, then by group size.
        let mut rows: BTreeMap<(u32, usize, String), PrecisionStats> = BTreeMap::new();
        let mut stats = PlanStats::default();
        for e in entries.iter().filter(|e| is_weight(e.role)) {
            let n = e.numel();
            stats.total_params += n;
            stats.total_layers += 1;
            let label = e.scheme.stats_label();
            let key = match e.scheme {
                Scheme::F32 | Scheme::F16 | Scheme::Keep => (0, 0, label.clone()),
                Scheme::NBits(p) => (16 - p.bits, p.block_size, label.clone()),
                Scheme::Nncf { mode, group_size } => (
                    16 - mode.bits(),
                    group_size.unwrap_or(usize::MAX),
                    label.clone(),
                ),
            };
            let row = rows.entry(key).or_insert_with(|| PrecisionStats {
                label,
                params: 0,
                layers: 0,
                ratio_defining_params: 0,
                ratio_defining_layers: 0,
            });
            row.params += n;
            row.layers += 1;
            if e.ratio_defining {
                stats.ratio_defining_params += n;
                stats.ratio_defining_layers += 1;
                row.ratio_defining_params += n;
                row.ratio_defining_layers += 1;
            }
        }
        stats.rows = rows.into_values().collect();
        stats
    }
}

impl QuantPlan {
    /// A plan with its statistics computed.
    pub fn new(entries: Vec<PlanEntry>) -> QuantPlan {
        let stats = PlanStats::of(&entries);
        QuantPlan { entries, stats }
    }
}

/// The transforms of `e` as the `--dry-run` table appends them to the reason: AWQ (and where its activation scale
/// goes in the OpenVINO graph) and scale estimation.
fn reason_and_transforms(e: &PlanEntry) -> String {
    let mut parts = vec![e.reason.clone()];
    match &e.transform {
        Transform::None => {}
        Transform::Awq {
            data_aware: false, ..
        } => parts.push(
            "+ data-free AWQ (input columns rescaled, inverse scale on the activation)".into(),
        ),
        Transform::Awq {
            data_aware: true,
            scales: None,
        } => parts
            .push("+ data-aware AWQ (scales searched on the calibration data at export)".into()),
        Transform::Awq {
            data_aware: true,
            scales: Some(sc),
        } => parts.push(format!(
            "+ data-aware AWQ ({} of {} input channels rescaled)",
            sc.weight.iter().filter(|v| **v != 1.0).count(),
            sc.weight.len()
        )),
    }
    if e.scale_estimation {
        parts.push("+ scale estimation".into());
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

/// `f"{percentage:.0f}% ({layers} / {total_layers})"` as NNCF's `_proportion_str` prints it.
fn proportion(params: usize, layers: usize, total_params: usize, total_layers: usize) -> String {
    let pct = if total_params == 0 {
        0.0
    } else {
        params as f64 / total_params as f64 * 100.0
    };
    format!("{pct:.0}% ({layers} / {total_layers})")
}

impl fmt::Display for QuantPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self
            .entries
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(4)
            .max(6);
        let shapes: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{:?}", e.shape))
            .collect();
        let shape_w = shapes.iter().map(String::len).max().unwrap_or(5).max(5);
        let labels: Vec<String> = self.entries.iter().map(|e| e.scheme.label()).collect();
        let label_w = labels.iter().map(String::len).max().unwrap_or(6).max(6);
        writeln!(
            f,
            "{:<name_w$}  {:<shape_w$}  {:<label_w$}  reason",
            "tensor", "shape", "scheme"
        )?;
        for ((e, shape), label) in self.entries.iter().zip(&shapes).zip(&labels) {
            writeln!(
                f,
                "{:<name_w$}  {shape:<shape_w$}  {label:<label_w$}  {}",
                e.name,
                reason_and_transforms(e)
            )?;
        }
        let s = &self.stats;
        writeln!(f)?;
        writeln!(f, "Statistics of the bitwidth distribution:")?;
        let col0 = s
            .rows
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(0)
            .max("Weight compression mode".len());
        writeln!(
            f,
            "{:<col0$}  {:<28}  % ratio-defining parameters (layers)",
            "Weight compression mode", "% all parameters (layers)"
        )?;
        for r in &s.rows {
            writeln!(
                f,
                "{:<col0$}  {:<28}  {}",
                r.label,
                proportion(r.params, r.layers, s.total_params, s.total_layers),
                proportion(
                    r.ratio_defining_params,
                    r.ratio_defining_layers,
                    s.ratio_defining_params,
                    s.ratio_defining_layers
                ),
            )?;
        }
        Ok(())
    }
}
