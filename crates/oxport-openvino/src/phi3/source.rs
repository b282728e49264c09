//! What a deferred weight constant of the Phi-3 graph holds: which checkpoint tensor and which part of its stored
//! form. The graph builder (phi3/weights.rs) names it; phi3/stream.rs computes it when the `.bin` is streamed.

use oxport_arch::Role;
use oxport_quant::NncfMode;

use crate::ir::Elem;

/// A deferred constant: `part` of the checkpoint tensor `role`, a `[rows, cols]` weight (or a norm's gamma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WeightRef {
    pub(crate) role: Role,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) part: Part,
}

/// Which bytes of the weight's stored form. A compressed weight's `Codes`, `ZeroPoint` and `Scale` are created
/// in that order, consecutively in the `.bin`, from one compression of the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The tensor converted to `F32` or `F16` (f32 from f32: its bytes as they are).
    Float(Elem),
    /// The checkpoint's BF16/F16 bytes as they are (NNCF's "original precision").
    Original,
    /// NNCF's codes in `mode`, group-wise (`Some(group)`) or per channel (`None`).
    Codes {
        mode: NncfMode,
        group: Option<usize>,
    },
    /// The zero point of the codes just written (asymmetric modes).
    ZeroPoint,
    /// The f16 scale of the codes just written.
    Scale,
    /// AWQ's activation scale `[1, 1, cols]`: the plan's data-aware one, else data-free from the weight.
    AwqScale,
    /// An RMSNorm gamma as `F32` or `F16`.
    Norm(Elem),
}

impl Part {
    /// Whether this part starts a weight (the cancel token is checked and the weight counted there).
    pub(crate) fn starts_weight(self) -> bool {
        matches!(self, Part::Float(_) | Part::Original | Part::Codes { .. })
    }
}

impl std::fmt::Display for WeightRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.role.name())?;
        match self.part {
            Part::Float(elem) => write!(f, "as {}", elem.name()),
            Part::Original => f.write_str("as stored"),
            Part::Codes { mode, group } => match group {
                Some(g) => write!(f, "{mode} codes, group {g}"),
                None => write!(f, "{mode} codes, per channel"),
            },
            Part::ZeroPoint => f.write_str("zero point"),
            Part::Scale => f.write_str("scale"),
            Part::AwqScale => f.write_str("AWQ activation scale"),
            Part::Norm(elem) => write!(f, "gamma as {}", elem.name()),
        }
    }
}
