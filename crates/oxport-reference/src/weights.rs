//! Where the reference's matmul weights come from: views into the memory-mapped checkpoint, widened to f32 a panel
//! of rows at a time inside the matmul ([`Mapped`], [`crate::gemm`]), or (tests only) the whole-tensor f32 copies
//! the reference used to make at load ([`Widened`]), kept to prove that both give bit-identical logits.

use oxport_arch::{Model, Role};
use oxport_hf::{DType, TensorView};

use crate::error::Result;
#[cfg(test)]
use crate::gemm::{F32Rows, gemm};
use crate::gemm::{WeightRows, gemm_into};

/// The weights behind every matmul of the forward pass (all PyTorch `[out, in]` layout) and the embedding table.
pub(crate) trait Weights: Send + Sync {
    /// `y[t, o] = Σ_i x[t, i] · w[o, i]` for the weight of `role` and `n` tokens of `x`: `[n * out]`, into `y`
    /// (resized; its capacity reused).
    fn matmul_into(&self, role: Role, x: &[f32], n: usize, y: &mut Vec<f32>) -> Result<()>;
    /// Append the embedding rows of `ids` (already checked against the vocabulary) to `out`.
    fn embed(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()>;
}

/// Weights read straight from the checkpoint's mmap. Each matmul widens a panel of weight rows at a time into a
/// per-task f32 buffer (BF16/F16 → f32 is exact, `oxport-hf/src/dtype.rs`) and runs the same [`gemm`] as on a
/// widened copy, so the logits are bit-identical to widening the whole model at load. Under
/// [`MemoryPolicy::ReleaseAfterUse`] it then releases the tensor's mapped pages (`Model::release`,
/// MADV_DONTNEED), so the resident set holds about one tensor, not the model.
pub(crate) struct Mapped {
    pub(crate) checkpoint: Model,
    policy: MemoryPolicy,
}

/// What happens to a weight's mapped pages after a matmul has read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryPolicy {
    /// Leave them resident (page cache shared with the mapping): no page faults on later forward passes.
    Resident,
    /// Drop them (MADV_DONTNEED): about one tensor resident; every forward pass faults the weights in again.
    ReleaseAfterUse,
}

impl MemoryPolicy {
    /// [`Resident`](Self::Resident) when the weights take at most half of the memory available now
    /// (`MemAvailable` of `/proc/meminfo`), else [`ReleaseAfterUse`](Self::ReleaseAfterUse); release where the
    /// available memory cannot be read.
    pub fn auto(weight_bytes: usize) -> Self {
        match available_memory_bytes() {
            Some(available) if weight_bytes <= available / 2 => MemoryPolicy::Resident,
            _ => MemoryPolicy::ReleaseAfterUse,
        }
    }
}

fn available_memory_bytes() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Mapped {
    /// Refuse NaN/Inf in any matmul weight now, as widening at load used to: one read of the mapped bytes,
    /// released tensor by tensor under [`MemoryPolicy::ReleaseAfterUse`].
    pub(crate) fn new(checkpoint: Model, policy: MemoryPolicy) -> Result<Self> {
        let mapped = Mapped { checkpoint, policy };
        for role in crate::model::matmul_roles(mapped.checkpoint.config()) {
            let view = mapped.view(role)?;
            // A tied `LmHead` resolves to the embedding, which has its own turn.
            if mapped.checkpoint.stored_role(role) == role {
                view.check_finite()?;
                mapped.release(role);
            }
        }
        Ok(mapped)
    }

    fn release(&self, role: Role) {
        if self.policy == MemoryPolicy::ReleaseAfterUse {
            self.checkpoint.release(role);
        }
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
    fn matmul_into(&self, role: Role, x: &[f32], n: usize, y: &mut Vec<f32>) -> Result<()> {
        let w = self.view(role)?;
        gemm_into(x, n, w.cols(), &MappedRows(&w), y);
        // With tied embeddings `LmHead` resolves to the embedding tensor: release the tensor actually read.
        self.release(self.checkpoint.stored_role(role));
        Ok(())
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
        self.release(Role::Embedding);
        Ok(())
    }
}

/// A mapped `[out, in]` weight as [`WeightRows`]: each slice of a row widened straight from the mapped bytes.
struct MappedRows<'a>(&'a TensorView<'a>);

impl WeightRows for MappedRows<'_> {
    fn out_dim(&self) -> usize {
        self.0.info.shape[0]
    }

    fn widen(&self, row: usize, cols: std::ops::Range<usize>, out: &mut [f32]) {
        let size = self.0.info.dtype.size_bytes();
        let bytes = self.0.rows_bytes(row..row + 1);
        widen(
            self.0.info.dtype,
            &bytes[cols.start * size..cols.end * size],
            out,
        );
    }

    fn bf16_bytes(&self) -> Option<&[u8]> {
        (self.0.info.dtype == DType::BF16).then(|| self.0.rows_bytes(0..self.out_dim()))
    }
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

/// The reference's former weights: every tensor widened to f32 at load (`Model::read_f32`), the matmul over
/// f32 rows exactly as it was. Kept for the bit-identity test of [`Mapped`].
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Widened {
    hidden_size: usize,
    tensors: std::collections::HashMap<Role, Vec<f32>>,
}

#[cfg(test)]
impl Widened {
    pub(crate) fn load(checkpoint: &Model) -> Result<Self> {
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
    fn matmul_into(&self, role: Role, x: &[f32], n: usize, y: &mut Vec<f32>) -> Result<()> {
        *y = matmul(x, n, &self.tensors[&role], x.len() / n);
        Ok(())
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

/// The matmul over an f32 `[out, in]` weight.
#[cfg(test)]
pub(crate) fn matmul(x: &[f32], n: usize, w: &[f32], in_dim: usize) -> Vec<f32> {
    gemm(x, n, in_dim, &F32Rows { data: w, k: in_dim })
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
