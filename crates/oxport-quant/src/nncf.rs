//! NNCF weight compression as optimum-cli writes it (shared/docs/openvino-ir.md §5, §9).

use crate::error::QuantError;

/// NNCF `CompressWeightsMode` values oxport supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NncfMode {
    Int4Sym,
    Int4Asym,
    Int8Sym,
    Int8Asym,
}

/// A compressed weight as the OpenVINO IR stores it: weight constant, f16 scale, optional zero point.
#[derive(Clone, Debug, PartialEq)]
pub struct NncfWeight {
    pub mode: NncfMode,
    /// OpenVINO element type of the stored weight: `"i4" | "u4" | "i8" | "u8"`.
    pub weight_element: &'static str,
    /// `[n, k / group, group]` group-wise, `[n, k]` per-channel.
    pub weight_shape: Vec<usize>,
    /// Packed (4-bit: two per byte, first element in the low nibble).
    pub weight: Vec<u8>,
    /// `[n, k / group, 1]` or `[n, 1]`.
    pub scale_shape: Vec<usize>,
    pub scale: Vec<half::f16>,
    pub zero_point_element: Option<&'static str>,
    pub zero_point_shape: Option<Vec<usize>>,
    /// Packed like the weight.
    pub zero_point: Option<Vec<u8>>,
}

/// Compress `weight` (`[n, k]` row-major) with `mode`; `group_size` `None` means per-channel.
pub fn compress_nncf(
    weight: &[f32],
    n: usize,
    k: usize,
    mode: NncfMode,
    group_size: Option<usize>,
) -> Result<NncfWeight, QuantError> {
    let _ = (weight, n, k, mode, group_size);
    unimplemented!()
}

impl NncfWeight {
    /// Dequantize as the IR's decompression subgraph does (in f16: `(f16(q) - f16(zp)) * scale`), returned as
    /// f32 `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        unimplemented!()
    }
}
