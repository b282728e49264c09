//! The stateful Phi-3 graph as optimum-intel 2.2 exports it (shared/docs/openvino-ir.md §2–§8, and the reference
//! `fixtures/reference/exports/*/openvino_model.xml.gz`): the same ops, op versions, attributes and friendly names,
//! so that tools keyed on names (and a reader diffing against optimum-cli) see the same model.
//!
//! Weights are read, compressed and appended to the `.bin` one tensor at a time while the graph is built.

use oxport_hf::{Checkpoint, DType, Phi3Config, Role};
use oxport_quant::NncfMode;

use crate::compress::{self, Compressed};
use crate::error::{Error, Result};
use crate::ir::{DYN, Elem, Graph, Out};
use crate::plan::{Plan, Scheme, WeightFormat};

/// Receives progress from the exporter; the CLI implements it with indicatif. Library code never prints.
pub trait Progress {
    /// Called before weight `index` (0-based) of `total` is read and compressed.
    fn weight(&self, _role: Role, _index: usize, _total: usize) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

fn n(x: usize) -> i64 {
    x as i64
}

fn le_bytes_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn le_bytes_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn le_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn le_bytes_f16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

const AB: (&str, &str) = ("auto_broadcast", "numpy");

/// Graph construction state.
struct Builder<'a> {
    g: Graph,
    cfg: &'a Phi3Config,
    ckpt: &'a Checkpoint,
    plan: &'a Plan,
    progress: &'a dyn Progress,
    weights_done: usize,
}

/// Outputs shared by all layers.
struct Shared {
    beam_idx: Out,
    batch: Out,
    cos: Out,
    sin: Out,
    mask: Option<Out>,
    /// `past_len` and `q_len` scalars, and `q_len` as `[1]`.
    lens: Option<(Out, Out, Out)>,
    gqa_target: Option<Out>,
    chunk_lengths: Option<Out>,
    sdpa_scale: Option<Out>,
}

