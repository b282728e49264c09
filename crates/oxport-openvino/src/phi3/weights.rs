//! Weight subgraphs: the decompression chains NNCF writes for each scheme (docs/openvino-ir.md §5). Only the
//! graph is built here: each weight constant is deferred ([`WeightRef`]), and phi3/stream.rs reads, compresses
//! and writes it when the `.bin` is streamed.

use oxport_hf::DType;
use oxport_quant::NncfMode;

use super::source::{Part, WeightRef};
use super::*;
use crate::error::Error;
use crate::plan::Scheme;

impl<'a> Builder<'a> {
    // ---- AWQ ----
    /// Whether the plan applies AWQ to `role`.
    pub(super) fn awq_target(&self, role: Role) -> bool {
        self.plan.entry(role).is_some_and(|e| e.transform.is_awq())
    }

    /// NNCF's AWQ insertion for the weight `role` fed by `act` (the output of the op named `producer`): the
    /// activation scale becomes the Multiply `{producer}/awq_mul` with the f32 constant `{producer}/awq_mul/scale`
    /// `[1, 1, k]` (NNCF `openvino_backend.py::scale_insertion_command`,
    /// `model_transformer.py::_apply_multiply_insertion_transformations`). Its values (data-aware from the plan,
    /// else data-free from the weight) and the weight's own scaling are computed when the `.bin` is streamed.
    pub(super) fn awq_multiply(
        &mut self,
        role: Role,
        producer: &str,
        act: Out,
        k: usize,
    ) -> Result<Out> {
        let rows = self.info(role)?.shape[0];
        let name = format!("{producer}/awq_mul");
        let c = self.g.deferred(
            &format!("{name}/scale"),
            Elem::F32,
            &[1, 1, k],
            WeightRef {
                role,
                rows,
                cols: k,
                part: Part::AwqScale,
            },
        );
        Ok(self.binary("Multiply", &name, act, c, &[DYN, DYN, n(k)]))
    }

