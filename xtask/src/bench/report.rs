//! The report of `cargo xtask bench`: the machine, the model, every case's medians beside the I/O floor and the
//! peer's ratios (Markdown, and the same data as JSON), and with `--baseline` the current binary against it.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde::Serialize;

use super::measure::{Measurement, time_write};

/// The tool name of the `--baseline` binary's measurements.
pub(super) const BASELINE_TOOL: &str = "oxport-baseline";

/// Write the Markdown report to `out` (relative to `root` unless absolute) and the JSON beside it, print the
/// Markdown, and list the failed cases (their logs are under `work`).
pub(super) fn write_report(report: &Report, out: &Path, root: &Path, work: &Path) -> Result<()> {
    let md = render_markdown(report, work)?;
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        root.join(out)
    };
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&out, &md)?;
    fs::write(
        out.with_extension("json"),
        serde_json::to_string_pretty(report)?,
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

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) date: String,
    pub(super) machine: Machine,
    pub(super) model: String,
    pub(super) model_bytes: u64,
    pub(super) io_floor_read_secs: f64,
    pub(super) peer_versions: Vec<(String, String)>,
    /// The `--baseline` binary, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) baseline: Option<String>,
    pub(super) results: Vec<Measurement>,
}

#[derive(Serialize)]
pub(super) struct Machine {
    cores: usize,
    ram_gib: f64,
    cpu: String,
}

/// The peers' package versions in their venv.
pub(super) fn peer_versions(python: &Path) -> Vec<(String, String)> {
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

pub(super) fn machine() -> Machine {
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

fn render_markdown(r: &Report, work: &Path) -> Result<String> {
    let mut s = String::new();
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
    // The baseline's rows have a table of their own (`render_baseline`).
    for m in r.results.iter().filter(|m| m.tool != BASELINE_TOOL) {
        let floor = r.io_floor_read_secs + time_write(work, m.output_bytes).unwrap_or(0.0);
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
    if let Some(baseline) = &r.baseline {
        render_baseline(&mut s, r, baseline)?;
    }
    Ok(s)
}

/// The current binary against `--baseline`, case by case: both medians (min–max) and current ÷ baseline for the
/// wall time and the peak PSS (below 1.00×: the current binary is faster or smaller).
fn render_baseline(s: &mut String, r: &Report, baseline: &str) -> Result<()> {
    writeln!(s)?;
    writeln!(
        s,
        "Against the baseline `{baseline}` (its runs interleaved with the current binary's, as many): medians \
         (min–max), current ÷ baseline."
    )?;
    writeln!(s)?;
    writeln!(
        s,
        "| case | threads | wall s current | wall s baseline | current ÷ baseline time | peak PSS GB current | peak PSS GB baseline | current ÷ baseline PSS |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|---|---|")?;
    for m in r.results.iter().filter(|m| m.tool == "oxport") {
        let Some(b) = r
            .results
            .iter()
            .find(|b| b.tool == BASELINE_TOOL && b.case == m.case && b.threads == m.threads)
        else {
            continue;
        };
        let ratio = |cur: f64, base: f64| {
            if m.ok && b.ok {
                format!("{:.2}×", cur / base.max(1e-12))
            } else {
                "FAILED".to_string()
            }
        };
        writeln!(
            s,
            "| {} | {} | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {} | {:.3} | {:.3} | {} |",
            m.case,
            m.threads
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            m.wall_secs,
            m.wall_min_secs,
            m.wall_max_secs,
            b.wall_secs,
            b.wall_min_secs,
            b.wall_max_secs,
            ratio(m.wall_secs, b.wall_secs),
            m.peak_pss_tree_bytes as f64 / 1e9,
            b.peak_pss_tree_bytes as f64 / 1e9,
            ratio(m.peak_pss_tree_bytes as f64, b.peak_pss_tree_bytes as f64),
        )?;
    }
    Ok(())
}
