//! Plan, then stream: one checkpoint tensor at a time is decoded, quantized and appended to
//! `model.onnx.data` inside a temporary folder beside the output, which is renamed into place at the end.
//! Any error removes the temporary folder, so a failed export leaves nothing half-written behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oxport_arch::{Model, Phi3Config, Role};
use oxport_quant::{QuantPlan, Scheme, plan_onnx};
use prost::Message;

use oxport_io::{BlobWriter, CancelToken, CommitPolicy, Event, Reporter, Staging};

use crate::error::{OnnxError, Result, io};
use crate::external;
use crate::genai_config::{genai_config, to_pretty_json};
use crate::graph::{self, COS_CACHE, GraphLayout, LinearForm, SIN_CACHE, WeightItem};
use crate::options::{ExportOptions, IoDtype, Precision};
use crate::proto::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto};
use crate::rope::rope_caches;
use crate::weights::{
    Initializer, Payload, io_payload, linear_initializers, nbits_initializers, quantize_nbits_f32,
    quantize_nbits_view,
};

pub const MODEL_FILE: &str = "model.onnx";
pub const DATA_FILE: &str = "model.onnx.data";
pub const GENAI_CONFIG_FILE: &str = "genai_config.json";
/// Default-domain opset. Builder HEAD writes 21 (docs/onnx-genai.md §1.1); builder 0.18.0 writes 22
/// (`fixtures/reference/ort/ort_summary.txt`). Every op used has the same definition in both; 21 also loads
/// in ORT 1.18–1.19.
pub const OPSET: i64 = 21;
/// IR 10 (ONNX 1.16) introduced INT4/UINT4 (onnx.proto `IR_VERSION_2024_3_25`).
pub const IR_VERSION: i64 = 10;

/// Files copied verbatim from the checkpoint when present (tokenizer, chat template, HF configs).
pub const COPIED_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
];

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub output: PathBuf,
    /// File name → size in bytes, sorted by name.
    pub files: BTreeMap<String, u64>,
    pub initializers: usize,
    pub nodes: usize,
}

/// The quantization plan for `opts` (printable with `--dry-run`): oxport-quant's [`plan_onnx`], the builder's
/// rule (every MatMul weight in the chosen precision, lm_head 8-bit with `--int8-lm-head`, embedding and norms
/// in the I/O dtype) plus NNCF-style 4/8-bit ranking with `--ratio`.
pub fn plan(ckpt: &Model, opts: &ExportOptions) -> Result<QuantPlan> {
    opts.validate()?;
    check_rotary(ckpt)?;
    let mut plan =
        plan_onnx(ckpt, &opts.plan_options()).map_err(|e| OnnxError::Plan(Box::new(e)))?;
    // AWQ rescales every 4-bit `down_proj` (folded into `up_proj`, `crate::awq`).
    for e in &mut plan.entries {
        if opts.awq
            && matches!(e.role, Role::MlpDown { .. })
            && matches!(e.scheme, oxport_quant::Scheme::NBits(p) if p.bits == 4)
        {
            e.transform = oxport_quant::Transform::Awq {
                data_aware: opts.awq_stats.is_some(),
                scales: None,
            };
        }
    }
    Ok(plan)
}

/// `oxport_manifest.json`: the checkpoint (as `--model` gave it, with its files' digests), the options and the plan.
fn write_manifest(
    source: oxport_io::Source,
    opts: &ExportOptions,
    plan: &QuantPlan,
    dir: &Path,
) -> Result<()> {
    let manifest = oxport_io::Manifest::new(
        "onnx",
        source,
        serde_json::to_value(opts)?,
        serde_json::to_value(plan)?,
    );
    manifest.write(dir)?;
    Ok(())
}

