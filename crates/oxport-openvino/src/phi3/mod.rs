//! The stateful Phi-3 graph as optimum-intel 2.2 exports it (docs/openvino-ir.md §2–§8, and the reference
//! `fixtures/reference/exports/*/openvino_model.xml.gz`): the same ops, op versions, attributes and friendly names,
//! so that tools keyed on names (and a reader diffing against optimum-cli) see the same model.
//!
//! Two phases, as the ONNX export lays its graph out before it streams its weights: [`build`] makes the whole
//! graph without reading a weight (each weight constant is a deferred [`WeightRef`]), then [`stream`] reads,
//! compresses and appends the weights to the `.bin` one tensor at a time, in the order the graph created them.

use oxport_arch::{Model, Phi3Config, Role};

use crate::error::Result;
use crate::ir::{DYN, Elem, Graph, Out};
use crate::plan::{Plan, WeightFormat};

mod attention;
mod layer;
mod mask;
mod model;
mod source;
mod stream;
mod weights;

pub(crate) use model::build;
pub(crate) use source::WeightRef;
pub(crate) use stream::stream;

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

/// Graph construction state (no weight is read: `ckpt` gives names, dtypes and shapes).
struct Builder<'a> {
    g: Graph<WeightRef>,
    cfg: &'a Phi3Config,
    ckpt: &'a Model,
    plan: &'a Plan,
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
            Ok(self.float_decompression(name, c))
        } else {
            self.g.constant(name, Elem::F32, shape, &le_bytes_f32(v))
        }
    }
    /// The `Convert` to f32 named `name`, marked `decompression`, of the f16 constant `c` (fp16 exports).
    fn float_decompression(&mut self, name: &str, c: Out) -> Out {
        let dims = self.g.dims(c).to_vec();
        let o = self.g.op1(
            "Convert",
            "opset1",
            name,
            &[c],
            &[("destination_type", "f32")],
            (Elem::F32, &dims),
        );
        self.g.mark(o, "decompression", None);
        o
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
        self.g.op1(kind, ver, name, ins, data, (elem, dims))
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
            (to, &dims),
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
            (elem, &[rank]),
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
