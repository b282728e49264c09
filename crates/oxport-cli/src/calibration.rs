//! `--dataset` / `--num-samples` of both exports: the calibration windows (`oxport_dataset`), run through
//! the Rust reference forward pass (`oxport_reference::collect_activation_stats`) with a progress bar. No Python and
//! no runtime library is involved.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use oxport_arch::{Model, Role};
use oxport_quant::ActivationStats;

/// The calibration flags, shared by `export openvino` and `export onnx`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct CalibrationArgs {
    /// Calibration data for data-aware compression (with --awq): `wikitext2` (optimum-intel's: the hub dataset
    /// Salesforce/wikitext, wikitext-2-raw-v1, train split, through the same hub client and cache as models;
    /// `wikitext2:seq_len=N` sets the window length) or, an oxport extension, the path of a local `.txt` or
    /// `.jsonl` file (a "text" field per line), windowed the same way.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Calibration windows (optimum-cli's default 128).
    #[arg(long = "num-samples")]
    pub num_samples: Option<usize>,
    /// oxport extension: write the calibration windows' token ids as JSON (`{"samples": [[ids…], …]}`), e.g. to
    /// run a peer on exactly the same samples.
    #[arg(long = "calibration-samples-out", requires = "dataset")]
    pub samples_out: Option<PathBuf>,
}

/// What a data-aware export was calibrated on: the statistics and how optimum-intel names the data.
pub(crate) struct Calibrated {
    pub stats: ActivationStats,
    pub dataset: String,
    pub num_samples: usize,
}

impl CalibrationArgs {
    /// `--num-samples` without `--dataset` is refused, as NNCF would have nothing to sample.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.num_samples.is_some() && self.dataset.is_none() {
            bail!("--num-samples needs --dataset");
        }
        if self.num_samples == Some(0) {
            bail!("--num-samples must be at least 1");
        }
        Ok(())
    }

    /// Build the windows, run them through the reference and keep what `want` asks of each linear layer's input.
    pub(crate) fn collect(
        &self,
        dir: &Path,
        ckpt: &Model,
        want: &dyn Fn(Role) -> oxport_reference::Observe,
    ) -> anyhow::Result<Calibrated> {
        let Some(dataset) = &self.dataset else {
            bail!("data-aware compression needs --dataset");
        };
        let mut spec = oxport_dataset::CalibrationSpec::parse(dataset)?;
        spec.num_samples = self.num_samples;
        let tokenizer = dir.join("tokenizer.json");
        let set = oxport_dataset::calibration_samples(
            &spec,
            &tokenizer,
            &oxport_hub::ResolveOptions::from_env(),
            &crate::progress::Bars::new(false),
        )
        .with_context(|| format!("building the calibration samples from {dataset}"))?;
        eprintln!("calibration: {}", set.description);
        if let Some(out) = &self.samples_out {
            let json = serde_json::json!({ "samples": set.samples });
            std::fs::write(out, serde_json::to_vec(&json)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        let reference = oxport_reference::Reference::load(ckpt)
            .context("loading the reference forward pass")?;
        let bar = ProgressBar::new(set.samples.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} calibration samples [{elapsed_precise}]",
            )
            .expect("static template"),
        );
        let stats = oxport_reference::collect_activation_stats(
            &reference,
            &set.samples,
            want,
            &mut |d, _| bar.set_position(d as u64),
        )
        .context("collecting activation statistics")?;
        bar.finish_and_clear();
        Ok(Calibrated {
            stats,
            dataset: dataset.clone(),
            num_samples: set.samples.len(),
        })
    }
}
