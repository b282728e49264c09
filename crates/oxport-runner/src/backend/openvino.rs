//! OpenVINO through the `openvino` crate with runtime linking, the C library loaded from the PyPI wheel
//! (`docs/runtimes.md` §4). The LLM session speaks the optimum-cli stateful interface (`docs/openvino-ir.md` §2–3):
//! `input_ids`, `attention_mask` (past + new), `position_ids`, `beam_idx` in, `logits` out, the KV cache in the infer
//! request's state. The C API cannot reset state, so a new sequence gets a new infer request.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, RwPropertyKey, Shape, Tensor,
};

use super::{LlmSession, Precision};
use crate::error::{Error, Result};
use crate::runtime::{Runtime, find_library, not_found};

/// OpenVINO devices oxport validates on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum OvDevice {
    Cpu,
    Gpu,
    Npu,
}

impl OvDevice {
    pub const ALL: [OvDevice; 3] = [OvDevice::Cpu, OvDevice::Gpu, OvDevice::Npu];

    pub fn name(self) -> &'static str {
        match self {
            OvDevice::Cpu => "CPU",
            OvDevice::Gpu => "GPU",
            OvDevice::Npu => "NPU",
        }
    }

    fn device_type(self) -> DeviceType<'static> {
        match self {
            OvDevice::Cpu => DeviceType::CPU,
            OvDevice::Gpu => DeviceType::GPU,
            OvDevice::Npu => DeviceType::NPU,
        }
    }
}

static LIBRARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// Load `libopenvino_c` once per process (`openvino_sys::library::load_from`, which wants the file, not the folder).
fn load() -> Result<&'static PathBuf> {
    LIBRARY
        .get_or_init(|| {
            let path = find_library(Runtime::OpenVino).map_err(not_found)?;
            openvino_sys::library::load_from(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        })
        .as_ref()
        .map_err(|msg| Error::Runtime {
            runtime: "OpenVINO",
            msg: msg.clone(),
        })
}

/// A new core with the library loaded.
pub fn core() -> Result<Core> {
    load()?;
    Core::new().map_err(Error::ov)
}

/// The loaded library and the runtime's build number (e.g. `2026.4.1-22982-…`).
pub fn version() -> Result<(PathBuf, String)> {
    let path = load()?.clone();
    Ok((path, openvino::version().build_number))
}

/// Devices the runtime reports (`available_devices`, e.g. `["CPU"]`), with their full names.
pub fn available_devices() -> Result<Vec<(String, String)>> {
    let core = core()?;
    let devices = core.available_devices().map_err(Error::ov)?;
    Ok(devices
        .iter()
        .map(|d| {
            let full = core
                .get_property(d, &openvino::PropertyKey::DeviceFullName)
                .unwrap_or_default();
            (d.as_ref().to_string(), full)
        })
        .collect())
}

/// Whether `device` can run here; `Err(reason)` when it cannot.
pub fn probe(device: OvDevice) -> std::result::Result<String, String> {
    let devices = available_devices().map_err(|e| e.to_string())?;
    let name = device.name();
    // `available_devices` lists `GPU.0`, `GPU.1` when there are several.
    if let Some((_, full)) = devices
        .iter()
        .find(|(d, _)| d == name || d.starts_with(&format!("{name}.")))
    {
        return Ok(full.clone());
    }
    let listed: Vec<&str> = devices.iter().map(|(d, _)| d.as_str()).collect();
    let why = match device {
        OvDevice::Cpu => "the CPU plugin did not load".to_string(),
        OvDevice::Gpu => {
            "no Intel GPU (or no Intel compute runtime / OpenCL driver) found".to_string()
        }
        OvDevice::Npu => "no Intel NPU (or no NPU driver, /dev/accel) found".to_string(),
    };
    Err(format!(
        "{name} is not in available_devices {listed:?}: {why}"
    ))
}

/// Apply the f32-exact settings to `device` on `core` (the high-level API compiles with the core's properties).
fn configure(core: &mut Core, device: OvDevice, precision: Precision) -> Result<()> {
    if precision == Precision::DeviceDefault {
        return Ok(());
    }
    let d = device.device_type();
    core.set_property(&d, &RwPropertyKey::HintInferencePrecision, "f32")
        .map_err(Error::ov)?;
    for key in ["DYNAMIC_QUANTIZATION_GROUP_SIZE", "KV_CACHE_PRECISION"] {
        let value = if key == "KV_CACHE_PRECISION" {
            "f32"
        } else {
            "0"
        };
        // NPU does not know every CPU/GPU key; a refused key is not fatal there.
        if let Err(e) = core.set_property(&d, &RwPropertyKey::Other(key.into()), value)
            && device != OvDevice::Npu
        {
            return Err(Error::ov(format!("{}: {key}={value}: {e}", device.name())));
        }
    }
    Ok(())
}

