//! ONNX Runtime through the `ort` crate, loaded at run time from the PyPI wheel (`docs/runtimes.md` §3).
//!
//! The LLM session speaks the onnxruntime-genai decoder interface (`docs/onnx-genai.md` §1.7): `input_ids`,
//! `attention_mask` covering past + new tokens, `past_key_values.{i}.key/value` `[1, kv_heads, past, head_size]` in,
//! `logits` and `present.{i}.key/value` out; the names come from `genai_config.json` when there is one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::{LlmSession, Precision};
use crate::error::{Error, Result};
use crate::runtime::{Runtime, find_library, not_found};

/// ONNX Runtime execution providers oxport knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum OrtDevice {
    Cpu,
    Cuda,
    DirectMl,
    OpenVinoEp,
}

impl OrtDevice {
    pub const ALL: [OrtDevice; 4] = [
        OrtDevice::Cpu,
        OrtDevice::Cuda,
        OrtDevice::DirectMl,
        OrtDevice::OpenVinoEp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OrtDevice::Cpu => "cpu",
            OrtDevice::Cuda => "cuda",
            OrtDevice::DirectMl => "directml",
            OrtDevice::OpenVinoEp => "openvino-ep",
        }
    }

    pub fn provider(self) -> &'static str {
        match self {
            OrtDevice::Cpu => ep::CPU::NAME,
            OrtDevice::Cuda => ep::CUDA::NAME,
            OrtDevice::DirectMl => ep::DirectML::NAME,
            OrtDevice::OpenVinoEp => ep::OpenVINO::NAME,
        }
    }
}

struct Loaded {
    env: ort::environment::Environment,
    library: PathBuf,
}

static ENV: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

fn loaded() -> Result<&'static Loaded> {
    ENV.get_or_init(|| {
        let library = find_library(Runtime::OnnxRuntime).map_err(not_found)?;
        let env = ort::init_from(&library)
            .map_err(|e| format!("{}: {e}", library.display()))?
            .with_name("oxport")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Loaded { env, library })
    })
    .as_ref()
    .map_err(|msg| Error::Runtime {
        runtime: "ONNX Runtime",
        msg: msg.clone(),
    })
}

