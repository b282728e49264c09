//! Where the reference's matmul weights come from: views into the memory-mapped checkpoint, widened to f32 one row
//! at a time inside the matmul ([`Mapped`]), or (tests only) the whole-tensor f32 copies the reference used to make
//! at load ([`Widened`]), kept to prove that both give bit-identical logits.

use oxport_hf::{Checkpoint, DType, Role, TensorView};
use rayon::prelude::*;

use crate::error::Result;
use crate::model::{dot, dot_by};

/// The weights behind every matmul of the forward pass (all PyTorch `[out, in]` layout) and the embedding table.
pub(crate) trait Weights: Send + Sync {
    /// `y[t, o] = Σ_i x[t, i] · w[o, i]` for the weight of `role` and `n` tokens of `x`: `[n * out]`.
    fn matmul(&self, role: Role, x: &[f32], n: usize) -> Result<Vec<f32>>;
    /// Append the embedding rows of `ids` (already checked against the vocabulary) to `out`.
    fn embed(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()>;
}

/// Weights read straight from the checkpoint's mmap. Each matmul widens one weight row at a time into a per-task
/// f32 buffer (BF16/F16 → f32 is exact, `oxport-hf/src/dtype.rs`) and runs the same [`dot`] as on a widened copy,
/// so the logits are bit-identical to widening the whole model at load; then it releases the tensor's mapped pages
/// (`Checkpoint::release`, MADV_DONTNEED), so the resident set holds about one tensor, not the model.
pub(crate) struct Mapped {
    pub(crate) checkpoint: Checkpoint,
}

impl Mapped {
    /// Refuse NaN/Inf in any matmul weight now, as widening at load used to: one read of the mapped bytes,
    /// released tensor by tensor.
    pub(crate) fn new(checkpoint: Checkpoint) -> Result<Self> {
        let mapped = Mapped { checkpoint };
        for role in crate::model::matmul_roles(mapped.checkpoint.config()) {
            let view = mapped.view(role)?;
            // A tied `LmHead` resolves to the embedding, which has its own turn.
            if view.info.role == role {
                view.check_finite()?;
                mapped.checkpoint.release(role);
            }
        }
        Ok(mapped)
    }

    fn view(&self, role: Role) -> Result<TensorView<'_>> {
        self.checkpoint.view(role).ok_or_else(|| {
            oxport_hf::Error::MissingTensors {
                dir: self.checkpoint.dir().to_path_buf(),
                names: vec![role.name()],
            }
            .into()
        })
    }
}

impl Weights for Mapped {
    fn matmul(&self, role: Role, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let w = self.view(role)?;
        let y = matmul_rows(x, n, &w);
        // With tied embeddings `LmHead` resolves to the embedding tensor: release the tensor actually read.
        self.checkpoint.release(w.info.role);
        Ok(y)
    }

    fn embed(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let w = self.view(Role::Embedding)?;
        let h = w.cols();
        for &id in ids {
            let start = out.len();
            out.resize(start + h, 0.0);
            let id = id as usize;
            w.rows_f32(id..id + 1, &mut out[start..]);
        }
        self.checkpoint.release(Role::Embedding);
        Ok(())
    }
}

/// [`Weights::matmul`] on a mapped `[out, in]` weight, parallel over output rows: each rayon task widens its row
/// once and dots it with every token, in the accumulation order of [`dot`]. One BF16 token (decoding) dots the
/// mapped bytes directly: the row is read once, and the widening hides behind the memory reads.
fn matmul_rows(x: &[f32], n: usize, w: &TensorView<'_>) -> Vec<f32> {
    let (out_dim, in_dim) = (w.info.shape[0], w.cols());
    debug_assert_eq!(x.len(), n * in_dim, "matmul {}: input size", w.info.name);
    if n == 1 && w.info.dtype == DType::BF16 {
        let mut y = vec![0f32; out_dim];
        y.par_iter_mut().enumerate().for_each(|(o, y)| {
            let (row, _) = w.rows_bytes(o..o + 1).as_chunks::<2>();
            *y = dot_by(x, row, bf16_to_f32);
        });
        return y;
    }
    let mut transposed = vec![0f32; out_dim * n];
    transposed.par_chunks_mut(n).enumerate().for_each_init(
        || vec![0f32; in_dim],
        |row, (o, col)| {
            widen(w.info.dtype, w.rows_bytes(o..o + 1), row);
            for (t, y) in col.iter_mut().enumerate() {
                *y = dot(&x[t * in_dim..(t + 1) * in_dim], row);
            }
        },
    );
    transpose(&transposed, out_dim, n)
}

