//! `y = x · Wᵀ` for every linear layer: `x` is `[n, k]` f32 activations, `W` a PyTorch `[out, k]` weight in
//! BF16/F16/F32, read from the mapped checkpoint and widened to f32 one block of rows at a time (never the whole
//! tensor).
//!
//! **One summation order everywhere.** Every output `y[t, o]` is a dot product over `k` computed the same way on
//! every instruction set, thread count and tiling: 16 lane accumulators, lane `l` a chain of fused multiply-adds
//! over `k ≡ l (mod 16)` in increasing `k`; then the 16 lanes summed in a fixed tree ([`reduce_lanes`]); then the
//! `k mod 16` tail as one more fused chain, added last. AVX-512 holds the 16 lanes in one register, AVX2 in two,
//! the portable kernel in an array with `f32::mul_add` (a correctly rounded fused multiply-add, the same operation
//! as `vfmadd`), so all three give the same bits, and the work is split over output rows only — never over `k` —
//! so any number of threads gives the same bits too.
//!
//! **Blocking.** A rayon task owns [`ROWS_PER_TASK`] output rows: it widens them into an f32 block (L2-sized), then
//! walks token blocks of [`TOKENS_PER_BLOCK`] and `k` slices of [`K_SLICE`] values so that the activations of a
//! register tile and the weight rows it meets stay in L1; the register tile is [`MR`] tokens × [`NR`] rows, whose
//! lane accumulators persist across `k` slices in a small per-task buffer.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

/// Lanes of every dot product (see the module doc): one AVX-512 register of f32.
pub const LANES: usize = 16;
/// Tokens of a register tile.
const MR: usize = 3;
/// Weight rows of a register tile: 3 × 8 lane accumulators fill 24 of AVX-512's 32 registers; each activation
/// vector, the operand that comes from L2, is used 8 times per load.
const NR: usize = 8;
/// Output rows per rayon task, widened together.
const ROWS_PER_TASK: usize = 32;
/// Token tiles whose activations are swept against one task's rows before moving on (12 tokens: with a K_SLICE
/// they stay in L1 beside the weight tile).
const TILES_PER_BLOCK: usize = 4;
/// Values of `k` per pass over a token block (a multiple of [`LANES`]).
const K_SLICE: usize = 512;

/// Instruction sets the kernel has a path for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
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
    /// Write rows `rows` as f32 into `out` (`rows.len() * k` values).
    fn widen_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]);
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

    fn widen_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        out.copy_from_slice(&self.data[rows.start * self.k..rows.end * self.k]);
    }
}

/// `y[t, o] = Σ_i x[t, i] · w[o, i]`: `[n * out]`, with the summation order of the module doc.
pub fn gemm(x: &[f32], n: usize, k: usize, w: &dyn WeightRows) -> Vec<f32> {
    gemm_with(active_isa(), x, n, k, w)
}