/// GroupQueryAttention's fused rotary takes the cos/sin caches, `[positions, rotary_dim / 2]`, and refuses at run
/// time a width that is not a multiple of 8 or is above head_size / 2 (rounded down to a multiple of 8), and a
/// head_size that is not a multiple of 16 (`microsoft/onnxruntime:onnxruntime/contrib_ops/cpu/bert/
/// group_query_attention_helper.h`, `CheckRotaryCaches`): refuse such a config at export time instead.
fn check_rotary(ckpt: &Model) -> Result<()> {
    let c = ckpt.config();
    let (head_size, width) = (c.head_dim(), c.rotary_dim() / 2);
    let path = ckpt.dir().join("config.json");
    let gqa = "ONNX Runtime's GroupQueryAttention";
    if !head_size.is_multiple_of(16) {
        return Err(OnnxError::Config {
            path,
            field: "hidden_size",
            msg: format!(
                "head_dim {head_size} (hidden_size {} / num_attention_heads {}) is not a multiple of 16, which \
                 {gqa} needs for its rotary embedding",
                c.hidden_size, c.num_attention_heads
            ),
        });
    }
    if !width.is_multiple_of(8) || width > head_size / 16 * 8 {
        return Err(OnnxError::Config {
            path,
            field: "partial_rotary_factor",
            msg: format!(
                "{} with head_dim {head_size} gives rotary_dim {}, so cos/sin caches {width} wide; {gqa} needs \
                 that width (rotary_dim / 2) to be a multiple of 8 and at most head_dim / 2 = {}",
                c.partial_rotary_factor,
                c.rotary_dim(),
                head_size / 2
            ),
        });
    }
    Ok(())
}

/// The graph for `plan` (no weights are read).
pub fn layout(ckpt: &Model, opts: &ExportOptions, plan: &QuantPlan) -> Result<GraphLayout> {
    let mut forms = BTreeMap::new();
    for entry in plan.entries.iter().filter(|e| e.role.is_matmul()) {
        let form = match entry.scheme {
            Scheme::F32 | Scheme::F16 | Scheme::Keep => LinearForm::Float,
            Scheme::NBits(p) if opts.qdq => {
                if p.bits != 4 {
                    return Err(OnnxError::UnsupportedScheme {
                        tensor: entry.name.clone(),
                        scheme: format!(
                            "{}-bit Q/DQ (only 4-bit DequantizeLinear is written)",
                            p.bits
                        ),
                    });
                }
                LinearForm::Qdq(p)
            }
            Scheme::NBits(p) => LinearForm::NBits(p),
            Scheme::Nncf { .. } => {
                return Err(OnnxError::UnsupportedScheme {
                    tensor: entry.name.clone(),
                    scheme: format!("{:?}", entry.scheme),
                });
            }
        };
        forms.insert(entry.role, form);
    }
    // Tied embeddings: the plan may have no LmHead entry; lm_head then follows the precision.
    let default_form = match opts.precision {
        Precision::Int4 => None,
        Precision::Fp16 | Precision::Fp32 => Some(LinearForm::Float),
    };
    for role in Role::all_for(ckpt.config())
        .into_iter()
        .filter(Role::is_matmul)
    {
        if let std::collections::btree_map::Entry::Vacant(slot) = forms.entry(role) {
            let Some(f) = default_form else {
                return Err(OnnxError::UnsupportedScheme {
                    tensor: role.name(),
                    scheme: "no plan entry".into(),
                });
            };
            slot.insert(f);
        }
    }
    let form_for = |role: Role| forms[&role];
    Ok(graph::build(ckpt.config(), opts, &form_for))
}

/// Export `ckpt` to `output` (which must not exist, or be an empty folder), built in an oxport-io [`Staging`]
/// folder. `reporter` sees the initializers written; `cancel` is checked between tensors, and a cancelled export
/// returns [`OnnxError::Cancelled`] with its staging folder removed.
pub fn export(
    ckpt: &Model,
    opts: &ExportOptions,
    output: &Path,
    reporter: &dyn Reporter,
    cancel: &CancelToken,
) -> Result<ExportSummary> {
    if output.exists() {
        let empty = output.is_dir()
            && std::fs::read_dir(output)
                .map_err(io(output))?
                .next()
                .is_none();
        if !empty {
            return Err(OnnxError::OutputExists(output.to_path_buf()));
        }
    }
    let plan = plan(ckpt, opts)?;
    let layout = layout(ckpt, opts, &plan)?;
    // The tokenizer and chat template are copied as they are: refuse ones onnxruntime-genai could not load.
    oxport_hf::check_side_files(ckpt.dir())?;
    cancel.check(None)?;

    let staging = Staging::create(output, CommitPolicy::RequireEmpty)?;
    let dir = staging.path();
    // The checkpoint's digests for the manifest, computed beside the export.
    let model = opts
        .model_arg
        .clone()
        .unwrap_or_else(|| ckpt.dir().display().to_string());
    let source = oxport_io::Source::spawn(ckpt.dir(), &model);
    let initializers = write_weights(ckpt, opts, &layout, dir, reporter, cancel)?;
    reporter.report(Event::Begin {
        stage: "writing model.onnx, genai_config.json, tokenizer files",
        total: 0,
        bytes: false,
    });
    let n_init = initializers.len();
    let n_nodes = layout.nodes.len();
    write_model(dir, layout, initializers)?;

    let config = genai_config(ckpt.config(), ckpt.dir(), opts, MODEL_FILE)?;
    let path = dir.join(GENAI_CONFIG_FILE);
    std::fs::write(&path, to_pretty_json(&config)?).map_err(io(&path))?;
    for name in COPIED_FILES {
        let src = ckpt.dir().join(name);
        if src.is_file() {
            let dst = dir.join(name);
            std::fs::copy(&src, &dst).map_err(io(&dst))?;
        }
    }

    write_manifest(source.join()?, opts, &plan, dir)?;
    let files: BTreeMap<String, u64> = staging.files()?.into_iter().collect();
    cancel.check(Some(dir))?;
    staging.commit()?;
    reporter.report(Event::End);
    Ok(ExportSummary {
        output: output.to_path_buf(),
        files,
        initializers: n_init,
        nodes: n_nodes,
    })
}

