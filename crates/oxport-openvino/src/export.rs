//! The export folder as `optimum-cli export openvino` writes it (docs/openvino-ir.md §1), written into an
//! oxport-io staging folder beside the output and renamed (merged) into place at the end: a failed or cancelled
//! export leaves nothing.

use std::path::{Path, PathBuf};

use oxport_arch::Model;
use serde_json::{Value, json};

use oxport_io::{CancelToken, CommitPolicy, Reporter, Staging};

use crate::error::{Error, Result};
use crate::ir::RtInfo;
use crate::phi3;
use crate::plan::{NncfRecord, Plan, WeightFormat};

pub const MODEL_XML: &str = "openvino_model.xml";
pub const MODEL_BIN: &str = "openvino_model.bin";

/// What was written.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub output: PathBuf,
    /// (file name, bytes), sorted by name.
    pub files: Vec<(String, u64)>,
}

/// Export `ckpt` under `plan` into `output`, built in an oxport-io [`Staging`] folder and merged into an existing
/// output folder as optimum-cli does. `model_arg` is the `--model` string as given (recorded in
/// `openvino_config.json` where optimum records the tokenizer source). `reporter` sees the weights written;
/// `cancel` is checked between weights, and a cancelled export returns [`Error::Cancelled`] with its staging
/// folder removed.
pub fn export(
    ckpt: &Model,
    plan: &Plan,
    output: &Path,
    model_arg: &str,
    reporter: &dyn Reporter,
    cancel: &CancelToken,
) -> Result<ExportSummary> {
    export_with(ckpt, plan, output, model_arg, reporter, cancel, None)
}

/// Files another crate writes into the export's temporary folder (its argument) before any weight: the CLI passes
/// oxport-ov-tokenizer's `openvino_tokenizer`/`openvino_detokenizer` converter, so this crate knows nothing of
/// tokenizers. An error fails the export before any weight is written and leaves nothing behind.
pub type ExtraFiles<'a> =
    &'a dyn Fn(&Path) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// [`export()`], with `extra` files written into the export folder first (see [`ExtraFiles`]).
pub fn export_with(
    ckpt: &Model,
    plan: &Plan,
    output: &Path,
    model_arg: &str,
    reporter: &dyn Reporter,
    cancel: &CancelToken,
    extra: Option<ExtraFiles<'_>>,
) -> Result<ExportSummary> {
    if output.is_file() {
        return Err(Error::OutputExists {
            path: output.to_path_buf(),
        });
    }
    // The tokenizer files and chat template are copied (and converted): refuse ones a runtime could not load before
    // anything is written.
    oxport_hf::check_side_files(ckpt.dir())?;
    if output.file_name().is_none() {
        return Err(Error::Options(format!(
            "output {} has no folder name",
            output.display()
        )));
    }
    cancel.check(None)?;
    let staging = Staging::create(output, CommitPolicy::MergeInto)?;
    let dir = staging.path();

    if let Some(extra) = extra {
        extra(dir).map_err(Error::ExtraFiles)?;
    }
    // The checkpoint's digests for the manifest, computed beside the export.
    let source = oxport_io::Source::spawn(ckpt.dir(), model_arg);
    // The whole graph first (no weight read), then the weights streamed in its order, then the XML.
    let mut graph = phi3::build(ckpt, plan)?;
    graph.set_rt_info(model_rt_info(plan));
    phi3::stream(
        &mut graph,
        ckpt,
        plan,
        &dir.join(MODEL_BIN),
        reporter,
        cancel,
    )?;
    graph.write_xml(&dir.join(MODEL_XML))?;
    write_side_files(ckpt, plan, dir, model_arg)?;

    write_manifest(source.join()?, plan, dir)?;
    let files = staging.files()?;
    let merged = output.exists();
    cancel.check(Some(dir))?;
    staging.commit()?;
    // A compressed export's openvino_config.json left from an earlier run would describe the wrong model.
    let stale = output.join("openvino_config.json");
    if merged && plan.nncf.is_none() && stale.is_file() {
        std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
    }
    Ok(ExportSummary {
        output: output.to_path_buf(),
        files,
    })
}

