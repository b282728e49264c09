//! The `.bin` phase: the constants streamed in creation order, each deferred one's bytes asked of the caller when
//! it is reached (so only one weight's data is held at a time), offsets assigned as they are appended.

use std::path::Path;

use oxport_io::BlobWriter;

use super::{BIN_LAYOUT, ConstData, DEDUP_MAX_BYTES, Graph, QUEUED_BUFFERS, check_constant_size};
use crate::error::{Error, Result};

/// Where a deferred constant's bytes go: exactly one of [`bytes`](Self::bytes) / [`owned`](Self::owned), or any
/// number of [`piece`](Self::piece)s (a weight converted chunk by chunk).
pub struct ConstSink<'a> {
    bin: &'a mut BlobWriter,
    start: u64,
    /// `(offset, stored size, size given)` once placed by `bytes`/`owned`.
    placed: Option<(u64, usize, usize)>,
    pieces: bool,
}

impl ConstSink<'_> {
    /// The whole constant, copied (or, when small, found among the identical constants written before: OpenVINO's
    /// `ConstantWriter`). `ov::pass::Serialize` stores an empty constant as one zero byte (size 1), e.g. the empty
    /// replacement of openvino-tokenizers' Strip decoder.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_unplaced()?;
        let stored: &[u8] = if bytes.is_empty() { &[0] } else { bytes };
        let offset = self.bin.append(stored)?;
        self.placed = Some((offset, stored.len(), bytes.len()));
        Ok(())
    }

    /// The whole constant as an owned buffer, handed to the writer thread without a copy (small ones go through
    /// [`bytes`](Self::bytes) and are de-duplicated). Fill one from [`buffer`](Self::buffer) to reuse written memory.
    pub fn owned(&mut self, bytes: Vec<u8>) -> Result<()> {
        if bytes.len() <= DEDUP_MAX_BYTES {
            return self.bytes(&bytes);
        }
        self.check_unplaced()?;
        let size = bytes.len();
        let offset = self.bin.append_owned(bytes)?;
        self.placed = Some((offset, size, size));
        Ok(())
    }

    /// The next consecutive bytes of a constant written in pieces, without a copy.
    pub fn piece(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.check_unplaced()?;
        self.pieces = true;
        Ok(self.bin.write_owned(bytes)?)
    }

    /// A buffer to fill for [`owned`](Self::owned) or [`piece`](Self::piece): a written one when available (its
    /// length and contents are stale: resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.bin.buffer()
    }

    fn check_unplaced(&self) -> Result<()> {
        if self.placed.is_some() {
            return Err(Error::Graph("a constant's bytes were given twice".into()));
        }
        Ok(())
    }

    /// `(offset, stored size, size given)`.
    fn finish(self) -> (u64, usize, usize) {
        match self.placed {
            Some(p) => p,
            None => {
                let size = (self.bin.offset() - self.start) as usize;
                (self.start, size, size)
            }
        }
    }
}

impl<D> Graph<D> {
    /// Stream every constant into `bin_path` (created, truncated) in creation order: held bytes as they are,
    /// deferred ones from `fill(source, sink)`, called once per deferred constant when it is reached (the caller
    /// computes one weight at a time and checks for cancellation there). Each constant's `offset` and `size` are
    /// recorded for [`write_xml`](Self::write_xml).
    pub fn write_bin(
        &mut self,
        bin_path: &Path,
        mut fill: impl FnMut(&D, &mut ConstSink<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut bin = BlobWriter::create(bin_path, "oxport-ir-bin", QUEUED_BUFFERS, BIN_LAYOUT)?;
        for c in &self.constants {
            let name = &self.layers[c.layer].name;
            let (offset, size) = match &c.data {
                ConstData::Bytes(bytes) => {
                    let stored: &[u8] = if bytes.is_empty() { &[0] } else { bytes };
                    (bin.append(stored)?, stored.len())
                }
                ConstData::Deferred(source) => {
                    let start = bin.offset();
                    let mut sink = ConstSink {
                        bin: &mut bin,
                        start,
                        placed: None,
                        pieces: false,
                    };
                    fill(source, &mut sink)?;
                    if sink.pieces && sink.placed.is_some() {
                        return Err(Error::Graph(format!(
                            "constant {name}: bytes given both whole and in pieces"
                        )));
                    }
                    let (offset, stored, given) = sink.finish();
                    check_constant_size(name, c.elem, &c.shape, given)?;
                    (offset, stored)
                }
            };
            let data = &mut self.layers[c.layer].data;
            data.push(("offset", offset.to_string()));
            data.push(("size", size.to_string()));
        }
        bin.finish()?;
        Ok(())
    }
}
