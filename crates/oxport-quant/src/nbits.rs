//! ONNX Runtime `MatMulNBits` blockwise quantizer (shared/docs/onnx-genai.md §2).

use crate::error::QuantError;

/// Storage type of MatMulNBits `scales`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDtype {
    F32,
    F16,
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
    pub scale_dtype: ScaleDtype,
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
pub fn quantize_nbits(weight: &[f32], n: usize, k: usize, p: &NBitsParams) -> Result<NBitsWeight, QuantError> {
    let _ = (weight, n, k, p);
    unimplemented!()
}

impl NBitsWeight {
    /// Dequantize as the MatMulNBits kernel does: `(q - zp) * scale`, zp = 2^(bits-1) when symmetric.
    /// Returns `[n, k]` f32 (padding dropped).
    pub fn dequantize(&self, p: &NBitsParams) -> Vec<f32> {
        let _ = p;
        unimplemented!()
    }
}
