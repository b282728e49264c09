//! The `.bin` phase of the Phi-3 export: each deferred constant of the built graph ([`WeightRef`]) computed when
//! the stream reaches it — one weight at a time, in the order the graph created them (which is the `.bin`
//! order) — and handed to the IR's [`ConstSink`]. The cancel token is checked and progress reported between
//! weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxport_arch::{Model, Role};
use oxport_hf::{DType, TensorView};
use oxport_io::{CancelToken, Event, Reporter};
use oxport_quant::{NncfMode, Rows};

use super::source::{Part, WeightRef};
use super::{le_bytes_f16, le_bytes_f32};
use crate::compress::{self, Compressed};
use crate::error::{Error, Result};
use crate::ir::{ConstSink, Elem, Graph};
use crate::plan::Plan;

/// Output bytes converted per piece of an f32/f16 weight: small enough that the writer thread copies it while it is
/// still in the L3 cache, and peak memory stays low.
const FLOAT_CHUNK_BYTES: usize = 4 << 20;

/// Stream `graph`'s constants into `bin_path` (in the staging folder), computing each weight from `ckpt` under
/// `plan` when it is reached; `reporter` sees the weights written, `cancel` is checked before each.
pub(crate) fn stream(
    graph: &mut Graph<WeightRef>,
    ckpt: &Model,
    plan: &Plan,
    bin_path: &Path,
    reporter: &dyn Reporter,
    cancel: &CancelToken,
) -> Result<()> {
    let mut s = Streamer {
        ckpt,
        plan,
        reporter,
        cancel,
        staging: bin_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        weights_done: 0,
        awq_scales: BTreeMap::new(),
        pending: None,
    };
    graph.write_bin(bin_path, |source, sink| s.fill(source, sink))?;
    reporter.report(Event::End);
    Ok(())
}

/// The zero point and scale of the codes just written, waiting for their constants.
struct Pending {
    role: Role,
    zero_point: Option<Vec<u8>>,
    scale: Vec<u8>,
}

struct Streamer<'a> {
    ckpt: &'a Model,
    plan: &'a Plan,
    reporter: &'a dyn Reporter,
    cancel: &'a CancelToken,
    /// The staging folder the `.bin` is written in, named by a cancelled export's error.
    staging: PathBuf,
    weights_done: usize,
    /// AWQ weight scales of the activation scales written, used when the weight is compressed.
    awq_scales: BTreeMap<Role, Vec<f32>>,
    pending: Option<Pending>,
}

impl<'a> Streamer<'a> {
    fn fill(&mut self, r: &WeightRef, sink: &mut ConstSink<'_>) -> Result<()> {
        let role = r.role;
        if r.part.starts_weight() {
            self.begin_weight()?;
        }
        match r.part {
            Part::Norm(elem) => {
                let gamma = self.ckpt.read_f32(role)?;
                self.ckpt.release(role);
                let bytes = if elem == Elem::F16 {
                    le_bytes_f16(&gamma)
                } else {
                    le_bytes_f32(&gamma)
                };
                sink.bytes(&bytes)
            }
            Part::AwqScale => self.awq_scale(r, sink),
            Part::Float(Elem::F32) => {
                let view = self.checked_view(role)?;
                if view.info.dtype == DType::F32 {
                    // Little-endian f32 already: `le_bytes_f32` of the decode is these bytes.
                    sink.bytes(view.bytes)?;
                } else {
                    // `le_bytes_f32` of the exact decode.
                    float_pieces(sink, role, &view, (r.rows, r.cols), Elem::F32)?;
                }
                self.end_weight(role);
                Ok(())
            }
            Part::Float(elem) => {
                let view = self.checked_view(role)?;
                float_pieces(sink, role, &view, (r.rows, r.cols), elem)?;
                self.end_weight(role);
                Ok(())
            }
            Part::Original => {
                sink.bytes(self.view(role)?.bytes)?;
                self.end_weight(role);
                Ok(())
            }
            Part::Codes { mode, group } => {
                let codes = self.compress(r, (mode, group), sink.buffer())?;
                sink.owned(codes)
            }
            Part::ZeroPoint => {
                let zp = self
                    .pending
                    .as_mut()
                    .filter(|p| p.role == role)
                    .and_then(|p| p.zero_point.take())
                    .ok_or_else(|| out_of_order(r))?;
                sink.bytes(&zp)
            }
            Part::Scale => {
                let p = self
                    .pending
                    .take()
                    .filter(|p| p.role == role && p.zero_point.is_none())
                    .ok_or_else(|| out_of_order(r))?;
                sink.bytes(&p.scale)?;
                self.end_weight(role);
                Ok(())
            }
        }
    }

