//! What validate needs from the reference, computed once and optionally cached on disk
//! (`oxport validate --reference-cache DIR`, `oxport reference`), in the spirit of llama.cpp's
//! `llama-perplexity --kl-divergence-base FILE`.
//!
//! * Prompts: token ids, full f32 prefill logits (a few hundred positions at most) and the greedy continuation.
//! * Text windows: per scored position the [`TOP_K`] largest logits with their token ids and the row's
//!   log-sum-exp, plus the reference's NLL of every scored token. 4096 positions take about 1 MiB whatever the
//!   vocabulary, where f32 rows of a 32 k vocabulary would take 512 MiB (f16: 256 MiB). Text metrics are computed
//!   from this form whether or not a cache is used, so a cached validate reports exactly what an uncached one does:
//!   KL over the top-K tokens plus one bin for the rest of the vocabulary (a lower bound of the full KL by the
//!   log-sum inequality, equal when the top-K holds all the mass), max/mean |Δlogit| over the top-K tokens, top-1
//!   exact (the reference's top-1 is in its top-K).
//!
//! A cache file is named by a digest of its key and stores the key itself, which is compared in full on load: the
//! checkpoint's files (name, size, modification time, and the bytes of `config.json`), the token ids of every
//! rendered prompt and of the scored text (so a changed text, template or tokenizer is a different key), window,
//! stride, token cap, new-token budget, EOS ids, the cache format and [`REFERENCE_VERSION`]. Anything that differs
//! is a miss and is recomputed, never used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use oxport_io::{Event, Reporter};
use oxport_reference::Reference;

use crate::backend::{LlmSession, ReferenceSession};
use crate::error::{Error, Result};
use crate::validate::metrics;

/// Largest reference logits kept per scored text position.
pub const TOP_K: usize = 32;
/// The reference forward pass's numerics version: bump it when its logits change (kernels, RoPE, norms), so that
/// caches written before are recomputed.
pub const REFERENCE_VERSION: &str = "oxport-reference 3 (one fma chain over k per output)";
/// Layout of the cache file.
const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"OXREF01\n";

/// What the reference produced for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRun {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    pub greedy: Vec<u32>,
}

/// The reference's top-K of one scored text position.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    /// Token ids, largest logit first.
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    /// `ln Σ exp(logit)` over the whole vocabulary, in f64.
    pub log_z: f64,
}

impl TopRow {
    pub fn from_logits(row: &[f32]) -> Self {
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        let k = TOP_K.min(row.len());
        // Largest first, ties broken by token id, so the choice is deterministic.
        let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
        order.sort_by(cmp);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        TopRow {
            logits: order.iter().map(|&i| row[i as usize]).collect(),
            ids: order,
            log_z: max + sum.ln(),
        }
    }
}

/// One perplexity window: `[start, end)` of the text tokens, rows scored from `first_scored_row`.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRun {
    pub start: usize,
    pub end: usize,
    pub first_scored_row: usize,
    /// One per logits row from `first_scored_row` to the window's end.
    pub rows: Vec<TopRow>,
}

/// Everything validate compares exports with.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceResults {
    pub prompts: Vec<PromptRun>,
    pub windows: Vec<WindowRun>,
    /// The reference's NLL of every scored text token, in order.
    pub nll: Vec<f64>,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// How the reference results of a validate were obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUse {
    /// No cache folder given.
    Off,
    /// Read from the cache.
    Hit,
    /// Not in the cache (or the stored key differed): computed and stored.
    Miss,
}

/// What the reference results depend on, besides the checkpoint.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub prompt_ids: &'a [Vec<u32>],
    /// The text tokens, already cut to the token cap.
    pub text_ids: &'a [u32],
    pub windows: &'a [(usize, usize, usize)],
    pub window: usize,
    pub stride: Option<usize>,
    pub max_tokens: usize,
    pub max_new_tokens: usize,
    pub eos: &'a [u32],
}

/// Greedy decoding: prefill `ids`, then `max_new` steps; returns (tokens, prefill logits, prefill secs, decode secs).
pub(crate) fn greedy(
    session: &mut dyn LlmSession,
    ids: &[u32],
    max_new: usize,
    eos: &[u32],
) -> Result<(Vec<u32>, Vec<f32>, f64, f64)> {
    session.reset()?;
    let t0 = Instant::now();
    let logits = session.forward(ids)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let vocab = logits.len() / ids.len();
    let mut next = metrics::argmax(&logits[logits.len() - vocab..]) as u32;
    let mut out = Vec::new();
    let t1 = Instant::now();
    while out.len() < max_new {
        out.push(next);
        if eos.contains(&next) || out.len() == max_new {
            break;
        }
        let l = session.forward(&[next])?;
        next = metrics::argmax(&l) as u32;
    }
    Ok((out, logits, prefill_secs, t1.elapsed().as_secs_f64()))
}

