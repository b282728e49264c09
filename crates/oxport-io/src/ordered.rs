//! A file written in call order by a background thread, so the kernel's copy of a finished weight into the page
//! cache overlaps the quantization of the next one. [`BlobWriter`](crate::BlobWriter) adds offsets and the layout
//! rules (alignment, de-duplication) on top; both exporters' weight files go through it.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Copied bytes are gathered into buffers of this size before they go to the writer thread.
pub const PENDING_BYTES: usize = 8 << 20;
/// Written buffers kept for reuse, so their pages are faulted in once per export rather than once per chunk.
const SPARE_BUFFERS: usize = 4;
/// Larger buffers (a whole compressed weight) are freed once written rather than kept for reuse.
const SPARE_MAX_BYTES: usize = 64 << 20;

/// A file whose bytes are written, in the order they are handed over, by a background thread.
pub struct OrderedWriter {
    /// Copied bytes not yet sent.
    pending: Vec<u8>,
    queue: Option<SyncSender<Vec<u8>>>,
    spares: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<io::Result<File>>>,
}

impl OrderedWriter {
    /// Create (truncate) `path`; at most `queued` buffers wait for the thread beyond the one it writes, which bounds
    /// the memory held for writing.
    pub fn create(path: &Path, thread_name: &str, queued: usize) -> io::Result<Self> {
        let mut file = File::create(path)?;
        let (queue, jobs) = sync_channel::<Vec<u8>>(queued);
        let (give_back, spares) = sync_channel::<Vec<u8>>(SPARE_BUFFERS);
        let writer = std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                for buf in jobs {
                    file.write_all(&buf)?;
                    // A full spare pool just drops the buffer, as it does a large one, so the pool never holds much
                    // memory.
                    if buf.capacity() <= SPARE_MAX_BYTES {
                        let _ = give_back.try_send(buf);
                    }
                }
                Ok(file)
            })?;
        Ok(OrderedWriter {
            pending: Vec::new(),
            queue: Some(queue),
            spares,
            writer: Some(writer),
        })
    }

    /// Queue a copy of `bytes`.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
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

    /// Queue `bytes` as they are, without a copy (after any pending copied bytes, so the file order is the call
    /// order).
    pub fn write_owned(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.send_pending()?;
        self.send(bytes)
    }

    /// A buffer to fill and pass to [`write_owned`](Self::write_owned): a written one when available (its length
    /// and contents are stale; resize and overwrite it), else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spares.try_recv().unwrap_or_default()
    }

    /// Write everything queued, stop the thread and sync the file.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_pending()?;
        self.join()?.sync_all()
    }

    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.pending);
        self.send(buf)
    }

    fn send(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let sent = match &self.queue {
            Some(queue) => queue.send(buf).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: its error is the reason.
        Err(match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("the writer thread stopped"),
        })
    }

    /// Stop the writer thread once everything queued is written; its file, or its error.
    fn join(&mut self) -> io::Result<File> {
        self.queue = None;
        let Some(writer) = self.writer.take() else {
            return Err(io::Error::other("the writer thread already stopped"));
        };
        match writer.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for OrderedWriter {
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
    fn copied_and_owned_bytes_land_in_call_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let mut w = OrderedWriter::create(&path, "test-writer", 1).unwrap();
        let big: Vec<u8> = (0..2 * PENDING_BYTES + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        w.write(&[1, 2, 3]).unwrap();
        w.write(&big).unwrap();
        w.write_owned(vec![9, 9]).unwrap();
        let mut b = w.buffer();
        b.clear();
        b.extend_from_slice(&[4, 5]);
        w.write_owned(b).unwrap();
        w.write(&[6]).unwrap();
        w.finish().unwrap();
        let mut want = vec![1, 2, 3];
        want.extend_from_slice(&big);
        want.extend_from_slice(&[9, 9, 4, 5, 6]);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_write_error_surfaces_at_the_next_call() {
        // /dev/full refuses every write with ENOSPC, like a full disk.
        let mut w = OrderedWriter::create(Path::new("/dev/full"), "test-full", 0).unwrap();
        let mut failed = None;
        for _ in 0..4 {
            if let Err(e) = w.write_owned(vec![0u8; 1 << 16]) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
    }
}
