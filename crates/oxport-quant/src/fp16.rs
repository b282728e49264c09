//! f32 → IEEE half conversion as ONNX Runtime / onnx `float32_to_float16` and numpy `astype(float16)` do it.

/// Convert to little-endian IEEE f16 bytes, round-to-nearest-even.
///
/// Overflow: values beyond the f16 range (|x| ≥ 65520) become ±inf, subnormal results are kept (not flushed),
/// exactly as numpy `astype(np.float16)` (used by onnx `numpy_helper` and ORT's float16 converter) does.
pub fn f32_to_f16_bytes(values: &[f32]) -> Vec<u8> {
    let _ = values;
    unimplemented!()
}