/// Run the reference over the prompts and the text windows.
pub fn compute(
    reference: &Reference,
    inputs: &Inputs<'_>,
    progress: &dyn Reporter,
) -> Result<ReferenceResults> {
    let mut session = ReferenceSession::new(reference);
    let (mut prefill, mut decode) = ((0usize, 0f64), (0usize, 0f64));
    let mut prompts = Vec::new();
    let stage = |name: &str, n: usize| progress.report(Event::stage(name, n as u64));
    stage("reference: prompts", inputs.prompt_ids.len());
    for ids in inputs.prompt_ids {
        let (greedy, logits, ps, ds) =
            greedy(&mut session, ids, inputs.max_new_tokens, inputs.eos)?;
        prefill = (prefill.0 + ids.len(), prefill.1 + ps);
        decode = (decode.0 + greedy.len().saturating_sub(1), decode.1 + ds);
        prompts.push(PromptRun {
            ids: ids.clone(),
            logits,
            greedy,
        });
        progress.report(Event::item(""));
    }
    progress.report(Event::End);
    let vocab = reference.vocab_size();
    let (mut windows, mut nll) = (Vec::new(), Vec::new());
    stage("reference: perplexity", inputs.windows.len());
    for &(start, end, first_scored_row) in inputs.windows {
        let w = &inputs.text_ids[start..end];
        session.reset()?;
        let logits = session.forward(w)?;
        // Every row from the first scored one, the window's last (which predicts past it) included, as the
        // logit comparison has always counted them; the NLLs need the rows with a target only.
        let scored = &logits[first_scored_row * vocab..];
        let rows: Vec<TopRow> = scored.chunks(vocab).map(TopRow::from_logits).collect();
        for (i, (row, &target)) in rows.iter().zip(&w[first_scored_row + 1..]).enumerate() {
            nll.push(row.log_z - f64::from(scored[i * vocab + target as usize]));
        }
        windows.push(WindowRun {
            start,
            end,
            first_scored_row,
            rows,
        });
        progress.report(Event::item(""));
    }
    progress.report(Event::End);
    let rate = |(tokens, secs): (usize, f64)| {
        if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        }
    };
    Ok(ReferenceResults {
        prompts,
        windows,
        nll: nll
            .into_iter()
            .map(|v| if v.is_nan() { f64::INFINITY } else { v })
            .collect(),
        prefill_tokens_per_s: rate(prefill),
        decode_tokens_per_s: rate(decode),
    })
}

/// Digest (FNV-1a, 64 bits) for file names and the ids in a key; the key itself is compared in full.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn ids_digest(ids: &[u32]) -> String {
    format!(
        "{:016x}:{}",
        fnv(ids.iter().flat_map(|i| i.to_le_bytes())),
        ids.len()
    )
}

/// The cache key of `inputs` on the checkpoint in `checkpoint_dir`, for reference numerics `version`.
pub fn cache_key(checkpoint_dir: &Path, inputs: &Inputs<'_>, version: &str) -> Result<String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(checkpoint_dir).map_err(|e| Error::io(checkpoint_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(checkpoint_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".safetensors") || name.ends_with(".json")) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        files.push(serde_json::json!([name, meta.len(), mtime_ns.to_string()]));
    }
    files.sort_by_key(|f| f[0].as_str().unwrap_or_default().to_string());
    let config_path = checkpoint_dir.join("config.json");
    let config = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let key = serde_json::json!({
        "format": FORMAT,
        "reference": version,
        "checkpoint": checkpoint_dir.canonicalize().unwrap_or_else(|_| checkpoint_dir.to_path_buf()),
        "files": files,
        "config": format!("{:016x}", fnv(config)),
        "prompts": inputs.prompt_ids.iter().map(|ids| ids_digest(ids)).collect::<Vec<_>>(),
        "text": ids_digest(inputs.text_ids),
        "window": inputs.window,
        "stride": inputs.stride,
        "max_tokens": inputs.max_tokens,
        "max_new_tokens": inputs.max_new_tokens,
        "eos": inputs.eos,
        "top_k": TOP_K,
    });
    Ok(key.to_string())
}

