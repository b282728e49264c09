//! `oxport validate`: run an export on every present device and compare it with the f32 reference.
//!
//! Per device: prefill logits of each chat prompt (max / mean |Δlogit|, mean KL(reference ‖ export), top-1
//! agreement), greedy generation (match length against the reference, prefill and decode tokens/s) and perplexity on
//! a text in non-overlapping windows (each window starts with an empty cache and its first token is not scored, the
//! protocol of `docs/smol-fixture.md` §4). Checks use per-precision thresholds ([`Thresholds::for_precision`]).

mod chat;
pub mod export;
pub mod metrics;
mod options;
pub mod reference_results;
mod report;

use std::time::Instant;

pub use chat::Chat;
pub use export::{Export, Format, WeightPrecision};
pub use options::{DEFAULT_PROMPTS, DeviceFilter, Options, ThresholdOverrides, Thresholds};
pub use report::{Check, Metrics, ReferenceInfo, Report, Status, TargetReport, kl_svg, table};

use crate::backend::onnxruntime::{self, GenaiNames, OrtDevice, OrtLlm};
use crate::backend::openvino::{self, OvDevice, OvLlm, OvNames};
use crate::backend::{LlmSession, Precision};
use oxport_io::{Event, Reporter};

use crate::devices::Target;
use crate::error::{Error, Result};
use metrics::Accumulator;
use oxport_reference::Reference;
use reference_results::{CacheUse, Inputs, PromptRun, REFERENCE_VERSION, ReferenceResults, greedy};

fn targets(format: Format) -> Vec<Target> {
    match format {
        Format::Onnx => OrtDevice::ALL.iter().map(|&d| Target::Ort(d)).collect(),
        Format::OpenVino => OvDevice::ALL.iter().map(|&d| Target::OpenVino(d)).collect(),
    }
}

fn open(export: &Export, target: Target, precision: Precision) -> Result<Box<dyn LlmSession>> {
    Ok(match target {
        Target::Ort(d) => {
            let names = export
                .genai_config
                .as_ref()
                .map(GenaiNames::from_genai_config)
                .unwrap_or_default();
            Box::new(OrtLlm::open(&export.model, names, d, precision)?)
        }
        Target::OpenVino(d) => Box::new(OvLlm::open(
            &export.model,
            OvNames::default(),
            d,
            precision,
        )?),
    })
}

fn probe(target: Target) -> std::result::Result<(), String> {
    match target {
        Target::Ort(d) => onnxruntime::probe(d),
        Target::OpenVino(d) => openvino::probe(d).map(|_| ()),
    }
}

/// Per-device accumulation while the reference runs once.
struct Running {
    target: Target,
    session: Box<dyn LlmSession>,
    acc: Accumulator,
    text_acc: Accumulator,
    greedy_match: Vec<usize>,
    prefill_tokens: usize,
    prefill_secs: f64,
    decode_tokens: usize,
    decode_secs: f64,
    sample: String,
    error: Option<String>,
}

