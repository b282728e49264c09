//! Data-free AWQ: per-input-channel scales from the weight alone, as NNCF 3.4 computes them
//! (`nncf/quantization/algorithms/weight_compression/awq.py`: `AWQ._data_free_step` and `AWQ.apply`).
//!
//! For a weight `W` `[n, k]` (`[out, in]`), NNCF takes `m[j] = mean_i |W[i, j]|` over the output axis,
//! `scale[j] = 1 / max(m[j], eps)` (`eps` = float32 machine epsilon), multiplies every input column of the weight
//! by its scale (`(W * scale).astype(W.dtype)`), and multiplies the activation feeding the weight by
//! `a_scale = 1 / scale` (a new `Multiply` after the activation in OpenVINO). Everything is float32 numpy
//! arithmetic on the f32 weight; `np.mean` over axis 0 of a C-contiguous matrix adds the rows in order into an
//! f32 accumulator and divides by `n`, which is what [`data_free_awq`] does (checked byte for byte against NNCF's
//! output by `tests/python_peers/test_nncf_awq.py`).

use rayon::prelude::*;

use crate::error::QuantError;
use oxport_hf::DType;

use crate::rows::{Rows, decode};

/// Columns summed per parallel task (each column still adds its rows in order: any thread count, same bytes).
const COLUMNS_PER_TASK: usize = 256;

/// The two scale vectors of data-free AWQ for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqScales {
    /// `scale[j]`: multiplies input column `j` of the weight.
    pub weight: Vec<f32>,
    /// `1 / scale[j]`: multiplies channel `j` of the activation (NNCF's `awq_mul/scale` constant).
    pub activation: Vec<f32>,
}

/// Data-free AWQ scales for `w` `[n, k]`. NaN/±Inf is refused (errors name `<matrix>`, see
/// [`QuantError::for_tensor`]).
pub fn data_free_awq(w: Rows<'_>, n: usize, k: usize) -> Result<AwqScales, QuantError> {
    w.check(n, k)?;
    let mut sums = vec![0f32; k];
    sums.par_chunks_mut(COLUMNS_PER_TASK)
        .enumerate()
        .for_each(|(chunk, acc)| {
            let j0 = chunk * COLUMNS_PER_TASK;
            let mut buf = vec![0f32; acc.len()];
            for r in 0..n {
                let row: &[f32] = match w {
                    Rows::F32(v) => &v[r * k + j0..r * k + j0 + acc.len()],
                    Rows::Encoded { bytes, dtype } => {
                        let es = dtype.size_bytes();
                        let start = (r * k + j0) * es;
                        decode(&bytes[start..start + acc.len() * es], dtype, &mut buf);
                        &buf
                    }
                };
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v.abs();
                }
            }
        });
    let rows = n as f32;
    let weight: Vec<f32> = sums
        .iter()
        .map(|&s| 1.0 / (s / rows).max(f32::EPSILON))
        .collect();
    let activation = weight.iter().map(|&s| 1.0 / s).collect();
    Ok(AwqScales { weight, activation })
}

/// `w * scale` per input column (`[n, k]`, row-major f32), stored back in the weight's own precision `dtype`: the
/// weight NNCF compresses after AWQ.
///
/// NNCF multiplies in f32 and writes the result into a constant of the original element type
/// (`AWQ.apply`: `(weight * w_scale).astype(weight_dtype)`, then `OVWeightCompressionAlgoBackend.set_weight` →
/// `create_ov_const_from_tensor`). optimum-cli hands NNCF the checkpoint's precision: for BF16 the f32 values become
/// an OpenVINO bf16 constant through `ov::bfloat16::round_to_nearest_even`
/// (`openvinotoolkit/openvino:src/core/include/openvino/core/type/bfloat16.hpp`), which adds half an ulp only when
/// the kept low bit is 1 — not IEEE round-to-nearest-even; F16 goes through numpy's `astype(float16)` (IEEE RNE,
/// as `half` converts); F32 stays as it is.
pub fn scale_columns(
    w: Rows<'_>,
    n: usize,
    k: usize,
    scale: &[f32],
    dtype: DType,
) -> Result<Vec<f32>, QuantError> {
    w.check_shape(n, k)?;
    if scale.len() != k {
        return Err(QuantError::Options(format!(
            "AWQ scale has {} values for {k} input channels",
            scale.len()
        )));
    }
    let round: fn(f32) -> f32 = match dtype {
        DType::BF16 => openvino_bf16,
        DType::F16 => |v| half::f16::from_f32(v).to_f32(),
        _ => |v| v,
    };
    let mut out = vec![0f32; n * k];
    out.par_chunks_mut(k)
        .enumerate()
        .for_each_init(Vec::new, |buf, (r, dst)| {
            let row = w.row(r, k, buf);
            for ((d, v), s) in dst.iter_mut().zip(row).zip(scale) {
                *d = round(v * s);
            }
        });
    Ok(out)
}

