//! `--npu` (an oxport extension; optimum-cli has no device option): the weight compression OpenVINO GenAI documents
//! for LLMs on Intel NPUs — `--weight-format int4 --sym --ratio 1.0` with `--group-size 128` (group-wise) or `-1`
//! (channel-wise) (`openvinotoolkit/openvino:docs/articles_en/openvino-workflow-generative/inference-with-genai/
//! inference-with-genai-on-npu.rst`) — and a refusal, before anything is read or written, of every option outside
//! it. Asymmetric int4 in particular fails deep inside the NPU compiler instead of being rejected
//! (openvinotoolkit/openvino#34450, openvinotoolkit/npu_compiler#303).
//!
//! The IR is the ordinary stateful export: the NPU plugin makes the shapes static itself (`NPUW_LLM`, set by
//! `openvinotoolkit/openvino.genai:src/cpp/src/utils.cpp` `update_npu_config`), so `--npu` changes no byte of what
//! the same optimum-cli flags give.

use crate::error::{Error, Result};
use crate::plan::{
    BackupPrecision, CompressionOptions, GroupSizeFallback, Plan, Scheme, WeightFormat,
};

/// The recipe: int4, symmetric, group 128, ratio 1.0 (NNCF's default ratio and optimum-cli's default group size,
/// left unset so that the options equal optimum-cli's for `--weight-format int4 --sym`).
pub fn recipe() -> CompressionOptions {
    CompressionOptions {
        sym: true,
        ..CompressionOptions::new(WeightFormat::Int4)
    }
}

fn refuse(msg: String) -> Result<()> {
    Err(Error::Options(format!("--npu: {msg}")))
}

/// Refuse options outside the NPU recipe, naming the flag.
pub fn check_options(opts: &CompressionOptions) -> Result<()> {
    if opts.weight_format != WeightFormat::Int4 {
        return refuse(format!(
            "--weight-format {}: Intel NPUs take LLM weights as int4 (OpenVINO GenAI's recipe: --weight-format int4 \
             --sym --ratio 1.0 --group-size 128 or -1)",
            opts.weight_format.name()
        ));
    }
    if !opts.sym {
        return refuse(
            "--weight-format int4 without --sym is asymmetric int4 (int4_asym), which the NPU compiler cannot \
             compile; add --sym"
                .into(),
        );
    }
    if let Some(r) = opts.ratio
        && r != 1.0
    {
        return refuse(format!(
            "--ratio {r}: OpenVINO GenAI requires --ratio 1.0 for NPU (every decoder MatMul in int4_sym, none left \
             at the int8 backup)"
        ));
    }
    if let Some(g) = opts.group_size
        && g != 128
        && g != -1
    {
        return refuse(format!(
            "--group-size {g}: the NPU takes group-wise --group-size 128 or channel-wise --group-size -1"
        ));
    }
    match opts.backup {
        None | Some(BackupPrecision::Int8Asym) => {}
        Some(other) => {
            // Unverified on NPU rather than known to fail: the recipe leaves the embedding and lm_head at NNCF's
            // default backup, int8_asym per channel, and nothing else is documented.
            let name = match other {
                BackupPrecision::None => "none",
                BackupPrecision::Int8Sym => "int8_sym",
                BackupPrecision::Int8Asym => unreachable!(),
            };
            return refuse(format!(
                "--backup-precision {name}: the NPU recipe keeps the embedding and lm_head at NNCF's default backup \
                 int8_asym; other backup modes are not part of what OpenVINO GenAI documents for NPU"
            ));
        }
    }
    if opts.all_layers {
        return refuse(
            "--all-layers would make the embedding and lm_head int4 too; the NPU recipe leaves them at the int8_asym \
             backup"
                .into(),
        );
    }
    if opts.group_size_fallback != GroupSizeFallback::Error {
        return refuse(
            "--group-size-fallback ignore/adjust would leave weights in the original precision or in other group \
             sizes; the NPU recipe has group 128 or -1 only"
                .into(),
        );
    }
    Ok(())
}

/// After planning: every weight is int4_sym (group 128 or per channel) or the int8_asym backup. Options that pass
/// [`check_options`] always give such a plan; this names the weight if one ever does not.
pub fn check_plan(plan: &Plan) -> Result<()> {
    use oxport_quant::NncfMode;
    for e in plan.weights() {
        match e.scheme {
            Scheme::Nncf {
                mode: NncfMode::Int4Sym,
                group_size: Some(128) | None,
            }
            | Scheme::Nncf {
                mode: NncfMode::Int8Asym,
                group_size: None,
            } => {}
            other => {
                return Err(Error::Options(format!(
                    "--npu: {} would be {}, outside the NPU recipe (int4_sym group 128 or per-channel, int8_asym \
                     backup)",
                    e.role,
                    other.label()
                )));
            }
        }
    }
    Ok(())
}
