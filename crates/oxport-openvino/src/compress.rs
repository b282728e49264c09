//! NNCF data-free weight compression, bit-exact with nncf 3.4 as optimum-cli runs it
//! (nncf/quantization/algorithms/weight_compression/weight_lowering.py: `calculate_integer_quantization_params`,
//! `_calculate_signed_scale`, `do_integer_quantization`; measured in shared/docs/openvino-ir.md §5).
//!
//! This is the exporter's own copy of the kernels: `oxport_quant::nncf` is still a stub while its owner writes it;
//! the exporter switches to it once it lands (same math, same layout).
//!
//! All arithmetic is f32 like NNCF's numpy/OpenVINO path; rounding is half-to-even; scales are stored as f16 of the
//! f32 scale, and the quantized values are computed with the f32 scale (not the f16-rounded one).

use half::f16;
use rayon::prelude::*;

/// `np.finfo(np.float32).eps`, NNCF's floor for scales.
const EPS_F32: f32 = f32::EPSILON;

/// A compressed weight as the IR stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Compressed {
    /// u8 `[n, k]`, i8 `[n, k]`, i4/u4 `[n, k/g, g]` packed two per byte, element 2j in the low nibble.
    pub weight: Vec<u8>,
    /// f16 little-endian, `[n, 1]` or `[n, k/g, 1]`.
    pub scale: Vec<u8>,
    /// Asymmetric modes only: u8 `[n, 1]` or u4 `[n, k/g, 1]` packed like the weight.
    pub zero_point: Option<Vec<u8>>,
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Asymmetric parameters of one row or group over `[levels_low=0, levels_high]`, with the range forced to include 0.
fn asym_params(w: &[f32], level_high: f32) -> (f32, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for &x in w {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    let mut s = (hi - lo) / level_high;
    if s.abs() < EPS_F32 {
        s = EPS_F32;
    }
    let zp = (-lo / s).round_ties_even().clamp(0.0, level_high);
    (s, zp)
}

fn asym_quantize(w: &[f32], s: f32, zp: f32, level_high: f32, out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(w) {
        // round(w/s + zp), not round(w/s) + zp: the two differ on ~0.2% of elements (openvino-ir.md §5.2).
        *o = (x / s + zp).round_ties_even().clamp(0.0, level_high) as u8;
    }
}

/// NNCF `int8_asym` per output channel: u8 `[n, k]`, u8 zero point `[n, 1]`, f16 scale `[n, 1]`.
pub fn int8_asym(w: &[f32], n: usize, k: usize) -> Compressed {
    assert_eq!(w.len(), n * k);
    let mut q = vec![0u8; n * k];
    let params: Vec<(f32, f32)> = q
        .par_chunks_mut(k)
        .zip(w.par_chunks(k))
        .map(|(qrow, row)| {
            let (s, zp) = asym_params(row, 255.0);
            asym_quantize(row, s, zp, 255.0, qrow);
            (s, zp)
        })
        .collect();
    Compressed {
        weight: q,
        scale: f16_bytes(&params.iter().map(|p| p.0).collect::<Vec<_>>()),
        zero_point: Some(params.iter().map(|p| p.1 as u8).collect()),
    }
}

/// NNCF `int8_sym` per output channel: i8 `[n, k]`, f16 scale `[n, 1]` = max|w| / 127, no zero point.
pub fn int8_sym(w: &[f32], n: usize, k: usize) -> Compressed {
    assert_eq!(w.len(), n * k);
    let mut q = vec![0u8; n * k];
    let scales: Vec<f32> = q
        .par_chunks_mut(k)
        .zip(w.par_chunks(k))
        .map(|(qrow, row)| {
            let amax = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
            let mut s = amax / 127.0;
            if s.abs() < EPS_F32 {
                s = EPS_F32;
            }
            for (o, &x) in qrow.iter_mut().zip(row) {
                *o = ((x / s).round_ties_even().clamp(-128.0, 127.0) as i8) as u8;
            }
            s
        })
        .collect();
    Compressed {
        weight: q,
        scale: f16_bytes(&scales),
        zero_point: None,
    }
}

/// Pack 4-bit values (low nibble = even element) as OpenVINO stores i4/u4 (two's complement for i4).
fn pack4(values: &[i8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| {
            let lo = (p[0] as u8) & 0x0f;
            let hi = p.get(1).map_or(0, |&v| (v as u8) & 0x0f);
            lo | (hi << 4)
        })
        .collect()
}

/// NNCF `int4_sym` group-wise with the signed scale (`_calculate_signed_scale`): per group the element of largest
/// magnitude maps to -8, so the scale is negative when that element is positive. i4 `[n, k/g, g]`, f16 `[n, k/g, 1]`.
pub fn int4_sym(w: &[f32], n: usize, k: usize, group: usize) -> Compressed {
    assert!(w.len() == n * k && k.is_multiple_of(group) && group.is_multiple_of(2));
    let groups = n * k / group;
    let mut q = vec![0i8; n * k];
    let scales: Vec<f32> = q
        .par_chunks_mut(group)
        .zip(w.par_chunks(group))
        .map(|(qg, g)| {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &x in g {
                lo = lo.min(x);
                hi = hi.max(x);
            }
            let mut s = if lo.abs() >= hi { lo.abs() } else { -hi };
            s /= 8.0;
            if s.abs() < EPS_F32 {
                s = EPS_F32;
            }
            for (o, &x) in qg.iter_mut().zip(g) {
                *o = (x / s).round_ties_even().clamp(-8.0, 7.0) as i8;
            }
            s
        })
        .collect();
    debug_assert_eq!(scales.len(), groups);
    Compressed {
        weight: pack4(&q),
        scale: f16_bytes(&scales),
        zero_point: None,
    }
}

/// NNCF `int4_asym` group-wise: u4 `[n, k/g, g]`, u4 zero point `[n, k/g, 1]`, f16 scale `[n, k/g, 1]`.
pub fn int4_asym(w: &[f32], n: usize, k: usize, group: usize) -> Compressed {
    assert!(w.len() == n * k && k.is_multiple_of(group) && group.is_multiple_of(2));
    let mut q = vec![0u8; n * k];
    let params: Vec<(f32, f32)> = q
        .par_chunks_mut(group)
        .zip(w.par_chunks(group))
        .map(|(qg, g)| {
            let (s, zp) = asym_params(g, 15.0);
            asym_quantize(g, s, zp, 15.0, qg);
            (s, zp)
        })
        .collect();
    let as_i8: Vec<i8> = q.iter().map(|&v| v as i8).collect();
    let zps: Vec<i8> = params.iter().map(|p| p.1 as i8).collect();
    Compressed {
        weight: pack4(&as_i8),
        scale: f16_bytes(&params.iter().map(|p| p.0).collect::<Vec<_>>()),
        zero_point: Some(pack4(&zps)),
    }
}

/// NNCF's data-free sensitivity (`weight_quantization_error`, mixed_precision.py): the max over output rows of
/// the mean squared error of the int8_asym per-channel backup. Larger means more sensitive to the backup and
/// therefore earlier in line for 4 bits.
pub fn int8_asym_error(w: &[f32], n: usize, k: usize) -> f32 {
    assert_eq!(w.len(), n * k);
    w.par_chunks(k)
        .map(|row| {
            let (s, zp) = asym_params(row, 255.0);
            let sum: f64 = row
                .iter()
                .map(|&x| {
                    let q = (x / s + zp).round_ties_even().clamp(0.0, 255.0);
                    let d = (q - zp) * s - x;
                    (d * d) as f64
                })
                .sum();
            (sum / k as f64) as f32
        })
        .reduce(|| 0f32, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_sym_uses_the_signed_scale_and_packs_low_nibble_first() {
        // Largest magnitude is +1.6 (positive) → scale = -1.6/8 = -0.2 and 1.6 → -8.
        let w = [1.6f32, -0.2, 0.4, 0.0];
        let c = int4_sym(&w, 1, 4, 4);
        assert_eq!(
            f16::from_le_bytes([c.scale[0], c.scale[1]]),
            f16::from_f32(-0.2)
        );
        // q = [-8, 1, -2, 0] → bytes [0x18, 0x0e]
        assert_eq!(c.weight, vec![0x18, 0x0e]);
        assert!(c.zero_point.is_none());
    }

    #[test]
    fn int8_asym_rounds_after_adding_the_zero_point_and_includes_zero_in_the_range() {
        let w = [0.4f32, 1.0, 2.0, 3.0];
        let c = int8_asym(&w, 1, 4);
        // lo = 0 (range includes 0), s = 3/255, zp = 0.
        assert_eq!(c.zero_point.as_deref(), Some(&[0u8][..]));
        assert_eq!(c.weight, vec![34, 85, 170, 255]);
        let zero_row = int8_asym(&[0.0; 4], 1, 4);
        assert_eq!(
            f16::from_le_bytes([zero_row.scale[0], zero_row.scale[1]]),
            f16::from_f32(f32::EPSILON)
        );
    }

    #[test]
    fn int4_asym_packs_weight_and_zero_point() {
        let w = [-1.0f32, 0.0, 1.0, 2.0];
        let c = int4_asym(&w, 1, 4, 4);
        // s = 3/15 = 0.2, zp = 5 → q = [0, 5, 10, 15]
        assert_eq!(c.weight, vec![0x50, 0xfa]);
        assert_eq!(c.zero_point, Some(vec![0x05]));
    }
}
