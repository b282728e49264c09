//! Weight subgraphs: the decompression chains NNCF writes for each scheme (docs/openvino-ir.md §5).

use oxport_arch::Model;
use oxport_hf::{DType, TensorView};
use oxport_quant::{NncfMode, Rows};

use super::*;
use crate::compress::{self, Compressed};
use crate::error::Error;
use crate::plan::Scheme;

impl<'a> Builder<'a> {
    // ---- AWQ ----
    /// Whether the plan applies AWQ to `role`.
    pub(super) fn awq_target(&self, role: Role) -> bool {
        self.plan.entry(role).is_some_and(|e| e.transform.is_awq())
    }

    /// NNCF's data-free AWQ insertion for the weight `role` fed by `act` (the output of the op named `producer`):
    /// the scales are computed from the weight now, the activation scale becomes the Multiply
    /// `{producer}/awq_mul` with the f32 constant `{producer}/awq_mul/scale` `[1, 1, k]` (NNCF
    /// `openvino_backend.py::scale_insertion_command`, `model_transformer.py::_apply_multiply_insertion_transformations`),
    /// and the weight scales are kept for [`Self::weight`].
    pub(super) fn awq_multiply(
        &mut self,
        role: Role,
        producer: &str,
        act: Out,
        k: usize,
    ) -> Result<Out> {
        let scales = match self.plan.entry(role).and_then(|e| e.transform.awq_scales()) {
            Some(data_aware) => data_aware.clone(),
            None => {
                let view = self.view(role)?;
                let rows = view.info.shape[0];
                oxport_quant::data_free_awq(encoded(&view), rows, k)
                    .map_err(|source| Error::Quant {
                        tensor: role.name(),
                        source: Box::new(source.for_tensor(&role.name())),
                    })
                    .map_err(|e| nan_as_checkpoint_error(e, &view))?
            }
        };
        let name = format!("{producer}/awq_mul");
        let c = self.g.constant(
            &format!("{name}/scale"),
            Elem::F32,
            &[1, 1, k],
            &le_bytes_f32(&scales.activation),
        )?;
        let out = self.binary("Multiply", &name, act, c, &[DYN, DYN, n(k)]);
        self.awq_scales.insert(role, scales.weight);
        Ok(out)
    }

    // ---- weights ----
    pub(super) fn checkpoint_f32(&self, role: Role) -> Result<Vec<f32>> {
        let w = self.ckpt.read_f32(role)?;
        Ok(w)
    }

