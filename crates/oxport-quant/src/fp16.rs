//! f32 → IEEE half conversion as numpy `astype(np.float16)` does it (used by onnx `numpy_helper`, by ORT's
//! float16 converter and by NNCF for its f16 scales).

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::rows::{Rows, decode};

/// Values per rayon task; small enough to split a tensor row-free, large enough to amortise scheduling.
const CHUNK: usize = 1 << 16;

/// Convert one value, round-to-nearest-even.
///
/// Overflow: |x| ≥ 65520 (halfway above f16::MAX = 65504) becomes ±inf, exactly as numpy and the F16C
/// `vcvtps2ph` instruction with RNE do; results below the normal range are kept as subnormals (not flushed),
/// and ±0 keep their sign. NaN stays NaN (the planner never hands NaN to a kernel).
#[inline]
pub fn f32_to_f16(value: f32) -> half::f16 {
    half::f16::from_f32(value)
}

/// Convert to little-endian IEEE f16 bytes, round-to-nearest-even (see [`f32_to_f16`] for overflow).
pub fn f32_to_f16_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 2];
    out.par_chunks_mut(CHUNK * 2)
        .zip(values.par_chunks(CHUNK))
        .for_each_init(
            || vec![half::f16::ZERO; CHUNK],
            |halves, (dst, src)| {
                // half's slice conversion uses F16C (`vcvtps2ph`, round to nearest even) when the CPU has it, and
                // the same RNE software path otherwise.
                let halves = &mut halves[..src.len()];
                halves.convert_from_f32_slice(src);
                for (d, h) in dst.chunks_exact_mut(2).zip(halves.iter()) {
                    d.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            },
        );
    out
}

/// [`f32_to_f16_bytes`] of BF16/F16/F32 input (e.g. a safetensors view), decoded chunk by chunk (exact) and
/// written into `out` (resized), so an exporter can reuse one output buffer across tensors and never holds an
/// f32 copy. Same bytes as `f32_to_f16_bytes` of the decoded tensor.
pub fn f16_bytes_into(values: Rows<'_>, out: &mut Vec<u8>) {
    let n = values.len();
    out.resize(n * 2, 0);
    let convert = |halves: &mut Vec<half::f16>, src: &[f32], dst: &mut [u8]| {
        let halves = &mut halves[..src.len()];
        halves.convert_from_f32_slice(src);
        for (d, h) in dst.chunks_exact_mut(2).zip(halves.iter()) {
            d.copy_from_slice(&h.to_bits().to_le_bytes());
        }
    };
    match values {
        Rows::F32(v) => out
            .par_chunks_mut(CHUNK * 2)
            .zip(v.par_chunks(CHUNK))
            .for_each_init(
                || vec![half::f16::ZERO; CHUNK],
                |halves, (dst, src)| convert(halves, src, dst),
            ),
        Rows::Encoded { bytes, dtype } => out
            .par_chunks_mut(CHUNK * 2)
            .zip(bytes.par_chunks(CHUNK * dtype.size_bytes()))
            .for_each_init(
                || (vec![half::f16::ZERO; CHUNK], vec![0f32; CHUNK]),
                |(halves, f), (dst, src)| {
                    let f = &mut f[..dst.len() / 2];
                    decode(src, dtype, f);
                    convert(halves, f, dst)
                },
            ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: f32) -> u16 {
        u16::from_le_bytes(f32_to_f16_bytes(&[v]).try_into().unwrap())
    }

    #[test]
    fn rounding_and_overflow_match_numpy() {
        // Expected bits from numpy 2.4: np.array([...], np.float32).astype(np.float16).view(np.uint16).
        assert_eq!(bits(1.0), 0x3c00);
        assert_eq!(bits(-0.0), 0x8000);
        assert_eq!(bits(65504.0), 0x7bff);
        assert_eq!(bits(65519.996), 0x7bff); // just below the halfway point stays finite
        assert_eq!(bits(65520.0), 0x7c00); // halfway between f16::MAX and 2^16 rounds to even = inf
        assert_eq!(bits(-1e6), 0xfc00);
        assert_eq!(bits(5.9604645e-8), 0x0001); // smallest subnormal
        assert_eq!(bits(2.9802322e-8), 0x0000); // exactly half of it: ties to even (0)
        assert_eq!(bits(8.940697e-8), 0x0002); // 1.5 × smallest subnormal: ties to even (2)
        assert_eq!(bits(1.0009766), 0x3c01);
        assert_eq!(bits(1.0004883), 0x3c00); // tie between 0x3c00 and 0x3c01 → even
        assert_eq!(bits(1.0014648), 0x3c02); // tie between 0x3c01 and 0x3c02 → even
    }

    #[test]
    fn f16_bytes_into_matches_the_f32_path_for_every_input_dtype() {
        // Values that round differently in f16, a few chunks long so the parallel split is exercised.
        let values: Vec<f32> = (0..(2 * CHUNK + 77))
            .map(|i| ((i as f32) * 0.37).sin() * 70000.0 / (1 + i % 13) as f32)
            .collect();
        let bf16: Vec<u8> = values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let decoded: Vec<f32> = bf16
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let mut out = vec![1u8; 3]; // reused, wrong-sized buffer
        f16_bytes_into(
            Rows::Encoded {
                bytes: &bf16,
                dtype: oxport_hf::DType::BF16,
            },
            &mut out,
        );
        assert_eq!(out, f32_to_f16_bytes(&decoded));
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        f16_bytes_into(
            Rows::Encoded {
                bytes: &f32_bytes,
                dtype: oxport_hf::DType::F32,
            },
            &mut out,
        );
        assert_eq!(out, f32_to_f16_bytes(&values));
        f16_bytes_into(Rows::F32(&values[..5]), &mut out);
        assert_eq!(out, f32_to_f16_bytes(&values[..5]));
    }
}
