//! safetensors headers checked against their files before the safetensors crate parses them, so every error
//! names the file and the tensor.

use std::path::Path;

use crate::error::{Error, Result};

/// Validate a whole safetensors file image (`bytes`) the way [`Checkpoint::open`](crate::Checkpoint::open)
/// validates each shard: header length, JSON, dtypes, byte ranges. Returns the header length and the tensor count.
/// `path` only names the file in errors. Public for the fuzz targets (`fuzz/`).
pub fn validate_safetensors(path: &Path, bytes: &[u8]) -> Result<(usize, usize)> {
    let (n, meta) = parse_header(path, bytes)?;
    Ok((n, meta.tensors().len()))
}

/// Validate a safetensors header against the file: the header length fits, the JSON parses, every tensor's
/// byte range lies inside the data section, matches dtype × shape, and no two ranges overlap.
pub(crate) fn parse_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(usize, safetensors::tensor::Metadata)> {
    let bad = |msg: String| Error::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    if bytes.len() < 8 {
        return Err(bad(format!(
            "file is {} bytes, shorter than the 8-byte header length",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > (bytes.len() - 8) as u64 {
        return Err(bad(format!(
            "header length {n} is larger than the file ({} bytes): truncated or not a safetensors file",
            bytes.len()
        )));
    }
    let n = n as usize;
    check_tensor_ranges(&bytes[8..8 + n], bytes.len() - 8 - n).map_err(bad)?;
    match safetensors::SafeTensors::read_metadata(bytes) {
        Ok((n, meta)) => Ok((n, meta)),
        Err(e) => {
            use safetensors::SafeTensorError as E;
            let msg = match e {
                E::InvalidOffset(t) => format!(
                    "tensor {t}: data offsets are out of bounds, overlap another tensor, or leave a gap"
                ),
                E::TensorInvalidInfo => {
                    "a tensor's byte size disagrees with its dtype and shape".to_string()
                }
                E::MetadataIncompleteBuffer => format!(
                    "the data section ({} bytes) does not match the tensors' offsets: file truncated or offsets out of bounds",
                    bytes.len() - 8 - n
                ),
                E::InvalidHeaderDeserialization(m) => {
                    format!("header is not valid JSON metadata: {m}")
                }
                other => other.to_string(),
            };
            Err(bad(msg))
        }
    }
}

/// Element size of a safetensors dtype name (the format's full list, `safetensors/src/tensor.rs` `Dtype`), so a
/// header can be checked before the crate parses it and every message can name the tensor.
fn dtype_bits(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Per-tensor checks of a header against a data section of `data_len` bytes, each naming the tensor: a known dtype,
/// a byte range matching dtype × shape, inside the data section (a shorter range means a truncated file), and no
/// two ranges overlapping. Gaps and ordering are left to the safetensors crate.
fn check_tensor_ranges(header: &[u8], data_len: usize) -> Result<(), String> {
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("header is not valid JSON metadata: {e}"))?;
    let mut ranges: Vec<(usize, usize, &str)> = Vec::with_capacity(v.len());
    for (name, info) in &v {
        if name == "__metadata__" {
            continue;
        }
        let field = |f: &str| {
            info.get(f)
                .ok_or_else(|| format!("tensor {name}: header entry has no `{f}`"))
        };
        let dtype = field("dtype")?
            .as_str()
            .ok_or_else(|| format!("tensor {name}: `dtype` is not a string"))?;
        let bits =
            dtype_bits(dtype).ok_or_else(|| format!("tensor {name}: unknown dtype {dtype:?}"))?;
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| format!("tensor {name}: `shape` is not a list of sizes"))?;
        let offsets: Vec<usize> = field("data_offsets")?
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .filter(|o: &Vec<usize>| o.len() == 2)
            .ok_or_else(|| format!("tensor {name}: `data_offsets` is not [begin, end]"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        let expected = shape
            .iter()
            .try_fold(bits, |acc, &d| acc.checked_mul(d))
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| format!("tensor {name}: shape {shape:?} overflows"))?;
        if end < begin || end - begin != expected {
            return Err(format!(
                "tensor {name}: data offsets [{begin}, {end}) hold {} bytes, but {dtype} {shape:?} needs {expected}",
                end.saturating_sub(begin)
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor {name}: data offsets [{begin}, {end}) run past the end of the data section ({data_len} bytes): \
                 the file is truncated or the offsets are out of bounds"
            ));
        }
        ranges.push((begin, end, name));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        let ((b0, e0, a), (b1, e1, b)) = (w[0], w[1]);
        if b1 < e0 {
            return Err(format!(
                "tensors {a} [{b0}, {e0}) and {b} [{b1}, {e1}) overlap"
            ));
        }
    }
    Ok(())
}
