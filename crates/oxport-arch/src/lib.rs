//! The model families oxport exports, in one place (everything else reads tensors by [`Role`]).
//!
//! * [`Phi3Config`]: `config.json` in the 2024 legacy layout or the newer `rope_parameters` layout, normalised
//!   (Phi-3-mini 4k/128k, Phi-3-medium, Phi-3.5-mini, Phi-4-mini: GQA, LongRoPE, partial rotary, tied embeddings).
//! * [`Role`]: every tensor name maps once to a typed role with its expected shape; policies match on the enum,
//!   never on strings.
//! * [`Model`]: an `oxport_hf::Checkpoint` classified: every tensor has a role and the shape the config implies,
//!   in canonical order.
//! * [`rope`]: RoPE / LongRoPE / partial-rotary numerics, with the peer each precision path matches.

mod config;
mod error;
mod model;
mod role;
pub mod rope;

pub use config::{Phi3Config, RopeScaling, SUPPORTED_ARCHITECTURES};
pub use error::{Error, Result};
pub use model::{Model, Tensor};
pub use role::Role;
