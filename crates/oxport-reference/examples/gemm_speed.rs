//! GFLOP/s of the reference's GEMM on each instruction set and thread count (a measuring tool; CI does not run
//! examples):
//!
//! ```text
//! cargo run --release -p oxport-reference --example gemm_speed -- [N K OUT]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // a program (or test report) that prints by design

use std::time::Instant;

use oxport_reference::gemm::{F32Rows, Isa, detected_isa, gemm_with};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N K OUT"))
        .collect();
    let (n, k, out) = match args.as_slice() {
        [n, k, out] => (*n, *k, *out),
        _ => (256, 3072, 3072),
    };
    let x: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..out * k).map(|i| (i as f32 * 0.11).cos()).collect();
    // The portable kernel (software fma on x86 builds without the `fma` target feature) only on request.
    let mut isas = if std::env::var_os("GEMM_PORTABLE").is_some() {
        vec![Isa::Portable]
    } else {
        vec![]
    };
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(Isa::Avx2Fma);
        }
    }
    if !isas.contains(&detected_isa()) {
        isas.push(detected_isa());
    }
    for isa in isas {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            // At least 11 runs and half a second of them, so that the CPU clock's 10 ms ticks do not matter.
            let (mut secs, start, cpu0) = (Vec::new(), Instant::now(), cpu_secs());
            while secs.len() < 11 || start.elapsed().as_secs_f64() < 0.5 {
                let t = Instant::now();
                pool.install(|| gemm_with(isa, &x, n, k, &F32Rows { data: &w, k }));
                secs.push(t.elapsed().as_secs_f64());
            }
            let cpu = cpu_secs() - cpu0;
            let runs = secs.len();
            secs.sort_by(f64::total_cmp);
            let flop = 2.0 * (n * k * out) as f64;
            println!(
                "{isa:?} threads {threads}: median {:.4} s of {runs} runs, {:.1} GFLOP/s wall, {:.1} GFLOP per \
                 CPU-second (all runs)",
                secs[runs / 2],
                flop / secs[runs / 2] / 1e9,
                flop * runs as f64 / cpu / 1e9
            );
        }
    }
}

/// User + system CPU time of this process so far (`/proc/self/stat`, clock ticks of 1/100 s), so that a busy
/// machine's share of the cores does not count against the kernel.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
