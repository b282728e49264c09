//! Decode every tensor of a checkpoint to f32, one at a time, as a streaming exporter does; with
//! `Checkpoint::release` after each read, peak RSS stays near the largest single tensor.
//! Usage: `cargo run --release -p oxport-hf --example read_all -- DIR [--no-release]` (measure with
//! `/usr/bin/time -v`); `--no-release` decodes through `view()` without releasing, for comparison.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: read_all DIR")?;
    let start = std::time::Instant::now();
    let ckpt = oxport_hf::Checkpoint::open(&dir)?;
    let keep_pages = std::env::args().any(|a| a == "--no-release");
    let mut values = 0usize;
    for t in ckpt.tensors() {
        values += if keep_pages {
            ckpt.view_of(t).to_f32()?.len()
        } else {
            ckpt.read_f32(&t.name)?.len()
        };
    }
    println!(
        "{values} values from {} tensors in {:.2} s",
        ckpt.tensors().len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