    /// The checkpoint view of `role` for the `*_rows` kernels, which refuse NaN/Inf while reading it (see
    /// [`nan_as_checkpoint_error`]).
    fn view(&self, role: Role) -> Result<TensorView<'a>> {
        let ckpt: &'a Model = self.ckpt;
        ckpt.view(role)
            .ok_or_else(|| Error::MissingTensor(role.to_string()))
    }

    /// The checkpoint view of `role`, its NaN/Inf already refused (oxport-hf's error names the file, tensor and
    /// index, as `read_f32` does), for kernels that read the mapped BF16/F16/F32 bytes directly.
    fn checked_view(&self, role: Role) -> Result<TensorView<'a>> {
        let ckpt: &'a Model = self.ckpt;
        let view = ckpt
            .view(role)
            .ok_or_else(|| Error::MissingTensor(role.to_string()))?;
        view.check_finite()?;
        Ok(view)
    }

    /// [`write_weight`](Self::write_weight) after a check of the cancel token (between tensors: the one place an
    /// export stops when cancelled; its staging folder goes with the guard), reported as one weight done.
    pub(super) fn weight(&mut self, role: Role, path: &str, embedding: bool) -> Result<Out> {
        self.cancel.check(Some(&self.staging))?;
        if self.weights_done == 0 {
            self.reporter
                .report(Event::stage("weights", self.plan.weights().count() as u64));
        }
        let out = self.write_weight(role, path, embedding)?;
        self.weights_done += 1;
        self.reporter.report(Event::item(&role.to_string()));
        Ok(out)
    }

    /// The decompressed f32 `[n, k]` weight of `role`, through the subgraph NNCF writes for its scheme
    /// (docs/openvino-ir.md §5). `path` is the HF module path, `embedding` picks the Gather flavour of names.
    fn write_weight(&mut self, role: Role, path: &str, embedding: bool) -> Result<Out> {
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
                let view = self.checked_view(role)?;
                if view.info.dtype == DType::F32 {
                    // Little-endian f32 already: `le_bytes_f32` of the decode is these bytes.
                    self.g
                        .constant(&base, Elem::F32, &[rows, cols], view.bytes)?
                } else {
                    // `le_bytes_f32` of the exact decode.
                    self.float_constant(&base, role, &view, rows, cols, Elem::F32)?
                }
            }
            Scheme::F16 => {
                let view = self.checked_view(role)?;
                // Same rounding as `le_bytes_f16` of the f32 decode (half's RNE conversion).
                let c = self.float_constant(&base, role, &view, rows, cols, Elem::F16)?;
                decompress(self, c)
            }
            Scheme::Keep => {
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
        self.ckpt.release(role);
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
        let view = self.view(role)?;
        let awq = self.awq_scales.get(&role).cloned();
        let scaled = self.awq_scaled(role, &view, rows, cols)?;
        let source = match &scaled {
            Some(w) => Rows::F32(w),
            None => encoded(&view),
        };
        let (elem, zp_elem) = match mode {
            NncfMode::Int8Sym => (Elem::I8, Elem::U8),
            NncfMode::Int8Asym => (Elem::U8, Elem::U8),
            NncfMode::Int4Sym => (Elem::I4, Elem::U4),
            _ => (Elem::U4, Elem::U4),
        };
        let Compressed {
            weight,
            scale,
            zero_point,
        } = compress::compress_rows_into(
            &role.name(),
            source,
            rows,
            cols,
            (mode, None),
            self.estimated(role, source, (rows, cols), (mode, None), awq.as_deref())?
                .as_ref(),
            self.g.buffer(),
        )
        .map_err(|e| nan_as_checkpoint_error(e, &view))?;
        self.dequantized(
            base,
            fq,
            (elem, &[rows, cols], weight),
            zero_point.map(|zp| (zp_elem, zp)),
            &scale,
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
        let view = self.view(role)?;
        let awq = self.awq_scales.get(&role).cloned();
        let scaled = self.awq_scaled(role, &view, rows, cols)?;
        let source = match &scaled {
            Some(w) => Rows::F32(w),
            None => encoded(&view),
        };
        let mode = if sym {
            NncfMode::Int4Sym
        } else {
            NncfMode::Int4Asym
        };
        let Compressed {
            weight,
            scale,
            zero_point,
        } = compress::compress_rows_into(
            &role.name(),
            source,
            rows,
            cols,
            (mode, Some(group)),
            self.estimated(
                role,
                source,
                (rows, cols),
                (mode, Some(group)),
                awq.as_deref(),
            )?
            .as_ref(),
            self.g.buffer(),
        )
        .map_err(|e| nan_as_checkpoint_error(e, &view))?;
        let groups = cols / group;
        let gdims = [n(rows), n(groups), n(group)];
        let elem = if sym { Elem::I4 } else { Elem::U4 };
        let m = self.dequantized(
            base,
            fq,
            (elem, &[rows, groups, group], weight),
            zero_point.map(|zp| (Elem::U4, zp)),
            &scale,
            &gdims,
        )?;
        self.reshape("", m, &[n(rows), n(cols)], false, &[n(rows), n(cols)])
    }

    /// `--scale-estimation`: NNCF's scales and zero points for the 4-bit weight `role` (`w`, already AWQ-scaled),
    /// searched on its input statistics — rescaled by AWQ's activation scale first when AWQ ran
    /// (`AWQ.update_statistics`) — with NNCF's defaults (64 samples, 5 + 5 steps). `None` when scale estimation is
    /// off or the weight is not 4-bit.
    fn estimated(
        &self,
        role: Role,
        w: Rows<'_>,
        (rows, cols): (usize, usize),
        (mode, group): (NncfMode, Option<usize>),
        awq_weight_scale: Option<&[f32]>,
    ) -> Result<Option<oxport_quant::nncf::NncfParams>> {
        let Some(stats) = self.plan.scale_estimation.as_ref() else {
            return Ok(None);
        };
        if mode.bits() != 4 {
            return Ok(None);
        }
        let quant = |source: oxport_quant::QuantError| Error::Quant {
            tensor: role.name(),
            source: Box::new(source.for_tensor(&role.name())),
        };
        let layer = stats.get(role).ok_or_else(|| {
            Error::Options(format!(
                "{role}: no calibration statistics for scale estimation"
            ))
        })?;
        let mut layer = layer.clone();
        if let Some(scale) = awq_weight_scale {
            for m in &mut layer.means {
                for (v, s) in m.iter_mut().zip(scale) {
                    *v *= 1.0 / s;
                }
            }
        }
        let params = oxport_quant::ScaleEstimationParams::default();
        let processed = layer.processed(params.subset_size).map_err(quant)?;
        let f32_weight = oxport_quant::scale_columns(w, rows, cols, &vec![1.0; cols], DType::F32)
            .map_err(quant)?;
        oxport_quant::scale_estimation(&f32_weight, rows, cols, mode, group, &processed, &params)
            .map(Some)
            .map_err(quant)
    }

    /// The weight NNCF compresses after data-free AWQ (`(W * scale).astype(W.dtype)`, f32), when [`Self::awq_multiply`]
    /// scaled `role`'s activation.
    fn awq_scaled(
        &mut self,
        role: Role,
        view: &TensorView<'a>,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Vec<f32>>> {
        let Some(scale) = self.awq_scales.remove(&role) else {
            return Ok(None);
        };
        let scaled =
            oxport_quant::scale_columns(encoded(view), rows, cols, &scale, view.info.dtype)
                .map_err(|source| Error::Quant {
                    tensor: role.name(),
                    source: Box::new(source.for_tensor(&role.name())),
                })?;
        Ok(Some(scaled))
    }

    /// NNCF's decompression chain (docs/openvino-ir.md §5): the codes `Convert`ed to f16, minus the zero point when
    /// there is one (`{base}/zero_point/subtract`), times the f16 scale (named `fq`). The codes' shape with its last
    /// axis set to 1 is the shape of the zero point and the scale; `dims` is the output shape.
    fn dequantized(
        &mut self,
        base: &str,
        fq: &str,
        (elem, shape, codes): (Elem, &[usize], Vec<u8>),
        zero_point: Option<(Elem, Vec<u8>)>,
        scale: &[u8],
        dims: &[i64],
    ) -> Result<Out> {
        let mut side = shape.to_vec();
        *side.last_mut().expect("codes have a shape") = 1;
        let c = self.g.constant_owned(base, elem, shape, codes)?;
        let mut x = self.convert("", c, Elem::F16);
        if let Some((zp_elem, zp)) = zero_point {
            let z = self
                .g
                .constant(&format!("{base}/zero_point"), zp_elem, &side, &zp)?;
            let zc = self.convert("", z, Elem::F16);
            x = self.binary(
                "Subtract",
                &format!("{base}/zero_point/subtract"),
                x,
                zc,
                dims,
            );
        }
        let s = self
            .g
            .constant(&format!("{base}/scale"), Elem::F16, &side, scale)?;
        Ok(self.binary("Multiply", fq, x, s, dims))
    }

    /// The `[rows, cols]` constant `name` of `view` as f32 or f16 (`elem`): converted straight from the mapped
    /// BF16/F16/F32 bytes in parallel (oxport-quant's `float_bytes_into`, the exact decode then numpy's f32→f16
    /// rounding), chunk by chunk into written buffers that the `.bin` writer thread takes without a copy.
    fn float_constant(
        &mut self,
        name: &str,
        role: Role,
        view: &TensorView<'a>,
        rows: usize,
        cols: usize,
        elem: Elem,
    ) -> Result<Out> {
        let dtype = if elem == Elem::F16 {
            oxport_quant::FloatDtype::F16
        } else {
            oxport_quant::FloatDtype::F32
        };
        let chunk_rows = (FLOAT_CHUNK_BYTES / (cols * dtype.size_bytes())).max(1);
        let start = self.g.begin_constant()?;
        let mut row0 = 0;
        while row0 < rows {
            let row1 = (row0 + chunk_rows).min(rows);
            let mut buf = self.g.buffer();
            oxport_quant::float_bytes_into(
                encoded(view),
                rows,
                cols,
                dtype,
                false,
                row0..row1,
                &mut buf,
            )
            .map_err(|e| {
                nan_as_checkpoint_error(
                    Error::Quant {
                        tensor: role.name(),
                        source: Box::new(e),
                    },
                    view,
                )
            })?;
            self.g.constant_piece(buf)?;
            row0 = row1;
        }
        self.g.end_constant(name, elem, &[rows, cols], start)
    }

    pub(super) fn norm_gamma(&mut self, role: Role) -> Result<Out> {
        let h = self.cfg.hidden_size;
        let gamma = self.checkpoint_f32(role)?;
        self.ckpt.release(role);
        self.c_float("", &gamma, &[1, 1, h])
    }
}

/// Output bytes converted per piece of an f32/f16 weight: small enough that the writer thread copies it while it is
/// still in the L3 cache, and peak memory stays low.
const FLOAT_CHUNK_BYTES: usize = 4 << 20;

/// The view's bytes for the `*_rows` kernels: decoded a row at a time, never copied to f32 as a whole.
fn encoded<'a>(view: &TensorView<'a>) -> Rows<'a> {
    Rows::Encoded {
        bytes: view.bytes,
        dtype: view.info.dtype,
    }
}

/// The kernel's NaN/Inf refusal as oxport-hf's error (file, tensor, flat index), the error `read_f32` gave before
/// the kernels read the mapped bytes themselves; one pass over the weight instead of a separate check.
fn nan_as_checkpoint_error(e: Error, view: &TensorView<'_>) -> Error {
    match e {
        Error::Quant { tensor, source } => match *source {
            oxport_quant::QuantError::NonFinite { count, first, .. } => {
                view.non_finite_error(count, first).into()
            }
            source => Error::Quant {
                tensor,
                source: Box::new(source),
            },
        },
        e => e,
    }
}
