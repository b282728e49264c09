//! The portable kernel: one output at a time with `f32::mul_add`, the summation order of [`super`]'s doc that the
//! AVX-512 and AVX2 kernels reproduce bit for bit.

use super::{NR, Tile};

/// [`super::pack::transpose_into`] from column `from` on.
pub(super) fn transpose_portable(src: &[f32], len: usize, dst: &mut [f32], from: usize) {
    for i in from..len {
        for j in 0..NR {
            dst[i * NR + j] = src[j * len + i];
        }
    }
}

pub(super) fn kernel_portable(
    xs: &[f32],
    ws: &[f32],
    len: usize,
    c: *mut f32,
    ld: usize,
    tile: Tile,
) {
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