/// [`gemm`] on a given instruction set (which must be supported).
pub fn gemm_with(isa: Isa, x: &[f32], n: usize, k: usize, w: &dyn WeightRows) -> Vec<f32> {
    let out_dim = w.out_dim();
    assert_eq!(x.len(), n * k, "gemm: activations are not [{n}, {k}]");
    if n == 0 || out_dim == 0 {
        return vec![0.0; n * out_dim];
    }
    if n < MR {
        return gemv(isa, x, n, k, w);
    }
    let steps = k / LANES;
    let token_tiles = n.div_ceil(MR);
    let packed_x = pack_activations(x, n, k);
    // Each task writes the columns of its own rows, straight into `[n][out]` (no transposed copy).
    let mut y = vec![0f32; n * out_dim];
    let columns = Columns {
        ptr: y.as_mut_ptr(),
        len: y.len(),
        out_dim,
    };
    (0..out_dim.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .for_each_init(
            || (vec![0f32; k], Vec::new(), Vec::new(), Vec::new()),
            |(row, block, tails, partial), b| {
                let rows = ROWS_PER_TASK.min(out_dim - b * ROWS_PER_TASK);
                let row_tiles = rows.div_ceil(NR);
                block.clear();
                block.resize(row_tiles * steps * NR * LANES, 0.0);
                tails.clear();
                for r in 0..row_tiles * NR {
                    // Rows past the end repeat the last one; their results are never read.
                    let o = b * ROWS_PER_TASK + r.min(rows - 1);
                    w.widen_rows(o..o + 1, row);
                    let (rt, j) = (r / NR, r % NR);
                    for s in 0..steps {
                        let at = ((rt * steps + s) * NR + j) * LANES;
                        block[at..at + LANES].copy_from_slice(&row[s * LANES..(s + 1) * LANES]);
                    }
                    if r < rows {
                        tails.extend_from_slice(&row[steps * LANES..]);
                    }
                }
                let operands = Operands {
                    x,
                    packed_x: &packed_x,
                    n,
                    k,
                    token_tiles,
                    block,
                    tails,
                };
                task(isa, &operands, columns, b * ROWS_PER_TASK, rows, partial);
            },
        );
    y
}

/// The `[n][out]` output, shared by the tasks: each writes only the columns of its own rows.
#[derive(Clone, Copy)]
struct Columns {
    ptr: *mut f32,
    len: usize,
    out_dim: usize,
}

// SAFETY: tasks write disjoint elements (their own output rows' columns) and nothing reads them until every task
// has finished (the rayon join at the end of `gemm_with`).
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    fn set(self, t: usize, o: usize, value: f32) {
        let at = t * self.out_dim + o;
        assert!(at < self.len);
        // SAFETY: in bounds (checked); no other task writes column `o` (see the `Sync` impl).
        unsafe { *self.ptr.add(at) = value };
    }
}

/// Decoding (fewer tokens than a register tile): each task widens one weight row at a time into an L1 buffer and
/// dots it with every token, one lane accumulator chain per token — the same order as the tiled path, without its
/// packing or its idle tile rows. Memory-bound: the row is read once from the mapping.
fn gemv(isa: Isa, x: &[f32], n: usize, k: usize, w: &dyn WeightRows) -> Vec<f32> {
    let k_full = k - k % LANES;
    let mut transposed = vec![0f32; w.out_dim() * n];
    transposed.par_chunks_mut(n).enumerate().for_each_init(
        || vec![0f32; k],
        |row, (o, y)| {
            w.widen_rows(o..o + 1, row);
            for (t, y) in y.iter_mut().enumerate() {
                let xt = &x[t * k..(t + 1) * k];
                let lanes = dot_lanes(isa, &xt[..k_full], &row[..k_full]);
                *y = reduce_lanes(&lanes) + tail(&xt[k_full..], &row[k_full..]);
            }
        },
    );
    transpose(&transposed, w.out_dim(), n)
}

/// The lane accumulators of one dot product over `k_full` values (a multiple of [`LANES`]).
fn dot_lanes(isa: Isa, x: &[f32], w: &[f32]) -> [f32; LANES] {
    match isa {
        Isa::Portable => {
            let mut lanes = [0f32; LANES];
            for (xc, wc) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
                for l in 0..LANES {
                    lanes[l] = xc[l].mul_add(wc[l], lanes[l]);
                }
            }
            lanes
        }
        // SAFETY: the variant is only chosen when the CPU has the feature (`detected_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { x86::dot_lanes_avx2(x, w) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_lanes_avx512(x, w) },
    }
}

