//! ONNX Runtime `MatMulNBits` blockwise quantizer (docs/onnx-genai.md §2).
//!
//! Bit-exact with `onnxruntime/python/tools/quantization/matmul_nbits_quantizer.py`
//! (`DefaultWeightOnlyQuantizer.qbits_block_quant`, QOperator format) → pybind `quantize_matmul_{4,8}bits` →
//! `MlasQuantizeBlockwise` → `BlockwiseQuantizer::quantizeAndTranspose` in `onnxruntime/core/mlas/lib/q4_dq.cpp`
//! (`range2scale`, `range2scalezp`, `BitsTraits`). Golden bytes from ORT 1.32 in `tests/golden/`.

use half::f16;
use rayon::prelude::*;

use crate::error::{ANON, QuantError};
use crate::rows::{Rows, merge_non_finite, refuse_non_finite};
use crate::simd;

/// Storage type of MatMulNBits `scales`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDtype {
    F32,
    F16,
}

impl ScaleDtype {
    pub fn size_bytes(self) -> usize {
        match self {
            ScaleDtype::F32 => 4,
            ScaleDtype::F16 => 2,
        }
    }
}

/// Parameters of one MatMulNBits weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NBitsParams {
    /// 4 or 8.
    pub bits: u32,
    /// Power of two, 16..=256.
    pub block_size: usize,
    /// Symmetric (no zero points; zero point is 2^(bits-1)) or asymmetric (explicit zero points).
    pub symmetric: bool,
    /// `F16` also means the weight is first rounded to f16: ORT's quantizer takes the scale dtype from the
    /// weight dtype (the builder's cuda path casts bf16 → fp16 before quantizing).
    pub scale_dtype: ScaleDtype,
}

impl NBitsParams {
    /// Check the combination is one the MatMulNBits CPU kernel and ORT's quantizer accept.
    pub fn validate(&self) -> Result<(), String> {
        if self.bits != 4 && self.bits != 8 {
            return Err(format!("bits must be 4 or 8, not {}", self.bits));
        }
        // ContribOperators.md MatMulNBits: block_size is a power of 2 and >= 16.
        if !self.block_size.is_power_of_two() || !(16..=256).contains(&self.block_size) {
            return Err(format!(
                "block size must be a power of two in 16..=256, not {}",
                self.block_size
            ));
        }
        Ok(())
    }
}

/// A weight quantized for MatMulNBits, laid out as the op's initializers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NBitsWeight {
    /// Output features (rows of the PyTorch `[out, in]` weight).
    pub n: usize,
    /// Input features (the MatMul reduction dimension).
    pub k: usize,
    /// `ceil(k / block_size)`.
    pub k_blocks: usize,
    /// `block_size * bits / 8`.
    pub blob_size: usize,
    /// `B`: uint8 `[n, k_blocks, blob_size]`, low nibble first, K zero-padded to whole blocks.
    pub packed: Vec<u8>,
    /// Raw little-endian f32 or f16 bytes, logical shape `[n * k_blocks]`.
    pub scales: Vec<u8>,
    /// Asymmetric only: uint8 `[n * ceil(k_blocks * bits / 8)]`, packed as ORT wants.
    pub zero_points: Option<Vec<u8>>,
}

/// Quantize `weight` (`[n, k]` row-major = PyTorch Linear `[out, in]`) blockwise along K.
///
/// ORT's quantizer sees the ONNX MatMul weight `[K, N]` and quantizes each column in blocks of K; row `n` of
/// the PyTorch weight is that column, so no transpose is needed. `B` covers K padded to whole blocks; the
/// padding bytes are 0 (MLAS is given the unpadded K and never writes them).
pub fn quantize_nbits(
    weight: &[f32],
    n: usize,
    k: usize,
    p: &NBitsParams,
) -> Result<NBitsWeight, QuantError> {
    quantize_nbits_rows(Rows::F32(weight), n, k, p)
}

/// [`quantize_nbits`] reading BF16/F16/F32 rows (e.g. straight from a safetensors view), decoded per row.
pub fn quantize_nbits_rows(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    p: &NBitsParams,
) -> Result<NBitsWeight, QuantError> {
    quantize_nbits_rows_into(weight, n, k, p, Vec::new())
}