/// `oxport_manifest.json`: the checkpoint (as `--model` gave it, with its files' digests), the options NNCF records
/// and the plan.
fn write_manifest(source: oxport_io::Source, plan: &Plan, dir: &Path) -> Result<()> {
    let options = json!({
        "weight_format": plan.weight_format.name(),
        "nncf": plan.nncf,
    });
    let plan_json = serde_json::to_value(&plan.quant)
        .map_err(|e| Error::Graph(format!("{}: {e}", oxport_io::MANIFEST_FILE)))?;
    oxport_io::Manifest::new("openvino", source, options, plan_json).write(dir)?;
    Ok(())
}

/// The IR [`export()`] writes for `ckpt` under `plan`, as text ([`crate::ir::Graph::to_text`]): every op with its
/// name, attributes, element types and shapes, small constants' values, and each weight constant's source (which
/// tensor, which part of its compressed form) — built from the checkpoint's header alone, no weight read.
pub fn graph_text(ckpt: &Model, plan: &Plan) -> Result<String> {
    let mut graph = phi3::build(ckpt, plan)?;
    graph.set_rt_info(model_rt_info(plan));
    Ok(graph.to_text())
}

/// Python `repr` of a bool, as NNCF writes its parameters.
fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Model-level rt_info (docs/openvino-ir.md §7): NNCF's `weight_compression` record for compressed formats and
/// optimum's `runtime_options`. Version entries of tools oxport does not run (OpenVINO, NNCF, optimum, torch) are not
/// claimed; an `oxport` entry names the writer instead.
fn model_rt_info(plan: &Plan) -> Vec<RtInfo> {
    let mut rt = Vec::new();
    if let Some(NncfRecord {
        mode,
        ratio,
        group_size,
        all_layers,
        backup_mode,
        group_size_fallback,
        awq,
        sensitivity_metric,
        scale_estimation,
        ..
    }) = &plan.nncf
    {
        let advanced = format!(
            "{{'statistics_path': None, 'lora_adapter_rank': 256, 'group_size_fallback_mode': '{group_size_fallback}', \
             'min_adjusted_group_size': 32, 'awq_params': {{'subset_size': 32, 'percent_to_apply': 0.002, 'alpha_min': 0.0, \
             'alpha_max': 1.0, 'steps': 100, 'prefer_data_aware_scaling': True}}, 'scale_estimation_params': \
             {{'subset_size': 64, 'initial_steps': 5, 'scale_steps': 5, 'weight_penalty': -1.0}}, 'gptq_params': \
             {{'damp_percent': 0.1, 'block_size': 128, 'subset_size': 128}}, 'lora_correction_params': {{'adapter_rank': 8, \
             'num_iterations': 3, 'apply_regularization': True, 'subset_size': 128, 'use_int8_adapters': True}}, \
             'backend_params': {{}}, 'codebook': None, 'adaptive_codebook_params': {{'value_type': 'f8e4m3', \
             'across_blocks': False, 'num_elements': 16}}}}"
        );
        rt.push(RtInfo::group(
            "nncf",
            vec![RtInfo::group(
                "weight_compression",
                vec![
                    RtInfo::value("advanced_parameters", advanced),
                    RtInfo::value("all_layers", py_bool(*all_layers)),
                    RtInfo::value("awq", py_bool(*awq)),
                    RtInfo::value("backup_mode", *backup_mode),
                    RtInfo::value("compression_format", "dequantize"),
                    RtInfo::value("gptq", "False"),
                    RtInfo::value("group_size", group_size.to_string()),
                    RtInfo::value("ignored_scope", "[]"),
                    RtInfo::value("lora_correction", "False"),
                    RtInfo::value("mode", *mode),
                    RtInfo::value("ratio", format!("{ratio:?}")),
                    RtInfo::value("scale_estimation", py_bool(*scale_estimation)),
                    RtInfo::value("sensitivity_metric", *sensitivity_metric),
                ],
            )],
        ));
    }
    rt.push(RtInfo::group(
        "oxport",
        vec![RtInfo::value("version", env!("CARGO_PKG_VERSION"))],
    ));
    let mut options = vec![RtInfo::value("ACTIVATIONS_SCALE_FACTOR", "8.0")];
    if plan.weight_format == WeightFormat::Fp16 {
        options.push(RtInfo::value("KV_CACHE_PRECISION", "f16"));
    }
    rt.push(RtInfo::group("runtime_options", options));
    rt
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Graph(format!("{}: {e}", path.display())))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn copy_if_present(from_dir: &Path, to_dir: &Path, name: &str) -> Result<bool> {
    let from = from_dir.join(name);
    if !from.is_file() {
        return Ok(false);
    }
    let to = to_dir.join(name);
    std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
    Ok(true)
}

