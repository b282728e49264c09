//! Wall time, speed and peak RSS of the reference forward pass on one checkpoint (a measuring tool; CI does not
//! run examples):
//!
//! ```text
//! /usr/bin/time -v cargo run --release -p oxport-reference --example reference_rss -- MODEL_DIR [NEW_TOKENS] [--prompt N] [--dump FILE]
//! ```
//!
//! Prefills a fixed prompt of N tokens (default 16), then decodes `NEW_TOKENS` (default 8) greedily, one token per forward call.
//! `--dump FILE` writes every returned logit (little-endian f32, prefill rows then one row per decoded token), so two
//! builds can be compared byte for byte.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

use std::io::Write;
use std::time::Instant;

use oxport_arch::Model;
use oxport_reference::Reference;

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// Peak resident set size so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut new_tokens, mut dump, mut prompt_len) = (None, 8usize, None, 16u32);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--prompt" => prompt_len = args.next().ok_or("--prompt needs a count")?.parse()?,
            "--dump" => dump = Some(args.next().ok_or("--dump needs a file")?),
            _ if dir.is_none() => dir = Some(a),
            _ => new_tokens = a.parse()?,
        }
    }
    let dir = dir.ok_or("usage: reference_rss MODEL_DIR [NEW_TOKENS] [--dump FILE]")?;

    let t0 = Instant::now();
    let checkpoint = Model::open(&dir)?;
    let reference = Reference::load(&checkpoint)?;
    let load_secs = t0.elapsed().as_secs_f64();
    let vocab = reference.vocab_size();
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|i| 3 + (i * 37 + 11) % (vocab as u32 - 8))
        .collect();

    let mut all = Vec::new();
    let mut cache = reference.new_cache();
    let t1 = Instant::now();
    let logits = reference.forward(&prompt, &mut cache)?;
    let prefill_secs = t1.elapsed().as_secs_f64();
    let mut next = argmax(&logits[logits.len() - vocab..]);
    all.extend_from_slice(&logits);
    let mut generated = vec![next];
    let t2 = Instant::now();
    for _ in 1..new_tokens {
        let logits = reference.forward(&[next], &mut cache)?;
        next = argmax(&logits);
        all.extend_from_slice(&logits);
        generated.push(next);
    }
    let decode_secs = t2.elapsed().as_secs_f64();
    let decoded = new_tokens.saturating_sub(1);

    println!("checkpoint      {dir}");
    println!("load            {load_secs:.2} s");
    println!(
        "prefill         {} tokens in {prefill_secs:.2} s ({:.2} tokens/s)",
        prompt.len(),
        prompt.len() as f64 / prefill_secs
    );
    println!(
        "decode          {decoded} tokens in {decode_secs:.2} s ({:.3} tokens/s)",
        decoded as f64 / decode_secs.max(1e-9)
    );
    println!("greedy ids      {generated:?}");
    if let Some(mib) = peak_rss_mib() {
        println!("peak RSS        {mib:.0} MiB");
    }
    if let Some(path) = dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for v in &all {
            f.write_all(&v.to_le_bytes())?;
        }
        f.flush()?;
    }
    Ok(())
}
