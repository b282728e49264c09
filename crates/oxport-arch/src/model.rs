//! A checkpoint classified as a model oxport knows: `config.json` parsed, every tensor name mapped to its
//! [`Role`], every shape checked against the config, and the table sorted in canonical order. The checkpoint
//! reader below this (`oxport_hf::Checkpoint`) knows no architecture; everything Phi-3 is decided here.

use std::collections::HashMap;
use std::path::Path;

use oxport_hf::{Checkpoint, TensorInfo, TensorView};

use crate::config::Phi3Config;
use crate::error::{Error, Result};
use crate::role::Role;

/// One classified tensor: the checkpoint's metadata plus the role its name maps to.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub role: Role,
    pub info: TensorInfo,
}

/// A classified tensor reads as its metadata (`t.name`, `t.shape`, `t.numel()`), as it did before roles and
/// files were split into two crates.
impl std::ops::Deref for Tensor {
    type Target = TensorInfo;

    fn deref(&self) -> &TensorInfo {
        &self.info
    }
}

/// An opened, classified checkpoint: config, the reader, and the tensor table in canonical order.
pub struct Model {
    checkpoint: Checkpoint,
    config: Phi3Config,
    tensors: Vec<Tensor>,
    by_role: HashMap<Role, usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("checkpoint", &self.checkpoint)
            .field("architecture", &self.config.architecture)
            .finish()
    }
}

impl Model {
    /// Open a checkpoint folder. Validates the config, then (through `oxport_hf::Checkpoint::open`) every shard
    /// header, the index's `weight_map` and the dtypes, then the tensor names (roles) and shapes; reads no
    /// tensor data.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Phi3Config::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::classify(checkpoint, config)
    }

    /// Classify every tensor of `checkpoint` for `config`: names to roles, shapes checked, nothing missing and
    /// nothing extra, sorted in canonical order ([`Role::all_for`]).
    pub fn classify(checkpoint: Checkpoint, config: Phi3Config) -> Result<Self> {
        let mut tensors = Vec::with_capacity(checkpoint.tensors().len());
        for info in checkpoint.tensors() {
            let path = || checkpoint.shard_path(info).to_path_buf();
            let role = Role::from_name(&info.name).ok_or_else(|| Error::UnknownTensor {
                path: path(),
                tensor: info.name.clone(),
            })?;
            let expected = role.expected_shape(&config);
            if info.shape != expected || role.layer().is_some_and(|l| l >= config.num_hidden_layers)
            {
                return Err(Error::Shape {
                    path: path(),
                    tensor: info.name.clone(),
                    expected,
                    actual: info.shape.clone(),
                });
            }
            tensors.push(Tensor {
                role,
                info: info.clone(),
            });
        }
        let roles = Role::all_for(&config);
        let order: HashMap<Role, usize> = roles.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        if let Some(t) = tensors.iter().find(|t| !order.contains_key(&t.role)) {
            // e.g. lm_head.weight in a checkpoint with tied embeddings, or a layer past num_hidden_layers.
            return Err(Error::UnknownTensor {
                path: checkpoint.shard_path(&t.info).to_path_buf(),
                tensor: t.name.clone(),
            });
        }
        tensors.sort_by_key(|t| order[&t.role]);
        let missing: Vec<String> = roles
            .iter()
            .filter(|r| !tensors.iter().any(|t| t.role == **r))
            .map(Role::name)
            .collect();
        if !missing.is_empty() {
            return Err(oxport_hf::Error::MissingTensors {
                dir: checkpoint.dir().to_path_buf(),
                names: missing,
            }
            .into());
        }
        let by_role = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.role, i))
            .collect();
        Ok(Model {
            checkpoint,
            config,
            tensors,
            by_role,
        })
    }

    pub fn dir(&self) -> &Path {
        self.checkpoint.dir()
    }

    pub fn config(&self) -> &Phi3Config {
        &self.config
    }

    /// The architecture-agnostic reader underneath.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Tensors in canonical order: embedding, then per layer (input norm, qkv, o, post norm, gate_up, down),
    /// final norm, lm_head.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    pub fn shard_paths(&self) -> Vec<&Path> {
        self.checkpoint.shard_paths()
    }

    pub fn info(&self, role: Role) -> Option<&Tensor> {
        self.by_role.get(&role).map(|&i| &self.tensors[i])
    }

    /// The role whose tensor holds `role`'s weights: with tied embeddings `LmHead` is the embedding.
    pub fn stored_role(&self, role: Role) -> Role {
        if role == Role::LmHead && self.config.tie_word_embeddings {
            Role::Embedding
        } else {
            role
        }
    }

    /// The tensor for `role`; with tied embeddings `LmHead` resolves to the embedding.
    pub fn view(&self, role: Role) -> Option<TensorView<'_>> {
        self.info(self.stored_role(role))
            .map(|t| self.checkpoint.view_of(&t.info))
    }

    /// Decode `role` to f32 (NaN/Inf refused), then [`release`](Self::release) its mapped pages.
    pub fn read_f32(&self, role: Role) -> oxport_hf::Result<Vec<f32>> {
        let mut out = Vec::new();
        self.read_f32_into(role, &mut out)?;
        Ok(out)
    }

    /// [`read_f32`](Self::read_f32) into a reused buffer (resized to the tensor).
    pub fn read_f32_into(&self, role: Role, out: &mut Vec<f32>) -> oxport_hf::Result<()> {
        let view = self
            .view(role)
            .ok_or_else(|| oxport_hf::Error::MissingTensors {
                dir: self.dir().to_path_buf(),
                names: vec![role.name()],
            })?;
        view.to_f32_into(out)?;
        self.release(role);
        Ok(())
    }

    /// Tell the kernel the mapped pages of `role` are no longer needed, so a streaming export's RSS stays
    /// at about one tensor. Later reads fault the pages back in from the file.
    pub fn release(&self, role: Role) {
        if let Some(t) = self.info(role) {
            self.checkpoint.release(&t.info);
        }
    }

    /// Sum of tensor elements (tied lm_head counted once).
    pub fn total_params(&self) -> usize {
        self.checkpoint.total_params()
    }

    pub fn total_bytes(&self) -> usize {
        self.checkpoint.total_bytes()
    }
}