/// config.json, generation_config.json, tokenizer files, chat template and (int4/int8) openvino_config.json.
fn write_side_files(ckpt: &Model, plan: &Plan, dir: &Path, model_arg: &str) -> Result<()> {
    let src = ckpt.dir();
    // config.json is copied as is: transformers and optimum-intel read it back unchanged (optimum-cli re-serialises it
    // through transformers, which only renames legacy keys).
    copy_if_present(src, dir, "config.json")?;
    if !copy_if_present(src, dir, "generation_config.json")? {
        let cfg = ckpt.config();
        let mut g = serde_json::Map::new();
        g.insert("_from_model_config".into(), json!(true));
        if let Some(bos) = cfg.bos_token_id {
            g.insert("bos_token_id".into(), json!(bos));
        }
        match cfg.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                g.insert("eos_token_id".into(), json!(one));
            }
            many => {
                g.insert("eos_token_id".into(), json!(many));
            }
        }
        if let Some(pad) = cfg.pad_token_id {
            g.insert("pad_token_id".into(), json!(pad));
        }
        write_json(&dir.join("generation_config.json"), &Value::Object(g))?;
    }
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "added_tokens.json",
    ] {
        copy_if_present(src, dir, name)?;
    }
    // transformers 5 keeps the chat template in chat_template.jinja; take it from there or from tokenizer_config.json.
    if !copy_if_present(src, dir, "chat_template.jinja")? {
        let tc = src.join("tokenizer_config.json");
        if tc.is_file() {
            let text = std::fs::read_to_string(&tc).map_err(|e| Error::io(&tc, e))?;
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(t) = v.get("chat_template").and_then(Value::as_str)
            {
                let out = dir.join("chat_template.jinja");
                std::fs::write(&out, t).map_err(|e| Error::io(&out, e))?;
            }
        }
    }
    if let Some(record) = &plan.nncf {
        let (dataset, num_samples) = match &record.dataset {
            Some(d) => (json!(d.name), json!(d.num_samples)),
            None => (Value::Null, Value::Null),
        };
        // optimum-intel writes this for weight-compressed exports; the compression parameters live in the IR's
        // rt_info, not here (docs/openvino-ir.md §1).
        let v = json!({
            "dtype": "",
            "input_info": null,
            "optimum_version": "2.3.0",
            "output_attentions": false,
            "quantization_config": {
                "_dataset_kwargs": {},
                "dataset": dataset,
                "default_config": {"quant_method": "default"},
                "ignored_scope": null,
                "num_samples": num_samples,
                "processor": null,
                "quantization_configs": {},
                "tokenizer": model_arg,
            },
            "save_onnx_model": false,
            "transformers_version": "5.5.4",
        });
        write_json(&dir.join("openvino_config.json"), &v)?;
    }
    Ok(())
}
