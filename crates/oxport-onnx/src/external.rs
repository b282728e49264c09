//! `model.onnx.data`: every initializer's bytes, appended one tensor at a time through a `BufWriter`.
//!
//! Offsets of tensors over 1 MiB are rounded up to 64 KiB so they can be memory-mapped on every OS
//! (onnx_ir `external_data.py`: `_ALIGN_THRESHOLD = 1048576`, `_ALLOCATION_GRANULARITY = 65536`; onnx
//! `docs/ExternalData.md`). Padding is zero bytes; `location` is relative, as onnx `checker.cc` requires.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, io};
use crate::proto::{
    StringStringEntryProto, TensorProto, tensor_proto::DataLocation, tensor_proto::DataType,
};

pub const ALIGN_THRESHOLD_BYTES: u64 = 1 << 20;
pub const ALIGNMENT_BYTES: u64 = 64 << 10;

pub struct ExternalData {
    path: PathBuf,
    location: String,
    out: BufWriter<File>,
    offset: u64,
}

impl ExternalData {
    /// Create `dir/location`.
    pub fn create(dir: &Path, location: &str) -> Result<Self> {
        let path = dir.join(location);
        let file = File::create(&path).map_err(io(&path))?;
        Ok(ExternalData {
            path,
            location: location.to_string(),
            out: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
        })
    }

    /// Append one tensor's raw bytes; returns its initializer with the external-data reference.
    pub fn append(
        &mut self,
        name: &str,
        elem: DataType,
        dims: &[usize],
        bytes: &[u8],
    ) -> Result<TensorProto> {
        let start = self.begin(bytes.len() as u64)?;
        self.write(bytes)?;
        Ok(self.end(name, elem, dims, start))
    }

    /// Start a tensor of `len` bytes, written in pieces with [`write`](Self::write); returns its offset.
    pub fn begin(&mut self, len: u64) -> Result<u64> {
        if len > ALIGN_THRESHOLD_BYTES {
            let aligned = self.offset.div_ceil(ALIGNMENT_BYTES) * ALIGNMENT_BYTES;
            let pad = (aligned - self.offset) as usize;
            self.write(&vec![0u8; pad])?;
        }
        Ok(self.offset)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(io(&self.path))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// The initializer for the tensor begun at `start`: everything written since is its data.
    pub fn end(&self, name: &str, elem: DataType, dims: &[usize], start: u64) -> TensorProto {
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v),
        };
        TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem as i32),
            name: Some(name.to_string()),
            external_data: vec![
                entry("location", self.location.clone()),
                entry("offset", start.to_string()),
                entry("length", (self.offset - start).to_string()),
            ],
            data_location: Some(DataLocation::External as i32),
            ..Default::default()
        }
    }

    /// Flush and close; returns the file size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.out.flush().map_err(io(&self.path))?;
        let file = self.out.into_inner().map_err(|e| crate::OnnxError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(&self.path))?;
        Ok(self.offset)
    }
}
