//! oxport-runner: ONNX Runtime and OpenVINO sessions for exports (runtimes loaded at run time from the PyPI wheels),
//! device discovery and export validation against the f32 forward pass of `oxport-reference`.
//!
//! * [`backend`]: [`backend::LlmSession`] over the reference, ORT (genai layout) and OpenVINO (stateful IR).
//! * [`devices::probe_all`]: every runtime and device, present or absent with the reason.
//! * [`validate`]: compare an export with the reference on every present device and report.

pub mod backend;
pub mod devices;
mod error;
pub mod runtime;
pub mod validate;

pub use error::{Error, Result};
