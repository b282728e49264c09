//! `y = x · Wᵀ` for every linear layer: `x` is `[n, k]` f32 activations, `W` a PyTorch `[out, k]` weight in
//! BF16/F16/F32, read from the mapped checkpoint and widened to f32 one panel at a time (never the whole tensor).
//!
//! **One summation order everywhere.** Every output `y[t, o]` is one chain of fused multiply-adds over `k` in
//! increasing order, starting from `+0.0`: `acc = fma(x[t, i], w[o, i], acc)` for `i = 0, 1, …, k - 1`. The
//! kernels vectorize over *outputs* (one lane per output column, the activation `x[t, i]` broadcast), so the
//! order does not depend on the vector width: AVX-512 holds 16 outputs per register, AVX2 8, the portable kernel
//! one at a time with `f32::mul_add` (a correctly rounded fused multiply-add, the same operation as `vfmadd`), and
//! all three give the same bits. Blocking over `k` stores a chain's f32 accumulator and loads it again, which
//! changes nothing; the work is split over output panels only — never over `k` — so any number of threads and any
//! tile sizes give the same bits too.
//!
//! **Blocking.** A rayon task owns a run of output panels of [`NR`] outputs. For each panel and each slice of
//! `k` (equal slices of at most [`KC`] values) it widens the panel's rows into f32 and packs them as `[k][NR]` (an
//! L1-sized block), then sweeps every token tile over it with the register kernel (`MR` tokens × [`NR`] outputs:
//! 14 × 2 zmm on AVX-512, 3 × 4 ymm on AVX2), the activations packed per token tile as `[k][MR]` once per call and
//! shared by all tasks. A BF16 panel (the checkpoints' usual dtype) is first copied whole from the mapping (its
//! rows are contiguous: one sequential read) and then widened and transposed in registers, 32 values of 16 rows
//! at a time. So each weight is read from the mapping once per call: when decoding (a few tokens, one tile) the
//! GEMM is a GEMV that streams the weights once, bandwidth-bound.
//!
//! Why not the `gemm` crate: it picks its `k` blocking from the CPU's detected cache sizes and adds each block's
//! partial sum to the output, so its bits depend on the machine (and on its kernel per instruction set), and it
//! needs f32 operands, where this kernel widens BF16 panels straight from the mapping.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod pack;
mod portable;
#[cfg(test)]
mod tests;

#[cfg(test)]
use pack::transpose_into;
use pack::{bf16_panel, pack_activations, pack_weights};
use portable::kernel_portable;
#[cfg(test)]
use portable::transpose_portable;

/// Outputs of a register tile and of a packed weight panel: two AVX-512 registers of f32.
pub const NR: usize = 32;
/// Most values of `k` per packed weight panel: the `[KC][NR]` panel (32 KiB) stays in L1 while every token tile
/// sweeps over it.
const KC: usize = 256;
/// Multiply-adds a rayon task should hold at least (small GEMMs get several panels per task).
const MIN_TASK_MACS: usize = 1 << 18;

/// Instruction sets the kernel has a path for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Tokens of this instruction set's register tile.
    fn mr(self) -> usize {
        match self {
            Isa::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => 3,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::MR_AVX512,
        }
    }
}

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Run the portable kernel whatever the CPU has (tests, and comparing speeds).
pub fn force_portable_kernels(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::Relaxed);
}

/// The fastest path this CPU supports, chosen at run time.
pub fn detected_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
    }
    Isa::Portable
}

/// The path [`gemm`] takes now.
pub fn active_isa() -> Isa {
    if FORCE_PORTABLE.load(Ordering::Relaxed) {
        Isa::Portable
    } else {
        detected_isa()
    }
}

/// Where the rows of a `[out, k]` weight come from: widened into f32 on request.
pub trait WeightRows: Sync {
    fn out_dim(&self) -> usize;
    /// Write the values `cols` of row `row` as f32 into `out` (`cols.len()` values).
    fn widen(&self, row: usize, cols: Range<usize>, out: &mut [f32]);
    /// The whole `[out, k]` weight as little-endian BF16 bytes, when it is stored so: the packing then widens
    /// and transposes in registers (the same values as [`widen`](Self::widen), without the f32 round trip).
    fn bf16_bytes(&self) -> Option<&[u8]> {
        None
    }
}

/// An f32 weight already in memory.
pub struct F32Rows<'a> {
    pub data: &'a [f32],
    pub k: usize,
}

impl WeightRows for F32Rows<'_> {
    fn out_dim(&self) -> usize {
        self.data.len() / self.k
    }

    fn widen(&self, row: usize, cols: Range<usize>, out: &mut [f32]) {
        out.copy_from_slice(&self.data[row * self.k + cols.start..row * self.k + cols.end]);
    }
}

/// `y[t, o] = Σ_i x[t, i] · w[o, i]`: `[n * out]`, with the summation order of the module doc.
pub fn gemm(x: &[f32], n: usize, k: usize, w: &dyn WeightRows) -> Vec<f32> {
    gemm_with(active_isa(), x, n, k, w)
}

/// [`gemm`] into `y` (resized to `[n * out]`), so that a caller reusing one buffer across layers does not take
/// fresh pages from the kernel (page faults and zeroing) for every product.
pub fn gemm_into(x: &[f32], n: usize, k: usize, w: &dyn WeightRows, y: &mut Vec<f32>) {
    gemm_with_into(active_isa(), x, n, k, w, y);
}

/// [`gemm`] on a given instruction set (which must be supported).
pub fn gemm_with(isa: Isa, x: &[f32], n: usize, k: usize, w: &dyn WeightRows) -> Vec<f32> {
    let mut y = Vec::new();
    gemm_with_into(isa, x, n, k, w, &mut y);
    y
}