/// [`quantize_nbits_rows`] packing `B` into `packed` (any length and contents: it is cleared), so an exporter can
/// hand in a written buffer and not fault in fresh pages for every weight. The result is the same.
pub fn quantize_nbits_rows_into(
    weight: Rows<'_>,
    n: usize,
    k: usize,
    p: &NBitsParams,
    mut packed: Vec<u8>,
) -> Result<NBitsWeight, QuantError> {
    // NaN/Inf is refused in the row pass below (one read of the weight), except where another refusal must not
    // come first: invalid parameters, and the f16-range scan (±Inf is beyond it too).
    weight.check_shape(n, k)?;
    if let Err(msg) = p.validate() {
        weight.check(n, k)?;
        return Err(QuantError::Unsupported {
            tensor: ANON.into(),
            msg,
        });
    }
    if p.scale_dtype == ScaleDtype::F16 {
        weight.check(n, k)?;
        // ORT would quantize an f16 weight that is already ±inf; refuse instead of emitting garbage.
        let (count, i) = weight.count_where(n, k, |v| v.abs() >= F16_OVERFLOW);
        if count > 0 {
            return Err(QuantError::Unsupported {
                tensor: ANON.into(),
                msg: format!(
                    "{count} value(s) beyond the f16 range, the first {} at flat index {i}; f16 scales need an f16 weight",
                    weight.value(i)
                ),
            });
        }
    }
    let bits = p.bits as usize;
    let k_blocks = k.div_ceil(p.block_size);
    let blob_size = p.block_size * bits / 8;
    let zp_row_bytes = (k_blocks * bits).div_ceil(8);
    let scale_bytes = p.scale_dtype.size_bytes();

    packed.clear();
    packed.resize(n * k_blocks * blob_size, 0);
    let mut scales = vec![0u8; n * k_blocks * scale_bytes];
    let mut zero_points = vec![0u8; n * zp_row_bytes];
    let non_finite = packed
        .par_chunks_mut(k_blocks * blob_size)
        .zip(scales.par_chunks_mut(k_blocks * scale_bytes))
        .zip(zero_points.par_chunks_mut(zp_row_bytes))
        .enumerate()
        .map_init(
            || Scratch {
                input: Vec::new(),
                values: vec![
                    0f32;
                    if p.scale_dtype == ScaleDtype::F16 {
                        k
                    } else {
                        0
                    }
                ],
                codes: vec![0u8; p.block_size],
            },
            |scratch, (r, ((packed_row, scale_row), zp_row))| {
                let mut input = std::mem::take(&mut scratch.input);
                let (row, non_finite) = weight.row_finite(r, k, &mut input);
                if non_finite.0 == 0 {
                    quantize_row(row, p, scratch, packed_row, scale_row, zp_row);
                }
                scratch.input = input;
                non_finite
            },
        )
        .reduce(|| (0, usize::MAX), merge_non_finite);
    refuse_non_finite(non_finite)?;
    Ok(NBitsWeight {
        n,
        k,
        k_blocks,
        blob_size,
        packed,
        scales,
        zero_points: if p.symmetric { None } else { Some(zero_points) },
    })
}

/// The smallest |x| that f16 rounds to infinity: halfway between f16::MAX (65504) and 2^16, a tie that rounds
/// to the even (infinite) side.
const F16_OVERFLOW: f32 = 65520.0;

/// `kMid` of `BitsTraits<bits, false>`: the implicit zero point of symmetric blocks, and what an unused
/// zero-point nibble holds (`zp_bytes` is filled with `kMid` in `quantizeAndTranspose`).
fn mid(bits: u32) -> u8 {
    1 << (bits - 1)
}

/// Per-thread scratch: the row rounded to f16 and back (f16 scales only), and one block's codes.
struct Scratch {
    /// The decoded input row (BF16/F16 input only).
    input: Vec<f32>,
    values: Vec<f32>,
    codes: Vec<u8>,
}

