//! How the exporter reports progress; the CLI implements this with an indicatif bar.

/// Callbacks during an export. All methods default to doing nothing.
pub trait Progress: Sync {
    /// `total` initializers will be written.
    fn start(&self, _total: usize) {}
    /// One initializer is in `model.onnx.data`.
    fn tensor_written(&self, _name: &str, _bytes: u64) {}
    /// The graph, configs and tokenizer files are being written and the folder moved into place.
    fn finishing(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
