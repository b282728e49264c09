//! Errors of the quantization kernels and the planner; each names the tensor (or matrix shape) involved.

/// Why a tensor could not be quantized or planned.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// NaN or ±Inf in the weight; quantizing it would silently produce garbage.
    #[error("tensor {tensor}: {count} non-finite value(s), first at flat index {first}")]
    NonFinite {
        tensor: String,
        count: usize,
        first: usize,
    },
    /// `weight.len()` does not equal `n * k`.
    #[error("tensor {tensor}: {len} values do not form a [{n}, {k}] matrix")]
    ShapeMismatch {
        tensor: String,
        n: usize,
        k: usize,
        len: usize,
    },
    /// Parameters the kernel does not support (bits, block size, group size).
    #[error("tensor {tensor}: unsupported parameters: {msg}")]
    Unsupported { tensor: String, msg: String },
    /// NNCF's `InvalidGroupSizeError`: K is not divisible by the group size and the fallback is `error`.
    #[error(
        "tensor {tensor} [{n}, {k}]: reduction dimension {k} is not divisible by group size {group_size} \
         (NNCF InvalidGroupSizeError; use group size fallback `ignore` or `adjust`)"
    )]
    InvalidGroupSize {
        tensor: String,
        n: usize,
        k: usize,
        group_size: usize,
    },
    /// NNCF's `validate_group_size` after the int4 assignment: every selected weight whose K the group size does
    /// not divide, with its K (the message NNCF prints, by checkpoint tensor name).
    #[error(
        "Failed to apply group-wise quantization with group size value {group_size}: K is not divisible by it for {} \
         weight(s) selected for int4 (NNCF InvalidGroupSizeError; use --group-size-fallback ignore or adjust): {}",
        failed.len(),
        failed.iter().map(|(t, k)| format!("{t} (channel size: {k})")).collect::<Vec<_>>().join(", ")
    )]
    InvalidGroupSizes {
        group_size: usize,
        failed: Vec<(String, usize)>,
    },
    /// The checkpoint could not be read while planning (sensitivity needs the weights).
    #[error("reading {tensor} for planning: {source}")]
    Checkpoint {
        tensor: String,
        #[source]
        source: Box<oxport_hf::Error>,
    },
    /// Options that contradict each other.
    #[error("invalid quantization options: {0}")]
    Options(String),
}

impl QuantError {
    /// Kernels see an anonymous matrix (named `<matrix>` in their errors); callers that know the checkpoint
    /// tensor rename it here: `quantize_nbits(..).map_err(|e| e.for_tensor(&info.name))`.
    pub fn for_tensor(self, name: &str) -> Self {
        let mut e = self;
        match &mut e {
            QuantError::NonFinite { tensor, .. }
            | QuantError::ShapeMismatch { tensor, .. }
            | QuantError::Unsupported { tensor, .. }
            | QuantError::InvalidGroupSize { tensor, .. }
            | QuantError::Checkpoint { tensor, .. } => {
                if tensor == ANON {
                    *tensor = name.to_string();
                }
            }
            QuantError::Options(_) | QuantError::InvalidGroupSizes { .. } => {}
        }
        e
    }
}

/// Kernel entry points take an anonymous matrix; this is the name they use in errors.
pub(crate) const ANON: &str = "<matrix>";
