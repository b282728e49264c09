//! `onnx.proto` (proto2, onnx/onnx 1.23.0) as prost types. `onnx.rs` is generated and committed:
//! regenerate with `cargo xtask codegen`, check freshness with `cargo xtask codegen --check`.

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
#[rustfmt::skip]
pub mod onnx;

pub use onnx::*;