/// Stream every weight of `layout.weight_order` into `model.onnx.data`.
fn write_weights(
    ckpt: &Model,
    opts: &ExportOptions,
    layout: &GraphLayout,
    dir: &Path,
    reporter: &dyn Reporter,
    cancel: &CancelToken,
) -> Result<Vec<TensorProto>> {
    let c = ckpt.config();
    let io_dtype = opts.io_dtype();
    let total = initializer_count(layout);
    reporter.report(Event::stage("initializers", total as u64));
    let mut data = external::create(dir, DATA_FILE)?;
    let mut awq = crate::awq::Awq::new(layout, opts.awq, opts.awq_stats.clone());
    let mut out = Vec::with_capacity(total);
    let written = |name: &str| reporter.report(Event::item(name));
    let emit =
        |data: &mut BlobWriter, out: &mut Vec<TensorProto>, init: Initializer| -> Result<()> {
            let start = match init.bytes {
                Payload::Bytes(bytes) => data.append_owned(bytes)?,
                Payload::F32(values) => data.append(bytemuck::cast_slice(&values))?,
            };
            out.push(external::initializer(
                data, DATA_FILE, &init.name, init.elem, &init.dims, start,
            ));
            written(&init.name);
            Ok(())
        };
    for item in &layout.weight_order {
        // Between tensors: the one place an export stops when cancelled (its staging folder goes with the guard).
        cancel.check(Some(dir))?;
        match item {
            WeightItem::Embedding { name } => {
                let t = write_float(
                    ckpt,
                    &mut data,
                    Role::Embedding,
                    name,
                    io_dtype,
                    false,
                    0..c.vocab_size,
                )?;
                written(name);
                out.push(t);
            }
            WeightItem::RopeCaches | WeightItem::ConcatRopeCaches => {
                let concat = matches!(item, WeightItem::ConcatRopeCaches);
                for init in rope_initializers(c, concat, io_dtype) {
                    emit(&mut data, &mut out, init)?;
                }
            }
            WeightItem::Norm(n) => {
                let w = read_checked(ckpt, n.role)?;
                let init = Initializer {
                    name: n.name.clone(),
                    elem: io_dtype.onnx(),
                    dims: vec![w.len()],
                    bytes: io_payload(io_dtype, w),
                };
                emit(&mut data, &mut out, init)?;
            }
            WeightItem::Linear(spec) => {
                let inits = match spec.form {
                    // Row-independent blocks: quantize straight from the mapped BF16/F16/F32 rows (decoded one row
                    // at a time inside the kernel), keep only the packed output.
                    LinearForm::NBits(p) => {
                        let view = checked_view(ckpt, spec.role)?;
                        let q = match awq.rows(ckpt, spec)? {
                            Some(w) => quantize_nbits_f32(spec, &w, &p, data.buffer())?,
                            None => quantize_nbits_view(spec, &view, &p, data.buffer())?,
                        };
                        release_after(ckpt, spec.role, &spec.rows);
                        nbits_initializers(&spec.initializer_names(), q, &p)
                    }
                    // `make_matmul_float` stores `weight.T` ([K, N]): converted and transposed straight from the
                    // mapped rows, streamed in blocks of output rows.
                    LinearForm::Float => {
                        let name = spec.initializer_names().remove(0);
                        let t = write_float(
                            ckpt,
                            &mut data,
                            spec.role,
                            &name,
                            io_dtype,
                            true,
                            spec.rows.clone(),
                        )?;
                        written(&name);
                        out.push(t);
                        continue;
                    }
                    // Q/DQ quantizes the whole [N, K] matrix, then repacks it transposed.
                    LinearForm::Qdq(_) => {
                        let mut w = Vec::with_capacity(spec.rows.len() * spec.k);
                        for_row_chunks(ckpt, spec.role, spec.rows.clone(), |chunk| {
                            w.extend_from_slice(chunk);
                            Ok(())
                        })?;
                        linear_initializers(spec, &w, io_dtype)?
                    }
                };
                for init in inits {
                    emit(&mut data, &mut out, init)?;
                }
            }
        }
    }
    data.finish()?;
    reporter.report(Event::End);
    Ok(out)
}