impl Builder<'_> {
    // ---- constants ----
    fn c_i64(&mut self, v: &[i64], shape: &[usize]) -> Result<Out> {
        self.g.constant("", Elem::I64, shape, &le_bytes_i64(v))
    }
    fn c_i32(&mut self, v: &[i32], shape: &[usize]) -> Result<Out> {
        self.g.constant("", Elem::I32, shape, &le_bytes_i32(v))
    }
    fn c_f32(&mut self, v: &[f32], shape: &[usize]) -> Result<Out> {
        self.g.constant("", Elem::F32, shape, &le_bytes_f32(v))
    }
    /// A float constant as optimum stores it: f16 + decompression Convert in an fp16 export, f32 otherwise.
    fn c_float(&mut self, name: &str, v: &[f32], shape: &[usize]) -> Result<Out> {
        if self.plan.weight_format == WeightFormat::Fp16 {
            let c = self.g.constant(
                &format!("{name}_compressed"),
                Elem::F16,
                shape,
                &le_bytes_f16(v),
            )?;
            let dims: Vec<i64> = shape.iter().map(|&d| n(d)).collect();
            let o = self.g.op1(
                "Convert",
                "opset1",
                name,
                &[c],
                &[("destination_type", "f32")],
                Elem::F32,
                &dims,
            );
            self.g.mark(o, "decompression", None);
            Ok(o)
        } else {
            self.g.constant(name, Elem::F32, shape, &le_bytes_f32(v))
        }
    }

    // ---- op shorthands (output element type follows input 0 unless given) ----
    fn op(
        &mut self,
        kind: &'static str,
        ver: &'static str,
        name: &str,
        ins: &[Out],
        data: &[(&'static str, &str)],
        dims: &[i64],
    ) -> Out {
        let elem = self.g.elem(ins[0]);
        self.g.op1(kind, ver, name, ins, data, elem, dims)
    }
    fn binary(&mut self, kind: &'static str, name: &str, a: Out, b: Out, dims: &[i64]) -> Out {
        let version = if kind == "BitwiseAnd" {
            "opset13"
        } else {
            "opset1"
        };
        self.op(kind, version, name, &[a, b], &[AB], dims)
    }
    fn convert(&mut self, name: &str, x: Out, to: Elem) -> Out {
        let dims = self.g.dims(x).to_vec();
        self.g.op1(
            "Convert",
            "opset1",
            name,
            &[x],
            &[("destination_type", to.name())],
            to,
            &dims,
        )
    }
    fn unsqueeze(&mut self, name: &str, x: Out, axis: i64, dims: &[i64]) -> Result<Out> {
        let a = self.c_i64(&[axis], &[])?;
        Ok(self.op("Unsqueeze", "opset1", name, &[x, a], &[], dims))
    }
    fn gather(&mut self, name: &str, data: Out, idx: Out, axis: Out, dims: &[i64]) -> Out {
        self.op(
            "Gather",
            "opset8",
            name,
            &[data, idx, axis],
            &[("batch_dims", "0")],
            dims,
        )
    }
    fn gather_scalar(&mut self, name: &str, data: Out, index: i64) -> Result<Out> {
        let i = self.c_i64(&[index], &[])?;
        let a = self.c_i64(&[0], &[])?;
        Ok(self.gather(name, data, i, a, &[]))
    }
    fn slice(
        &mut self,
        name: &str,
        x: Out,
        start: i64,
        stop: i64,
        axis: i64,
        dims: &[i64],
    ) -> Result<Out> {
        let s = self.c_i64(&[start], &[1])?;
        let e = self.c_i64(&[stop], &[1])?;
        let st = self.c_i64(&[1], &[1])?;
        let ax = self.c_i64(&[axis], &[1])?;
        Ok(self.op("Slice", "opset8", name, &[x, s, e, st, ax], &[], dims))
    }
    fn reshape(
        &mut self,
        name: &str,
        x: Out,
        target: &[i64],
        special_zero: bool,
        dims: &[i64],
    ) -> Result<Out> {
        let t = self.c_i64(target, &[target.len()])?;
        let sz = if special_zero { "true" } else { "false" };
        Ok(self.op(
            "Reshape",
            "opset1",
            name,
            &[x, t],
            &[("special_zero", sz)],
            dims,
        ))
    }
    fn transpose(&mut self, name: &str, x: Out, perm: &[i32], dims: &[i64]) -> Result<Out> {
        let p = self.c_i32(perm, &[perm.len()])?;
        Ok(self.op("Transpose", "opset1", name, &[x, p], &[], dims))
    }
    fn shape_of(&mut self, name: &str, x: Out, elem: Elem) -> Out {
        let rank = n(self.g.dims(x).len());
        self.g.op1(
            "ShapeOf",
            "opset3",
            name,
            &[x],
            &[("output_type", elem.name())],
            elem,
            &[rank],
        )
    }
    fn matmul_w(&mut self, name: &str, x: Out, w: Out, out_features: usize) -> Out {
        self.op(
            "MatMul",
            "opset1",
            name,
            &[x, w],
            &[("transpose_a", "false"), ("transpose_b", "true")],
            &[DYN, DYN, n(out_features)],
        )
    }

    // ---- weights ----
    fn checkpoint_f32(&self, role: Role) -> Result<Vec<f32>> {
        let w = self.ckpt.read_f32(role)?;
        Ok(w)
    }

    /// The decompressed f32 `[n, k]` weight of `role`, through the subgraph NNCF writes for its scheme
    /// (openvino-ir.md §5). `path` is the HF module path, `embedding` picks the Gather flavour of names.
    fn weight(&mut self, role: Role, path: &str, embedding: bool) -> Result<Out> {
        let entry = self
            .plan
            .entries
            .iter()
            .find(|e| e.role == role)
            .cloned()
            .ok_or_else(|| Error::MissingTensor(role.to_string()))?;
        self.progress
            .weight(role, self.weights_done, self.plan.entries.len());
        self.weights_done += 1;
        let (rows, cols) = (entry.n, entry.k);
        let base = format!("self.{path}._openvino_orig_weight");
        let ext = if embedding {
            "ov_ext::embedding"
        } else {
            "ov_ext::linear"
        };
        let convert_name = format!("__module.{path}/{ext}/Convert");
        let fq = format!("{base}/fq_weights_{}", if embedding { 0 } else { 1 });
        let wdims = [n(rows), n(cols)];
        let decompress = |b: &mut Self, x: Out| -> Out {
            let o = b.convert(&convert_name, x, Elem::F32);
            b.g.mark(o, "decompression", None);
            o
        };
        let scheme = match entry.scheme {
            Scheme::Original => match self.ckpt.info(role).map(|i| i.dtype) {
                Some(DType::F32) => Scheme::F32,
                _ => Scheme::Original,
            },
            s => s,
        };
        let out = match scheme {
            Scheme::F32 => {
                let w = self.checkpoint_f32(role)?;
                self.g
                    .constant(&base, Elem::F32, &[rows, cols], &le_bytes_f32(&w))?
            }
            Scheme::F16 => {
                let w = self.checkpoint_f32(role)?;
                let c = self
                    .g
                    .constant(&base, Elem::F16, &[rows, cols], &le_bytes_f16(&w))?;
                decompress(self, c)
            }
            Scheme::Original => {
                let view = self
                    .ckpt
                    .view(role)
                    .ok_or_else(|| Error::MissingTensor(role.to_string()))?;
                let elem = if view.info.dtype == DType::BF16 {
                    Elem::Bf16
                } else {
                    Elem::F16
                };
                let c = self.g.constant(&base, elem, &[rows, cols], view.bytes)?;
                decompress(self, c)
            }
            Scheme::Int8Asym | Scheme::Int8Sym => {
                let w = self.checkpoint_f32(role)?;
                let sym = scheme == Scheme::Int8Sym;
                let mode = if sym {
                    NncfMode::Int8Sym
                } else {
                    NncfMode::Int8Asym
                };
                let Compressed {
                    weight,
                    scale,
                    zero_point,
                } = compress::compress(&role.name(), &w, rows, cols, mode, None)?;
                drop(w);
                let elem = if sym { Elem::I8 } else { Elem::U8 };
                let c = self.g.constant(&base, elem, &[rows, cols], &weight)?;
                let mut x = self.convert("", c, Elem::F16);
                if let Some(zp) = zero_point {
                    let z = self.g.constant(
                        &format!("{base}/zero_point"),
                        Elem::U8,
                        &[rows, 1],
                        &zp,
                    )?;
                    let zc = self.convert("", z, Elem::F16);
                    x = self.binary(
                        "Subtract",
                        &format!("{base}/zero_point/subtract"),
                        x,
                        zc,
                        &wdims,
                    );
                }
                let s = self
                    .g
                    .constant(&format!("{base}/scale"), Elem::F16, &[rows, 1], &scale)?;
                let m = self.binary("Multiply", &fq, x, s, &wdims);
                decompress(self, m)
            }
            Scheme::Int4Sym { group } | Scheme::Int4Asym { group } => {
                let w = self.checkpoint_f32(role)?;
                let sym = matches!(scheme, Scheme::Int4Sym { .. });
                let mode = if sym {
                    NncfMode::Int4Sym
                } else {
                    NncfMode::Int4Asym
                };
                let Compressed {
                    weight,
                    scale,
                    zero_point,
                } = compress::compress(&role.name(), &w, rows, cols, mode, Some(group))?;
                drop(w);
                let groups = cols / group;
                let gdims = [n(rows), n(groups), n(group)];
                let elem = if sym { Elem::I4 } else { Elem::U4 };
                let c = self
                    .g
                    .constant(&base, elem, &[rows, groups, group], &weight)?;
                let mut x = self.convert("", c, Elem::F16);
                if let Some(zp) = zero_point {
                    let z = self.g.constant(
                        &format!("{base}/zero_point"),
                        Elem::U4,
                        &[rows, groups, 1],
                        &zp,
                    )?;
                    let zc = self.convert("", z, Elem::F16);
                    x = self.binary(
                        "Subtract",
                        &format!("{base}/zero_point/subtract"),
                        x,
                        zc,
                        &gdims,
                    );
                }
                let s = self.g.constant(
                    &format!("{base}/scale"),
                    Elem::F16,
                    &[rows, groups, 1],
                    &scale,
                )?;
                let m = self.binary("Multiply", &fq, x, s, &gdims);
                let r = self.reshape("", m, &[n(rows), n(cols)], false, &wdims)?;
                decompress(self, r)
            }
        };
        self.ckpt.release(role);
        Ok(out)
    }

    fn norm_gamma(&mut self, role: Role) -> Result<Out> {
        let h = self.cfg.hidden_size;
        let gamma = self.checkpoint_f32(role)?;
        self.ckpt.release(role);
        self.c_float("", &gamma, &[1, 1, h])
    }

    /// `x * (1 / sqrt(mean(x^2) + eps)) * gamma`, decomposed as transformers' Phi3RMSNorm traces.
    fn rms_norm(&mut self, prefix: &str, x: Out, role: Role) -> Result<Out> {
        let h = n(self.cfg.hidden_size);
        let gamma = self.norm_gamma(role)?;
        let one = self.c_float("", &[1.0], &[1, 1, 1])?;
        let two = self.c_float("", &[2.0], &[1, 1, 1])?;
        let p = self.binary(
            "Power",
            &format!("{prefix}/aten::pow/Power"),
            x,
            two,
            &[DYN, DYN, h],
        );
        let axes = self.c_i64(&[-1], &[1])?;
        let mean = self.op(
            "ReduceMean",
            "opset1",
            &format!("{prefix}/aten::mean/ReduceMean"),
            &[p, axes],
            &[("keep_dims", "true")],
            &[DYN, DYN, 1],
        );
        // eps stays f32 even in fp16 exports: 1e-5 is below f16's normal range (openvino-ir.md §5.1).
        let eps = self.c_f32(&[self.cfg.rms_norm_eps as f32], &[1, 1, 1])?;
        let add = self.binary(
            "Add",
            &format!("{prefix}/aten::add/Add"),
            mean,
            eps,
            &[DYN, DYN, 1],
        );
        let sqrt = self.op(
            "Sqrt",
            "opset1",
            &format!("{prefix}/aten::rsqrt/Sqrt"),
            &[add],
            &[],
            &[DYN, DYN, 1],
        );
        let div = self.op(
            "Divide",
            "opset1",
            &format!("{prefix}/aten::rsqrt/Divide"),
            &[one, sqrt],
            &[AB, ("m_pythondiv", "true")],
            &[DYN, DYN, 1],
        );
        let mul = self.binary(
            "Multiply",
            &format!("{prefix}/aten::mul/Multiply"),
            x,
            div,
            &[DYN, DYN, h],
        );
        Ok(self.binary(
            "Multiply",
            &format!("{prefix}/aten::mul/Multiply_1"),
            gamma,
            mul,
            &[DYN, DYN, h],
        ))
    }

    /// Rotate-half RoPE on `[B, heads, T, head_dim]` (transformers `apply_rotary_pos_emb`); `names` are the suffixes
    /// the reference gives the slices/products of Q (`["_1","_2","_3"]`, `["", "_1"]`, …).
    fn rope(&mut self, sa: &str, t: Out, heads: usize, sfx: &RopeNames, s: &Shared) -> Result<Out> {
        let hd = self.cfg.head_dim();
        let rot = self.cfg.rotary_dim();
        let hh = n(heads);
        let full = [DYN, hh, DYN, n(hd)];
        let rdims = [DYN, hh, DYN, n(rot)];
        let half = [DYN, hh, DYN, n(rot / 2)];
        let t_rot = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[0]),
            t,
            0,
            n(rot),
            3,
            &rdims,
        )?;
        let a = self.binary(
            "Multiply",
            &format!("{sa}/aten::mul/Multiply{}", sfx.mul[0]),
            t_rot,
            s.cos,
            &rdims,
        );
        let x2 = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[1]),
            t_rot,
            n(rot / 2),
            i64::MAX,
            3,
            &half,
        )?;
        let m1 = self.c_i32(&[-1], &[])?;
        let m1 = self.convert(
            &format!("{sa}/aten::neg/ConvertLike{}", sfx.neg),
            m1,
            Elem::F32,
        );
        let nx2 = self.binary(
            "Multiply",
            &format!("{sa}/aten::neg/Multiply{}", sfx.neg),
            x2,
            m1,
            &half,
        );
        let x1 = self.slice(
            &format!("{sa}/aten::slice/Slice{}", sfx.slice[2]),
            t_rot,
            0,
            n(rot / 2),
            3,
            &half,
        )?;
        let rh = self.op(
            "Concat",
            "opset1",
            &format!("{sa}/aten::cat/Concat{}", sfx.cat),
            &[nx2, x1],
            &[("axis", "-1")],
            &rdims,
        );
        let b = self.binary(
            "Multiply",
            &format!("{sa}/aten::mul/Multiply{}", sfx.mul[1]),
            rh,
            s.sin,
            &rdims,
        );
        let out = self.binary(
            "Add",
            &format!("{sa}/aten::add/Add{}", sfx.add),
            a,
            b,
            &rdims,
        );
        if rot == hd {
            return Ok(out);
        }
        // partial_rotary_factor < 1: the pass-through dimensions are appended unchanged.
        let pass = self.slice(
            &format!("{sa}/aten::slice/Slice{}_pass", sfx.slice[0]),
            t,
            n(rot),
            i64::MAX,
            3,
            &[DYN, hh, DYN, n(hd - rot)],
        )?;
        Ok(self.op(
            "Concat",
            "opset1",
            &format!("{sa}/aten::cat/Concat{}_pass", sfx.cat),
            &[out, pass],
            &[("axis", "-1")],
            &full,
        ))
    }
}