/// `x` as register-tile panels, `[token tile][k / LANES][MR][LANES]`, so that a tile reads one sequential stream
/// (the `k mod LANES` tail stays in `x`). Tokens past the end repeat the last one.
fn pack_activations(x: &[f32], n: usize, k: usize) -> Vec<f32> {
    let steps = k / LANES;
    let mut packed = vec![0f32; n.div_ceil(MR) * steps * MR * LANES];
    if steps == 0 {
        return packed;
    }
    packed
        .par_chunks_mut(steps * MR * LANES)
        .enumerate()
        .for_each(|(tt, panel)| {
            for i in 0..MR {
                let t = (tt * MR + i).min(n - 1);
                for s in 0..steps {
                    let at = (s * MR + i) * LANES;
                    let from = t * k + s * LANES;
                    panel[at..at + LANES].copy_from_slice(&x[from..from + LANES]);
                }
            }
        });
    packed
}

/// What one task multiplies: every token by its block of widened weight rows.
struct Operands<'a> {
    x: &'a [f32],
    packed_x: &'a [f32],
    n: usize,
    k: usize,
    token_tiles: usize,
    /// The task's rows as register-tile panels, `[row tile][k / LANES][NR][LANES]`.
    block: &'a [f32],
    /// The last `k mod LANES` values of each row, `[rows][k mod LANES]`.
    tails: &'a [f32],
}

/// One task: `y[t][first_row + o]` for its block of `rows` rows and every token.
fn task(
    isa: Isa,
    op: &Operands<'_>,
    y: Columns,
    first_row: usize,
    rows: usize,
    partial: &mut Vec<f32>,
) {
    let Operands {
        x,
        packed_x,
        n,
        k,
        token_tiles,
        block,
        tails,
    } = *op;
    let steps = k / LANES;
    let (k_full, tail_len) = (steps * LANES, k % LANES);
    let row_tiles = rows.div_ceil(NR);
    let (x_panel, w_panel) = (steps * MR * LANES, steps * NR * LANES);
    for tt0 in (0..token_tiles).step_by(TILES_PER_BLOCK) {
        let tiles = TILES_PER_BLOCK.min(token_tiles - tt0);
        partial.clear();
        partial.resize(tiles * row_tiles * MR * NR * LANES, 0.0);
        for s0 in (0..steps).step_by(K_SLICE / LANES) {
            let slice = (K_SLICE / LANES).min(steps - s0);
            // The weight tile stays in L1 while the token block's activations stream from L2.
            for rt in 0..row_tiles {
                let at = rt * w_panel + s0 * NR * LANES;
                let ws = &block[at..at + slice * NR * LANES];
                for tt in 0..tiles {
                    let at = (tt0 + tt) * x_panel + s0 * MR * LANES;
                    let xs = &packed_x[at..at + slice * MR * LANES];
                    let at = (tt * row_tiles + rt) * MR * NR * LANES;
                    tile(isa, xs, ws, &mut partial[at..at + MR * NR * LANES]);
                }
            }
        }
        let first = tt0 * MR;
        for t in first..n.min(first + tiles * MR) {
            let (tt, i) = (t / MR - tt0, t % MR);
            let xt = &x[t * k + k_full..(t + 1) * k];
            for o in 0..rows {
                let (rt, j) = (o / NR, o % NR);
                let at = ((tt * row_tiles + rt) * MR * NR + i * NR + j) * LANES;
                let lanes: &[f32; LANES] = partial[at..at + LANES].try_into().unwrap();
                let wt = &tails[o * tail_len..(o + 1) * tail_len];
                y.set(t, first_row + o, reduce(isa, lanes) + tail(xt, wt));
            }
        }
    }
}

/// [`reduce_lanes`] on the instruction set of the tile kernels (the same adds in the same order, so the same bits).
fn reduce(isa: Isa, lanes: &[f32; LANES]) -> f32 {
    match isa {
        Isa::Portable => reduce_lanes(lanes),
        // SAFETY: both variants imply AVX (`detected_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => unsafe { x86::reduce_lanes_avx(lanes) },
    }
}

