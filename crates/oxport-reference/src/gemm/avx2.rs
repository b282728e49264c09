//! The AVX2 + FMA kernel: 3 tokens × 32 outputs in 12 ymm.

use std::arch::x86_64::*;

use super::{NR, Tile};

/// [`super::portable::kernel_portable`] with 4 ymm per token (8 outputs each), `m` ≤ 3 tokens; edge tiles go through
/// a full-width copy.
///
/// # Safety
/// AVX2 and FMA; as [`super::avx512::kernel_avx512`].
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
unsafe fn kernel_avx2_full(xs: &[f32], ws: &[f32], len: usize, c: *mut f32, ld: usize, tile: Tile) {
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
