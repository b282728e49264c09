//! `oxport inspect MODEL [--revision R] [--json]`: a checkpoint's architecture, dimensions, rope, tensor table and
//! totals, from metadata only (headers and config; no tensor data is read).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use oxport_arch::{Model, Phi3Config};
use serde_json::json;

#[derive(clap::Args)]
#[command(after_help = "\
Hub ids are looked up in the Hugging Face cache and downloaded into it when absent:
  HF_HUB_CACHE    cache folder (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
  HF_ENDPOINT     hub URL (default https://huggingface.co)
  HF_TOKEN        bearer token for gated or private repositories (else the file $HF_HOME/token)
  HF_HUB_OFFLINE  1: never use the network; only cached snapshots resolve")]
pub(crate) struct Args {
    /// A checkpoint folder, or a Hugging Face hub id (`org/name`) looked up in the HF cache and downloaded when
    /// absent (unless HF_HUB_OFFLINE is set).
    #[arg(value_name = "MODEL")]
    pub model: String,
    /// Hub revision: branch, tag or commit sha (default `main`); ignored for local folders.
    #[arg(long)]
    pub revision: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = resolve(&args.model, args.revision.as_deref())?;
    let ckpt = Model::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report_json(&ckpt))
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &ckpt)
    };
    match written {
        // `oxport inspect big-model | head` is a normal way to read the report.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other
            .map(|()| ExitCode::SUCCESS)
            .context("writing the report"),
    }
}

/// `--model` → a local folder, with an indicatif bar while files download. Shared by the subcommands that load
/// a checkpoint.
pub(crate) fn resolve(model: &str, revision: Option<&str>) -> anyhow::Result<PathBuf> {
    let bar = crate::progress::Bars::new(false);
    let dir = oxport_hub::resolve_model(model, revision, &bar)
        .with_context(|| format!("resolving {model}"))?;
    bar.finish();
    Ok(dir)
}

fn report_json(ckpt: &Model) -> serde_json::Value {
    let c = ckpt.config();
    let shards: Vec<String> = ckpt.shard_paths().iter().map(|p| file_name(p)).collect();
    let tensors: Vec<_> = ckpt
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "role": t.role.to_string(),
                "layer": t.role.layer(),
                "dtype": t.dtype,
                "shape": t.shape,
                "shard": shards[t.shard],
                "offset_bytes": t.file_offset,
                "size_bytes": t.size_bytes,
            })
        })
        .collect();
    json!({
        "model_dir": ckpt.dir(),
        "architecture": c.architecture,
        "config": c,
        "derived": {
            "head_dim": c.head_dim(),
            "rotary_dim": c.rotary_dim(),
            "kv_dim": c.kv_dim(),
            "qkv_rows": c.qkv_rows(),
            "gqa_group": c.num_attention_heads / c.num_key_value_heads,
            "longrope_attention_factor": c.rope_scaling.as_ref().map(|_| c.longrope_attention_factor()),
        },
        "shards": shards,
        "tensors": tensors,
        "total_params": ckpt.total_params(),
        "total_bytes": ckpt.total_bytes(),
    })
}

fn write_text(out: &mut impl Write, ckpt: &Model) -> std::io::Result<()> {
    let c = ckpt.config();
    writeln!(out, "model         {}", ckpt.dir().display())?;
    writeln!(
        out,
        "architecture  {} (stored as {})",
        c.architecture,
        c.dtype.as_deref().unwrap_or("unknown dtype")
    )?;
    writeln!(
        out,
        "dims          {} layers, hidden {}, intermediate {}, vocab {}",
        c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    )?;
    writeln!(out, "attention     {}", attention_line(c))?;
    writeln!(out, "rope          {}", rope_line(c))?;
    let window = c
        .sliding_window
        .map_or("none".to_string(), |w| w.to_string());
    writeln!(
        out,
        "context       {} (original {}), sliding window {window}",
        c.max_position_embeddings, c.original_max_position_embeddings
    )?;
    let ids = |v: Option<u32>| v.map_or("none".to_string(), |v| v.to_string());
    writeln!(
        out,
        "tokens        bos {}, eos {:?}, pad {}; rms_norm_eps {}; tied embeddings {}",
        ids(c.bos_token_id),
        c.eos_token_ids,
        ids(c.pad_token_id),
        c.rms_norm_eps,
        if c.tie_word_embeddings { "yes" } else { "no" }
    )?;
    let shards: Vec<String> = ckpt.shard_paths().iter().map(|p| file_name(p)).collect();
    writeln!(out, "shards        {}", shards.join(", "))?;
    writeln!(out)?;

    let rows: Vec<[String; 5]> = ckpt
        .tensors()
        .iter()
        .map(|t| {
            let shape = t
                .shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" x ");
            [
                t.name.clone(),
                t.role.to_string(),
                t.dtype.to_string(),
                shape,
                shards[t.shard].clone(),
            ]
        })
        .collect();
    let header = ["tensor", "role", "dtype", "shape", "shard"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "total         {} tensors, {} parameters ({}), {} bytes ({})",
        rows.len(),
        ckpt.total_params(),
        human(ckpt.total_params() as f64, ""),
        ckpt.total_bytes(),
        human(ckpt.total_bytes() as f64, "B")
    )
}

fn attention_line(c: &Phi3Config) -> String {
    let kind = if c.num_key_value_heads == c.num_attention_heads {
        "multi-head".to_string()
    } else {
        format!(
            "grouped-query, {} query heads per kv head",
            c.num_attention_heads / c.num_key_value_heads
        )
    };
    format!(
        "{} heads, {} kv heads, head_dim {} ({kind}); qkv_proj rows {}",
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim(),
        c.qkv_rows()
    )
}

fn rope_line(c: &Phi3Config) -> String {
    let base = format!(
        "theta {}, rotary_dim {} of {}",
        c.rope_theta,
        c.rotary_dim(),
        c.head_dim()
    );
    match &c.rope_scaling {
        None => format!("{base}, no scaling"),
        Some(r) => {
            let range = |f: &[f64]| {
                let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{lo}..{hi}")
            };
            format!(
                "{base}, {} ({} short factors {}, long {}), attention factor {:.6}",
                r.kind,
                r.short_factor.len(),
                range(&r.short_factor),
                range(&r.long_factor),
                c.longrope_attention_factor()
            )
        }
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// 3.82 G, 7.64 GB: decimal units, as model cards state parameter counts.
fn human(x: f64, unit: &str) -> String {
    let (v, prefix) = match x {
        x if x >= 1e9 => (x / 1e9, "G"),
        x if x >= 1e6 => (x / 1e6, "M"),
        x if x >= 1e3 => (x / 1e3, "k"),
        x => (x, ""),
    };
    format!("{v:.2} {prefix}{unit}")
}
