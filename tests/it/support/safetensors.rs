//! The one safetensors writer (and reader) of the tests that build or damage checkpoints: the u64 LE header
//! length, the JSON header (`__metadata__` first, then the tensors in the order given, each with `dtype`, `shape`
//! and `data_offsets`) padded with spaces to a multiple of 8 bytes, then the data.

use std::path::Path;

use serde_json::{Value, json};

/// One tensor: name, header entry (`dtype`, `shape`), bytes.
pub(crate) type Entry = (String, Value, Vec<u8>);

/// The bytes before the data, for tensors given as (name, header entry with `dtype` and `shape`, data offsets).
pub(crate) fn header(tensors: impl IntoIterator<Item = (String, Value, [usize; 2])>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    for (name, mut info, offsets) in tensors {
        info["data_offsets"] = json!(offsets);
        header.insert(name, info);
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut raw = (h.len() as u64).to_le_bytes().to_vec();
    raw.extend(h);
    raw
}

/// Write `entries` contiguously to `path`; `override_offsets` may replace one tensor's `data_offsets` after layout.
pub(crate) fn write(path: &Path, entries: &[Entry], override_offsets: Option<(&str, [usize; 2])>) {
    let mut tensors = vec![];
    let mut data = vec![];
    for (name, info, bytes) in entries {
        let mut offsets = [data.len(), data.len() + bytes.len()];
        if let Some((n, o)) = override_offsets
            && n == name
        {
            offsets = o;
        }
        tensors.push((name.clone(), info.clone(), offsets));
        data.extend_from_slice(bytes);
    }
    let mut raw = header(tensors);
    raw.extend(data);
    std::fs::write(path, raw).unwrap();
}

/// Every tensor of the file at `path`, in header order.
pub(crate) fn read(path: &Path) -> Vec<Entry> {
    let raw = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    let data = &raw[8 + n..];
    let mut out = vec![];
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let o = info["data_offsets"].as_array().unwrap();
        let (b, e) = (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        );
        out.push((
            name,
            json!({"dtype": info["dtype"], "shape": info["shape"]}),
            data[b..e].to_vec(),
        ));
    }
    out
}
