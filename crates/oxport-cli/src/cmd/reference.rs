//! `oxport reference MODEL --out DIR`: compute the f32 reference's results once (prompt logits and greedy
//! continuations, perplexity windows) for later `oxport validate --reference-cache DIR` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use oxport_runner::validate::{self, Options, reference_results::CacheUse};

use super::validate::read_prompts;
use crate::progress::Bars;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Original checkpoint folder (the one the exports were made from).
    pub model: PathBuf,
    /// Cache folder (the `--reference-cache` of `oxport validate`).
    #[arg(long)]
    pub out: PathBuf,
    /// File with one user prompt per line; default: validate's three built-in prompts.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Text file for perplexity.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Greedy tokens generated per prompt.
    #[arg(long = "max-new-tokens", default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Perplexity window in tokens.
    #[arg(long = "ppl-window", default_value_t = 512)]
    pub ppl_window: usize,
    /// Tokens between perplexity window starts (default: the window).
    #[arg(long = "ppl-stride")]
    pub ppl_stride: Option<usize>,
    /// At most this many text tokens are evaluated.
    #[arg(long = "ppl-max-tokens", default_value_t = 4096)]
    pub ppl_max_tokens: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = Options::new(&args.model);
    if let Some(p) = &args.prompts {
        opts.prompts = read_prompts(p)?;
    }
    if let Some(t) = &args.text {
        opts.text = Some(
            std::fs::read_to_string(t).with_context(|| format!("reading text {}", t.display()))?,
        );
    }
    opts.max_new_tokens = args.max_new_tokens;
    opts.ppl_window = args.ppl_window;
    opts.ppl_stride = args.ppl_stride;
    opts.ppl_max_tokens = args.ppl_max_tokens;
    opts.reference_cache = Some(args.out.clone());
    let (path, cache) = validate::reference_only(&args.model, &opts, &Bars::new(args.quiet))
        .with_context(|| format!("computing the reference of {}", args.model.display()))?;
    let what = match cache {
        CacheUse::Hit => "already there",
        CacheUse::Miss | CacheUse::Off => "written",
    };
    println!("reference results {what}: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