struct RopeNames {
    slice: [&'static str; 3],
    mul: [&'static str; 2],
    neg: &'static str,
    cat: &'static str,
    add: &'static str,
}

const ROPE_Q: RopeNames = RopeNames {
    slice: ["_1", "_2", "_3"],
    mul: ["", "_1"],
    neg: "",
    cat: "",
    add: "",
};
const ROPE_K: RopeNames = RopeNames {
    slice: ["_6", "_7", "_8"],
    mul: ["_2", "_3"],
    neg: "_1",
    cat: "_2",
    add: "_1",
};

/// Build the whole IR for `ckpt` under `plan`, writing weights to `bin_path` as it goes; returns the graph, ready
/// to be finished into XML.
pub(crate) fn build(
    ckpt: &Checkpoint,
    plan: &Plan,
    bin_path: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Graph> {
    let cfg = ckpt.config();
    let mut b = Builder {
        g: Graph::create("Model0", bin_path)?,
        cfg,
        ckpt,
        plan,
        progress,
        weights_done: 0,
    };
    let (h, nh, kv, hd, inter, vocab) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let rot = cfg.rotary_dim();

    // §2 interface, Parameter order input_ids, attention_mask, position_ids, beam_idx.
    let input_ids = b.g.parameter("input_ids", Elem::I64, &[DYN, DYN]);
    let attention_mask = b.g.parameter("attention_mask", Elem::I64, &[DYN, DYN]);
    let position_ids = b.g.parameter("position_ids", Elem::I64, &[DYN, DYN]);
    let beam_idx = b.g.parameter("beam_idx", Elem::I32, &[DYN]);

    let ids_shape = b.shape_of("", input_ids, Elem::I64);
    let zero_idx = b.c_i64(&[0], &[1])?;
    let zero_axis = b.c_i64(&[0], &[])?;
    let batch = b.gather("", ids_shape, zero_idx, zero_axis, &[1]);

    // §4.1.1 embedding.
    let w_embed = b.weight(Role::Embedding, "model.embed_tokens", true)?;
    let ids32 = b.convert(
        "__module.model.embed_tokens/ov_ext::embedding/Convert_1",
        input_ids,
        Elem::I32,
    );
    let axis0 = b.c_i32(&[0], &[])?;
    let mut x = b.gather(
        "__module.model.embed_tokens/ov_ext::embedding/Gather",
        w_embed,
        ids32,
        axis0,
        &[DYN, DYN, n(h)],
    );

    // §4.1.2 rotary cos/sin, once. inv_freq stays f32 in every format: optimum's fp16 export rounds it to f16,
    // which shifts RoPE angles at large positions (openvino-ir.md §4.1); keeping f32 is strictly more accurate.
    let re = "__module.model.rotary_emb";
    let inv_freq = |factors: Option<&[f64]>| -> Vec<f32> {
        (0..rot / 2)
            .map(|i| {
                let base = cfg.rope_theta.powf((2 * i) as f64 / rot as f64);
                let f = factors.map_or(1.0, |f| f[i]);
                // transformers computes in f32: 1.0 / (factor * base ** (arange(0, dim, 2).float() / dim))
                1.0f32 / (f as f32 * base as f32)
            })
            .collect()
    };
    let inv = match &cfg.rope_scaling {
        None => b.c_f32(&inv_freq(None), &[1, rot / 2, 1])?,
        Some(scaling) => {
            // LongRoPE (transformers `longrope_frequency_update`): long factors once max(position_ids)+1 exceeds
            // original_max_position_embeddings, short factors otherwise.
            let short = b.c_f32(&inv_freq(Some(&scaling.short_factor)), &[1, rot / 2, 1])?;
            let long = b.c_f32(&inv_freq(Some(&scaling.long_factor)), &[1, rot / 2, 1])?;
            let axes = b.c_i64(&[0, 1], &[2])?;
            let maxpos = b.op(
                "ReduceMax",
                "opset1",
                &format!("{re}/aten::max/ReduceMax"),
                &[position_ids, axes],
                &[("keep_dims", "false")],
                &[],
            );
            let one = b.c_i64(&[1], &[])?;
            let seq = b.binary("Add", &format!("{re}/aten::add/Add"), maxpos, one, &[]);
            let orig = b.c_i64(&[n(cfg.original_max_position_embeddings)], &[])?;
            let is_long = b.g.op1(
                "Greater",
                "opset1",
                &format!("{re}/aten::gt/Greater"),
                &[seq, orig],
                &[AB],
                Elem::Boolean,
                &[],
            );
            b.g.op1(
                "Select",
                "opset1",
                &format!("{re}/aten::where/Select"),
                &[is_long, long, short],
                &[AB],
                Elem::F32,
                &[1, n(rot / 2), 1],
            )
        }
    };
    let pos_u = b.unsqueeze(
        &format!("{re}/aten::unsqueeze/Unsqueeze_2"),
        position_ids,
        1,
        &[DYN, 1, DYN],
    )?;
    let pos_f = b.convert(&format!("{re}/aten::to/Convert_3"), pos_u, Elem::F32);
    let freqs = b.op(
        "MatMul",
        "opset1",
        &format!("{re}/aten::matmul/MatMul"),
        &[inv, pos_f],
        &[("transpose_a", "false"), ("transpose_b", "false")],
        &[DYN, n(rot / 2), DYN],
    );
    let freqs_t = b.transpose(
        &format!("{re}/aten::transpose/Transpose"),
        freqs,
        &[0, 2, 1],
        &[DYN, DYN, n(rot / 2)],
    )?;
    let emb = b.op(
        "Concat",
        "opset1",
        &format!("{re}/aten::cat/Concat"),
        &[freqs_t, freqs_t],
        &[("axis", "-1")],
        &[DYN, DYN, n(rot)],
    );
    let mut cos = b.op(
        "Cos",
        "opset1",
        &format!("{re}/aten::cos/Cos"),
        &[emb],
        &[],
        &[DYN, DYN, n(rot)],
    );
    let mut sin = b.op(
        "Sin",
        "opset1",
        &format!("{re}/aten::sin/Sin"),
        &[emb],
        &[],
        &[DYN, DYN, n(rot)],
    );
    if cfg.rope_scaling.is_some() {
        let factor = cfg.longrope_attention_factor() as f32;
        if factor != 1.0 {
            let f = b.c_f32(&[factor], &[])?;
            cos = b.binary(
                "Multiply",
                &format!("{re}/aten::mul/Multiply"),
                cos,
                f,
                &[DYN, DYN, n(rot)],
            );
            sin = b.binary(
                "Multiply",
                &format!("{re}/aten::mul/Multiply_1"),
                sin,
                f,
                &[DYN, DYN, n(rot)],
            );
        }
    }
    let sa0 = "__module.model.layers.0.self_attn";
    let cos = b.unsqueeze(
        &format!("{sa0}/aten::unsqueeze/Unsqueeze"),
        cos,
        1,
        &[DYN, 1, DYN, n(rot)],
    )?;
    let sin = b.unsqueeze(
        &format!("{sa0}/aten::unsqueeze/Unsqueeze_1"),
        sin,
        1,
        &[DYN, 1, DYN, n(rot)],
    )?;

    let mut shared = Shared {
        beam_idx,
        batch,
        cos,
        sin,
        mask: None,
        lens: None,
        gqa_target: None,
        chunk_lengths: None,
        sdpa_scale: None,
    };

    for layer in 0..cfg.num_hidden_layers {
        x = decoder_layer(&mut b, layer, x, &mut shared, attention_mask)?;
    }
    let _ = (nh, kv, inter);

    // §4.3 epilogue.
    let xn = b.rms_norm("__module.model.norm", x, Role::FinalNorm)?;
    let w_lm = if cfg.tie_word_embeddings {
        w_embed
    } else {
        b.weight(Role::LmHead, "lm_head", false)?
    };
    let logits = b.matmul_w("__module.lm_head/ov_ext::linear/MatMul", xn, w_lm, vocab);
    b.g.name_tensor(logits, "logits");
    let id = b.g.layer_count();
    b.g.result(&format!("Result_{id}"), logits, "logits");
    let _ = hd;
    Ok(b.g)
}

/// One ReadValue → Gather(beam_idx) chain for a cache variable (§3).
fn state(b: &mut Builder, s: &Shared, layer: usize, which: &str) -> Result<Out> {
    let (kv, hd) = (b.cfg.num_key_value_heads, b.cfg.head_dim());
    let zero = b.c_float("", &[0.0], &[])?;
    let kvc = b.c_i64(&[n(kv)], &[1])?;
    let z = b.c_i64(&[0], &[1])?;
    let hdc = b.c_i64(&[n(hd)], &[1])?;
    let shape = b.op(
        "Concat",
        "opset1",
        "",
        &[s.batch, kvc, z, hdc],
        &[("axis", "0")],
        &[4],
    );
    let init = b.g.op1(
        "Broadcast",
        "opset3",
        "",
        &[zero, shape],
        &[("mode", "numpy")],
        Elem::F32,
        &[DYN, n(kv), 0, n(hd)],
    );
    let var = format!("past_key_values.{layer}.{which}present.{layer}.{which}");
    let var_shape = crate::ir::partial_shape(&[DYN, n(kv), DYN, n(hd)]);
    let rv = b.op(
        "ReadValue",
        "opset6",
        "",
        &[init],
        &[
            ("variable_id", &var),
            ("variable_type", "f32"),
            ("variable_shape", &var_shape),
        ],
        &[DYN, n(kv), DYN, n(hd)],
    );
    b.g.name_tensor(rv, &format!("past_key_values.{layer}.{which}"));
    let axis = b.c_i64(&[0], &[])?;
    Ok(b.gather("", rv, s.beam_idx, axis, &[DYN, n(kv), DYN, n(hd)]))
}

fn assign(b: &mut Builder, layer: usize, which: &str, value: Out) {
    let var = format!("past_key_values.{layer}.{which}present.{layer}.{which}");
    b.g.sink("Assign", "opset6", "", &[value], &[("variable_id", &var)]);
}

fn decoder_layer(
    b: &mut Builder,
    layer: usize,
    x: Out,
    s: &mut Shared,
    attention_mask: Out,
) -> Result<Out> {
    let cfg = b.cfg;
    let (h, nh, kv, hd, inter) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
        cfg.intermediate_size,
    );
    let lp = format!("__module.model.layers.{layer}");
    let sa = format!("{lp}.self_attn");
    let xn = b.rms_norm(
        &format!("{lp}.input_layernorm"),
        x,
        Role::InputNorm { layer },
    )?;
    let w_qkv = b.weight(
        Role::AttnQkv { layer },
        &format!("model.layers.{layer}.self_attn.qkv_proj"),
        false,
    )?;
    let qkv = b.matmul_w(
        &format!("{sa}.qkv_proj/ov_ext::linear/MatMul"),
        xn,
        w_qkv,
        cfg.qkv_rows(),
    );

    // Q
    let q = b.slice(
        &format!("{sa}/aten::slice/Slice"),
        qkv,
        0,
        n(nh * hd),
        2,
        &[DYN, DYN, n(nh * hd)],
    )?;
    let q = b.reshape(
        &format!("{sa}/aten::view/Reshape"),
        q,
        &[0, 0, n(nh), n(hd)],
        true,
        &[DYN, DYN, n(nh), n(hd)],
    )?;
    let q = b.transpose(
        &format!("{sa}/aten::transpose/Transpose"),
        q,
        &[0, 2, 1, 3],
        &[DYN, n(nh), DYN, n(hd)],
    )?;
    let q = b.rope(&sa, q, nh, &ROPE_Q, s)?;

    // K: projection, RoPE, append to the cache.
    let past_k = state(b, s, layer, "key")?;
    let k = b.slice(
        &format!("{sa}/aten::slice/Slice_5"),
        qkv,
        n(nh * hd),
        n(nh * hd + kv * hd),
        2,
        &[DYN, DYN, n(kv * hd)],
    )?;
    let k = b.reshape(
        &format!("{sa}/aten::view/Reshape_1"),
        k,
        &[0, 0, n(kv), n(hd)],
        true,
        &[DYN, DYN, n(kv), n(hd)],
    )?;
    let k = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_1"),
        k,
        &[0, 2, 1, 3],
        &[DYN, n(kv), DYN, n(hd)],
    )?;
    let k = b.rope(&sa, k, kv, &ROPE_K, s)?;
    let k_all = b.op(
        "Concat",
        "opset1",
        &format!("{sa}/aten::cat/Concat_4"),
        &[past_k, k],
        &[("axis", "-2")],
        &[DYN, n(kv), DYN, n(hd)],
    );

    // V
    let past_v = state(b, s, layer, "value")?;
    let v = b.slice(
        &format!("{sa}/aten::slice/Slice_10"),
        qkv,
        n(nh * hd + kv * hd),
        i64::MAX,
        2,
        &[DYN, DYN, n(kv * hd)],
    )?;
    let v = b.reshape(
        &format!("{sa}/aten::view/Reshape_2"),
        v,
        &[0, 0, n(kv), n(hd)],
        true,
        &[DYN, DYN, n(kv), n(hd)],
    )?;
    let v = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_2"),
        v,
        &[0, 2, 1, 3],
        &[DYN, n(kv), DYN, n(hd)],
    )?;
    let v_all = b.op(
        "Concat",
        "opset1",
        &format!("{sa}/aten::cat/Concat_5"),
        &[past_v, v],
        &[("axis", "-2")],
        &[DYN, n(kv), DYN, n(hd)],
    );

