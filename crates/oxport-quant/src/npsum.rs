//! The float32 reduction orders of the numpy code NNCF runs, so sums over the same values give the same bits.

/// numpy's `pairwise_sum` for float32 (`numpy/_core/src/umath/loops_utils.h.src`), which `np.sum` / `np.mean`
/// use along a reduced axis that the inner loop walks (here: the last axis, or a 1-D strided view): fewer than 8
/// values added in order from 0; up to 128 in eight interleaved accumulators combined as
/// `((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`, then the remainder in order; longer runs split in two at
/// a multiple of 8 below the half. Checked against numpy 2.4 for lengths 3..300.
pub(crate) fn pairwise_sum(values: &[f32]) -> f32 {
    let n = values.len();
    if n < 8 {
        values.iter().fold(0.0f32, |acc, &v| acc + v)
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for chunk in values[8..whole].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
    }
}

/// `np.mean` of float32 values along such an axis: the pairwise sum divided by the count in f32.
pub(crate) fn pairwise_mean(values: &[f32]) -> f32 {
    pairwise_sum(values) / values.len() as f32
}

/// `Σ a[i]·b[i]` accumulated in f64 and rounded once to f32: the stand-in for a BLAS sgemm/ssyrk dot product,
/// whose blocking and FMA order are the library's own (not reproducible); this lands within rounding of any of
/// them.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |acc, (&x, &y)| acc + x as f64 * y as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_follows_numpy_blocking() {
        // Fewer than 8: in order. 1e8 + 1 + ... in f32 loses the ones one by one.
        let v = [1e8f32, 1.0, 1.0, 1.0];
        assert_eq!(pairwise_sum(&v), 1e8);
        // 16 values: r0 = v0 + v8, ...; (1e8 + -1e8) pairs cancel exactly and keep the small ones.
        let mut v = [1.0f32; 16];
        v[0] = 1e8;
        v[8] = -1e8;
        assert_eq!(pairwise_sum(&v), 14.0);
        // 9 values: the 9th is added after the tree.
        let v = [0.5f32; 9];
        assert_eq!(pairwise_sum(&v), 4.5);
        // Beyond 128: split at 64 for 130 (130 / 2 = 65 -> 64).
        let v: Vec<f32> = (0..130).map(|i| i as f32).collect();
        assert_eq!(pairwise_sum(&v), (0..130).sum::<i32>() as f32);
        assert_eq!(pairwise_mean(&[1.0, 2.0, 3.0]), 2.0);
    }
}
