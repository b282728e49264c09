//! `model.onnx.data`: every initializer's bytes, appended one tensor at a time through oxport-io's
//! [`BlobWriter`] (written in order by a background thread, overlapped with the conversion of the next tensor).
//!
//! Offsets of tensors over 1 MiB are rounded up to 64 KiB so they can be memory-mapped on every OS
//! (onnx_ir `external_data.py`: `_ALIGN_THRESHOLD = 1048576`, `_ALLOCATION_GRANULARITY = 65536`; onnx
//! `docs/ExternalData.md`). Padding is zero bytes; `location` is relative, as onnx `checker.cc` requires.

use std::path::Path;

use oxport_io::{BlobLayout, BlobWriter};

use crate::error::Result;
use crate::proto::{
    StringStringEntryProto, TensorProto, tensor_proto::DataLocation, tensor_proto::DataType,
};

pub const ALIGN_THRESHOLD_BYTES: u64 = 1 << 20;
pub const ALIGNMENT_BYTES: u64 = 64 << 10;

/// Buffers queued for the writer thread beyond the one it is writing: the exporter computes the next chunk while
/// the kernel copies the previous one into the page cache, and memory stays bounded.
const QUEUED_BUFFERS: usize = 2;

/// Create `dir/location` with ONNX's external-data layout (large tensors aligned, nothing shared).
pub(crate) fn create(dir: &Path, location: &str) -> Result<BlobWriter> {
    let layout = BlobLayout {
        align_above: Some((ALIGN_THRESHOLD_BYTES, ALIGNMENT_BYTES)),
        dedup_up_to: None,
    };
    Ok(BlobWriter::create(
        &dir.join(location),
        "oxport-onnx-data",
        QUEUED_BUFFERS,
        layout,
    )?)
}

/// The initializer for the tensor begun at `start` in `data` (the file `location`): everything written since is its
/// data.
pub(crate) fn initializer(
    data: &BlobWriter,
    location: &str,
    name: &str,
    elem: DataType,
    dims: &[usize],
    start: u64,
) -> TensorProto {
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.to_string()),
        value: Some(v),
    };
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(elem as i32),
        name: Some(name.to_string()),
        external_data: vec![
            entry("location", location.to_string()),
            entry("offset", start.to_string()),
            entry("length", (data.offset() - start).to_string()),
        ],
        data_location: Some(DataLocation::External as i32),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initializers_reference_aligned_offsets_in_the_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = create(dir.path(), "d.bin").unwrap();
        let start = data.append(&[1, 2, 3]).unwrap();
        let small = initializer(&data, "d.bin", "s", DataType::Uint8, &[3], start);
        let big = vec![5u8; ALIGN_THRESHOLD_BYTES as usize + 1];
        let start = data.append(&big).unwrap();
        let t = initializer(&data, "d.bin", "b", DataType::Uint8, &[big.len()], start);
        data.finish().unwrap();
        let field = |t: &TensorProto, i: usize| t.external_data[i].value.clone().unwrap();
        assert_eq!(
            (field(&small, 0), field(&small, 1)),
            ("d.bin".into(), "0".into())
        );
        assert_eq!(field(&small, 2), "3");
        assert_eq!(field(&t, 1), ALIGNMENT_BYTES.to_string());
        assert_eq!(field(&t, 2), big.len().to_string());
    }
}