    if s.lens.is_none() {
        // past_len from layer 0's gathered key cache, q_len from the normed hidden states (§4.1.3).
        let shp_past = b.shape_of("", past_k, Elem::I64);
        let past_len = b.gather_scalar("", shp_past, 2)?;
        let shp_x = b.shape_of("", xn, Elem::I64);
        let q_len = b.gather_scalar("", shp_x, 1)?;
        let q_len1 = b.reshape("", q_len, &[1], false, &[1])?;
        s.lens = Some((past_len, q_len, q_len1));
        let batch_n = b.gather_scalar("", shp_x, 0)?;
        s.mask = Some(build_mask(
            b,
            past_len,
            q_len,
            q_len1,
            batch_n,
            attention_mask,
        )?);
    }
    let (past_len, _q_len, q_len1) = s.lens.unwrap();

    // GQA: HF repeat_kv after the cache (the cache keeps kv heads): Unsqueeze → Broadcast → Reshape.
    let (k_att, v_att) = if kv < nh {
        if s.gqa_target.is_none() {
            let shp = b.shape_of(&format!("{sa}/aten::size/ShapeOf_2"), k_all, Elem::I64);
            let idx = b.c_i64(&[0, 1], &[2])?;
            let ax = b.c_i64(&[0], &[])?;
            let bh = b.gather("", shp, idx, ax, &[2]);
            let past1 = b.reshape("", past_len, &[1], false, &[1])?;
            let total1 = b.binary("Add", "", past1, q_len1, &[1]);
            let rep = b.c_i64(&[n(nh / kv)], &[1])?;
            let hdc = b.c_i64(&[n(hd)], &[1])?;
            s.gqa_target = Some(b.op(
                "Concat",
                "opset1",
                &format!("{sa}/prim::ListConstruct/SequenceMark_2"),
                &[bh, rep, total1, hdc],
                &[("axis", "0")],
                &[5],
            ));
        }
        let target = s.gqa_target.unwrap();
        let mut expand = |t: Out, sfx_u: &str, sfx_b: &str, sfx_r: &str| -> Result<Out> {
            let u = b.unsqueeze(
                &format!("{sa}/aten::unsqueeze/Unsqueeze{sfx_u}"),
                t,
                2,
                &[DYN, n(kv), 1, DYN, n(hd)],
            )?;
            let e = b.op(
                "Broadcast",
                "opset3",
                &format!("{sa}/aten::expand/Broadcast{sfx_b}"),
                &[u, target],
                &[("mode", "bidirectional")],
                &[DYN, n(kv), n(nh / kv), DYN, n(hd)],
            );
            b.reshape(
                &format!("{sa}/aten::reshape/Reshape{sfx_r}"),
                e,
                &[0, n(nh), -1, n(hd)],
                true,
                &[DYN, n(nh), DYN, n(hd)],
            )
        };
        (
            expand(k_all, "_2", "", "")?,
            expand(v_all, "_3", "_1", "_1")?,
        )
    } else {
        (k_all, v_all)
    };