/// The cache file for `key` under `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("reference-{:016x}.oxref", fnv(key.bytes())))
}

/// The results stored under `dir` for `key`, or `compute()`d and stored there.
pub fn load_or_compute(
    dir: &Path,
    key: &str,
    compute: impl FnOnce() -> Result<ReferenceResults>,
) -> Result<(ReferenceResults, CacheUse)> {
    let path = cache_path(dir, key);
    if let Some(results) = read(&path, key)? {
        return Ok((results, CacheUse::Hit));
    }
    let results = compute()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Written beside the target and renamed, so a reader never sees half a file.
    let tmp = path.with_extension("oxref.tmp");
    write(&tmp, key, &results)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok((results, CacheUse::Miss))
}

/// `Some` only when the file exists, is whole and holds exactly `key`.
pub fn read(path: &Path, key: &str) -> Result<Option<ReferenceResults>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(None);
    };
    Ok(decode(&bytes, key))
}

fn write(path: &Path, key: &str, r: &ReferenceResults) -> Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, key.as_bytes());
    put_u64(&mut out, r.prompts.len() as u64);
    for p in &r.prompts {
        put_u32s(&mut out, &p.ids);
        put_f32s(&mut out, &p.logits);
        put_u32s(&mut out, &p.greedy);
    }
    put_u64(&mut out, r.windows.len() as u64);
    for w in &r.windows {
        for v in [w.start, w.end, w.first_scored_row, w.rows.len()] {
            put_u64(&mut out, v as u64);
        }
        for row in &w.rows {
            put_u32s(&mut out, &row.ids);
            put_f32s(&mut out, &row.logits);
            out.extend_from_slice(&row.log_z.to_le_bytes());
        }
    }
    put_u64(&mut out, r.nll.len() as u64);
    for v in r
        .nll
        .iter()
        .chain([&r.prefill_tokens_per_s, &r.decode_tokens_per_s])
    {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(&out).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_u32s(out: &mut Vec<u8>, v: &[u32]) {
    put_u64(out, v.len() as u64);
    v.iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    put_u64(out, v.len() as u64);
    v.iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
}

/// Reads the little-endian values `write` wrote; `None` at the first short read.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b).ok()?;
        Some(b)
    }

    fn u64(&mut self) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(self.take()?)).ok()
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take()?))
    }

    fn len(&mut self, size: usize) -> Option<usize> {
        let n = self.u64()?;
        (n.checked_mul(size)? <= self.0.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.len(1)?;
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b.to_vec())
    }

    fn u32s(&mut self) -> Option<Vec<u32>> {
        let n = self.len(4)?;
        (0..n)
            .map(|_| Some(u32::from_le_bytes(self.take()?)))
            .collect()
    }

    fn f32s(&mut self) -> Option<Vec<f32>> {
        let n = self.len(4)?;
        (0..n)
            .map(|_| Some(f32::from_le_bytes(self.take()?)))
            .collect()
    }
}