/// Validate the export described by `opts`.
pub fn run(opts: &Options, progress: &dyn Reporter) -> Result<Report> {
    let export = export::detect(&opts.export_dir)?;
    let checkpoint_dir = opts
        .reference
        .clone()
        .or_else(|| export.source.clone())
        .ok_or_else(|| Error::Export {
            path: export.dir.clone(),
            msg: "the export's config.json names no checkpoint folder; pass --reference MODEL"
                .into(),
        })?;
    let checkpoint = oxport_arch::Model::open(&checkpoint_dir)?;
    let weight_precision = match opts.weight_precision {
        Some(p) => p,
        None => export.weight_precision(checkpoint.total_params())?,
    };
    let thresholds = apply_overrides(Thresholds::for_precision(weight_precision), &opts.overrides);
    let chat = Chat::load(&[&export.dir, &checkpoint_dir])?;
    let eos = checkpoint.config().eos_token_ids.clone();
    let vocab = checkpoint.config().vocab_size;
    let stage = ReferenceStage::new(opts, &chat)?;
    let inputs = stage.inputs(opts, &eos);
    let (results, cache) = reference_results_for(&checkpoint, &inputs, opts, progress)?;

    // Sessions on every present device; absent ones are skipped with the reason.
    let (mut reports, mut running) = open_targets(&export, opts);

    // Prompts: the reference's results, then every device.
    let mut ref_info = ReferenceInfo {
        checkpoint: checkpoint_dir.clone(),
        perplexity: None,
        scored_tokens: 0,
        prefill_tokens_per_s: results.prefill_tokens_per_s,
        decode_tokens_per_s: results.decode_tokens_per_s,
        sample: results
            .prompts
            .first()
            .map_or_else(String::new, |p| chat.decode(&p.greedy)),
        cache,
    };
    progress.report(Event::stage("prompts", results.prompts.len() as u64));
    for (i, run) in results.prompts.iter().enumerate() {
        for r in running.iter_mut().filter(|r| r.error.is_none()) {
            if let Err(e) = compare_prompt(r, run, opts.max_new_tokens, &eos, &chat, i == 0, vocab)
            {
                r.error = Some(e.to_string());
            }
        }
        progress.report(Event::item(""));
    }
    progress.report(Event::End);

    // Perplexity on the text, window by window.
    if opts.text.is_some() {
        score_text(&mut running, &results, &stage.text_ids, vocab, progress);
        ref_info.scored_tokens = results.nll.len();
        ref_info.perplexity = (!results.nll.is_empty())
            .then(|| (results.nll.iter().sum::<f64>() / results.nll.len() as f64).exp());
    }

    for r in running {
        reports.push(finish(
            r,
            &thresholds,
            ref_info.perplexity,
            // Per-offset means only make sense when every window is scored from its start.
            if opts.ppl_stride.unwrap_or(opts.ppl_window) >= opts.ppl_window {
                opts.ppl_window.max(2)
            } else {
                usize::MAX
            },
        ));
    }
    // Devices in their fixed order, whatever order they finished in.
    let order = targets(export.format);
    reports.sort_by_key(|r| order.iter().position(|&t| t == r.target));
    let ran = reports
        .iter()
        .any(|r| matches!(r.status, Status::Passed | Status::Failed));
    let passed = ran
        && reports
            .iter()
            .all(|r| matches!(r.status, Status::Passed | Status::Skipped));
    Ok(Report {
        export,
        weight_precision,
        session_precision: opts.session_precision,
        thresholds,
        prompts: opts.prompts.len(),
        max_new_tokens: opts.max_new_tokens,
        ppl_window: opts.ppl_window,
        reference: ref_info,
        targets: reports,
        passed,
    })
}

/// A session per present device of `export`'s format that `opts` accepts; the others reported as skipped (absent)
/// or as errors (a session that does not open).
fn open_targets(export: &Export, opts: &Options) -> (Vec<TargetReport>, Vec<Running>) {
    let mut reports = Vec::new();
    let mut running = Vec::new();
    for target in targets(export.format)
        .into_iter()
        .filter(|&t| opts.devices.accepts(t))
    {
        let skip = |status, reason: String| TargetReport {
            target,
            label: target.label(),
            status,
            reason: Some(reason),
            metrics: None,
            checks: vec![],
            kl_per_position: vec![],
        };
        if let Err(reason) = probe(target) {
            reports.push(skip(Status::Skipped, reason));
            continue;
        }
        match open(export, target, opts.session_precision) {
            Ok(session) => running.push(Running {
                target,
                session,
                acc: Accumulator::default(),
                text_acc: Accumulator::default(),
                greedy_match: vec![],
                prefill_tokens: 0,
                prefill_secs: 0.0,
                decode_tokens: 0,
                decode_secs: 0.0,
                sample: String::new(),
                error: None,
            }),
            Err(e) => reports.push(skip(Status::Error, e.to_string())),
        }
    }
    (reports, running)
}

