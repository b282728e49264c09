//! `model.onnx.data`: every initializer's bytes, appended one tensor at a time and written in order by a
//! background thread (large sequential writes, overlapped with the conversion of the next tensor).
//!
//! Offsets of tensors over 1 MiB are rounded up to 64 KiB so they can be memory-mapped on every OS
//! (onnx_ir `external_data.py`: `_ALIGN_THRESHOLD = 1048576`, `_ALLOCATION_GRANULARITY = 65536`; onnx
//! `docs/ExternalData.md`). Padding is zero bytes; `location` is relative, as onnx `checker.cc` requires.

use std::path::{Path, PathBuf};

use oxport_quant::OrderedWriter;

use crate::error::{Result, io};
use crate::proto::{
    StringStringEntryProto, TensorProto, tensor_proto::DataLocation, tensor_proto::DataType,
};

pub const ALIGN_THRESHOLD_BYTES: u64 = 1 << 20;
pub const ALIGNMENT_BYTES: u64 = 64 << 10;

/// Buffers queued for the writer thread beyond the one it is writing: the exporter computes the next chunk while
/// the kernel copies the previous one into the page cache, and memory stays bounded.
const QUEUED_BUFFERS: usize = 2;

/// `model.onnx.data`, written in order by a background thread: `write`/`write_owned` queue bytes and return, so
/// the `write()` system calls overlap the conversion of the next tensor.
pub struct ExternalData {
    path: PathBuf,
    location: String,
    offset: u64,
    out: OrderedWriter,
}

impl ExternalData {
    /// Create `dir/location`.
    pub fn create(dir: &Path, location: &str) -> Result<Self> {
        let path = dir.join(location);
        let out =
            OrderedWriter::create(&path, "oxport-onnx-data", QUEUED_BUFFERS).map_err(io(&path))?;
        Ok(ExternalData {
            path,
            location: location.to_string(),
            offset: 0,
            out,
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

    /// [`append`](Self::append) of an owned buffer, handed to the writer thread without a copy.
    pub fn append_owned(
        &mut self,
        name: &str,
        elem: DataType,
        dims: &[usize],
        bytes: Vec<u8>,
    ) -> Result<TensorProto> {
        let start = self.begin(bytes.len() as u64)?;
        self.write_owned(bytes)?;
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

    /// Queue a copy of `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.out.write(bytes).map_err(io(&self.path))
    }

    /// Queue `bytes` as they are (after any pending copied bytes, so the file order is the call order).
    pub fn write_owned(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.out.write_owned(bytes).map_err(io(&self.path))
    }

    /// A buffer to fill and pass to [`write_owned`](Self::write_owned): a written one when available (its
    /// length and contents are stale; resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.out.buffer()
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

    /// Write everything queued, sync and close; returns the file size in bytes.
    pub fn finish(self) -> Result<u64> {
        self.out.finish().map_err(io(&self.path))?;
        Ok(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_and_owned_bytes_land_in_call_order_with_large_tensors_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = ExternalData::create(dir.path(), "d.bin").unwrap();
        let small = data.append("s", DataType::Uint8, &[3], &[1, 2, 3]).unwrap();
        // Over the alignment threshold and over one pending buffer: padded to 64 KiB, copied in pieces.
        let big: Vec<u8> = (0..oxport_quant::sink::PENDING_BYTES + 777)
            .map(|i| (i % 253) as u8)
            .collect();
        let t = data
            .append("b", DataType::Uint8, &[big.len()], &big)
            .unwrap();
        let owned = data
            .append_owned("o", DataType::Uint8, &[2], vec![7, 8])
            .unwrap();
        let start = data.begin(5).unwrap();
        data.write(&[4]).unwrap();
        let mut piece = data.buffer();
        piece.clear();
        piece.extend_from_slice(&[5, 6, 7, 8]);
        data.write_owned(piece).unwrap();
        let pieces = data.end("p", DataType::Uint8, &[5], start);
        let len = data.finish().unwrap();
        let offset = |t: &TensorProto| t.external_data[1].value.clone().unwrap();
        let aligned = ALIGNMENT_BYTES as usize;
        assert_eq!(offset(&small), "0");
        assert_eq!(offset(&t), aligned.to_string());
        assert_eq!(offset(&owned), (aligned + big.len()).to_string());
        assert_eq!(offset(&pieces), (aligned + big.len() + 2).to_string());
        let mut want = vec![1, 2, 3];
        want.resize(aligned, 0);
        want.extend_from_slice(&big);
        want.extend_from_slice(&[7, 8, 4, 5, 6, 7, 8]);
        assert_eq!(std::fs::read(dir.path().join("d.bin")).unwrap(), want);
        assert_eq!(len, want.len() as u64);
    }
}
