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
            Isa::Avx512 => x86::MR_AVX512,
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
                        Some(raw) => unsafe { x86::pack_bf16_avx512(raw, k, k0..k0 + len, panel) },
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

/// `x` as token tiles of `mr` tokens (the last one shorter), each `[k][tokens of the tile]`, from `t0 * k`.
fn pack_activations(x: &[f32], n: usize, k: usize, mr: usize, packed: &mut Vec<f32>) {
    packed.clear();
    packed.resize(n * k, 0.0);
    packed
        .par_chunks_mut(mr * k)
        .enumerate()
        .for_each(|(tile, block)| {
            let t0 = tile * mr;
            let m = block.len() / k;
            let rows = &x[t0 * k..(t0 + m) * k];
            // Written in order, read from `m` rows at once (each a sequential stream).
            for (j, column) in block.chunks_exact_mut(m).enumerate() {
                for (i, v) in column.iter_mut().enumerate() {
                    *v = rows[i * k + j];
                }
            }
        });
}

/// A full panel of BF16 rows (`rows`: [`NR`] of them, `k` values each) for [`x86::pack_bf16_avx512`] when the CPU
/// has AVX-512F. When the panel is packed once per slice for many token tiles (prefill), it is copied into `buf`
/// first: one sequential read of the mapping (the rows of a panel are contiguous), which the hardware prefetcher
/// follows. When `direct` (decoding: one token tile, the weights streamed once) the packing reads the mapping
/// itself, 16 rows interleaved, with software prefetches a few lines ahead, so that the reads overlap the
/// transposes and the kernel instead of waiting for a copy (measured: about 1.5× the decode speed of copying).
fn bf16_panel<'a>(
    w: &'a dyn WeightRows,
    rows: Range<usize>,
    k: usize,
    direct: bool,
    buf: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    #[cfg(target_arch = "x86_64")]
    if let Some(bytes) = w.bf16_bytes()
        && rows.len() == NR
        && std::is_x86_feature_detected!("avx512f")
    {
        if direct {
            return Some(&bytes[2 * rows.start * k..2 * rows.end * k]);
        }
        buf.resize(buf.len().max(2 * NR * k), 0);
        let buf = &mut buf[..2 * NR * k];
        buf.copy_from_slice(&bytes[2 * rows.start * k..2 * rows.end * k]);
        return Some(buf);
    }
    let _ = (w, rows, k, direct, buf);
    None
}

/// Rows `rows` (at most [`NR`]), values `cols` of `w` as a `[cols][NR]` panel; outputs past `rows` are zeros.
/// `scratch` holds the widened rows first (`[NR][cols]`).
fn pack_weights(
    w: &dyn WeightRows,
    rows: Range<usize>,
    cols: Range<usize>,
    scratch: &mut [f32],
    panel: &mut [f32],
) {
    let len = cols.len();
    let scratch = &mut scratch[..NR * len];
    for (j, o) in rows.clone().enumerate() {
        w.widen(o, cols.clone(), &mut scratch[j * len..(j + 1) * len]);
    }
    scratch[rows.len() * len..].fill(0.0);
    transpose_into(scratch, len, panel);
}

/// `[NR][len]` → `[len][NR]`.
fn transpose_into(src: &[f32], len: usize, dst: &mut [f32]) {
    assert!(src.len() == NR * len && dst.len() == NR * len);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the lengths were checked.
        return unsafe { x86::transpose_avx512(src, len, dst) };
    }
    transpose_portable(src, len, dst, 0);
}

/// [`transpose_into`] from column `from` on.
fn transpose_portable(src: &[f32], len: usize, dst: &mut [f32], from: usize) {
    for i in from..len {
        for j in 0..NR {
            dst[i * NR + j] = src[j * len + i];
        }
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
        Isa::Avx2Fma => unsafe { x86::kernel_avx2(xs, ws, len, c, out.ld, tile) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::kernel_avx512(xs, ws, len, c, out.ld, tile) },
    }
}

