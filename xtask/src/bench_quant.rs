//! `cargo xtask bench-quant`: weights/s of every oxport-quant kernel on an 8192×3072 BF16 matrix (N = 8192
//! rows of K = 3072: the shape of half of Phi-3-mini's mlp.gate_up_proj), on 1 and 2 rayon threads.
//! Not a test: prints a Markdown table and writes it (plus JSON) under `target/bench/`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use half::bf16;
use oxport_hf::DType;
use oxport_quant::{
    NBitsParams, NncfMode, Rows, ScaleDtype, compress_nncf, compress_nncf_rows, f32_to_f16_bytes,
    quantize_nbits, quantize_nbits_rows,
};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Rows (N, output features).
    #[arg(long, default_value_t = 8192)]
    rows: usize,
    /// Columns (K, input features).
    #[arg(long, default_value_t = 3072)]
    cols: usize,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Timed repetitions per case (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Markdown report; JSON beside it with the `.json` extension.
    #[arg(long, default_value = "target/bench/quant.md")]
    out: PathBuf,
}

#[derive(serde::Serialize)]
struct Row {
    scheme: String,
    threads: usize,
    secs: f64,
    weights_per_sec: f64,
    /// CPU seconds of the whole process (user + system) during the best run.
    cpu_secs: f64,
    /// Weights per CPU second: the per-core rate, meaningful even on a loaded machine.
    weights_per_cpu_sec: f64,
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// One kernel run: the BF16 bytes (as a checkpoint view hands them out), the same values decoded to f32, N, K.
type Kernel = Box<dyn Fn(Rows<'_>, &[f32], usize, usize) + Sync>;

fn kernels() -> Vec<(&'static str, Kernel)> {
    let nbits = |bits: u32,
                 block_size: usize,
                 symmetric: bool,
                 scale_dtype: ScaleDtype,
                 bf16_rows: bool|
     -> Kernel {
        let p = NBitsParams {
            bits,
            block_size,
            symmetric,
            scale_dtype,
        };
        Box::new(move |rows, w, n, k| {
            let q = if bf16_rows {
                quantize_nbits_rows(rows, n, k, &p)
            } else {
                quantize_nbits(w, n, k, &p)
            };
            std::hint::black_box(q.expect("quantize_nbits"));
        })
    };
    let nncf = |mode: NncfMode, group: Option<usize>, bf16_rows: bool| -> Kernel {
        Box::new(move |rows, w, n, k| {
            let q = if bf16_rows {
                compress_nncf_rows(rows, n, k, mode, group)
            } else {
                compress_nncf(w, n, k, mode, group)
            };
            std::hint::black_box(q.expect("compress_nncf"));
        })
    };
    vec![
        (
            "ORT MatMulNBits int4 sym b128 f32-scales",
            nbits(4, 128, true, ScaleDtype::F32, true),
        ),
        (
            "ORT MatMulNBits int4 sym b128 f32-scales (f32 input)",
            nbits(4, 128, true, ScaleDtype::F32, false),
        ),
        (
            "ORT MatMulNBits int4 sym b32 f32-scales",
            nbits(4, 32, true, ScaleDtype::F32, true),
        ),
        (
            "ORT MatMulNBits int4 asym b128 f32-scales",
            nbits(4, 128, false, ScaleDtype::F32, true),
        ),
        (
            "ORT MatMulNBits int4 sym b128 f16-scales",
            nbits(4, 128, true, ScaleDtype::F16, true),
        ),
        (
            "ORT MatMulNBits int8 sym b128 f32-scales",
            nbits(8, 128, true, ScaleDtype::F32, true),
        ),
        (
            "NNCF int4_sym g128",
            nncf(NncfMode::Int4Sym, Some(128), true),
        ),
        (
            "NNCF int4_sym g128 (f32 input)",
            nncf(NncfMode::Int4Sym, Some(128), false),
        ),
        (
            "NNCF int4_asym g128",
            nncf(NncfMode::Int4Asym, Some(128), true),
        ),
        (
            "NNCF int8_asym per-channel",
            nncf(NncfMode::Int8Asym, None, true),
        ),
        (
            "NNCF int8_sym per-channel",
            nncf(NncfMode::Int8Sym, None, true),
        ),
        (
            "NNCF sensitivity (int8_asym error, f32 input)",
            Box::new(|_, w, n, k| {
                std::hint::black_box(oxport_quant::sensitivity::int8_asym_error(w, n, k));
            }),
        ),
        (
            "fp16 conversion (f32 input)",
            Box::new(|_, w, _, _| {
                std::hint::black_box(f32_to_f16_bytes(w));
            }),
        ),
    ]
}

pub(crate) fn run(args: Args) -> Result<()> {
    let (n, k) = (args.rows, args.cols);
    // A BF16 checkpoint-like matrix (N(0, 0.02)); kernels read the BF16 bytes row by row unless marked
    // "(f32 input)", which take the matrix decoded to f32 up front.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3072);
    let normal = Normal::new(0f32, 0.02).expect("valid normal");
    let bf: Vec<bf16> = (0..n * k)
        .map(|_| bf16::from_f32(normal.sample(&mut rng)))
        .collect();
    let w: Vec<f32> = bf.iter().map(|v| v.to_f32()).collect();
    let bytes: Vec<u8> = bf.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let input = Rows::Encoded {
        bytes: &bytes,
        dtype: DType::BF16,
    };
    let numel = (n * k) as f64;

    let mut rows = Vec::new();
    for (name, kernel) in kernels() {
        for &threads in &args.threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            let mut best = f64::INFINITY;
            let mut best_cpu = f64::INFINITY;
            pool.install(|| kernel(input, &w, n, k)); // warm-up: page in the output buffers' allocator arenas
            for _ in 0..args.reps {
                let (t, c) = (Instant::now(), cpu_secs());
                pool.install(|| kernel(input, &w, n, k));
                best = best.min(t.elapsed().as_secs_f64());
                best_cpu = best_cpu.min(cpu_secs() - c);
            }
            eprintln!(
                "{name:<44} {threads} thread(s): {best:>8.3} s  {:>7.3} G weights/s  {:>7.3} G weights/CPU-s",
                numel / best / 1e9,
                numel / best_cpu / 1e9
            );
            rows.push(Row {
                scheme: name.to_string(),
                threads,
                secs: best,
                weights_per_sec: numel / best,
                cpu_secs: best_cpu,
                weights_per_cpu_sec: numel / best_cpu,
            });
        }
    }

    let mut md = format!(
        "# oxport-quant kernels, {n}×{k} BF16 matrix ({} weights), best of {}\n\n\
         Load average at start: {}. G weights/CPU-s is the per-core rate (process CPU time), meaningful on a \
         shared machine; wall-clock speed-up needs idle cores.\n\n\
         | scheme | threads | seconds | G weights/s | G weights/CPU-s | speed-up vs 1 thread |\n\
         |---|---|---|---|---|---|\n",
        n * k,
        args.reps,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    for r in &rows {
        let one = rows
            .iter()
            .find(|o| o.scheme == r.scheme && o.threads == 1)
            .map(|o| o.secs);
        let speedup = one.map_or(String::from("-"), |s| format!("{:.2}×", s / r.secs));
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {speedup} |\n",
            r.scheme,
            r.threads,
            r.secs,
            r.weights_per_sec / 1e9,
            r.weights_per_cpu_sec / 1e9
        ));
    }
    print!("{md}");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)?;
    std::fs::write(
        args.out.with_extension("json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}
