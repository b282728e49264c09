//! The export folder as `optimum-cli export openvino` writes it (shared/docs/openvino-ir.md §1), written into a
//! temporary folder beside the output and renamed into place at the end: a failed export leaves nothing.

use std::path::{Path, PathBuf};

use oxport_arch::Model;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ir::RtInfo;
use crate::phi3::{self, Progress};
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

/// Removes the temporary folder unless the export succeeded.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub use oxport_quant::sink::temp_dir_for;

/// Export `ckpt` under `plan` into `output`. `model_arg` is the `--model` string as given (recorded in
/// `openvino_config.json` where optimum records the tokenizer source).
pub fn export(
    ckpt: &Model,
    plan: &Plan,
    output: &Path,
    model_arg: &str,
    progress: &dyn Progress,
) -> Result<ExportSummary> {
    export_with_tokenizer(ckpt, plan, output, model_arg, progress, true)
}

/// [`export()`], choosing whether `openvino_tokenizer`/`openvino_detokenizer` IRs are written (`tokenizer`, when the
/// checkpoint has a tokenizer.json; a tokenizer that cannot be converted exactly fails the export before any weight
/// is written: see [`crate::tokenizer`]).
pub fn export_with_tokenizer(
    ckpt: &Model,
    plan: &Plan,
    output: &Path,
    model_arg: &str,
    progress: &dyn Progress,
    tokenizer: bool,
) -> Result<ExportSummary> {
    if output.is_file() {
        return Err(Error::OutputExists {
            path: output.to_path_buf(),
        });
    }
    // The tokenizer files and chat template are copied (and converted): refuse ones a runtime could not load before
    // anything is written.
    oxport_hf::check_side_files(ckpt.dir())?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    if output.file_name().is_none() {
        return Err(Error::Options(format!(
            "output {} has no folder name",
            output.display()
        )));
    }
    let tmp_path = temp_dir_for(output);
    if tmp_path.exists() {
        std::fs::remove_dir_all(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
    }
    std::fs::create_dir(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
    let mut tmp = TempDir {
        path: tmp_path,
        keep: false,
    };

    if tokenizer && ckpt.dir().join("tokenizer.json").is_file() {
        crate::tokenizer::write_tokenizer_irs(ckpt.dir(), &tmp.path)
            .map_err(|e| Error::Options(e.to_string()))?;
    }
    let mut graph = phi3::build(ckpt, plan, &tmp.path.join(MODEL_BIN), progress)?;
    graph.set_rt_info(model_rt_info(plan));
    graph.finish(&tmp.path.join(MODEL_XML))?;
    write_side_files(ckpt, plan, &tmp.path, model_arg)?;

    let mut files = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&tmp.path)
        .map_err(|e| Error::io(&tmp.path, e))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(&tmp.path, e))?;
    names.sort();
    for name in &names {
        let p = tmp.path.join(name);
        files.push((
            name.clone(),
            std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len(),
        ));
    }

    if output.exists() {
        // Like optimum-cli, an existing folder receives the files (same names replaced, each by an atomic rename).
        for name in &names {
            let (from, to) = (tmp.path.join(name), output.join(name));
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        // A compressed export's openvino_config.json left from an earlier run would describe the wrong model.
        let stale = output.join("openvino_config.json");
        if plan.nncf.is_none() && stale.is_file() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    } else {
        std::fs::rename(&tmp.path, output).map_err(|e| Error::io(output, e))?;
        tmp.keep = true;
    }
    Ok(ExportSummary {
        output: output.to_path_buf(),
        files,
    })
}

/// Python `repr` of a bool, as NNCF writes its parameters.
fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Model-level rt_info (openvino-ir.md §7): NNCF's `weight_compression` record for compressed formats and
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
        // rt_info, not here (openvino-ir.md §1).
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