fn kernel_portable(xs: &[f32], ws: &[f32], len: usize, c: *mut f32, ld: usize, tile: Tile) {
    let m = tile.m;
    for i in 0..m {
        for j in 0..tile.cols {
            // SAFETY: inside the tile `Output::tile_ptr` checked; read only once written (after the first slice).
            let y = unsafe { c.add(i * ld + j) };
            let mut acc = if tile.first { 0.0 } else { unsafe { y.read() } };
            for s in 0..len {
                acc = xs[s * m + i].mul_add(ws[s * NR + j], acc);
            }
            // SAFETY: as above.
            unsafe { y.write(acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{NR, Tile};

    /// Tokens of the AVX-512 tile: 14 × 2 accumulators fill 28 of the 32 zmm registers.
    pub(super) const MR_AVX512: usize = 14;

    /// [`super::kernel_portable`] with 2 zmm per token (16 outputs each), `m` ≤ [`MR_AVX512`] tokens.
    ///
    /// # Safety
    /// AVX-512F; `xs`/`ws` hold `len` steps; `c` is a tile of `tile.m` rows of `tile.cols` values `ld` apart.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_avx512(
        xs: &[f32],
        ws: &[f32],
        len: usize,
        c: *mut f32,
        ld: usize,
        tile: Tile,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match tile.m {
                1 => tile_avx512::<1>(xs, ws, len, c, ld, tile),
                2 => tile_avx512::<2>(xs, ws, len, c, ld, tile),
                3 => tile_avx512::<3>(xs, ws, len, c, ld, tile),
                4 => tile_avx512::<4>(xs, ws, len, c, ld, tile),
                5 => tile_avx512::<5>(xs, ws, len, c, ld, tile),
                6 => tile_avx512::<6>(xs, ws, len, c, ld, tile),
                7 => tile_avx512::<7>(xs, ws, len, c, ld, tile),
                8 => tile_avx512::<8>(xs, ws, len, c, ld, tile),
                9 => tile_avx512::<9>(xs, ws, len, c, ld, tile),
                10 => tile_avx512::<10>(xs, ws, len, c, ld, tile),
                11 => tile_avx512::<11>(xs, ws, len, c, ld, tile),
                12 => tile_avx512::<12>(xs, ws, len, c, ld, tile),
                13 => tile_avx512::<13>(xs, ws, len, c, ld, tile),
                14 => tile_avx512::<14>(xs, ws, len, c, ld, tile),
                m => unreachable!("AVX-512 tile of {m} tokens"),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_avx512<const M: usize>(
        xs: &[f32],
        ws: &[f32],
        len: usize,
        c: *mut f32,
        ld: usize,
        tile: Tile,
    ) {
        let lo = mask16(tile.cols);
        let hi = mask16(tile.cols.saturating_sub(16));
        // SAFETY: the caller's contract; loads and stores of the tile are masked to its columns.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; M];
            if !tile.first {
                for (i, a) in acc.iter_mut().enumerate() {
                    let p = c.add(i * ld);
                    *a = [
                        _mm512_maskz_loadu_ps(lo, p),
                        _mm512_maskz_loadu_ps(hi, p.add(16)),
                    ];
                }
            }
            let (mut xp, mut wp) = (xs.as_ptr(), ws.as_ptr());
            for _ in 0..len {
                let w0 = _mm512_loadu_ps(wp);
                let w1 = _mm512_loadu_ps(wp.add(16));
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xp.add(i));
                    a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
                }
                xp = xp.add(M);
                wp = wp.add(NR);
            }
            for (i, a) in acc.iter().enumerate() {
                let p = c.add(i * ld);
                _mm512_mask_storeu_ps(p, lo, a[0]);
                _mm512_mask_storeu_ps(p.add(16), hi, a[1]);
            }
        }
    }

    fn mask16(cols: usize) -> __mmask16 {
        if cols >= 16 {
            0xffff
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    }

    /// [`super::kernel_portable`] with 4 ymm per token (8 outputs each), `m` ≤ 3 tokens; edge tiles go through
    /// a full-width copy.
    ///
    /// # Safety
    /// AVX2 and FMA; as [`kernel_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        xs: &[f32],
        ws: &[f32],
        len: usize,
        c: *mut f32,
        ld: usize,
        tile: Tile,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if tile.cols == NR {
                return kernel_avx2_full(xs, ws, len, c, ld, tile);
            }
            let mut buf = [0f32; 3 * NR];
            if !tile.first {
                for i in 0..tile.m {
                    for j in 0..tile.cols {
                        buf[i * NR + j] = *c.add(i * ld + j);
                    }
                }
            }
            kernel_avx2_full(xs, ws, len, buf.as_mut_ptr(), NR, tile);
            for i in 0..tile.m {
                for j in 0..tile.cols {
                    *c.add(i * ld + j) = buf[i * NR + j];
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_avx2_full(
        xs: &[f32],
        ws: &[f32],
        len: usize,
        c: *mut f32,
        ld: usize,
        tile: Tile,
    ) {
        // SAFETY: forwarded.
        unsafe {
            match tile.m {
                1 => tile_avx2::<1>(xs, ws, len, c, ld, tile.first),
                2 => tile_avx2::<2>(xs, ws, len, c, ld, tile.first),
                3 => tile_avx2::<3>(xs, ws, len, c, ld, tile.first),
                m => unreachable!("AVX2 tile of {m} tokens"),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_avx2<const M: usize>(
        xs: &[f32],
        ws: &[f32],
        len: usize,
        c: *mut f32,
        ld: usize,
        first: bool,
    ) {
        // SAFETY: the caller's contract (a full-width tile).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 4]; M];
            if !first {
                for (i, a) in acc.iter_mut().enumerate() {
                    for (h, v) in a.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(c.add(i * ld + 8 * h));
                    }
                }
            }
            let (mut xp, mut wp) = (xs.as_ptr(), ws.as_ptr());
            for _ in 0..len {
                let w = [
                    _mm256_loadu_ps(wp),
                    _mm256_loadu_ps(wp.add(8)),
                    _mm256_loadu_ps(wp.add(16)),
                    _mm256_loadu_ps(wp.add(24)),
                ];
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(*xp.add(i));
                    for h in 0..4 {
                        a[h] = _mm256_fmadd_ps(xv, w[h], a[h]);
                    }
                }
                xp = xp.add(M);
                wp = wp.add(NR);
            }
            for (i, a) in acc.iter().enumerate() {
                for (h, v) in a.iter().enumerate() {
                    _mm256_storeu_ps(c.add(i * ld + 8 * h), *v);
                }
            }
        }
    }

    /// [`super::transpose_into`] in 16 × 16 blocks, the last `len mod 16` columns scalar.
    ///
    /// # Safety
    /// AVX-512F; `src` and `dst` hold `NR * len` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_avx512(src: &[f32], len: usize, dst: &mut [f32]) {
        let full = len - len % 16;
        // SAFETY: every block read is inside `src` (`[NR][len]`), every block written inside `dst`.
        unsafe {
            for half in 0..NR / 16 {
                for i0 in (0..full).step_by(16) {
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (j, v) in r.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(src.as_ptr().add((half * 16 + j) * len + i0));
                    }
                    let t = transpose16(r);
                    for (i, v) in t.iter().enumerate() {
                        _mm512_storeu_ps(dst.as_mut_ptr().add((i0 + i) * NR + half * 16), *v);
                    }
                }
            }
        }
        super::transpose_portable(src, len, dst, full);
    }

    /// [`super::pack_weights`] of `NR` BF16 rows (`rows`: `[NR][k]` little-endian BF16), values `cols`: 32 values
    /// of 16 rows are one 16 × 16 transpose of value pairs, then each pair's low half (shifted up) is the even
    /// value's f32 and its high half (masked) the odd one's — exact, as [`super::WeightRows::widen`].
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_bf16_avx512(
        rows: &[u8],
        k: usize,
        cols: std::ops::Range<usize>,
        panel: &mut [f32],
    ) {
        let len = cols.len();
        assert!(rows.len() == 2 * NR * k && cols.end <= k && panel.len() == NR * len);
        let full = len - len % 32;
        let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        // SAFETY: every load is 32 values of a row inside `cols`, every store 16 values of `panel`.
        unsafe {
            let (src, dst) = (rows.as_ptr(), panel.as_mut_ptr());
            for half in 0..NR / 16 {
                for i0 in (0..full).step_by(32) {
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (j, v) in r.iter_mut().enumerate() {
                        let at = 2 * ((half * 16 + j) * k + cols.start + i0);
                        // Straight from the mapping (decoding), 16 rows interleaved: fetch 4 lines ahead.
                        _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(at + 256).cast());
                        *v = _mm512_loadu_ps(src.add(at).cast());
                    }
                    let t = transpose16(r);
                    for (p, v) in t.iter().enumerate() {
                        let pair = _mm512_castps_si512(*v);
                        let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pair));
                        let odd = _mm512_castsi512_ps(_mm512_and_si512(pair, high));
                        let at = (i0 + 2 * p) * NR + half * 16;
                        _mm512_storeu_ps(dst.add(at), even);
                        _mm512_storeu_ps(dst.add(at + NR), odd);
                    }
                }
            }
        }
        for i in full..len {
            for j in 0..NR {
                let at = 2 * (j * k + cols.start + i);
                let bits = u16::from_le_bytes([rows[at], rows[at + 1]]);
                panel[i * NR + j] = f32::from_bits(u32::from(bits) << 16);
            }
        }
    }

    /// Rows of 16 values → columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        let mut t = [_mm512_setzero_ps(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let b = 4 * q;
            let (a0, a1) = (_mm512_castps_pd(t[b]), _mm512_castps_pd(t[b + 2]));
            let (b0, b1) = (_mm512_castps_pd(t[b + 1]), _mm512_castps_pd(t[b + 3]));
            u[b] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a1));
            u[b + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a1));
            u[b + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b0, b1));
            u[b + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b0, b1));
        }
        let mut v = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            v[q] = _mm512_shuffle_f32x4::<0x88>(u[q], u[q + 4]);
            v[q + 4] = _mm512_shuffle_f32x4::<0xdd>(u[q], u[q + 4]);
            v[q + 8] = _mm512_shuffle_f32x4::<0x88>(u[q + 8], u[q + 12]);
            v[q + 12] = _mm512_shuffle_f32x4::<0xdd>(u[q + 8], u[q + 12]);
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for q in 0..8 {
            out[q] = _mm512_shuffle_f32x4::<0x88>(v[q], v[q + 8]);
            out[q + 8] = _mm512_shuffle_f32x4::<0xdd>(v[q], v[q + 8]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with some exact zeros and tiny/huge magnitudes mixed in.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(0x9E37_79B9).rotate_left(13) ^ seed;
                let v = (h % 20001) as f32 / 10000.0 - 1.0;
                match h % 97 {
                    0 => 0.0,
                    1 => v * 1e-30,
                    2 => v * 1e20,
                    _ => v,
                }
            })
            .collect()
    }

    /// The summation order of the module doc, one output at a time.
    fn spec_dot(x: &[f32], w: &[f32]) -> f32 {
        x.iter().zip(w).fold(0.0, |acc, (&a, &b)| a.mul_add(b, acc))
    }

    fn isas() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2Fma);
            }
            if std::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    /// Every instruction set, every shape edge (k around the vector width and the k slices, token counts around
    /// every tile height, outputs around the panel width) gives the bits of the specified order.
    #[test]
    fn every_isa_gives_the_bits_of_the_specified_order() {
        let isas = isas();
        for (n, k, out) in [
            (1, 1, 1),
            (1, 15, 3),
            (1, 16, 17),
            (3, 17, 5),
            (5, 255, 16),
            (4, 256, 4),
            (7, 257, 33),
            (14, 40, 32),
            (15, 40, 31),
            (29, 300, 65),
            (65, 300, 19),
            (130, 513, 7),
            (2, 1000, 40),
            (1, 1100, 70),
            (3, 2050, 9),
        ] {
            let x = values(n * k, 7 + k as u32);
            let w = values(out * k, 91 + out as u32);
            let expected: Vec<u32> = (0..n * out)
                .map(|i| {
                    let (t, o) = (i / out, i % out);
                    spec_dot(&x[t * k..(t + 1) * k], &w[o * k..(o + 1) * k]).to_bits()
                })
                .collect();
            for &isa in &isas {
                let got = gemm_with(isa, &x, n, k, &F32Rows { data: &w, k });
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, expected, "{isa:?}: n {n}, k {k}, out {out}");
            }
        }
    }

    #[test]
    fn the_weight_panel_is_the_transpose_of_the_rows() {
        for len in [1, 15, 16, 17, 48, 61] {
            let src = values(NR * len, len as u32);
            let mut fast = vec![0f32; NR * len];
            let mut slow = vec![0f32; NR * len];
            transpose_into(&src, len, &mut fast);
            transpose_portable(&src, len, &mut slow, 0);
            assert_eq!(fast, slow, "len {len}");
            for i in 0..len {
                for j in 0..NR {
                    assert_eq!(slow[i * NR + j].to_bits(), src[j * len + i].to_bits());
                }
            }
        }
    }

    /// BF16 rows that offer their bytes, as the mapped checkpoint does.
    struct Bf16Rows {
        bytes: Vec<u8>,
        k: usize,
    }

    impl WeightRows for Bf16Rows {
        fn out_dim(&self) -> usize {
            self.bytes.len() / 2 / self.k
        }

        fn widen(&self, row: usize, cols: Range<usize>, out: &mut [f32]) {
            for (o, i) in out.iter_mut().zip(cols) {
                let at = 2 * (row * self.k + i);
                let bits = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
                *o = f32::from_bits(u32::from(bits) << 16);
            }
        }

        fn bf16_bytes(&self) -> Option<&[u8]> {
            Some(&self.bytes)
        }
    }

    /// The in-register BF16 packing gives the bits of widening the same values to f32 first.
    #[test]
    fn bf16_packing_gives_the_bits_of_f32_weights() {
        for (n, k, out) in [(1, 31, 32), (2, 32, 64), (20, 97, 70), (3, 1100, 33)] {
            let x = values(n * k, 5);
            let bytes: Vec<u8> = values(out * k, 6)
                .iter()
                .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            let bf16 = Bf16Rows { bytes, k };
            let mut widened = vec![0f32; out * k];
            for (o, row) in widened.chunks_mut(k).enumerate() {
                bf16.widen(o, 0..k, row);
            }
            for isa in isas() {
                let a = gemm_with(isa, &x, n, k, &bf16);
                let b = gemm_with(isa, &x, n, k, &F32Rows { data: &widened, k });
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{isa:?}: n {n}, k {k}, out {out}");
            }
        }
    }

    #[test]
    fn one_and_two_threads_give_the_same_bits() {
        for (n, k, out) in [(37, 333, 70), (1, 333, 700), (2, 2000, 300)] {
            let (x, w) = (values(n * k, 3), values(out * k, 4));
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| gemm(&x, n, k, &F32Rows { data: &w, k }))
            };
            let (one, two) = (run(1), run(2));
            assert!(
                one.iter()
                    .zip(&two)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }
}