simd::multiversion! {
fn quantize_row(
    row: &[f32],
    p: &NBitsParams,
    scratch: &mut Scratch,
    packed: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    let bs = p.block_size;
    let k_max = ((1u32 << p.bits) - 1) as f32;
    let blob = bs * p.bits as usize / 8;
    if !p.symmetric {
        zps.fill(if p.bits == 4 {
            mid(4) | (mid(4) << 4)
        } else {
            mid(8)
        });
    }
    // `vi[1]` of quantizeAndTranspose: the high nibble last written in the current thread block (two quant
    // blocks along K for 4 bits). With odd K the final byte's high nibble is this stale value.
    let mut stale_high = 0u8;
    // f16 weights when scales are f16 (ORT's scale dtype is the weight dtype): round the row once.
    let Scratch { values, codes: code_buf, .. } = scratch;
    let row: &[f32] = match p.scale_dtype {
        ScaleDtype::F32 => row,
        ScaleDtype::F16 => {
            for (d, v) in values[..row.len()].iter_mut().zip(row) {
                *d = simd::round_through_f16(*v);
            }
            &values[..row.len()]
        }
    };
    for (b, block) in row.chunks(bs).enumerate() {
        if b % 2 == 0 {
            stale_high = 0;
        }
        // ORT pads K with zeros (np.pad) but passes the unpadded K to MLAS, so the padding takes no part in
        // min/max and its bytes stay 0.
        let len = block.len();
        let (mut min, mut max) = simd::min_max(block);
        if min == 0.0 && max == 0.0 {
            // All zeros: which signed zero wins decides the sign of the zero scale.
            (min, max) = simd::min_max_sequential(block);
        }
        let (scale_unrounded, zp) = if p.symmetric {
            // range2scale: the signed value of largest magnitude maps to code 0 ("max/-8 trick").
            let m = if max.abs() > min.abs() { max } else { min };
            (-m / mid(p.bits) as f32, mid(p.bits))
        } else {
            range2scalezp(min, max, p.bits)
        };
        // ScaleT(scale_f): stored as f32, or rounded to f16 (RNE).
        let scale_f = match p.scale_dtype {
            ScaleDtype::F32 => {
                scales[b * 4..b * 4 + 4].copy_from_slice(&scale_unrounded.to_le_bytes());
                scale_unrounded
            }
            ScaleDtype::F16 => {
                let h = f16::from_f32(scale_unrounded);
                scales[b * 2..b * 2 + 2].copy_from_slice(&h.to_bits().to_le_bytes());
                h.to_f32()
            }
        };
        // The reciprocal of the *stored* scale; zp added before roundf (half away from zero), then
        // std::clamp(·, 0, kMax) and (uint8_t). Clamping before rounding is the same for integer bounds; a NaN
        // (0 · inf with a subnormal scale) passes both and converts to 0, as the C++ cast does on x86.
        let reciprocal = if scale_f != 0.0 { 1.0 / scale_f } else { 0.0 };
        let zp_f = zp as f32;
        let codes = &mut code_buf[..len];
        for (c, &v) in codes.iter_mut().zip(block) {
            *c = simd::clamp_roundf_u8(v * reciprocal + zp_f, k_max);
        }
        let dst = &mut packed[b * blob..(b + 1) * blob];
        if p.bits == 4 {
            // Element 2j in the low nibble, 2j+1 in the high nibble (ContribOperators.md MatMulNBits).
            let pairs = codes.chunks_exact(2);
            let odd = pairs.remainder().first().copied();
            let whole = len / 2;
            for (d, pair) in dst[..whole].iter_mut().zip(pairs) {
                *d = pair[0] | (pair[1] << 4);
            }
            if whole > 0 {
                stale_high = codes[2 * whole - 1];
            }
            if let Some(lo) = odd {
                dst[whole] = lo | (stale_high << 4);
            }
        } else {
            dst[..len].copy_from_slice(codes);
        }
        if !p.symmetric {
            if p.bits == 4 {
                let byte = &mut zps[b / 2];
                *byte = if b % 2 == 0 {
                    (*byte & 0xf0) | (zp & 0xf)
                } else {
                    (*byte & 0x0f) | (zp << 4)
                };
            } else {
                zps[b] = zp;
            }
        }
    }
}
}

/// `range2scalezp<ScaleT, bits, false>` from q4_dq.cpp. Returns the f32 scale (before `ScaleT(scale_f)` storage rounding) and the zero point, which
/// is computed from the unrounded f32 scale.
fn range2scalezp(min: f32, max: f32, bits: u32) -> (f32, u8) {
    // std::min(min, 0.0f) = (0 < min) ? 0 : min;  std::max(max, 0.0f) = (max < 0) ? 0 : max.
    let min = if 0.0 < min { 0.0 } else { min };
    let max = if max < 0.0 { 0.0 } else { max };
    let k_max = ((1u32 << bits) - 1) as f32;
    let scale_f = (max - min) / k_max;
    let mut zp_fp = min;
    if scale_f != 0.0 {
        zp_fp = 0.0 - min / scale_f;
    }
    let zp = if zp_fp < 0.0 {
        0
    } else if zp_fp > k_max {
        k_max as u8
    } else {
        zp_fp.round() as u8
    };
    (scale_f, zp)
}

impl NBitsWeight {
    /// Dequantize as the MatMulNBits kernel does: `(q - zp) * scale`, zp = 2^(bits-1) when symmetric.
    /// Returns `[n, k]` f32 (padding dropped).
    pub fn dequantize(&self, p: &NBitsParams) -> Vec<f32> {
        let bits = p.bits as usize;
        let zp_row_bytes = (self.k_blocks * bits).div_ceil(8);
        let mut out = vec![0f32; self.n * self.k];
        out.par_chunks_mut(self.k)
            .enumerate()
            .for_each(|(row, dst)| {
                for (i, d) in dst.iter_mut().enumerate() {
                    let b = i / p.block_size;
                    let j = i % p.block_size;
                    let blob = &self.packed[(row * self.k_blocks + b) * self.blob_size..];
                    let q = if bits == 4 {
                        (blob[j / 2] >> ((j % 2) * 4)) & 0xf
                    } else {
                        blob[j]
                    };
                    let zp = match &self.zero_points {
                        None => mid(p.bits),
                        Some(z) if bits == 4 => {
                            (z[row * zp_row_bytes + b / 2] >> ((b % 2) * 4)) & 0xf
                        }
                        Some(z) => z[row * zp_row_bytes + b],
                    };
                    let s = row * self.k_blocks + b;
                    let scale = match p.scale_dtype {
                        ScaleDtype::F32 => f32::from_le_bytes(
                            self.scales[s * 4..s * 4 + 4].try_into().expect("4 bytes"),
                        ),
                        ScaleDtype::F16 => f16::from_bits(u16::from_le_bytes([
                            self.scales[s * 2],
                            self.scales[s * 2 + 1],
                        ]))
                        .to_f32(),
                    };
                    *d = (q as f32 - zp as f32) * scale;
                }
            });
        out
    }
}