/// Little-endian `dtype` values as f32. A BF16 value is the upper half of its f32, so widening is a shift that the
/// compiler vectorizes (`half`'s `bf16::to_f32`, which `DType::decode_into` uses, also quiets NaNs, and load has
/// refused NaN already); F16 and F32 go through `DType::decode_into`. Exact either way.
fn widen(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::BF16 => {
            for (o, &b) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = bf16_to_f32(b);
            }
        }
        _ => dtype.decode_into(bytes, out),
    }
}

/// One little-endian BF16 value: the upper 16 bits of the f32 with the same value.
fn bf16_to_f32(bytes: [u8; 2]) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes(bytes)) << 16)
}

/// `[out][n]` → `[n][out]`.
fn transpose(transposed: &[f32], out_dim: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * out_dim];
    for o in 0..out_dim {
        for t in 0..n {
            y[t * out_dim + o] = transposed[o * n + t];
        }
    }
    y
}

/// The reference's former weights: every tensor widened to f32 at load (`Checkpoint::read_f32`), the matmul over
/// f32 rows exactly as it was. Kept for the bit-identity test of [`Mapped`].
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Widened {
    hidden_size: usize,
    tensors: std::collections::HashMap<Role, Vec<f32>>,
}

#[cfg(test)]
impl Widened {
    pub(crate) fn load(checkpoint: &Checkpoint) -> Result<Self> {
        let mut tensors = std::collections::HashMap::new();
        for role in crate::model::matmul_roles(checkpoint.config()) {
            // `read_f32(LmHead)` resolves to the embedding when the embeddings are tied, as before.
            tensors.insert(role, checkpoint.read_f32(role)?);
        }
        Ok(Widened {
            hidden_size: checkpoint.config().hidden_size,
            tensors,
        })
    }
}

#[cfg(test)]
impl Weights for Widened {
    fn matmul(&self, role: Role, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(matmul(x, n, &self.tensors[&role], x.len() / n))
    }

    fn embed(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let (table, h) = (&self.tensors[&Role::Embedding], self.hidden_size);
        for &id in ids {
            let id = id as usize;
            out.extend_from_slice(&table[id * h..(id + 1) * h]);
        }
        Ok(())
    }
}

/// The former matmul over an f32 `[out, in]` weight, parallel over output rows.
#[cfg(test)]
pub(crate) fn matmul(x: &[f32], n: usize, w: &[f32], in_dim: usize) -> Vec<f32> {
    let out_dim = w.len() / in_dim;
    let mut transposed = vec![0f32; out_dim * n];
    transposed
        .par_chunks_mut(n)
        .zip(w.par_chunks(in_dim))
        .for_each(|(col, row)| {
            for (t, y) in col.iter_mut().enumerate() {
                *y = dot(&x[t * in_dim..(t + 1) * in_dim], row);
            }
        });
    transpose(&transposed, out_dim, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every BF16 value but NaN (refused at load) widens to the f32 `DType::decode_into` gives, bit for bit.
    #[test]
    fn bf16_widening_is_exact() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        let (mut ours, mut theirs) = (vec![0f32; 1 << 16], vec![0f32; 1 << 16]);
        widen(DType::BF16, &bytes, &mut ours);
        DType::BF16.decode_into(&bytes, &mut theirs);
        for (bits, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            if !b.is_nan() {
                assert_eq!(a.to_bits(), b.to_bits(), "BF16 bits {bits:#06x}");
            }
        }
    }
}