    // ---- weights ----
    /// The checkpoint's header entry of `role` (dtype and shape; no data is read).
    fn info(&self, role: Role) -> Result<&'a oxport_arch::Tensor> {
        let ckpt: &'a Model = self.ckpt;
        ckpt.info(ckpt.stored_role(role))
            .ok_or_else(|| Error::MissingTensor(role.to_string()))
    }

    /// The deferred constant `name` holding `part` of `role`'s `[rows, cols]` weight.
    fn weight_part(
        &mut self,
        name: &str,
        (elem, shape): (Elem, &[usize]),
        role: Role,
        (rows, cols): (usize, usize),
        part: Part,
    ) -> Out {
        let source = WeightRef {
            role,
            rows,
            cols,
            part,
        };
        self.g.deferred(name, elem, shape, source)
    }

    /// The decompressed f32 `[n, k]` weight of `role`, through the subgraph NNCF writes for its scheme
    /// (docs/openvino-ir.md §5), its constants deferred. `path` is the HF module path, `embedding` picks the
    /// Gather flavour of names.
    pub(super) fn weight(&mut self, role: Role, path: &str, embedding: bool) -> Result<Out> {
        let entry = self
            .plan
            .entry(role)
            .cloned()
            .ok_or_else(|| Error::MissingTensor(role.to_string()))?;
        let (rows, cols) = (entry.shape[0], entry.shape[1]);
        let base = format!("self.{path}._openvino_orig_weight");
        let ext = if embedding {
            "ov_ext::embedding"
        } else {
            "ov_ext::linear"
        };
        let convert_name = format!("__module.{path}/{ext}/Convert");
        let fq = format!("{base}/fq_weights_{}", if embedding { 0 } else { 1 });
        let decompress = |b: &mut Self, x: Out| -> Out {
            let o = b.convert(&convert_name, x, Elem::F32);
            b.g.mark(o, "decompression", None);
            o
        };
        let scheme = match entry.scheme {
            Scheme::Keep => match self.ckpt.info(role).map(|i| i.dtype) {
                Some(DType::F32) => Scheme::F32,
                _ => Scheme::Keep,
            },
            s => s,
        };
        let out = match scheme {
            Scheme::F32 => {
                // Little-endian f32: the checkpoint's bytes when they are f32 already, else the exact decode.
                self.weight_part(
                    &base,
                    (Elem::F32, &[rows, cols]),
                    role,
                    (rows, cols),
                    Part::Float(Elem::F32),
                )
            }
            Scheme::F16 => {
                // Same rounding as `le_bytes_f16` of the f32 decode (half's RNE conversion).
                let c = self.weight_part(
                    &base,
                    (Elem::F16, &[rows, cols]),
                    role,
                    (rows, cols),
                    Part::Float(Elem::F16),
                );
                decompress(self, c)
            }
            Scheme::Keep => {
                let elem = if self.info(role)?.dtype == DType::BF16 {
                    Elem::Bf16
                } else {
                    Elem::F16
                };
                let c = self.weight_part(
                    &base,
                    (elem, &[rows, cols]),
                    role,
                    (rows, cols),
                    Part::Original,
                );
                decompress(self, c)
            }
            Scheme::Nncf {
                mode,
                group_size: None,
            } => {
                let m = self.per_channel(role, mode, (&base, &fq), (rows, cols))?;
                decompress(self, m)
            }
            Scheme::Nncf {
                mode,
                group_size: Some(group),
            } => {
                let sym = mode == NncfMode::Int4Sym;
                let r = self.grouped(role, (group, sym), (&base, &fq), (rows, cols))?;
                decompress(self, r)
            }
            Scheme::NBits(_) => {
                return Err(Error::Options(format!(
                    "{role}: MatMulNBits is an ONNX scheme, not written by the OpenVINO exporter"
                )));
            }
        };
        Ok(out)
    }

    /// Per-channel NNCF compression of `role`: `[n, k]` codes, `[n, 1]` scale (and zero point), no Reshape
    /// (docs/openvino-ir.md §5.2); returns the dequantized weight. `(base, fq)` name its constants and its
    /// decompression nodes.
    fn per_channel(
        &mut self,
        role: Role,
        mode: NncfMode,
        (base, fq): (&str, &str),
        (rows, cols): (usize, usize),
    ) -> Result<Out> {
        // Per-channel: `[n, k]` codes, `[n, 1]` scale (and zero point), no Reshape (docs/openvino-ir.md §5.2).
        let (elem, zp_elem) = match mode {
            NncfMode::Int8Sym => (Elem::I8, Elem::U8),
            NncfMode::Int8Asym => (Elem::U8, Elem::U8),
            NncfMode::Int4Sym => (Elem::I4, Elem::U4),
            _ => (Elem::U4, Elem::U4),
        };
        let codes = Part::Codes { mode, group: None };
        self.dequantized(
            (role, (rows, cols), codes),
            (base, fq),
            (elem, &[rows, cols]),
            has_zero_point(mode).then_some(zp_elem),
            &[n(rows), n(cols)],
        )
    }

    /// Group-wise 4-bit NNCF compression of `role` (`(group size, symmetric)`): `[n, k/g, g]` codes, then the
    /// Reshape back to `[n, k]`.
    fn grouped(
        &mut self,
        role: Role,
        (group, sym): (usize, bool),
        (base, fq): (&str, &str),
        (rows, cols): (usize, usize),
    ) -> Result<Out> {
        let mode = if sym {
            NncfMode::Int4Sym
        } else {
            NncfMode::Int4Asym
        };
        let groups = cols / group;
        let gdims = [n(rows), n(groups), n(group)];
        let elem = if sym { Elem::I4 } else { Elem::U4 };
        let codes = Part::Codes {
            mode,
            group: Some(group),
        };
        let m = self.dequantized(
            (role, (rows, cols), codes),
            (base, fq),
            (elem, &[rows, groups, group]),
            has_zero_point(mode).then_some(Elem::U4),
            &gdims,
        )?;
        self.reshape("", m, &[n(rows), n(cols)], false, &[n(rows), n(cols)])
    }

    /// NNCF's decompression chain (docs/openvino-ir.md §5): the codes `Convert`ed to f16, minus the zero point when
    /// there is one (`{base}/zero_point/subtract`), times the f16 scale (named `fq`). The codes' shape with its last
    /// axis set to 1 is the shape of the zero point and the scale; `dims` is the output shape. The codes, zero point
    /// and scale are deferred parts of `role`'s `[rows, cols]` weight, computed by one compression (`codes`).
    fn dequantized(
        &mut self,
        (role, rc, codes): (Role, (usize, usize), Part),
        (base, fq): (&str, &str),
        (elem, shape): (Elem, &[usize]),
        zero_point: Option<Elem>,
        dims: &[i64],
    ) -> Result<Out> {
        let mut side = shape.to_vec();
        *side.last_mut().expect("codes have a shape") = 1;
        let c = self.weight_part(base, (elem, shape), role, rc, codes);
        let mut x = self.convert("", c, Elem::F16);
        if let Some(zp_elem) = zero_point {
            let zp_name = format!("{base}/zero_point");
            let z = self.weight_part(&zp_name, (zp_elem, &side), role, rc, Part::ZeroPoint);
            let zc = self.convert("", z, Elem::F16);
            x = self.binary(
                "Subtract",
                &format!("{base}/zero_point/subtract"),
                x,
                zc,
                dims,
            );
        }
        let scale_name = format!("{base}/scale");
        let s = self.weight_part(&scale_name, (Elem::F16, &side), role, rc, Part::Scale);
        Ok(self.binary("Multiply", fq, x, s, dims))
    }

    /// An RMSNorm's gamma `[1, 1, hidden]` as optimum stores a float constant (see [`Self::c_float`]), read from
    /// the checkpoint when the `.bin` is streamed.
    pub(super) fn norm_gamma(&mut self, role: Role) -> Result<Out> {
        let h = self.cfg.hidden_size;
        let shape = [1, 1, h];
        if self.plan.weight_format == WeightFormat::Fp16 {
            let c = self.weight_part(
                "_compressed",
                (Elem::F16, &shape),
                role,
                (1, h),
                Part::Norm(Elem::F16),
            );
            Ok(self.float_decompression("", c))
        } else {
            Ok(self.weight_part("", (Elem::F32, &shape), role, (1, h), Part::Norm(Elem::F32)))
        }
    }
}

/// Whether NNCF writes a zero point for `mode` (the asymmetric ones).
fn has_zero_point(mode: NncfMode) -> bool {
    matches!(mode, NncfMode::Int4Asym | NncfMode::Int8Asym)
}
