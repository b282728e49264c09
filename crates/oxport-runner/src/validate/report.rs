//! The validation report: per-device status, metrics and checks; the terminal table and the per-position KL plot
//! (hand-written SVG).

use std::path::PathBuf;

use super::{Export, Thresholds, WeightPrecision};
use crate::backend::Precision;
use crate::devices::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    /// The device is absent; never counted as passed.
    Skipped,
    /// The device is present but the export did not run on it.
    Error,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub metric: &'static str,
    pub value: f64,
    pub limit: f64,
    /// `max` (value must be ≤ limit) or `min` (≥).
    pub kind: &'static str,
    pub passed: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Metrics {
    pub positions: usize,
    pub max_abs_logit: f64,
    pub mean_abs_logit: f64,
    pub mean_kl: f64,
    pub top1_agreement: f64,
    pub perplexity: Option<f64>,
    pub ppl_increase_pct: Option<f64>,
    /// Greedy match length against the reference, per prompt (`max_new_tokens` when both stop at the same EOS).
    pub greedy_match: Vec<usize>,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Greedy continuation of the first prompt, decoded.
    pub sample: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TargetReport {
    pub target: Target,
    pub label: String,
    pub status: Status,
    /// Why a device was skipped or errored, or which checks failed.
    pub reason: Option<String>,
    pub metrics: Option<Metrics>,
    pub checks: Vec<Check>,
    /// Mean KL at each position of the perplexity window (over all windows); without a text, KL per prompt
    /// position. At most 4096 values.
    pub kl_per_position: Vec<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ReferenceInfo {
    pub checkpoint: PathBuf,
    pub perplexity: Option<f64>,
    pub scored_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub sample: String,
    /// Whether the reference's results came from `--reference-cache`.
    pub cache: super::reference_results::CacheUse,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub export: Export,
    pub weight_precision: WeightPrecision,
    pub session_precision: Precision,
    pub thresholds: Thresholds,
    pub prompts: usize,
    pub max_new_tokens: usize,
    pub ppl_window: usize,
    pub reference: ReferenceInfo,
    pub targets: Vec<TargetReport>,
    /// True when at least one device ran and every device that ran passed.
    pub passed: bool,
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// One line per device: status, metrics, and the reason for skipped / failed / errored devices.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "export {} ({:?}, {}), reference {}\n",
        r.export.dir.display(),
        r.export.format,
        r.weight_precision.name(),
        r.reference.checkpoint.display()
    );
    s += &format!(
        "reference: ppl {} over {} tokens, prefill {:.1} tok/s, decode {:.1} tok/s{}\n",
        fmt_opt(r.reference.perplexity, 3),
        r.reference.scored_tokens,
        r.reference.prefill_tokens_per_s,
        r.reference.decode_tokens_per_s,
        match r.reference.cache {
            super::reference_results::CacheUse::Off => "",
            super::reference_results::CacheUse::Hit => " (from the reference cache)",
            super::reference_results::CacheUse::Miss =>
                " (computed, stored in the reference cache)",
        }
    );
    s += &format!(
        "{:<24} {:<8} {:>10} {:>10} {:>10} {:>7} {:>9} {:>8} {:>7} {:>9} {:>9}\n",
        "device",
        "status",
        "max|Δ|",
        "mean|Δ|",
        "mean KL",
        "top-1",
        "ppl",
        "Δppl %",
        "greedy",
        "prefill/s",
        "decode/s"
    );
    for t in &r.targets {
        let status = match t.status {
            Status::Passed => "PASS",
            Status::Failed => "FAIL",
            Status::Skipped => "skipped",
            Status::Error => "ERROR",
        };
        match &t.metrics {
            Some(m) => {
                let greedy = m
                    .greedy_match
                    .iter()
                    .min()
                    .map_or("-".into(), |g| format!("{g}/{}", r.max_new_tokens));
                s += &format!(
                    "{:<24} {:<8} {:>10.3e} {:>10.3e} {:>10.3e} {:>7.4} {:>9} {:>8} {:>7} {:>9.1} {:>9.1}\n",
                    t.label,
                    status,
                    m.max_abs_logit,
                    m.mean_abs_logit,
                    m.mean_kl,
                    m.top1_agreement,
                    fmt_opt(m.perplexity, 3),
                    fmt_opt(m.ppl_increase_pct, 2),
                    greedy,
                    m.prefill_tokens_per_s,
                    m.decode_tokens_per_s
                );
            }
            None => s += &format!("{:<24} {:<8}\n", t.label, status),
        }
        if let Some(reason) = &t.reason {
            s += &format!("    {reason}\n");
        }
    }
    s += if r.passed {
        "result: PASS\n"
    } else {
        "result: FAIL\n"
    };
    s
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// KL(reference ‖ export) per position for every device that ran, log-scaled y axis.
pub fn kl_svg(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (800.0, 360.0, 70.0, 20.0, 30.0, 40.0);
    let series: Vec<(&str, &[f64])> = r
        .targets
        .iter()
        .filter(|t| !t.kl_per_position.is_empty())
        .map(|t| (t.label.as_str(), t.kl_per_position.as_slice()))
        .collect();
    let n = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let floor = 1e-12f64;
    let finite = |v: f64| if v.is_finite() { v.max(floor) } else { 1e6 };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, v) in &series {
        for &k in v.iter() {
            let k = finite(k).log10();
            lo = lo.min(k);
            hi = hi.max(k);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (-12.0, 0.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let x = |i: usize| left + (w - left - right) * i as f64 / (n - 1) as f64;
    let y = |k: f64| top + (h - top - bottom) * (hi - finite(k).log10()) / (hi - lo);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\">KL(reference ‖ export) per position, {} {}</text>\n",
        r.weight_precision.name(),
        xml_escape(&r.export.dir.display().to_string())
    );
    for e in (lo as i64)..=(hi as i64) {
        let yy = top + (h - top - bottom) * (hi - e as f64) / (hi - lo);
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\">1e{e}</text>\n",
            w - right,
            yy + 4.0
        );
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\">position in the window (0 … {})</text>\n",
        w / 2.0 - 40.0,
        h - 10.0,
        n - 1
    );
    for (i, (label, v)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(j, &k)| format!("{:.1},{:.1}", x(j), y(k)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>\n",
            points.join(" "),
            w - right - 180.0,
            top + 14.0 * (i + 1) as f64,
            xml_escape(label)
        );
    }
    s += "</svg>\n";
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