/// Perplexity on the text, window by window, on every running session (an error stops that session only).
fn score_text(
    running: &mut [Running],
    results: &ReferenceResults,
    text_ids: &[u32],
    vocab: usize,
    progress: &dyn Reporter,
) {
    progress.report(Event::stage("perplexity", results.windows.len() as u64));
    for window in &results.windows {
        let w = &text_ids[window.start..window.end];
        // Rows before `first_scored_row` predict tokens an earlier window already scored.
        let rows = window.first_scored_row * vocab..;
        for r in running.iter_mut().filter(|r| r.error.is_none()) {
            let result = (|| -> Result<()> {
                r.session.reset()?;
                let t0 = Instant::now();
                let logits = r.session.forward(w)?;
                r.prefill_secs += t0.elapsed().as_secs_f64();
                r.prefill_tokens += w.len();
                check_vocab(&logits, w.len(), vocab)?;
                r.text_acc
                    .add_top(&window.rows, &logits[rows.clone()], vocab);
                r.text_acc
                    .add_nll(&logits[rows.clone()], vocab, &w[window.first_scored_row..]);
                Ok(())
            })();
            if let Err(e) = result {
                r.error = Some(e.to_string());
            }
        }
        progress.report(Event::item(""));
    }
    progress.report(Event::End);
}

/// `oxport reference`: compute the reference's results for `opts` (prompts, text, window, stride, caps) on the
/// checkpoint in `checkpoint_dir` and store them under `opts.reference_cache`, unless they are there already.
/// Returns the cache file and whether it was already there.
pub fn reference_only(
    checkpoint_dir: &std::path::Path,
    opts: &Options,
    progress: &dyn Reporter,
) -> Result<(std::path::PathBuf, CacheUse)> {
    let Some(dir) = &opts.reference_cache else {
        return Err(Error::Invalid("no reference cache folder given".into()));
    };
    let checkpoint = oxport_arch::Model::open(checkpoint_dir)?;
    let chat = Chat::load(&[checkpoint_dir])?;
    let eos = checkpoint.config().eos_token_ids.clone();
    let stage = ReferenceStage::new(opts, &chat)?;
    let inputs = stage.inputs(opts, &eos);
    let (_, cache) = reference_results_for(&checkpoint, &inputs, opts, progress)?;
    let key = reference_results::cache_key(checkpoint.dir(), &inputs, REFERENCE_VERSION)?;
    Ok((reference_results::cache_path(dir, &key), cache))
}

/// The token ids the reference runs on: every rendered prompt, and the text cut to the token cap with its windows.
struct ReferenceStage {
    prompt_ids: Vec<Vec<u32>>,
    text_ids: Vec<u32>,
    windows: Vec<(usize, usize, usize)>,
}

impl ReferenceStage {
    fn new(opts: &Options, chat: &Chat) -> Result<Self> {
        let mut prompt_ids = Vec::new();
        for (i, prompt) in opts.prompts.iter().enumerate() {
            let ids = chat.encode(&chat.render(prompt)?)?;
            if ids.is_empty() {
                return Err(Error::Invalid(format!("prompt {i} tokenizes to nothing")));
            }
            prompt_ids.push(ids);
        }
        let (mut text_ids, mut windows) = (Vec::new(), Vec::new());
        if let Some(text) = &opts.text {
            let tokens = chat.encode_plain(text)?;
            let window = opts.ppl_window.max(2);
            let limit = tokens.len().min(opts.ppl_max_tokens.max(window));
            text_ids = tokens[..limit].to_vec();
            windows = text_windows(limit, window, opts.ppl_stride);
        }
        Ok(ReferenceStage {
            prompt_ids,
            text_ids,
            windows,
        })
    }

    fn inputs<'a>(&'a self, opts: &Options, eos: &'a [u32]) -> Inputs<'a> {
        Inputs {
            prompt_ids: &self.prompt_ids,
            text_ids: &self.text_ids,
            windows: &self.windows,
            window: opts.ppl_window,
            stride: opts.ppl_stride,
            max_tokens: opts.ppl_max_tokens,
            max_new_tokens: opts.max_new_tokens,
            eos,
        }
    }
}