    // One scale constant shared by all layers (in fp16 exports its decompression Convert carries layer 0's traced
    // `ConvertLike` name, as in the reference).
    let scale = match s.sdpa_scale {
        Some(o) => o,
        None => {
            let o = b.c_float(
                &format!("{sa}/aten::scaled_dot_product_attention/ConvertLike"),
                &[1.0 / (hd as f32).sqrt()],
                &[],
            )?;
            s.sdpa_scale = Some(o);
            o
        }
    };
    let attn = b.op(
        "ScaledDotProductAttention",
        "opset13",
        &format!("{sa}/aten::scaled_dot_product_attention/ScaledDotProductAttention"),
        &[q, k_att, v_att, s.mask.unwrap(), scale],
        &[("causal", "false")],
        &[DYN, n(nh), DYN, n(hd)],
    );
    assign(b, layer, "key", k_all);
    assign(b, layer, "value", v_all);
    let t = b.transpose(
        &format!("{sa}/aten::transpose/Transpose_3"),
        attn,
        &[0, 2, 1, 3],
        &[DYN, DYN, n(nh), n(hd)],
    )?;
    let rname = if kv < nh { "Reshape_2" } else { "Reshape" };
    let r = b.reshape(
        &format!("{sa}/aten::reshape/{rname}"),
        t,
        &[0, 0, n(nh * hd)],
        true,
        &[DYN, DYN, n(nh * hd)],
    )?;
    let w_o = b.weight(
        Role::AttnOut { layer },
        &format!("model.layers.{layer}.self_attn.o_proj"),
        false,
    )?;
    let o = b.matmul_w(&format!("{sa}.o_proj/ov_ext::linear/MatMul"), r, w_o, h);
    let hres = b.binary(
        "Add",
        &format!("{lp}/aten::add/Add"),
        x,
        o,
        &[DYN, DYN, n(h)],
    );

