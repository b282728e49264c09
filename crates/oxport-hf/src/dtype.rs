use half::f16;

/// Element types oxport reads from checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DType {
    BF16,
    F16,
    F32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::BF16 => "BF16",
            DType::F16 => "F16",
            DType::F32 => "F32",
        }
    }

    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::F32 => Some(DType::F32),
            _ => None,
        }
    }

    /// Decode little-endian `bytes` of this dtype into `out` (exact: every BF16/F16 value is an f32).
    /// Unaligned input is fine: values are read byte-wise.
    pub fn decode_into(self, bytes: &[u8], out: &mut [f32]) {
        let n = bytes.len() / self.size_bytes();
        assert_eq!(
            n,
            out.len(),
            "decode_into: {} bytes of {} for {} values",
            bytes.len(),
            self.name(),
            out.len()
        );
        match self {
            DType::BF16 => {
                // BF16 is the top half of an f32: a shift, written branch-free so it vectorizes. NaN gets its
                // quiet bit set as half's `bf16::to_f32` does (half `bfloat/convert.rs` `bf16_to_f32`), so the
                // values are bit-identical to it.
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    let bits = u16::from_le_bytes([b[0], b[1]]);
                    let quiet = if bits & 0x7fff > 0x7f80 { 0x0040 } else { 0 };
                    *o = f32::from_bits(((bits | quiet) as u32) << 16);
                }
            }
            DType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            DType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_decode_is_bit_identical_to_half_for_every_pattern() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        let mut out = vec![0f32; 1 << 16];
        DType::BF16.decode_into(&bytes, &mut out);
        for (bits, v) in (0..=u16::MAX).zip(&out) {
            assert_eq!(
                v.to_bits(),
                half::bf16::from_bits(bits).to_f32().to_bits(),
                "{bits:#06x}"
            );
        }
    }
}