/// The 16 lanes in a fixed tree: halves, then quarters, eighths, and the last pair.
fn reduce_lanes(lanes: &[f32; LANES]) -> f32 {
    let mut v = *lanes;
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            v[l] += v[l + width];
        }
        width /= 2;
    }
    v[0]
}

/// The last `k mod 16` products as one fused chain.
fn tail(x: &[f32], w: &[f32]) -> f32 {
    x.iter().zip(w).fold(0.0, |acc, (&a, &b)| a.mul_add(b, acc))
}

/// Add `Σ x[i][k] · w[j][k]` over a slice of panels (`xs`: `[step][MR][LANES]`, `ws`: `[step][NR][LANES]`) to
/// the lane accumulators `acc[(i * NR + j) * LANES + lane]`.
fn tile(isa: Isa, xs: &[f32], ws: &[f32], acc: &mut [f32]) {
    debug_assert_eq!(xs.len() / (MR * LANES), ws.len() / (NR * LANES));
    match isa {
        Isa::Portable => tile_portable(xs, ws, acc),
        // SAFETY: the variant is only chosen when the CPU has the feature (`detected_isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { x86::tile_avx2(xs, ws, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::tile_avx512(xs, ws, acc) },
    }
}

fn tile_portable(xs: &[f32], ws: &[f32], acc: &mut [f32]) {
    for (xc, wc) in xs.chunks_exact(MR * LANES).zip(ws.chunks_exact(NR * LANES)) {
        for i in 0..MR {
            for j in 0..NR {
                let lanes = &mut acc[(i * NR + j) * LANES..(i * NR + j + 1) * LANES];
                let (x, w) = (&xc[i * LANES..], &wc[j * LANES..]);
                for l in 0..LANES {
                    lanes[l] = x[l].mul_add(w[l], lanes[l]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, MR, NR};

    /// [`super::reduce_lanes`] with vector adds: halves (8 lanes), quarters, then pairs, then the last two.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn reduce_lanes_avx(lanes: &[f32; LANES]) -> f32 {
        let p = lanes.as_ptr();
        // SAFETY: `lanes` holds 16 values.
        unsafe {
            let s8 = _mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
        }
    }

    /// [`super::dot_lanes`] in one zmm.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_lanes_avx512(x: &[f32], w: &[f32]) -> [f32; LANES] {
        let steps = x.len() / LANES;
        assert!(w.len() >= steps * LANES);
        let mut out = [0f32; LANES];
        // SAFETY: both slices hold `steps * LANES` values.
        unsafe {
            let mut c = _mm512_setzero_ps();
            for s in 0..steps {
                let xv = _mm512_loadu_ps(x.as_ptr().add(s * LANES));
                c = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w.as_ptr().add(s * LANES)), c);
            }
            _mm512_storeu_ps(out.as_mut_ptr(), c);
        }
        out
    }

    /// [`super::dot_lanes`] in two ymm.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes_avx2(x: &[f32], w: &[f32]) -> [f32; LANES] {
        let steps = x.len() / LANES;
        assert!(w.len() >= steps * LANES);
        let mut out = [0f32; LANES];
        // SAFETY: both slices hold `steps * LANES` values.
        unsafe {
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for s in 0..steps {
                let (xp, wp) = (x.as_ptr().add(s * LANES), w.as_ptr().add(s * LANES));
                lo = _mm256_fmadd_ps(_mm256_loadu_ps(xp), _mm256_loadu_ps(wp), lo);
                hi = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), _mm256_loadu_ps(wp.add(8)), hi);
            }
            _mm256_storeu_ps(out.as_mut_ptr(), lo);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
        }
        out
    }

    /// [`super::tile_portable`] with one zmm per lane accumulator: the whole 3×8 tile in 24 registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(xs: &[f32], ws: &[f32], acc: &mut [f32]) {
        let steps = xs.len() / (MR * LANES);
        assert!(ws.len() >= steps * NR * LANES && acc.len() == MR * NR * LANES);
        let a = acc.as_mut_ptr();
        // SAFETY: the lengths were checked above.
        unsafe {
            let mut c = [[_mm512_setzero_ps(); NR]; MR];
            for i in 0..MR {
                for j in 0..NR {
                    c[i][j] = _mm512_loadu_ps(a.add((i * NR + j) * LANES));
                }
            }
            let (mut xp, mut wp) = (xs.as_ptr(), ws.as_ptr());
            for _ in 0..steps {
                let mut xv = [_mm512_setzero_ps(); MR];
                for i in 0..MR {
                    xv[i] = _mm512_loadu_ps(xp.add(i * LANES));
                }
                for j in 0..NR {
                    let wv = _mm512_loadu_ps(wp.add(j * LANES));
                    for i in 0..MR {
                        c[i][j] = _mm512_fmadd_ps(xv[i], wv, c[i][j]);
                    }
                }
                xp = xp.add(MR * LANES);
                wp = wp.add(NR * LANES);
            }
            for i in 0..MR {
                for j in 0..NR {
                    _mm512_storeu_ps(a.add((i * NR + j) * LANES), c[i][j]);
                }
            }
        }
    }

    /// [`super::tile_portable`] with two ymm per lane accumulator, one token × 4 rows at a time (8 accumulator
    /// registers of 16).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(xs: &[f32], ws: &[f32], acc: &mut [f32]) {
        const SUB: usize = 4;
        let steps = xs.len() / (MR * LANES);
        assert!(ws.len() >= steps * NR * LANES && acc.len() == MR * NR * LANES);
        let a = acc.as_mut_ptr();
        // SAFETY: as in `tile_avx512`.
        unsafe {
            for i in 0..MR {
                for j0 in (0..NR).step_by(SUB) {
                    let mut c = [[_mm256_setzero_ps(); 2]; SUB];
                    for j in 0..SUB {
                        let p = a.add((i * NR + j0 + j) * LANES);
                        c[j] = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                    }
                    let (mut xp, mut wp) =
                        (xs.as_ptr().add(i * LANES), ws.as_ptr().add(j0 * LANES));
                    for _ in 0..steps {
                        for h in 0..2 {
                            let xv = _mm256_loadu_ps(xp.add(8 * h));
                            for j in 0..SUB {
                                let wv = _mm256_loadu_ps(wp.add(j * LANES + 8 * h));
                                c[j][h] = _mm256_fmadd_ps(xv, wv, c[j][h]);
                            }
                        }
                        xp = xp.add(MR * LANES);
                        wp = wp.add(NR * LANES);
                    }
                    for j in 0..SUB {
                        let p = a.add((i * NR + j0 + j) * LANES);
                        _mm256_storeu_ps(p, c[j][0]);
                        _mm256_storeu_ps(p.add(8), c[j][1]);
                    }
                }
            }
        }
    }
}

/// `[out][n]` → `[n][out]`.
fn transpose(transposed: &[f32], out_dim: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out_dim];
    for o in 0..out_dim {
        for t in 0..n {
            y[t * out_dim + o] = transposed[o * n + t];
        }
    }
    y
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
        let k_full = x.len() - x.len() % LANES;
        let mut lanes = [0f32; LANES];
        for (xc, wc) in x[..k_full].chunks(LANES).zip(w[..k_full].chunks(LANES)) {
            for l in 0..LANES {
                lanes[l] = xc[l].mul_add(wc[l], lanes[l]);
            }
        }
        reduce_lanes(&lanes) + tail(&x[k_full..], &w[k_full..])
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

    /// Every instruction set, every shape edge (k below, at and around the lane width and the k slice, token and
    /// row counts around the tile and block sizes) gives the bits of the specified order.
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
            (65, 300, 19),
            (130, 513, 7),
            (2, 1000, 40),
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
    fn one_and_two_threads_give_the_same_bits() {
        let (n, k, out) = (37, 333, 70);
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
