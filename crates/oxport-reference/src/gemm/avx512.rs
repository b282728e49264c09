//! The AVX-512 kernel (14 tokens × 32 outputs in 28 zmm), the `[NR][len]` → `[len][NR]` transpose and the
//! in-register BF16 panel packing.

use std::arch::x86_64::*;

use super::{NR, Tile};

/// Tokens of the AVX-512 tile: 14 × 2 accumulators fill 28 of the 32 zmm registers.
pub(super) const MR_AVX512: usize = 14;

/// [`super::portable::kernel_portable`] with 2 zmm per token (16 outputs each), `m` ≤ [`MR_AVX512`] tokens.
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

/// [`super::pack::transpose_into`] in 16 × 16 blocks, the last `len mod 16` columns scalar.
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
    super::portable::transpose_portable(src, len, dst, full);
}

/// [`super::pack::pack_weights`] of `NR` BF16 rows (`rows`: `[NR][k]` little-endian BF16), values `cols`: 32 values
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