    /// Before each weight: the cancel token (between tensors: the one place an export stops when cancelled; its
    /// staging folder goes with the guard), and the stage announced before the first.
    fn begin_weight(&mut self) -> Result<()> {
        self.cancel.check(Some(&self.staging))?;
        if self.weights_done == 0 {
            self.reporter
                .report(Event::stage("weights", self.plan.weights().count() as u64));
        }
        Ok(())
    }

    /// After each weight: its mapped pages released, one weight reported.
    fn end_weight(&mut self, role: Role) {
        self.ckpt.release(role);
        self.weights_done += 1;
        self.reporter.report(Event::item(&role.to_string()));
    }

    /// NNCF's AWQ activation scale of `r.role` (the plan's data-aware scales, else data-free ones computed from the
    /// weight now); the weight scales are kept for the weight's compression.
    fn awq_scale(&mut self, r: &WeightRef, sink: &mut ConstSink<'_>) -> Result<()> {
        let role = r.role;
        let scales = match self.plan.entry(role).and_then(|e| e.transform.awq_scales()) {
            Some(data_aware) => data_aware.clone(),
            None => {
                let view = self.view(role)?;
                let rows = view.info.shape[0];
                oxport_quant::data_free_awq(encoded(&view), rows, r.cols)
                    .map_err(|source| Error::Quant {
                        tensor: role.name(),
                        source: Box::new(source.for_tensor(&role.name())),
                    })
                    .map_err(|e| nan_as_checkpoint_error(e, &view))?
            }
        };
        sink.bytes(&le_bytes_f32(&scales.activation))?;
        self.awq_scales.insert(role, scales.weight);
        Ok(())
    }

    /// NNCF compression of `r`'s weight in `(mode, group)` (after AWQ's scaling, with scale estimation when the
    /// plan has it): returns the codes, in `buffer`, and keeps the zero point and scale for their constants.
    fn compress(
        &mut self,
        r: &WeightRef,
        (mode, group): (NncfMode, Option<usize>),
        buffer: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let (role, rows, cols) = (r.role, r.rows, r.cols);
        let view = self.view(role)?;
        let awq = self.awq_scales.get(&role).cloned();
        let scaled = self.awq_scaled(role, &view, rows, cols)?;
        let source = match &scaled {
            Some(w) => Rows::F32(w),
            None => encoded(&view),
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
            (mode, group),
            self.estimated(role, source, (rows, cols), (mode, group), awq.as_deref())?
                .as_ref(),
            buffer,
        )
        .map_err(|e| nan_as_checkpoint_error(e, &view))?;
        self.pending = Some(Pending {
            role,
            zero_point,
            scale,
        });
        Ok(weight)
    }
}

/// A deferred part met without the codes it belongs to: the graph builder and this stream disagree.
fn out_of_order(r: &WeightRef) -> Error {
    Error::Graph(format!("{r}: not preceded by the weight's codes"))
}

impl<'a> Streamer<'a> {
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
        let view = self.view(role)?;
        view.check_finite()?;
        Ok(view)
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

    /// The weight NNCF compresses after AWQ (`(W * scale).astype(W.dtype)`, f32), when an AWQ activation scale of
    /// `role` was written.
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
}

/// The `[rows, cols]` weight `role` of `view` as f32 or f16 (`elem`): converted straight from the mapped
/// BF16/F16/F32 bytes in parallel (oxport-quant's `float_bytes_into`, the exact decode then numpy's f32→f16
/// rounding), chunk by chunk into written buffers that the `.bin` writer thread takes without a copy.
fn float_pieces(
    sink: &mut ConstSink<'_>,
    role: Role,
    view: &TensorView<'_>,
    (rows, cols): (usize, usize),
    elem: Elem,
) -> Result<()> {
    let dtype = if elem == Elem::F16 {
        oxport_quant::FloatDtype::F16
    } else {
        oxport_quant::FloatDtype::F32
    };
    let chunk_rows = (FLOAT_CHUNK_BYTES / (cols * dtype.size_bytes())).max(1);
    let mut row0 = 0;
    while row0 < rows {
        let row1 = (row0 + chunk_rows).min(rows);
        let mut buf = sink.buffer();
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
        sink.piece(buf)?;
        row0 = row1;
    }
    Ok(())
}

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
