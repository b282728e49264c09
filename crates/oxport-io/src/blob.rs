//! One weight file of an export (`model.onnx.data`, `openvino_model.bin`): tensors appended one after another
//! through an [`OrderedWriter`], with their offsets tracked here and the format's layout rules applied
//! ([`BlobLayout`]): padding before large tensors (ONNX external data) and sharing of identical small constants
//! (OpenVINO's `ConstantWriter`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{OrderedWriter, Result, io};

/// Where tensors start and which ones share bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobLayout {
    /// Tensors of more than `.0` bytes start at a multiple of `.1` bytes (zero padding before them).
    pub align_above: Option<(u64, u64)>,
    /// Tensors of at most this many bytes appended by copy ([`BlobWriter::append`]) are written once: a later
    /// tensor with the same bytes gets the first one's offset.
    pub dedup_up_to: Option<usize>,
}

/// A weight file written in order by a background thread, with offsets assigned in call order.
pub struct BlobWriter {
    path: PathBuf,
    layout: BlobLayout,
    offset: u64,
    dedup: HashMap<Vec<u8>, u64>,
    out: OrderedWriter,
}

impl BlobWriter {
    /// Create (truncate) `path`. `thread_name` names the writer thread; at most `queued` buffers wait for it beyond
    /// the one it writes (bounds the memory held for writing).
    pub fn create(
        path: &Path,
        thread_name: &str,
        queued: usize,
        layout: BlobLayout,
    ) -> Result<Self> {
        let out = OrderedWriter::create(path, thread_name, queued).map_err(io(path))?;
        Ok(BlobWriter {
            path: path.to_path_buf(),
            layout,
            offset: 0,
            dedup: HashMap::new(),
            out,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes queued so far: the offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Start a tensor of `len` bytes written in pieces with [`write`](Self::write) /
    /// [`write_owned`](Self::write_owned) (padding first where the layout aligns it); returns its offset.
    pub fn begin(&mut self, len: u64) -> Result<u64> {
        if let Some((above, to)) = self.layout.align_above
            && len > above
        {
            let aligned = self.offset.div_ceil(to) * to;
            let pad = (aligned - self.offset) as usize;
            self.write(&vec![0u8; pad])?;
        }
        Ok(self.offset)
    }

    /// A whole tensor, copied (or, when small enough to be de-duplicated, found among those written); returns
    /// its offset.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let shared = self
            .layout
            .dedup_up_to
            .is_some_and(|max| bytes.len() <= max);
        if shared && let Some(&offset) = self.dedup.get(bytes) {
            return Ok(offset);
        }
        let offset = self.begin(bytes.len() as u64)?;
        self.write(bytes)?;
        if shared {
            self.dedup.insert(bytes.to_vec(), offset);
        }
        Ok(offset)
    }

    /// A whole tensor handed to the writer thread without a copy (never de-duplicated); returns its offset.
    pub fn append_owned(&mut self, bytes: Vec<u8>) -> Result<u64> {
        let offset = self.begin(bytes.len() as u64)?;
        self.write_owned(bytes)?;
        Ok(offset)
    }

    /// Queue a copy of `bytes` (a piece of the tensor begun with [`begin`](Self::begin)).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.out.write(bytes).map_err(io(&self.path))
    }

    /// Queue `bytes` as they are (after any pending copied bytes, so the file order is the call order).
    pub fn write_owned(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.offset += bytes.len() as u64;
        self.out.write_owned(bytes).map_err(io(&self.path))
    }

    /// A buffer to fill and pass to [`write_owned`](Self::write_owned) / [`append_owned`](Self::append_owned): a
    /// written one when available (its length and contents are stale; resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.out.buffer()
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
    fn aligned_layout_pads_large_tensors_and_keeps_call_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.bin");
        let layout = BlobLayout {
            align_above: Some((1 << 20, 64 << 10)),
            dedup_up_to: None,
        };
        let mut data = BlobWriter::create(&path, "test-blob", 2, layout).unwrap();
        assert_eq!(data.append(&[1, 2, 3]).unwrap(), 0);
        // Over the alignment threshold and over one pending buffer: padded to 64 KiB, copied in pieces.
        let big: Vec<u8> = (0..crate::PENDING_BYTES + 777)
            .map(|i| (i % 253) as u8)
            .collect();
        let aligned = 64 << 10;
        assert_eq!(data.append(&big).unwrap(), aligned as u64);
        assert_eq!(
            data.append_owned(vec![7, 8]).unwrap(),
            (aligned + big.len()) as u64
        );
        // Small tensors are not shared in this layout.
        assert_eq!(
            data.append(&[1, 2, 3]).unwrap(),
            (aligned + big.len() + 2) as u64
        );
        let start = data.begin(5).unwrap();
        data.write(&[4]).unwrap();
        let mut piece = data.buffer();
        piece.clear();
        piece.extend_from_slice(&[5, 6, 7, 8]);
        data.write_owned(piece).unwrap();
        assert_eq!(data.offset() - start, 5);
        let len = data.finish().unwrap();
        let mut want = vec![1, 2, 3];
        want.resize(aligned, 0);
        want.extend_from_slice(&big);
        want.extend_from_slice(&[7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(len, want.len() as u64);
    }

    #[test]
    fn dedup_layout_shares_small_copied_tensors_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        let layout = BlobLayout {
            align_above: None,
            dedup_up_to: Some(4),
        };
        let mut bin = BlobWriter::create(&path, "test-bin", 1, layout).unwrap();
        assert_eq!(bin.append(&[1, 2]).unwrap(), 0);
        assert_eq!(bin.append(&[9; 5]).unwrap(), 2);
        assert_eq!(bin.append(&[1, 2]).unwrap(), 0);
        assert_eq!(bin.append(&[9; 5]).unwrap(), 7);
        assert_eq!(bin.append_owned(vec![1, 2]).unwrap(), 12);
        assert_eq!(bin.finish().unwrap(), 14);
        let mut want = vec![1, 2];
        want.extend_from_slice(&[9; 10]);
        want.extend_from_slice(&[1, 2]);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
