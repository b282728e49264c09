//! Helpers shared by the ONNX tests: export into a temp folder, read ModelProtos, hash initializers.

use std::collections::BTreeMap;
use std::path::Path;

use oxport_arch::Model;
use oxport_io::{CancelToken, Silent};
use oxport_onnx::ExportOptions;
use oxport_onnx::proto::{ModelProto, NodeProto, TensorProto, ValueInfoProto};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::support::{hex, repo_root};

pub(crate) fn export_to(
    ckpt_dir: &Path,
    opts: &ExportOptions,
    out: &Path,
) -> oxport_onnx::Result<oxport_onnx::ExportSummary> {
    let ckpt = Model::open(ckpt_dir).expect("open checkpoint");
    oxport_onnx::export(&ckpt, opts, out, &Silent, &CancelToken::new())
}

pub(crate) fn read_model(path: &Path) -> ModelProto {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ModelProto::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A node as comparable text: op, domain ("" and "ai.onnx" are the same domain), name, inputs, outputs and
/// attributes (name, type and value; Constant tensors by dims, type and raw bytes).
pub(crate) fn node_signature(n: &NodeProto) -> String {
    let domain = match n.domain.as_deref() {
        None | Some("") | Some("ai.onnx") => "",
        Some(d) => d,
    };
    let attrs: Vec<String> = n
        .attribute
        .iter()
        .map(|a| {
            let tensor = a.t.as_ref().map(|t| {
                format!(
                    "tensor(dims={:?} type={:?} raw={:?})",
                    t.dims,
                    t.data_type,
                    t.raw_data.as_deref().unwrap_or(&[])
                )
            });
            format!(
                "{}:{:?}:i={:?}:f={:?}:ints={:?}:{}",
                a.name(),
                a.r#type,
                a.i,
                a.f,
                a.ints,
                tensor.unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{domain}::{} name={} in={:?} out={:?} attrs={:?}",
        n.op_type(),
        n.name(),
        n.input,
        n.output,
        attrs
    )
}

pub(crate) fn value_info_signature(v: &ValueInfoProto) -> String {
    format!("{} {:?}", v.name(), v.r#type)
}

/// name → (dims, data_type) of every initializer.
pub(crate) fn initializer_table(m: &ModelProto) -> BTreeMap<String, (Vec<i64>, i32)> {
    m.graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .map(|t| (t.name().to_string(), (t.dims.clone(), t.data_type())))
        .collect()
}

fn external_entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key() == key)
        .map(|e| e.value())
}

/// (offset, length) of an external initializer.
pub(crate) fn external_range(t: &TensorProto) -> (u64, u64) {
    let offset = external_entry(t, "offset")
        .expect("offset")
        .parse()
        .expect("offset number");
    let length = external_entry(t, "length")
        .expect("length")
        .parse()
        .expect("length number");
    (offset, length)
}

/// sha256 of every initializer's bytes in `dir/model.onnx.data`.
pub(crate) fn initializer_hashes(dir: &Path) -> BTreeMap<String, String> {
    let m = read_model(&dir.join("model.onnx"));
    let data = std::fs::read(dir.join("model.onnx.data")).expect("model.onnx.data");
    m.graph
        .expect("graph")
        .initializer
        .iter()
        .map(|t| {
            let (o, l) = external_range(t);
            let bytes = &data[o as usize..(o + l) as usize];
            (t.name().to_string(), hex(&Sha256::digest(bytes)))
        })
        .collect()
}

/// Golden hashes from `tests/golden/ort_nbits_phi3-tiny-random.json` for one variant: name → (dims, sha256).
pub(crate) fn golden(variant: &str) -> BTreeMap<String, (Vec<i64>, String)> {
    let path = repo_root().join("tests/golden/ort_nbits_phi3-tiny-random.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden")).expect("json");
    v["variants"][variant]
        .as_object()
        .unwrap_or_else(|| panic!("variant {variant} in {}", path.display()))
        .iter()
        .map(|(k, e)| {
            let dims = e["dims"]
                .as_array()
                .expect("dims")
                .iter()
                .map(|d| d.as_i64().expect("dim"))
                .collect();
            (
                k.clone(),
                (dims, e["sha256"].as_str().expect("sha").to_string()),
            )
        })
        .collect()
}