/// Compile the IR at `xml` (weights in the `.bin` beside it) on `device`.
pub fn compile(
    xml: &Path,
    device: OvDevice,
    precision: Precision,
) -> Result<(Core, CompiledModel)> {
    let mut core = core()?;
    configure(&mut core, device, precision)?;
    let bin = xml.with_extension("bin");
    let path = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Invalid(format!("{}: path is not UTF-8", p.display())))
    };
    let model = core
        .read_model_from_file(&path(xml)?, &path(&bin)?)
        .map_err(|e| Error::Runtime {
            runtime: "OpenVINO",
            msg: format!("{}: {e}", xml.display()),
        })?;
    let compiled = core
        .compile_model(&model, device.device_type())
        .map_err(|e| Error::Runtime {
            runtime: "OpenVINO",
            msg: format!("{} on {}: {e}", xml.display(), device.name()),
        })?;
    Ok((core, compiled))
}

/// Input names of the stateful decoder.
#[derive(Clone, Debug)]
pub struct OvNames {
    pub input_ids: String,
    pub attention_mask: String,
    pub position_ids: String,
    pub beam_idx: String,
    pub logits: String,
}

impl Default for OvNames {
    fn default() -> Self {
        OvNames {
            input_ids: "input_ids".into(),
            attention_mask: "attention_mask".into(),
            position_ids: "position_ids".into(),
            beam_idx: "beam_idx".into(),
            logits: "logits".into(),
        }
    }
}

/// A stateful decoder on one device: one infer request per sequence.
pub struct OvLlm {
    _core: Core,
    compiled: CompiledModel,
    request: InferRequest,
    names: OvNames,
    inputs: Vec<String>,
    past: usize,
    vocab: usize,
}

impl OvLlm {
    pub fn open(
        xml: &Path,
        names: OvNames,
        device: OvDevice,
        precision: Precision,
    ) -> Result<Self> {
        let (core, mut compiled) = compile(xml, device, precision)?;
        let mut inputs = Vec::new();
        for i in 0..compiled.get_input_size().map_err(Error::ov)? {
            let node = compiled.get_input_by_index(i).map_err(Error::ov)?;
            inputs.push(node.get_name().map_err(Error::ov)?);
        }
        for required in [&names.input_ids, &names.attention_mask] {
            if !inputs.contains(required) {
                return Err(Error::Export {
                    path: xml.to_path_buf(),
                    msg: format!("model has no input {required:?} (inputs: {inputs:?})"),
                });
            }
        }
        let request = compiled.create_infer_request().map_err(Error::ov)?;
        Ok(OvLlm {
            _core: core,
            compiled,
            request,
            names,
            inputs,
            past: 0,
            vocab: 0,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i == name)
    }
}

fn i64_tensor(shape: &[i64], data: impl Iterator<Item = i64>) -> Result<Tensor> {
    let mut t =
        Tensor::new(ElementType::I64, &Shape::new(shape).map_err(Error::ov)?).map_err(Error::ov)?;
    for (dst, v) in t
        .get_data_mut::<i64>()
        .map_err(Error::ov)?
        .iter_mut()
        .zip(data)
    {
        *dst = v;
    }
    Ok(t)
}

impl LlmSession for OvLlm {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let n = ids.len();
        let total = self.past + n;
        let ids_t = i64_tensor(&[1, n as i64], ids.iter().map(|&i| i as i64))?;
        self.request
            .set_tensor(&self.names.input_ids, &ids_t)
            .map_err(Error::ov)?;
        let mask = i64_tensor(&[1, total as i64], std::iter::repeat_n(1, total))?;
        self.request
            .set_tensor(&self.names.attention_mask, &mask)
            .map_err(Error::ov)?;
        if self.has(&self.names.position_ids) {
            let pos = i64_tensor(&[1, n as i64], self.past as i64..total as i64)?;
            self.request
                .set_tensor(&self.names.position_ids, &pos)
                .map_err(Error::ov)?;
        }
        if self.has(&self.names.beam_idx) {
            // One sequence: beam 0 keeps its own cache (optimum's reorder-cache input).
            let mut beam = Tensor::new(ElementType::I32, &Shape::new(&[1]).map_err(Error::ov)?)
                .map_err(Error::ov)?;
            beam.get_data_mut::<i32>().map_err(Error::ov)?[0] = 0;
            self.request
                .set_tensor(&self.names.beam_idx, &beam)
                .map_err(Error::ov)?;
        }
        self.request.infer().map_err(Error::ov)?;
        let out = self
            .request
            .get_tensor(&self.names.logits)
            .map_err(Error::ov)?;
        let shape = out.get_shape().map_err(Error::ov)?;
        let dims: Vec<i64> = shape.get_dimensions().to_vec();
        let data: &[f32] = out.get_data().map_err(Error::ov)?;
        let (vocab, logits) = super::check_logits(&dims, n, data, &self.names.logits)?;
        self.vocab = vocab;
        self.past = total;
        Ok(logits)
    }

    fn reset(&mut self) -> Result<()> {
        self.request = self.compiled.create_infer_request().map_err(Error::ov)?;
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