/// [`gemm_with`] into `y`, as [`gemm_into`].
pub fn gemm_with_into(
    isa: Isa,
    x: &[f32],
    n: usize,
    k: usize,
    w: &dyn WeightRows,
    y: &mut Vec<f32>,
) {
    let out_dim = w.out_dim();
    assert_eq!(x.len(), n * k, "gemm: activations are not [{n}, {k}]");
    y.clear();
    if n == 0 || out_dim == 0 || k == 0 {
        y.resize(n * out_dim, 0.0);
        return;
    }
    // Every element is written by the first `k` slice of its tile (raw stores through `Output`); the length is
    // set once they all have been, so the buffer is not zeroed first.
    y.reserve(n * out_dim);
    let mr = isa.mr();
    // Equal slices of at most `KC` (no short last slice).
    let kc = k.div_ceil(k.div_ceil(KC));
    // The packed activations live in a buffer of the calling thread, kept between calls (taken out while in use,
    // so that a nested call on the same thread allocates its own).
    let mut packed_x = PACKED_X.take();
    pack_activations(x, n, k, mr, &mut packed_x);
    let out = Output {
        ptr: y.as_mut_ptr(),
        len: n * out_dim,
        ld: out_dim,
    };
    let panels = out_dim.div_ceil(NR);
    let min_len = MIN_TASK_MACS
        .div_ceil(n * k * NR)
        .min(panels.div_ceil(4 * rayon::current_num_threads()))
        .max(1);
    (0..panels)
        .into_par_iter()
        .with_min_len(min_len)
        .for_each(|p| {
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.reserve(kc);
                let Scratch { rows, bytes, panel } = scratch;
                let o0 = p * NR;
                let cols = NR.min(out_dim - o0);
                let raw = bf16_panel(w, o0..o0 + cols, k, n <= mr, bytes);
                for k0 in (0..k).step_by(kc) {
                    let len = kc.min(k - k0);
                    let panel = &mut panel[..len * NR];
                    match raw {
                        // SAFETY: `bf16_panel` only copies rows when the CPU has AVX-512F.
                        #[cfg(target_arch = "x86_64")]
                        Some(raw) => unsafe {
                            avx512::pack_bf16_avx512(raw, k, k0..k0 + len, panel)
                        },
                        _ => pack_weights(w, o0..o0 + cols, k0..k0 + len, rows, panel),
                    }
                    for t0 in (0..n).step_by(mr) {
                        let m = mr.min(n - t0);
                        // The tile's activations: `[k][m]` from `t0 * k`.
                        let xs = &packed_x[t0 * k + k0 * m..t0 * k + (k0 + len) * m];
                        let tile = Tile {
                            m,
                            cols,
                            first: k0 == 0,
                            at: t0 * out_dim + o0,
                        };
                        kernel(isa, xs, panel, len, out, tile);
                    }
                }
            })
        });
    PACKED_X.set(packed_x);
    // SAFETY: the capacity was reserved above, and the tiles, which cover every token and every output, have
    // written every element (the rayon loop has joined).
    unsafe { y.set_len(n * out_dim) };
}

thread_local! {
    static PACKED_X: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Per-thread buffers of the packing, kept between calls (no allocation or zeroing per task).
#[derive(Default)]
struct Scratch {
    /// Widened rows, `[NR][len]`.
    rows: Vec<f32>,
    /// Raw BF16 rows, `[NR][k]`.
    bytes: Vec<u8>,
    /// The packed panel, `[len][NR]`.
    panel: Vec<f32>,
}

impl Scratch {
    fn reserve(&mut self, kc: usize) {
        if self.panel.len() < NR * kc {
            self.rows.resize(NR * kc, 0.0);
            self.panel.resize(NR * kc, 0.0);
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The `[n][out]` output, shared by the tasks: each writes only the columns of its own panels.
#[derive(Clone, Copy)]
struct Output {
    ptr: *mut f32,
    len: usize,
    /// Values per token row.
    ld: usize,
}

// SAFETY: tasks write disjoint elements (their own panels' columns) and nothing reads them until every task has
// finished (the rayon join at the end of `gemm_with`).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// One register tile of the output: `m` tokens × `cols` outputs from element `at`.
#[derive(Clone, Copy)]
struct Tile {
    m: usize,
    cols: usize,
    /// The first `k` slice: accumulators start at `+0.0` instead of the stored values.
    first: bool,
    at: usize,
}

impl Output {
    /// The tile's first element; checks that the whole tile is in bounds.
    fn tile_ptr(self, tile: Tile) -> *mut f32 {
        assert!(tile.cols <= NR && tile.m > 0);
        assert!(tile.at + (tile.m - 1) * self.ld + tile.cols <= self.len);
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.add(tile.at) }
    }
}

/// Continue the chains of one tile over `len` values of `k`: `xs` is `[len][m]`, `ws` is `[len][NR]`.
fn kernel(isa: Isa, xs: &[f32], ws: &[f32], len: usize, out: Output, tile: Tile) {
    assert!(xs.len() == len * tile.m && ws.len() == len * NR);
    let c = out.tile_ptr(tile);
    match isa {
        Isa::Portable => kernel_portable(xs, ws, len, c, out.ld, tile),
        // SAFETY: the variant is only chosen when the CPU has the feature (`detected_isa`); the operands and the
        // tile were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { avx2::kernel_avx2(xs, ws, len, c, out.ld, tile) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::kernel_avx512(xs, ws, len, c, out.ld, tile) },
    }
}