/// The reference's results for `inputs`: from `opts.reference_cache` when it holds them for exactly these inputs,
/// else computed (and stored there when a cache folder is given).
fn reference_results_for(
    checkpoint: &oxport_arch::Model,
    inputs: &Inputs<'_>,
    opts: &Options,
    progress: &dyn Reporter,
) -> Result<(ReferenceResults, CacheUse)> {
    let compute = || {
        progress.report(Event::stage("loading reference", 1));
        let reference = Reference::load(checkpoint)?;
        progress.report(Event::End);
        reference_results::compute(&reference, inputs, progress)
    };
    match &opts.reference_cache {
        Some(dir) => {
            let key = reference_results::cache_key(checkpoint.dir(), inputs, REFERENCE_VERSION)?;
            reference_results::load_or_compute(dir, &key, compute)
        }
        None => Ok((compute()?, CacheUse::Off)),
    }
}

/// Perplexity windows over the first `limit` tokens: `(start, end, first scored logits row)`. Windows start every
/// `stride` tokens (default: the window, i.e. disjoint windows); the first window scores every prediction, later
/// ones only the predictions of tokens past the previous window's end (the Hugging Face sliding-window recipe).
pub(crate) fn text_windows(
    limit: usize,
    window: usize,
    stride: Option<usize>,
) -> Vec<(usize, usize, usize)> {
    let stride = stride.unwrap_or(window).clamp(1, window);
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < limit {
        let end = (start + window).min(limit);
        // Target j of this window (predicted by row j - 1) is new when start + j >= start - stride + window.
        let first_scored_row = if start == 0 {
            0
        } else {
            (window - stride).saturating_sub(1)
        };
        out.push((start, end, first_scored_row.min(end - start - 1)));
        if end == limit {
            break;
        }
        start += stride;
    }
    out
}

fn rate((tokens, secs): (usize, f64)) -> f64 {
    if secs > 0.0 {
        tokens as f64 / secs
    } else {
        0.0
    }
}

fn check_vocab(logits: &[f32], n: usize, vocab: usize) -> Result<()> {
    if logits.len() != n * vocab {
        return Err(Error::Shape {
            tensor: "logits".into(),
            expected: vec![1, n, vocab],
            got: vec![1, n, logits.len() / n.max(1)],
        });
    }
    Ok(())
}

fn compare_prompt(
    r: &mut Running,
    run: &PromptRun,
    max_new: usize,
    eos: &[u32],
    chat: &Chat,
    first: bool,
    vocab: usize,
) -> Result<()> {
    let (tokens, logits, ps, ds) = greedy(r.session.as_mut(), &run.ids, max_new, eos)?;
    check_vocab(&logits, run.ids.len(), vocab)?;
    r.acc.add(&run.logits, &logits, vocab);
    r.prefill_tokens += run.ids.len();
    r.prefill_secs += ps;
    r.decode_tokens += tokens.len().saturating_sub(1);
    r.decode_secs += ds;
    // An identical continuation that stops at EOS where the reference does counts as the whole budget.
    let matched = if tokens == run.greedy {
        max_new
    } else {
        tokens
            .iter()
            .zip(&run.greedy)
            .take_while(|(a, b)| a == b)
            .count()
    };
    r.greedy_match.push(matched);
    if first {
        r.sample = chat.decode(&tokens);
    }
    Ok(())
}

fn apply_overrides(mut t: Thresholds, o: &ThresholdOverrides) -> Thresholds {
    t.max_abs_logit = o.max_abs_logit.or(t.max_abs_logit);
    t.mean_kl = o.mean_kl.or(t.mean_kl);
    t.min_top1 = o.min_top1.or(t.min_top1);
    t.max_ppl_increase_pct = o.max_ppl_increase_pct.or(t.max_ppl_increase_pct);
    t.min_greedy_match = o.min_greedy_match.or(t.min_greedy_match);
    t
}