fn decode(bytes: &[u8], key: &str) -> Option<ReferenceResults> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let mut r = Reader(rest);
    if r.bytes()? != key.as_bytes() {
        return None;
    }
    let prompts = (0..r.len(24)?)
        .map(|_| {
            Some(PromptRun {
                ids: r.u32s()?,
                logits: r.f32s()?,
                greedy: r.u32s()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let windows = (0..r.len(32)?)
        .map(|_| {
            let (start, end, first_scored_row, n) = (r.u64()?, r.u64()?, r.u64()?, r.len(24)?);
            let rows = (0..n)
                .map(|_| {
                    Some(TopRow {
                        ids: r.u32s()?,
                        logits: r.f32s()?,
                        log_z: r.f64()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(WindowRun {
                start,
                end,
                first_scored_row,
                rows,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let nll = (0..r.len(8)?)
        .map(|_| r.f64())
        .collect::<Option<Vec<_>>>()?;
    let (prefill_tokens_per_s, decode_tokens_per_s) = (r.f64()?, r.f64()?);
    r.0.is_empty().then_some(ReferenceResults {
        prompts,
        windows,
        nll,
        prefill_tokens_per_s,
        decode_tokens_per_s,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn fixture_copy() -> tempfile::TempDir {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny");
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
        tmp
    }

    struct Case {
        prompts: Vec<Vec<u32>>,
        text: Vec<u32>,
        windows: Vec<(usize, usize, usize)>,
        window: usize,
        eos: Vec<u32>,
    }

    impl Case {
        fn new(window: usize, text_seed: u32) -> Self {
            let text: Vec<u32> = (0..40u32).map(|i| 3 + (i * 7 + text_seed) % 90).collect();
            Case {
                prompts: vec![vec![5, 9, 17, 33], vec![8, 2]],
                windows: crate::validate::text_windows(text.len(), window, None),
                text,
                window,
                eos: vec![0],
            }
        }

        fn inputs(&self) -> Inputs<'_> {
            Inputs {
                prompt_ids: &self.prompts,
                text_ids: &self.text,
                windows: &self.windows,
                window: self.window,
                stride: None,
                max_tokens: 4096,
                max_new_tokens: 4,
                eos: &self.eos,
            }
        }
    }

    /// `load_or_compute` for `case` on the checkpoint in `dir`, counting the computations.
    fn validate_once(
        cache: &Path,
        dir: &Path,
        case: &Case,
        version: &str,
        computed: &Cell<usize>,
    ) -> (ReferenceResults, CacheUse) {
        let inputs = case.inputs();
        let key = cache_key(dir, &inputs, version).unwrap();
        load_or_compute(cache, &key, || {
            computed.set(computed.get() + 1);
            let checkpoint = oxport_arch::Model::open(dir).unwrap();
            compute(
                &Reference::load(&checkpoint).unwrap(),
                &inputs,
                &oxport_io::Silent,
            )
        })
        .unwrap()
    }

    #[test]
    fn a_hit_returns_exactly_what_was_computed_and_computes_nothing() {
        let (model, cache) = (fixture_copy(), tempfile::tempdir().unwrap());
        let case = Case::new(16, 0);
        let computed = Cell::new(0);
        let (first, how) = validate_once(cache.path(), model.path(), &case, "v", &computed);
        assert_eq!((how, computed.get()), (CacheUse::Miss, 1));
        assert_eq!(first.prompts.len(), 2);
        assert_eq!(first.windows.len(), 3);
        assert_eq!(
            first.nll.len(),
            40 - 3,
            "every token but each window's first"
        );
        let (second, how) = validate_once(cache.path(), model.path(), &case, "v", &computed);
        assert_eq!((how, computed.get()), (CacheUse::Hit, 1));
        assert_eq!(first, second, "the stored results round-trip bit for bit");
    }

    #[test]
    fn every_kind_of_staleness_is_a_miss_and_recomputes() {
        let (model, cache) = (fixture_copy(), tempfile::tempdir().unwrap());
        let computed = Cell::new(0);
        let expect_miss = |case: &Case, version: &str, what: &str| {
            let before = computed.get();
            let (_, how) = validate_once(cache.path(), model.path(), case, version, &computed);
            assert_eq!(
                (how, computed.get()),
                (CacheUse::Miss, before + 1),
                "{what}"
            );
            let (_, how) = validate_once(cache.path(), model.path(), case, version, &computed);
            assert_eq!(how, CacheUse::Hit, "{what}: stored after recomputing");
        };
        expect_miss(&Case::new(16, 0), "v", "first run");
        expect_miss(&Case::new(16, 1), "v", "changed text");
        expect_miss(&Case::new(8, 0), "v", "changed window");
        expect_miss(&Case::new(16, 0), "v2", "changed reference version");
        // A changed checkpoint: a shard rewritten (same size, new modification time).
        let shard = model.path().join("model-00001-of-00002.safetensors");
        let file = std::fs::File::options().append(true).open(&shard).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
        drop(file);
        expect_miss(&Case::new(16, 0), "v", "changed checkpoint shard");
        // A changed config.json (same size: one digit of a float changed is enough; here an added space).
        let config = model.path().join("config.json");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replacen('{', "{ ", 1)).unwrap();
        expect_miss(&Case::new(16, 0), "v", "changed config.json");
    }

    #[test]
    fn a_truncated_file_or_a_different_stored_key_is_never_used() {
        let (model, cache) = (fixture_copy(), tempfile::tempdir().unwrap());
        let case = Case::new(16, 0);
        let computed = Cell::new(0);
        validate_once(cache.path(), model.path(), &case, "v", &computed);
        let key = cache_key(model.path(), &case.inputs(), "v").unwrap();
        let path = cache_path(cache.path(), &key);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(read(&path, &key).unwrap(), None, "truncated");
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path, &key).unwrap().is_some());
        assert_eq!(
            read(&path, &format!("{key} ")).unwrap(),
            None,
            "another key"
        );
        let (_, how) = validate_once(cache.path(), model.path(), &case, "v", &computed);
        assert_eq!(how, CacheUse::Hit);
    }
}
