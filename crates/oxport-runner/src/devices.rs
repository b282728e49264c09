//! `oxport devices`: each runtime's version and every device it could use, present or absent with the reason.

use std::path::PathBuf;

use crate::backend::onnxruntime::{self, OrtDevice};
use crate::backend::openvino::{self, OvDevice};

/// Which device of which runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Ort(OrtDevice),
    OpenVino(OvDevice),
}

impl Target {
    /// `onnxruntime/cpu`, `openvino/GPU`, …
    pub fn label(self) -> String {
        match self {
            Target::Ort(d) => format!("onnxruntime/{}", d.name()),
            Target::OpenVino(d) => format!("openvino/{}", d.name()),
        }
    }

    /// The `--device` class this target belongs to: cpu, cuda, gpu, npu (DirectML and ORT's OpenVINO EP are `gpu`).
    pub fn class(self) -> &'static str {
        match self {
            Target::Ort(OrtDevice::Cpu) | Target::OpenVino(OvDevice::Cpu) => "cpu",
            Target::Ort(OrtDevice::Cuda) => "cuda",
            Target::Ort(OrtDevice::DirectMl | OrtDevice::OpenVinoEp)
            | Target::OpenVino(OvDevice::Gpu) => "gpu",
            Target::OpenVino(OvDevice::Npu) => "npu",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceStatus {
    pub target: Target,
    pub label: String,
    pub present: bool,
    /// Full device name when present, the reason when absent.
    pub detail: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeStatus {
    pub runtime: &'static str,
    pub version: Option<String>,
    pub library: Option<PathBuf>,
    /// Why the runtime itself could not be loaded.
    pub error: Option<String>,
    pub devices: Vec<DeviceStatus>,
}

/// Probe both runtimes and every device oxport knows.
pub fn probe_all() -> Vec<RuntimeStatus> {
    vec![probe_ort(), probe_openvino()]
}

fn status(target: Target, result: Result<String, String>) -> DeviceStatus {
    let (present, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    DeviceStatus {
        target,
        label: target.label(),
        present,
        detail,
    }
}

fn probe_ort() -> RuntimeStatus {
    let (version, library, error) = match onnxruntime::version() {
        Ok((lib, v)) => (Some(v), Some(lib), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let devices = OrtDevice::ALL
        .iter()
        .map(|&d| {
            let r = match &error {
                Some(e) => Err(format!("not loaded: {e}")),
                None => onnxruntime::probe(d).map(|()| d.provider().to_string()),
            };
            status(Target::Ort(d), r)
        })
        .collect();
    RuntimeStatus {
        runtime: "onnxruntime",
        version,
        library,
        error,
        devices,
    }
}

fn probe_openvino() -> RuntimeStatus {
    let (version, library, error) = match openvino::version() {
        Ok((lib, v)) => (Some(v), Some(lib), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let devices = OvDevice::ALL
        .iter()
        .map(|&d| {
            let r = match &error {
                Some(e) => Err(format!("not loaded: {e}")),
                None => openvino::probe(d),
            };
            status(Target::OpenVino(d), r)
        })
        .collect();
    RuntimeStatus {
        runtime: "openvino",
        version,
        library,
        error,
        devices,
    }
}

/// A plain-text table of [`probe_all`]'s result.
/// One export target oxport writes, and how it was checked (what `oxport devices` lists under the devices).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportTarget {
    pub target: &'static str,
    pub command: &'static str,
    pub checked: &'static str,
}

/// Every export target, with the checks behind it (the tests named in the README's export sections).
pub const EXPORT_TARGETS: &[ExportTarget] = &[
    ExportTarget {
        target: "ONNX Runtime CPU",
        command: "export onnx -e cpu",
        checked: "graph and int4 bytes equal the genai builder's; run on ORT CPU and onnxruntime-genai in CI",
    },
    ExportTarget {
        target: "ONNX Runtime CUDA",
        command: "export onnx -e cuda",
        checked: "graph and weights equal the builder's; run on ORT CPU in CI; on CUDA once by hand (H100)",
    },
    ExportTarget {
        target: "DirectML",
        command: "export onnx -e dml",
        checked: "graph, weights and genai_config equal the builder's; run on ORT CPU and genai (CPU) in CI; never on DirectML",
    },
    ExportTarget {
        target: "WebGPU",
        command: "export onnx -e webgpu",
        checked: "graph, weights and genai_config equal the builder's; run on ORT CPU and genai (CPU) in CI; never on WebGPU",
    },
    ExportTarget {
        target: "OpenVINO CPU/GPU",
        command: "export openvino",
        checked: "NNCF's bytes; loaded by optimum-intel and OpenVINO GenAI, run on OpenVINO CPU in CI; GPU not run here",
    },
    ExportTarget {
        target: "Intel NPU",
        command: "export openvino --npu",
        checked: "accepted/refused as OpenVINO GenAI's NPU recipe documents; the IR validated on OpenVINO CPU; never on an NPU",
    },
];

pub fn table(runtimes: &[RuntimeStatus]) -> String {
    let mut s = String::new();
    for r in runtimes {
        match (&r.version, &r.error) {
            (Some(v), _) => {
                s += &format!(
                    "{} {v} ({})\n",
                    r.runtime,
                    r.library
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            }
            (None, Some(e)) => s += &format!("{} unavailable ({e})\n", r.runtime),
            (None, None) => s += &format!("{}\n", r.runtime),
        }
        for d in &r.devices {
            let mark = if d.present { "present" } else { "absent " };
            s += &format!("  {:<24} {mark}  {}\n", d.label, d.detail);
        }
    }
    s += "export targets (how each was checked)\n";
    for t in EXPORT_TARGETS {
        s += &format!("  {:<18} {:<24} {}\n", t.target, t.command, t.checked);
    }
    s
}