/// Initializers `write_weights` writes for `layout` (its progress total).
fn initializer_count(layout: &GraphLayout) -> usize {
    layout
        .weight_order
        .iter()
        .map(|w| match w {
            WeightItem::Embedding { .. } | WeightItem::Norm(_) => 1,
            WeightItem::RopeCaches | WeightItem::ConcatRopeCaches => 2,
            WeightItem::Linear(l) => l.initializer_names().len(),
        })
        .sum()
}

/// The cos and sin caches in the I/O dtype: one factor set, or (`concat`, LongRoPE) the short factors' rows up to
/// `original_max_position_embeddings` followed by the long factors' rows up to `max_position_embeddings`.
fn rope_initializers(c: &Phi3Config, concat: bool, io_dtype: IoDtype) -> [Initializer; 2] {
    let r = if concat {
        let mut short = rope_caches(c, Some(false), c.original_max_position_embeddings);
        let long = rope_caches(c, Some(true), c.max_position_embeddings);
        short.cos.extend(long.cos);
        short.sin.extend(long.sin);
        short.rows += long.rows;
        short
    } else {
        rope_caches(c, None, c.max_position_embeddings)
    };
    [(COS_CACHE, r.cos), (SIN_CACHE, r.sin)].map(|(name, values)| Initializer {
        name: name.to_string(),
        elem: io_dtype.onnx(),
        dims: vec![r.rows, r.half_dim],
        bytes: io_payload(io_dtype, values),
    })
}

/// Rows decoded per chunk: about 4 Mi values (16 MiB of f32).
const CHUNK_VALUES: usize = 4 << 20;

/// Output bytes converted per chunk of a float initializer (then queued for the writer thread). Small enough that
/// the writer copies it while it is still in the L3 cache, and peak memory stays low.
const FLOAT_CHUNK_BYTES: usize = 4 << 20;

/// Append rows `rows` of `role` (`[rows, k]` in the checkpoint) as the float initializer `name` of shape
/// `[rows, k]` in the I/O dtype, or `[k, rows]` transposed when `transpose`: converted straight from the mapped BF16/F16/F32
/// bytes in parallel (oxport-quant's [`float_bytes_into`](oxport_quant::float_bytes_into), the same f32→f16
/// rounding as numpy), chunk by chunk into reused buffers that the writer thread writes while the next chunk is
/// converted. NaN/Inf is refused with oxport-hf's error; the tensor's pages are dropped after its last rows.
fn write_float(
    ckpt: &Model,
    data: &mut BlobWriter,
    role: Role,
    name: &str,
    io_dtype: IoDtype,
    transpose: bool,
    rows: std::ops::Range<usize>,
) -> Result<TensorProto> {
    let view = checked_view(ckpt, role)?;
    let (n, k) = (rows.len(), view.cols());
    let source = oxport_quant::Rows::Encoded {
        bytes: view.rows_bytes(rows.clone()),
        dtype: view.info.dtype,
    };
    let dtype = match io_dtype {
        IoDtype::F32 => oxport_quant::FloatDtype::F32,
        IoDtype::F16 => oxport_quant::FloatDtype::F16,
    };
    let (height, width) = if transpose { (k, n) } else { (n, k) };
    // Whole blocks of the kernel's 64-column transpose tiles per chunk, at least 4 of them so both cores work
    // on the widest matrix (lm_head).
    let chunk_rows = (FLOAT_CHUNK_BYTES / (width * dtype.size_bytes()))
        .max(1)
        .next_multiple_of(64)
        .max(256);
    let start = data.begin((height * width * dtype.size_bytes()) as u64)?;
    let mut row0 = 0;
    while row0 < height {
        let row1 = (row0 + chunk_rows).min(height);
        let mut buf = data.buffer();
        if let Err(e) =
            oxport_quant::float_bytes_into(source, n, k, dtype, transpose, row0..row1, &mut buf)
        {
            return Err(match e {
                // Report NaN/Inf as oxport-hf does, counted over all the rows read (file, tensor, flat index).
                oxport_quant::QuantError::NonFinite { .. } => {
                    match view.check_finite_rows(rows.clone()) {
                        Err(e) => e.into(),
                        Ok(()) => unreachable!("the kernel found NaN/Inf in these rows"),
                    }
                }
                e => OnnxError::Quant {
                    tensor: name.to_string(),
                    source: Box::new(e.for_tensor(&view.info.name)),
                },
            });
        }
        data.write_owned(buf)?;
        row0 = row1;
    }
    release_after(ckpt, role, &rows);
    Ok(external::initializer(
        data,
        DATA_FILE,
        name,
        io_dtype.onnx(),
        &[height, width],
        start,
    ))
}

