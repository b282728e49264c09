//! oxport-onnx