    // MLP: fused gate_up → chunk(2) → silu(gate) * up → down.
    let hn = b.rms_norm(
        &format!("{lp}.post_attention_layernorm"),
        hres,
        Role::PostAttnNorm { layer },
    )?;
    let w_gu = b.weight(
        Role::MlpGateUp { layer },
        &format!("model.layers.{layer}.mlp.gate_up_proj"),
        false,
    )?;
    let mlp = format!("{lp}.mlp");
    let gu = b.matmul_w(
        &format!("{mlp}.gate_up_proj/ov_ext::linear/MatMul"),
        hn,
        w_gu,
        2 * inter,
    );
    if s.chunk_lengths.is_none() {
        // The traced `chunk(2)`: split lengths [ceil(N/2), -1] computed at runtime, built once and reused (§4.2 #12).
        let lu = format!("{mlp}/prim::ListUnpack");
        let shp = b.shape_of(&format!("{lu}/ShapeOf"), gu, Elem::I32);
        let last = b.c_i64(&[-1], &[])?;
        let ax = b.c_i32(&[0], &[1])?;
        let d = b.gather(&format!("{lu}/Gather"), shp, last, ax, &[]);
        let two = b.c_i32(&[2], &[])?;
        let half = b.op(
            "Divide",
            "opset1",
            &format!("{lu}/Divide"),
            &[d, two],
            &[AB, ("m_pythondiv", "true")],
            &[],
        );
        let md = b.binary("Mod", &format!("{lu}/Mod"), d, two, &[]);
        let zero = b.c_i32(&[0], &[1])?;
        let gt = b.g.op1(
            "Greater",
            "opset1",
            &format!("{lu}/Greater"),
            &[md, zero],
            &[AB],
            Elem::Boolean,
            &[1],
        );
        let gi = b.convert(&format!("{lu}/Convert_0"), gt, Elem::I32);
        let add = b.binary("Add", &format!("{lu}/Add"), half, gi, &[1]);
        let rest = b.c_i32(&[-1], &[1])?;
        s.chunk_lengths = Some(b.op(
            "Concat",
            "opset1",
            &format!("{lu}/Concat"),
            &[add, rest],
            &[("axis", "0")],
            &[2],
        ));
    }
    let axis = b.c_i64(&[-1], &[])?;
    let parts = b.g.op(
        "VariadicSplit",
        "opset1",
        &format!("{mlp}/prim::ListUnpack/VariadicSplit"),
        &[gu, axis, s.chunk_lengths.unwrap()],
        &[],
        &[
            (Elem::F32, &[DYN, DYN, n(inter)]),
            (Elem::F32, &[DYN, DYN, n(inter)]),
        ],
    );
    let act = b.op(
        "Swish",
        "opset4",
        &format!("{mlp}.activation_fn/aten::silu/Swish"),
        &[parts[0]],
        &[],
        &[DYN, DYN, n(inter)],
    );
    let m = b.binary(
        "Multiply",
        &format!("{mlp}/aten::mul/Multiply"),
        parts[1],
        act,
        &[DYN, DYN, n(inter)],
    );
    let w_down = b.weight(
        Role::MlpDown { layer },
        &format!("model.layers.{layer}.mlp.down_proj"),
        false,
    )?;
    let down = b.matmul_w(
        &format!("{mlp}.down_proj/ov_ext::linear/MatMul"),
        m,
        w_down,
        h,
    );
    Ok(b.binary(
        "Add",
        &format!("{lp}/aten::add/Add_1"),
        hres,
        down,
        &[DYN, DYN, n(h)],
    ))
}

