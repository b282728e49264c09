//! oxport-runner: an f32 reference forward pass of a Phi-3 checkpoint, ONNX Runtime and OpenVINO sessions for
//! exports (runtimes loaded at run time from the PyPI wheels), device discovery and export validation.
//!
//! * [`reference::Reference`]: our own forward pass of the original checkpoint, with a KV cache.
//! * [`backend`]: [`backend::LlmSession`] over the reference, ORT (genai layout) and OpenVINO (stateful IR).
//! * [`devices::probe_all`]: every runtime and device, present or absent with the reason.
//! * [`validate`]: compare an export with the reference on every present device and report.

pub mod backend;
pub mod devices;
mod error;
pub mod npy;
pub mod reference;
pub mod runtime;
pub mod validate;

pub use error::{Error, Result};