/// The loaded library and its version (from the wheel's versioned file name, else the build info).
pub fn version() -> Result<(PathBuf, String)> {
    let l = loaded()?;
    let name = l
        .library
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let version = name
        .split_once(".so.")
        .map(|(_, v)| v.to_string())
        .or_else(|| {
            let info = ort::info();
            let at = info.find("git-branch=rel-")? + "git-branch=rel-".len();
            Some(info[at..].split([',', ' ']).next()?.to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Ok((l.library.clone(), version))
}

/// Whether `device` can run here; `Err(reason)` when it cannot.
pub fn probe(device: OrtDevice) -> Result<(), String> {
    loaded().map_err(|e| e.to_string())?;
    let listed = match device {
        OrtDevice::Cpu => return Ok(()),
        OrtDevice::Cuda => ep::CUDA::is_available(),
        OrtDevice::DirectMl => ep::DirectML::is_available(),
        OrtDevice::OpenVinoEp => ep::OpenVINO::is_available(),
    }
    .map_err(|e| e.to_string())?;
    if !listed {
        let hint = match device {
            OrtDevice::Cuda => "install onnxruntime-gpu (CUDA 13) instead of onnxruntime",
            OrtDevice::DirectMl => "DirectML is a Windows-only build (onnxruntime-directml)",
            OrtDevice::OpenVinoEp => "install onnxruntime-openvino instead of onnxruntime",
            OrtDevice::Cpu => "",
        };
        return Err(format!(
            "{} is not in this build's providers ({hint})",
            device.provider()
        ));
    }
    // Listed: registering it loads the provider library and its dependencies (CUDA, a GPU), which can still fail.
    builder(device, Precision::F32Exact)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn builder(device: OrtDevice, precision: Precision) -> Result<SessionBuilder> {
    let l = loaded()?;
    let mut b = Session::builder(&l.env)
        .map_err(Error::ort)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(Error::ort)?;
    if precision == Precision::F32Exact {
        // DQ(int4)+MatMul is fused to MatMulNBits with int8 activations unless this is 0 (`docs/runtimes.md` §3).
        b = b
            .with_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
            .map_err(Error::ort)?;
    }
    let eps = match device {
        OrtDevice::Cpu => vec![],
        OrtDevice::Cuda => vec![ep::CUDA::default().build().error_on_failure()],
        OrtDevice::DirectMl => vec![ep::DirectML::default().build().error_on_failure()],
        OrtDevice::OpenVinoEp => vec![ep::OpenVINO::default().build().error_on_failure()],
    };
    if !eps.is_empty() {
        b = b.with_execution_providers(eps).map_err(Error::ort)?;
    }
    Ok(b)
}

/// Open any ONNX model on `device` (used for small models and by [`OrtLlm`]).
pub fn open(model: &Path, device: OrtDevice, precision: Precision) -> Result<Session> {
    builder(device, precision)?
        .commit_from_file(model)
        .map_err(|e| Error::Runtime {
            runtime: "ONNX Runtime",
            msg: format!("{}: {e}", model.display()),
        })
}

/// I/O names of a genai-layout decoder (`%d` stands for the layer index).
#[derive(Clone, Debug)]
pub struct GenaiNames {
    pub input_ids: String,
    pub attention_mask: String,
    pub position_ids: String,
    pub past_key: String,
    pub past_value: String,
    pub logits: String,
    pub present_key: String,
    pub present_value: String,
    /// `decoder.head_size` / `num_key_value_heads` from `genai_config.json`, for graphs whose KV inputs have
    /// symbolic dims (the builder's `kv_cache_dim`, `docs/onnx-genai.md` §1.7).
    pub head_size: Option<usize>,
    pub kv_heads: Option<usize>,
}

impl Default for GenaiNames {
    fn default() -> Self {
        GenaiNames {
            input_ids: "input_ids".into(),
            attention_mask: "attention_mask".into(),
            position_ids: "position_ids".into(),
            past_key: "past_key_values.%d.key".into(),
            past_value: "past_key_values.%d.value".into(),
            logits: "logits".into(),
            present_key: "present.%d.key".into(),
            present_value: "present.%d.value".into(),
            head_size: None,
            kv_heads: None,
        }
    }
}

impl GenaiNames {
    /// Names from `genai_config.json`'s `model.decoder.inputs/outputs`, defaults for what it leaves out.
    pub fn from_genai_config(config: &serde_json::Value) -> Self {
        let mut n = GenaiNames::default();
        let dec = &config["model"]["decoder"];
        let set = |slot: &mut String, v: &serde_json::Value| {
            if let Some(s) = v.as_str() {
                *slot = s.to_string();
            }
        };
        set(&mut n.input_ids, &dec["inputs"]["input_ids"]);
        set(&mut n.attention_mask, &dec["inputs"]["attention_mask"]);
        set(&mut n.position_ids, &dec["inputs"]["position_ids"]);
        set(&mut n.past_key, &dec["inputs"]["past_key_names"]);
        set(&mut n.past_value, &dec["inputs"]["past_value_names"]);
        set(&mut n.logits, &dec["outputs"]["logits"]);
        set(&mut n.present_key, &dec["outputs"]["present_key_names"]);
        set(&mut n.present_value, &dec["outputs"]["present_value_names"]);
        n.head_size = dec["head_size"].as_u64().map(|v| v as usize);
        n.kv_heads = dec["num_key_value_heads"].as_u64().map(|v| v as usize);
        n
    }
}

/// A KV tensor's values in the graph's dtype (f32 on CPU, f16 for the CUDA layout, `docs/onnx-genai.md` §1.7).
enum KvData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl KvData {
    fn empty(f16: bool) -> Self {
        if f16 {
            KvData::F16(Vec::new())
        } else {
            KvData::F32(Vec::new())
        }
    }

    fn take(&mut self, shape: Vec<usize>) -> Result<ort::session::SessionInputValue<'static>> {
        match self {
            KvData::F32(v) => tensor(shape, std::mem::take(v)),
            KvData::F16(v) => tensor(shape, std::mem::take(v)),
        }
    }

    fn clear(&mut self) {
        match self {
            KvData::F32(v) => v.clear(),
            KvData::F16(v) => v.clear(),
        }
    }
}

/// One KV pair of the decoder: names and `[kv_heads, head_size]`.
struct KvSlot {
    past_key: String,
    past_value: String,
    present_key: String,
    present_value: String,
    heads: usize,
    head_size: usize,
    key: KvData,
    value: KvData,
}

/// A genai-layout decoder on one device, with its KV cache held between calls.
pub struct OrtLlm {
    session: Session,
    names: GenaiNames,
    kv: Vec<KvSlot>,
    has_position_ids: bool,
    past: usize,
    vocab: usize,
}

impl OrtLlm {
    /// Open `model` and discover its layers and KV shapes from the session inputs.
    pub fn open(
        model: &Path,
        names: GenaiNames,
        device: OrtDevice,
        precision: Precision,
    ) -> Result<Self> {
        let session = open(model, device, precision)?;
        let bad = |msg: String| Error::Export {
            path: model.to_path_buf(),
            msg,
        };
        let input = |name: &str| session.inputs().iter().find(|o| o.name() == name);
        for required in [&names.input_ids, &names.attention_mask] {
            input(required).ok_or_else(|| bad(format!("model has no input {required:?}")))?;
        }
        let mut kv = Vec::new();
        for layer in 0.. {
            let pk = names.past_key.replace("%d", &layer.to_string());
            let Some(outlet) = input(&pk) else { break };
            let (ty, shape) = match outlet.dtype() {
                ValueType::Tensor { ty, shape, .. } => (*ty, shape.clone()),
                other => return Err(bad(format!("input {pk} is {other:?}, not a tensor"))),
            };
            let f16 = match ty {
                TensorElementType::Float32 => false,
                TensorElementType::Float16 => true,
                _ => {
                    return Err(bad(format!(
                        "input {pk} is {ty:?}; expected a float32 or float16 KV cache"
                    )));
                }
            };
            let dim = |i: usize, fallback: Option<usize>| match shape.get(i) {
                Some(&d) if d > 0 => Some(d as usize),
                _ => fallback,
            };
            let (Some(heads), Some(head_size), 4) =
                (dim(1, names.kv_heads), dim(3, names.head_size), shape.len())
            else {
                return Err(bad(format!(
                    "input {pk} has shape {:?}, expected [batch, kv_heads, past, head_size] (symbolic dims need \
                     num_key_value_heads / head_size in genai_config.json)",
                    &shape[..]
                )));
            };
            kv.push(KvSlot {
                past_value: names.past_value.replace("%d", &layer.to_string()),
                present_key: names.present_key.replace("%d", &layer.to_string()),
                present_value: names.present_value.replace("%d", &layer.to_string()),
                past_key: pk,
                heads,
                head_size,
                key: KvData::empty(f16),
                value: KvData::empty(f16),
            });
        }
        let vocab = session
            .outputs()
            .iter()
            .find(|o| o.name() == names.logits)
            .and_then(|o| match o.dtype() {
                ValueType::Tensor { shape, .. } => shape.last().copied(),
                _ => None,
            })
            .ok_or_else(|| bad(format!("model has no output {:?}", names.logits)))?;
        let has_position_ids = input(&names.position_ids).is_some();
        Ok(OrtLlm {
            session,
            names,
            kv,
            has_position_ids,
            past: 0,
            vocab: vocab.max(0) as usize,
        })
    }

    pub fn layers(&self) -> usize {
        self.kv.len()
    }
}

fn tensor<T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
    shape: Vec<usize>,
    data: Vec<T>,
) -> Result<ort::session::SessionInputValue<'static>> {
    Ok(Tensor::from_array((shape, data))
        .map_err(Error::ort)?
        .into_dyn()
        .into())
}

impl LlmSession for OrtLlm {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let n = ids.len();
        let total = self.past + n;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'static>)> = vec![
            (
                self.names.input_ids.clone(),
                tensor(vec![1, n], ids.iter().map(|&i| i as i64).collect())?,
            ),
            (
                self.names.attention_mask.clone(),
                tensor(vec![1, total], vec![1i64; total])?,
            ),
        ];
        if self.has_position_ids {
            let pos = (self.past as i64..total as i64).collect();
            inputs.push((self.names.position_ids.clone(), tensor(vec![1, n], pos)?));
        }
        for slot in &mut self.kv {
            let shape = vec![1, slot.heads, self.past, slot.head_size];
            inputs.push((slot.past_key.clone(), slot.key.take(shape.clone())?));
            inputs.push((slot.past_value.clone(), slot.value.take(shape)?));
        }
        let outputs = self.session.run(inputs).map_err(Error::ort)?;
        let take = |name: &str| -> Result<(Vec<i64>, KvData)> {
            let v = outputs
                .get(name)
                .ok_or_else(|| Error::ort(format!("no output {name:?}")))?;
            let err = |e: ort::Error| Error::ort(format!("{name}: {e}"));
            if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
                return Ok((shape.to_vec(), KvData::F32(data.to_vec())));
            }
            let (shape, data) = v.try_extract_tensor::<half::f16>().map_err(err)?;
            Ok((shape.to_vec(), KvData::F16(data.to_vec())))
        };
        let (shape, logits) = take(&self.names.logits)?;
        let logits = match logits {
            KvData::F32(v) => v,
            KvData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        };
        let (vocab, logits) = super::check_logits(&shape, n, &logits, &self.names.logits)?;
        for slot in &mut self.kv {
            for (name, dst) in [
                (&slot.present_key, &mut slot.key),
                (&slot.present_value, &mut slot.value),
            ] {
                let (shape, data) = take(name)?;
                let expected = vec![1, slot.heads, total, slot.head_size];
                if shape.iter().map(|&d| d as usize).collect::<Vec<_>>() != expected {
                    return Err(Error::Shape {
                        tensor: name.clone(),
                        expected,
                        got: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    });
                }
                *dst = data;
            }
        }
        self.vocab = vocab;
        self.past = total;
        Ok(logits)
    }

    fn reset(&mut self) -> Result<()> {
        for slot in &mut self.kv {
            slot.key.clear();
            slot.value.clear();
        }
        self.past = 0;
        Ok(())
    }

    fn position(&self) -> usize {
        self.past
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }
}