/// The f32 additive mask `[B, 1, q, kv]`: causal ∧ sliding window ∧ padding, 0 where visible and −65504
/// (`torch.finfo(float16).min`) elsewhere — the trace of transformers 5's `create_causal_mask` (§4.1.3).
fn build_mask(
    b: &mut Builder,
    past_len: Out,
    q_len: Out,
    q_len1: Out,
    batch_n: Out,
    attention_mask: Out,
) -> Result<Out> {
    let m = "__module.model";
    let total = b.binary("Add", &format!("{m}/aten::add/Add"), past_len, q_len, &[]);
    let z32 = b.c_i32(&[0], &[])?;
    let one32 = b.c_i32(&[1], &[])?;
    let range = |b: &mut Builder, name: &str, start: Out, stop: Out| -> Out {
        b.g.op1(
            "Range",
            "opset4",
            name,
            &[start, stop, one32],
            &[("output_type", "i64")],
            Elem::I64,
            &[DYN],
        )
    };
    let kv_idx = range(b, &format!("{m}/aten::arange/Range"), z32, total);
    let k1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze"),
        kv_idx,
        0,
        &[1, DYN],
    )?;
    let k2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_1"),
        k1,
        1,
        &[1, 1, DYN],
    )?;
    let kv4 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_2"),
        k2,
        2,
        &[1, 1, 1, DYN],
    )?;
    let sq_axis = b.c_i32(&[0], &[])?;
    let q_len_s = b.op(
        "Squeeze",
        "opset1",
        &format!("{m}/aten::size/Gather_3"),
        &[q_len1, sq_axis],
        &[],
        &[],
    );
    let r2 = range(b, &format!("{m}/aten::arange/Range_2"), z32, q_len_s);
    let r1 = range(b, &format!("{m}/aten::arange/Range_1"), past_len, total);
    let first = b.gather_scalar(&format!("{m}/aten::select/Gather"), r1, 0)?;
    let q_idx = b.binary("Add", &format!("{m}/aten::add/Add_3"), r2, first, &[DYN]);
    let q1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_3"),
        q_idx,
        0,
        &[1, DYN],
    )?;
    let q2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_4"),
        q1,
        1,
        &[1, 1, DYN],
    )?;
    let q4 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_5"),
        q2,
        3,
        &[1, 1, DYN, 1],
    )?;
    let mdims = [1, 1, DYN, DYN];
    let t = b.g.constant("", Elem::Boolean, &[], &[1])?;
    let le = |b: &mut Builder| {
        b.g.op1(
            "LessEqual",
            "opset1",
            &format!("{m}/aten::le/LessEqual"),
            &[kv4, q4],
            &[AB],
            Elem::Boolean,
            &mdims,
        )
    };
    let causal = match b.cfg.sliding_window {
        Some(window) => {
            let w = b.c_i64(&[-n(window)], &[1, 1, 1, 1])?;
            let lo = b.binary(
                "Add",
                &format!("{m}/aten::sub/Subtract"),
                q4,
                w,
                &[1, 1, DYN, 1],
            );
            let gt = b.g.op1(
                "Greater",
                "opset1",
                &format!("{m}/aten::gt/Greater"),
                &[kv4, lo],
                &[AB],
                Elem::Boolean,
                &mdims,
            );
            let a0 = b.binary(
                "BitwiseAnd",
                &format!("{m}/aten::__and__/BitwiseAnd"),
                t,
                gt,
                &mdims,
            );
            let le = le(b);
            b.binary(
                "BitwiseAnd",
                &format!("{m}/aten::__and__/BitwiseAnd_1"),
                a0,
                le,
                &mdims,
            )
        }
        None => le(b),
    };
    let a2 = b.binary(
        "BitwiseAnd",
        &format!("{m}/aten::__and__/BitwiseAnd_2"),
        t,
        causal,
        &mdims,
    );

    // Padding: attention_mask[b, kv_idx] via a flat gather, as torch's advanced indexing traces.
    let am = b.convert(
        &format!("{m}/aten::to/Convert_5"),
        attention_mask,
        Elem::Boolean,
    );
    let am_shape = b.shape_of(&format!("{m}/aten::index/ShapeOf_1"), am, Elem::I32);
    let prod = b.op(
        "ReduceProd",
        "opset1",
        &format!("{m}/aten::index/ReduceProd"),
        &[am_shape, sq_axis],
        &[("keep_dims", "true")],
        &[1],
    );
    let m1 = b.c_i32(&[-1], &[1])?;
    let flat_shape = b.op(
        "Concat",
        "opset1",
        &format!("{m}/aten::index/Concat"),
        &[prod, m1],
        &[("axis", "0")],
        &[2],
    );
    let am_flat = b.reshape_dyn(
        &format!("{m}/aten::index/Reshape"),
        am,
        flat_shape,
        true,
        &[DYN, DYN],
    );
    let kv_i32 = b.convert(&format!("{m}/aten::index/Convert"), kv4, Elem::I32);
    let b_range = range(b, &format!("{m}/aten::arange/Range_3"), z32, batch_n);
    let b1 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_6"),
        b_range,
        1,
        &[DYN, 1],
    )?;
    let b2 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_7"),
        b1,
        2,
        &[DYN, 1, 1],
    )?;
    let b4 = b.unsqueeze(
        &format!("{m}/aten::unsqueeze/Unsqueeze_8"),
        b2,
        3,
        &[DYN, 1, 1, 1],
    )?;
    let b_i32 = b.convert(&format!("{m}/aten::index/Convert_3"), b4, Elem::I32);
    let split = b.g.op(
        "Split",
        "opset1",
        &format!("{m}/aten::index/Split"),
        &[am_shape, sq_axis],
        &[("num_splits", "2")],
        &[(Elem::I32, &[1]), (Elem::I32, &[1])],
    );
    let stride = b.binary(
        "Multiply",
        &format!("{m}/aten::index/Multiply"),
        b_i32,
        split[1],
        &[DYN, 1, 1, 1],
    );
    let flat_idx = b.binary(
        "Add",
        &format!("{m}/aten::index/Add"),
        kv_i32,
        stride,
        &[DYN, 1, 1, DYN],
    );
    let gathered = b.gather(
        &format!("{m}/aten::index/Gather"),
        am_flat,
        flat_idx,
        sq_axis,
        &[DYN, 1, 1, DYN, DYN],
    );
    let g_flat = b.reshape(
        &format!("{m}/aten::index/Reshape_8"),
        gathered,
        &[-1],
        false,
        &[DYN],
    )?;
    let idx_shape = b.shape_of(&format!("{m}/aten::index/ShapeOf_5"), flat_idx, Elem::I32);
    let pad = b.reshape_dyn(
        &format!("{m}/aten::index/Reshape_12"),
        g_flat,
        idx_shape,
        false,
        &[DYN, 1, 1, DYN],
    );
    let a3 = b.binary(
        "BitwiseAnd",
        &format!("{m}/aten::__and__/BitwiseAnd_3"),
        a2,
        pad,
        &[DYN, 1, DYN, DYN],
    );
    let batch1 = b.reshape("", batch_n, &[1], false, &[1])?;
    let total1 = {
        let ax = b.c_i32(&[0], &[])?;
        b.op("Unsqueeze", "opset1", "", &[total, ax], &[], &[1])
    };
    let one = b.c_i64(&[1], &[1])?;
    let target = b.op(
        "Concat",
        "opset1",
        &format!("{m}/prim::ListConstruct/SequenceMark"),
        &[batch1, one, q_len1, total1],
        &[("axis", "0")],
        &[4],
    );
    let expanded = b.op(
        "Broadcast",
        "opset3",
        &format!("{m}/aten::expand/Broadcast"),
        &[a3, target],
        &[("mode", "bidirectional")],
        &[DYN, 1, DYN, DYN],
    );
    let zero = b.c_float("", &[0.0], &[])?;
    let min = b.c_float("", &[-65504.0], &[])?;
    Ok(b.g.op1(
        "Select",
        "opset1",
        &format!("{m}/aten::where/Select"),
        &[expanded, zero, min],
        &[AB],
        Elem::F32,
        &[DYN, 1, DYN, DYN],
    ))
}

impl Builder<'_> {
    fn reshape_dyn(
        &mut self,
        name: &str,
        x: Out,
        target: Out,
        special_zero: bool,
        dims: &[i64],
    ) -> Out {
        let sz = if special_zero { "true" } else { "false" };
        self.op(
            "Reshape",
            "opset1",
            name,
            &[x, target],
            &[("special_zero", sz)],
            dims,
        )
    }
}
