//! Weight compression for the IR: NNCF's kernels from `oxport_quant::nncf` (bit-exact with nncf 3.4), adapted to the
//! byte layout the IR writer stores.
//!
//! All arithmetic is f32 like NNCF's numpy/OpenVINO path; rounding is half-to-even.

use oxport_quant::nncf::NncfParams;
use oxport_quant::{
    NncfMode, NncfWeight, Rows, compress_nncf_rows_into, compress_nncf_with_params,
};

use crate::error::{Error, Result};

/// A compressed weight as the IR stores it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Compressed {
    /// u8 `[n, k]`, i8 `[n, k]`, i4/u4 `[n, k/g, g]` packed two per byte, element 2j in the low nibble.
    pub weight: Vec<u8>,
    /// f16 little-endian, `[n, 1]` or `[n, k/g, 1]`.
    pub scale: Vec<u8>,
    /// Asymmetric modes only: u8 `[n, 1]` or u4 `[n, k/g, 1]` packed like the weight.
    pub zero_point: Option<Vec<u8>>,
}

/// Compress `w` (`[n, k]`, the checkpoint tensor `tensor`) with `mode`; `group` `None` is per-channel.
/// (The exporter reads checkpoint bytes through [`compress_rows_into`]; this f32 form is what the unit tests pin.)
#[cfg(test)]
pub(crate) fn compress(
    tensor: &str,
    w: &[f32],
    n: usize,
    k: usize,
    mode: NncfMode,
    group: Option<usize>,
) -> Result<Compressed> {
    compress_rows_into(tensor, Rows::F32(w), n, k, (mode, group), None, Vec::new())
}

/// Compress the checkpoint's own BF16/F16/F32 bytes (a safetensors view), decoded one row at a time inside the
/// kernel: the same bytes as compressing the f32 decode, without an f32 copy of the tensor. The weight is packed
/// into `buf` (a written `.bin` buffer to reuse; cleared first).
/// `given`: scales and zero points computed beforehand (scale estimation), used instead of min-max.
pub(crate) fn compress_rows_into(
    tensor: &str,
    w: Rows<'_>,
    n: usize,
    k: usize,
    (mode, group): (NncfMode, Option<usize>),
    given: Option<&NncfParams>,
    buf: Vec<u8>,
) -> Result<Compressed> {
    let compressed = match given {
        Some(params) => compress_nncf_with_params(w, n, k, params),
        None => compress_nncf_rows_into(w, n, k, mode, group, buf),
    };
    let NncfWeight {
        weight,
        scale,
        zero_point,
        ..
    } = compressed.map_err(|source| Error::Quant {
        tensor: tensor.into(),
        source: Box::new(source),
    })?;
    Ok(Compressed {
        weight,
        scale: scale.iter().flat_map(|s| s.to_le_bytes()).collect(),
        zero_point,
    })
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    #[test]
    fn int4_sym_uses_the_signed_scale_and_packs_low_nibble_first() {
        // Largest magnitude is +1.6 (positive) → scale = -1.6/8 = -0.2 and 1.6 → -8.
        let c = compress(
            "w",
            &[1.6f32, -0.2, 0.4, 0.0],
            1,
            4,
            NncfMode::Int4Sym,
            Some(4),
        )
        .unwrap();
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
        let c = compress(
            "w",
            &[0.4f32, 1.0, 2.0, 3.0],
            1,
            4,
            NncfMode::Int8Asym,
            None,
        )
        .unwrap();
        assert_eq!(c.zero_point.as_deref(), Some(&[0u8][..]));
        assert_eq!(c.weight, vec![34, 85, 170, 255]);
    }

    #[test]
    fn errors_name_the_tensor() {
        let e = compress(
            "model.layers.0.mlp.down_proj.weight",
            &[0.0; 6],
            2,
            3,
            NncfMode::Int4Sym,
            Some(2),
        );
        let e = e.unwrap_err().to_string();
        assert!(e.contains("model.layers.0.mlp.down_proj.weight"), "{e}");
    }
}