/// Decode rows `rows` of `role` to f32 in chunks of whole rows, refusing NaN/Inf with oxport-hf's error (which
/// names the file, tensor and flat index), then drop the tensor's mapped pages.
fn for_row_chunks(
    ckpt: &Model,
    role: Role,
    rows: std::ops::Range<usize>,
    mut f: impl FnMut(&[f32]) -> Result<()>,
) -> Result<()> {
    let view = checked_view(ckpt, role)?;
    let cols = view.cols();
    let chunk_rows = (CHUNK_VALUES / cols.max(1)).max(1);
    let mut buf = vec![0f32; chunk_rows.min(rows.len()) * cols];
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + chunk_rows).min(rows.end);
        let chunk = &mut buf[..(end - start) * cols];
        view.rows_f32(start..end, chunk);
        if let Some(i) = chunk.iter().position(|v| !v.is_finite()) {
            let count = chunk.iter().filter(|v| !v.is_finite()).count();
            return Err(oxport_hf::Error::NonFinite {
                path: view.path.to_path_buf(),
                tensor: view.info.name.clone(),
                count,
                first: start * cols + i,
            }
            .into());
        }
        f(chunk)?;
        start = end;
    }
    release_after(ckpt, role, &rows);
    Ok(())
}

/// The view of `role`, its shape checked against the config.
fn checked_view(ckpt: &Model, role: Role) -> Result<oxport_hf::TensorView<'_>> {
    let expected = role.expected_shape(ckpt.config());
    let view = ckpt
        .view(role)
        .ok_or_else(|| oxport_hf::Error::MissingTensors {
            dir: ckpt.dir().to_path_buf(),
            names: vec![role.name()],
        })?;
    if view.info.shape != expected {
        return Err(OnnxError::Shape {
            tensor: view.info.name.clone(),
            actual: view.info.shape.clone(),
            expected,
        });
    }
    Ok(view)
}

/// Drop `role`'s mapped pages once its last rows were read (a split weight, e.g. qkv read as q, k and v row
/// ranges in order, keeps its pages until the last range, so they are not faulted in again).
fn release_after(ckpt: &Model, role: Role, rows: &std::ops::Range<usize>) {
    let total = role.expected_shape(ckpt.config())[0];
    if rows.end >= total {
        ckpt.release(role);
    }
}

/// Decode `role` to f32 (NaN/Inf refused by oxport-hf) and check its shape against the config.
fn read_checked(ckpt: &Model, role: Role) -> Result<Vec<f32>> {
    let expected = role.expected_shape(ckpt.config());
    if let Some(view) = ckpt.view(role)
        && view.info.shape != expected
    {
        return Err(OnnxError::Shape {
            tensor: view.info.name.clone(),
            actual: view.info.shape.clone(),
            expected,
        });
    }
    Ok(ckpt.read_f32(role)?)
}

/// The ModelProto header the builder writes (`Model.__init__`), with our producer.
fn write_model(dir: &Path, layout: GraphLayout, initializers: Vec<TensorProto>) -> Result<()> {
    let graph = GraphProto {
        node: layout.nodes,
        name: Some("main_graph".into()),
        initializer: initializers,
        input: layout.inputs,
        output: layout.outputs,
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            },
            OperatorSetIdProto {
                domain: Some(graph::MS_DOMAIN.into()),
                version: Some(1),
            },
        ],
        producer_name: Some("oxport".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    let bytes = model.encode_to_vec();
    if bytes.len() > i32::MAX as usize {
        return Err(OnnxError::TooLarge { bytes: bytes.len() });
    }
    let path = dir.join(MODEL_FILE);
    std::fs::write(&path, bytes).map_err(io(&path))
}