/// f32 → bf16 → f32 as OpenVINO's `bfloat16::round_to_nearest_even` does it: `(bits + ((bits & 0x10000) >> 1)) >> 16`.
pub fn openvino_bf16(v: f32) -> f32 {
    let bits = v.to_bits();
    f32::from_bits(bits.wrapping_add((bits & 0x1_0000) >> 1) & 0xffff_0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_the_inverse_column_mean_of_absolute_values() {
        // [n=2, k=3]: column means of |w| are 1.5, 0.25, 0 (→ eps).
        let w = [1.0f32, -0.5, 0.0, -2.0, 0.0, 0.0];
        let s = data_free_awq(Rows::F32(&w), 2, 3).unwrap();
        assert_eq!(s.weight[0], 1.0 / 1.5);
        assert_eq!(s.weight[1], 4.0);
        assert_eq!(s.weight[2], 1.0 / f32::EPSILON);
        assert_eq!(s.activation[0], 1.0 / (1.0 / 1.5f32));
        assert_eq!(s.activation[1], 0.25);
        let scaled = scale_columns(Rows::F32(&w), 2, 3, &s.weight, DType::F32).unwrap();
        assert_eq!(scaled, vec![1.0 / 1.5, -2.0, 0.0, -2.0 / 1.5, 0.0, 0.0]);
    }

    #[test]
    fn bf16_rounding_is_openvinos_not_ieee() {
        // Low half above 0x8000: IEEE rounds up; OpenVINO only when the kept low bit is 1.
        let even = f32::from_bits(0x3f08_9000); // kept lsb 0
        let odd = f32::from_bits(0x3f09_9000); // kept lsb 1
        assert_eq!(openvino_bf16(even).to_bits(), 0x3f08_0000);
        assert_eq!(half::bf16::from_f32(even).to_f32().to_bits(), 0x3f09_0000);
        assert_eq!(openvino_bf16(odd).to_bits(), 0x3f0a_0000);
        // Below half: both truncate; exactly representable values are unchanged.
        assert_eq!(
            openvino_bf16(f32::from_bits(0x3f09_7fff)).to_bits(),
            0x3f09_0000
        );
        assert_eq!(openvino_bf16(1.5), 1.5);
        let w = [even, odd];
        let scaled = scale_columns(Rows::F32(&w), 1, 2, &[1.0, 1.0], DType::BF16).unwrap();
        assert_eq!(scaled, vec![openvino_bf16(even), openvino_bf16(odd)]);
        let f16 = scale_columns(Rows::F32(&w), 1, 2, &[1.0, 1.0], DType::F16).unwrap();
        assert_eq!(f16[0], half::f16::from_f32(even).to_f32());
    }

    #[test]
    fn column_sums_add_rows_in_order_in_f32() {
        // 1e8 + 1 + ... in f32: in-order accumulation keeps losing the small terms; a pairwise or f64 sum would not.
        let n = 5;
        let w: Vec<f32> = [1e8f32, 1.0, 1.0, 1.0, 1.0].to_vec();
        let s = data_free_awq(Rows::F32(&w), n, 1).unwrap();
        let mut acc = 0f32;
        for v in &w {
            acc += v.abs();
        }
        assert_eq!(s.weight[0], 1.0 / (acc / n as f32));
    }

    #[test]
    fn same_scales_for_one_and_two_threads_and_bf16_input() {
        let (n, k) = (37, 700);
        let w: Vec<f32> = (0..n * k)
            .map(|i| half::bf16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5).to_f32())
            .collect();
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| data_free_awq(Rows::F32(&w), n, k).unwrap())
        };
        assert_eq!(run(1), run(2));
        let encoded = Rows::Encoded {
            bytes: &bytes,
            dtype: oxport_hf::DType::BF16,
        };
        assert_eq!(data_free_awq(encoded, n, k).unwrap(), run(1));
    }

    #[test]
    fn nan_is_refused() {
        let w = [1.0f32, f32::NAN, 0.0, 2.0];
        let e = data_free_awq(Rows::F32(&w), 2, 2).unwrap_err();
        assert!(
            matches!(
                e,
                QuantError::NonFinite {
                    count: 1,
                    first: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