fn finish(r: Running, t: &Thresholds, ref_ppl: Option<f64>, window: usize) -> TargetReport {
    let target = r.target;
    if let Some(e) = r.error {
        return TargetReport {
            target,
            label: target.label(),
            status: Status::Error,
            reason: Some(e),
            metrics: None,
            checks: vec![],
            kl_per_position: vec![],
        };
    }
    // Logit metrics over prompts and text together.
    let mut all = r.acc.clone();
    let text = &r.text_acc;
    let n_prompt = all.positions;
    let merged_positions = n_prompt + text.positions;
    let mean_kl = (all.mean_kl() * n_prompt as f64 + text.mean_kl() * text.positions as f64)
        / merged_positions.max(1) as f64;
    let top1 = (all.top1() * n_prompt as f64 + text.top1() * text.positions as f64)
        / merged_positions.max(1) as f64;
    all.max_abs = all.max_abs.max(text.max_abs);
    let mean_abs = (all.mean_abs() * n_prompt as f64 + text.mean_abs() * text.positions as f64)
        / merged_positions.max(1) as f64;
    let perplexity = text.perplexity();
    let ppl_increase_pct = perplexity.zip(ref_ppl).map(|(p, q)| (p / q - 1.0) * 100.0);
    let metrics = Metrics {
        positions: merged_positions,
        max_abs_logit: all.max_abs,
        mean_abs_logit: mean_abs,
        mean_kl,
        top1_agreement: top1,
        perplexity,
        ppl_increase_pct,
        greedy_match: r.greedy_match.clone(),
        prefill_tokens_per_s: rate((r.prefill_tokens, r.prefill_secs)),
        decode_tokens_per_s: rate((r.decode_tokens, r.decode_secs)),
        sample: r.sample,
    };
    let mut checks = Vec::new();
    let mut check = |metric, value: f64, limit: Option<f64>, kind| {
        if let Some(limit) = limit {
            // NaN fails both ways.
            let passed = if kind == "max" {
                value <= limit
            } else {
                value >= limit
            };
            checks.push(Check {
                metric,
                value,
                limit,
                kind,
                passed,
            });
        }
    };
    check(
        "max_abs_logit",
        metrics.max_abs_logit,
        t.max_abs_logit,
        "max",
    );
    check("mean_kl", metrics.mean_kl, t.mean_kl, "max");
    check("top1_agreement", metrics.top1_agreement, t.min_top1, "min");
    if let Some(inc) = metrics.ppl_increase_pct {
        let inc = if inc.is_nan() { f64::INFINITY } else { inc };
        check("ppl_increase_pct", inc, t.max_ppl_increase_pct, "max");
    }
    if let Some(&worst) = metrics.greedy_match.iter().min() {
        check(
            "greedy_match",
            worst as f64,
            t.min_greedy_match.map(|v| v as f64),
            "min",
        );
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            let op = if c.kind == "max" { "≤" } else { "≥" };
            format!(
                "{} = {:.4e} (limit {op} {:.4e})",
                c.metric, c.value, c.limit
            )
        })
        .collect();
    // With a text: mean KL at each offset within a window (error against context length); else prompt positions.
    let kl_per_position = if text.positions > 0 {
        let mut sums = vec![(0f64, 0usize); window.min(text.positions)];
        for chunk in text.kl_per_position.chunks(window) {
            for (slot, &k) in sums.iter_mut().zip(chunk) {
                *slot = (slot.0 + k, slot.1 + 1);
            }
        }
        sums.iter().map(|&(s, n)| s / n.max(1) as f64).collect()
    } else {
        r.acc.kl_per_position.clone()
    };
    TargetReport {
        target,
        label: target.label(),
        status: if failed.is_empty() {
            Status::Passed
        } else {
            Status::Failed
        },
        reason: (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", "))),
        metrics: Some(metrics),
        checks,
        kl_per_position: kl_per_position.into_iter().take(4096).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::text_windows;

    #[test]
    fn disjoint_windows_skip_only_each_first_token() {
        assert_eq!(
            text_windows(10, 4, None),
            vec![(0, 4, 0), (4, 8, 0), (8, 10, 0)]
        );
    }

    #[test]
    fn sliding_windows_score_every_target_once() {
        let (limit, window, stride) = (20, 8, 3);
        let mut scored = vec![0; limit];
        for (start, end, row) in text_windows(limit, window, Some(stride)) {
            for target in start + row + 1..end {
                scored[target] += 1;
            }
        }
        assert_eq!(scored[0], 0);
        assert!(scored[1..].iter().all(|&n| n == 1), "{scored:?}");
    }
}
