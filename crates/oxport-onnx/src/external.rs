//! `model.onnx.data`: every initializer's bytes, appended one tensor at a time and written in order by a
//! background thread (large sequential writes, overlapped with the conversion of the next tensor).
//!
//! Offsets of tensors over 1 MiB are rounded up to 64 KiB so they can be memory-mapped on every OS
//! (onnx_ir `external_data.py`: `_ALIGN_THRESHOLD = 1048576`, `_ALLOCATION_GRANULARITY = 65536`; onnx
//! `docs/ExternalData.md`). Padding is zero bytes; `location` is relative, as onnx `checker.cc` requires.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Result, io};
use crate::proto::{
    StringStringEntryProto, TensorProto, tensor_proto::DataLocation, tensor_proto::DataType,
};

pub const ALIGN_THRESHOLD_BYTES: u64 = 1 << 20;
pub const ALIGNMENT_BYTES: u64 = 64 << 10;

/// Copied bytes are gathered into buffers of this size before they go to the writer thread.
const PENDING_BYTES: usize = 8 << 20;
/// Buffers queued for the writer thread beyond the one it is writing: the exporter computes the next chunk while
/// the kernel copies the previous one into the page cache, and memory stays bounded.
const QUEUED_BUFFERS: usize = 2;
/// Written buffers kept for reuse, so their pages are faulted in once per export rather than once per chunk.
const SPARE_BUFFERS: usize = 4;
/// Larger buffers are freed once written rather than kept for reuse.
const SPARE_MAX_BYTES: usize = 64 << 20;

/// `model.onnx.data`, written in order by a background thread: `write`/`write_owned` queue bytes and return, so
/// the `write()` system calls overlap the conversion of the next tensor.
pub struct ExternalData {
    path: PathBuf,
    location: String,
    offset: u64,
    /// Copied small writes not yet sent.
    pending: Vec<u8>,
    queue: Option<SyncSender<Vec<u8>>>,
    spares: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<std::io::Result<File>>>,
}

impl ExternalData {
    /// Create `dir/location`.
    pub fn create(dir: &Path, location: &str) -> Result<Self> {
        let path = dir.join(location);
        let mut file = File::create(&path).map_err(io(&path))?;
        let (queue, jobs) = sync_channel::<Vec<u8>>(QUEUED_BUFFERS);
        let (give_back, spares) = sync_channel::<Vec<u8>>(SPARE_BUFFERS);
        let writer = std::thread::Builder::new()
            .name("oxport-onnx-data".into())
            .spawn(move || {
                for buf in jobs {
                    file.write_all(&buf)?;
                    // A full spare pool just drops the buffer, as it does a large one (a whole 8-bit lm_head), so the
                    // pool never holds much memory.
                    if buf.capacity() <= SPARE_MAX_BYTES {
                        let _ = give_back.try_send(buf);
                    }
                }
                Ok(file)
            })
            .map_err(io(&path))?;
        Ok(ExternalData {
            path,
            location: location.to_string(),
            offset: 0,
            pending: Vec::new(),
            queue: Some(queue),
            spares,
            writer: Some(writer),
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
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.offset += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending = self.buffer();
                self.pending.clear();
            }
            let room = PENDING_BYTES.saturating_sub(self.pending.len()).max(1);
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(now);
            bytes = rest;
            if self.pending.len() >= PENDING_BYTES {
                self.send_pending()?;
            }
        }
        Ok(())
    }

    /// Queue `bytes` as they are (after any pending copied bytes, so the file order is the call order).
    pub fn write_owned(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.send_pending()?;
        self.send(bytes)
    }

    /// A buffer to fill and pass to [`write_owned`](Self::write_owned): a written one when available (its
    /// length and contents are stale; resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spares.try_recv().unwrap_or_default()
    }

    fn send_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.pending);
        self.send(buf)
    }

    fn send(&mut self, buf: Vec<u8>) -> Result<()> {
        let sent = match &self.queue {
            Some(queue) => queue.send(buf).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error is the reason.
            Err(self.join().err().unwrap_or_else(|| {
                io(&self.path)(std::io::Error::other("the data writer thread stopped"))
            }))
        }
    }

    /// Stop the writer thread after it wrote everything queued; its file, or its error.
    fn join(&mut self) -> Result<File> {
        self.queue = None;
        let Some(writer) = self.writer.take() else {
            return Err(io(&self.path)(std::io::Error::other(
                "the data writer thread already stopped",
            )));
        };
        match writer.join() {
            Ok(result) => result.map_err(io(&self.path)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
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
    pub fn finish(mut self) -> Result<u64> {
        self.send_pending()?;
        let file = self.join()?;
        file.sync_all().map_err(io(&self.path))?;
        Ok(self.offset)
    }
}

impl Drop for ExternalData {
    /// A failed export still waits for the writer thread, so nothing writes into the folder being removed.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
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
        let big: Vec<u8> = (0..PENDING_BYTES + 777).map(|i| (i % 253) as u8).collect();
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
