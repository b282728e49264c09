//! A safetensors checkpoint folder: `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//! Shards are memory-mapped; nothing is copied until a tensor is asked for. This layer knows no architecture: it
//! validates the files and hands tensors out by name (`oxport-arch` classifies them).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result, io};
use crate::header::parse_header;

pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";
pub(crate) const SINGLE_FILE: &str = "model.safetensors";

/// Metadata of one tensor; known before any of its bytes are touched.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::shard_paths`].
    pub shard: usize,
    /// Byte range of the data inside the shard file.
    pub file_offset: usize,
    pub size_bytes: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A borrowed view of one tensor's bytes in its shard's mmap.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub bytes: &'a [u8],
    pub path: &'a Path,
}

impl TensorView<'_> {
    /// Decode rows `rows` (of the 2-D view `[shape[0], rest]`) into f32.
    pub fn rows_f32(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let cols: usize = self.info.shape[1..].iter().product();
        let es = self.info.dtype.size_bytes();
        self.info.dtype.decode_into(
            &self.bytes[rows.start * cols * es..rows.end * cols * es],
            out,
        );
    }

    /// The whole tensor as f32, refusing NaN and Inf with an error naming the file and tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.to_f32_into(&mut out)?;
        Ok(out)
    }

    /// [`to_f32`](Self::to_f32) into a caller-owned buffer (resized to the tensor), so a streaming export can
    /// reuse one allocation across tensors instead of faulting in fresh pages for every f32 copy.
    pub fn to_f32_into(&self, out: &mut Vec<f32>) -> Result<()> {
        self.check_finite()?;
        out.resize(self.info.numel(), 0.0);
        let es = self.info.dtype.size_bytes();
        // rayon inside the tensor: fixed-size chunks, so the result does not depend on the thread count.
        out.par_chunks_mut(DECODE_CHUNK)
            .zip(self.bytes.par_chunks(DECODE_CHUNK * es))
            .for_each(|(o, b)| self.info.dtype.decode_into(b, o));
        Ok(())
    }

    /// The raw bytes of rows `rows` of the 2-D view `[shape[0], rest]`.
    pub fn rows_bytes(&self, rows: std::ops::Range<usize>) -> &[u8] {
        let row_bytes = self.cols() * self.info.dtype.size_bytes();
        &self.bytes[rows.start * row_bytes..rows.end * row_bytes]
    }

    /// Values per row of the 2-D view `[shape[0], rest]`.
    pub fn cols(&self) -> usize {
        self.info.shape[1..].iter().product()
    }

    /// The error [`check_finite`](Self::check_finite) returns for `count` non-finite values, the first at flat
    /// index `first` of the tensor (for kernels that find them while reading the bytes themselves).
    pub fn non_finite_error(&self, count: usize, first: usize) -> Error {
        Error::NonFinite {
            path: self.path.to_path_buf(),
            tensor: self.info.name.clone(),
            count,
            first,
        }
    }

    /// Refuse NaN and Inf anywhere in the tensor (see [`check_finite_rows`](Self::check_finite_rows)).
    pub fn check_finite(&self) -> Result<()> {
        let rows = self.info.shape.first().copied().unwrap_or(1);
        self.check_finite_rows(0..rows)
    }

    /// Refuse NaN and Inf in rows `rows` with an error naming the file, the tensor and the flat index (within the
    /// whole tensor) of the first. Tests the raw bit patterns (all-ones exponent) without decoding, so it reads
    /// the mapped bytes once and allocates nothing.
    pub fn check_finite_rows(&self, rows: std::ops::Range<usize>) -> Result<()> {
        let base = rows.start * self.cols();
        let bytes = if self.info.shape.is_empty() {
            self.bytes
        } else {
            self.rows_bytes(rows)
        };
        let es = self.info.dtype.size_bytes();
        let (count, first) = bytes
            .par_chunks(DECODE_CHUNK * es)
            .enumerate()
            .map(|(c, chunk)| {
                let (count, first) = count_non_finite(self.info.dtype, chunk);
                (count, first.map_or(usize::MAX, |i| c * DECODE_CHUNK + i))
            })
            .reduce(|| (0, usize::MAX), |a, b| (a.0 + b.0, a.1.min(b.1)));
        if count > 0 {
            return Err(self.non_finite_error(count, base + first));
        }
        Ok(())
    }
}

/// Elements decoded per rayon task.
const DECODE_CHUNK: usize = 1 << 16;

/// NaN/Inf among little-endian `dtype` values: how many, and the index of the first. Both have an all-ones
/// exponent (IEEE 754), so the raw bits decide; `decode_into` is exact, so this agrees with `!f.is_finite()`.
fn count_non_finite(dtype: DType, bytes: &[u8]) -> (usize, Option<usize>) {
    fn scan<const N: usize>(
        bytes: &[u8],
        test: impl Fn([u8; N]) -> bool,
    ) -> (usize, Option<usize>) {
        let mut count = 0usize;
        for b in bytes.chunks_exact(N) {
            count += test(b.try_into().expect("N bytes")) as usize;
        }
        let first = (count > 0)
            .then(|| {
                bytes
                    .chunks_exact(N)
                    .position(|b| test(b.try_into().expect("N bytes")))
            })
            .flatten();
        (count, first)
    }
    match dtype {
        DType::BF16 => scan::<2>(bytes, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        DType::F16 => scan::<2>(bytes, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        DType::F32 => scan::<4>(bytes, |b| {
            u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000
        }),
    }
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// An opened checkpoint: shard mmaps and the tensor table, sorted by name.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shard_paths())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Open a checkpoint folder. Validates every shard header, the index's `weight_map` and the dtypes; reads
    /// no tensor data and no `config.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let canonical_dir = dir.canonicalize().map_err(io(&dir))?;

        let index_path = dir.join(INDEX_FILE);
        let (shard_names, weight_map) = if index_path.exists() {
            let (names, map) = read_index(&index_path)?;
            (names, Some(map))
        } else if dir.join(SINGLE_FILE).exists() {
            (vec![SINGLE_FILE.to_string()], None)
        } else {
            return Err(Error::Resolve(format!(
                "{}: no {SINGLE_FILE} or {INDEX_FILE} in the model folder",
                dir.display()
            )));
        };

        let mut shards = Vec::with_capacity(shard_names.len());
        let mut found: Found = BTreeMap::new();
        for (shard_idx, shard_name) in shard_names.iter().enumerate() {
            // Errors about a whole shard (no tensor of its own to name) name the tensors the index places in it.
            let placed = weight_map
                .as_ref()
                .map(|m| placed_in(m, shard_name))
                .unwrap_or_default();
            let path = resolve_shard(&dir, &canonical_dir, &index_path, shard_name, &placed)?;
            crate::error::regular_file(&path)?;
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the mapping is read-only; oxport never writes to checkpoint files. A file truncated by
            // another process while mapped would fault, as it would for every mmap-based loader (candle, safetensors).
            let mmap = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let (header_len, metadata) = parse_header(&path, &mmap).map_err(|e| match e {
                Error::Safetensors { path, msg }
                    if !placed.is_empty() && !msg.starts_with("tensor") =>
                {
                    Error::Safetensors {
                        path,
                        msg: format!("{msg} (the index places {placed} in this shard)"),
                    }
                }
                e => e,
            })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                if let Some((other, _, _)) = found.get(&name) {
                    return Err(Error::DuplicateTensor {
                        path: path.clone(),
                        tensor: name,
                        other: dir.join(&shard_names[*other]),
                    });
                }
                found.insert(name, (shard_idx, info.clone(), data_start));
            }
            shards.push(Shard { path, mmap });
        }

        if let Some(map) = &weight_map {
            check_weight_map(&index_path, map, &found, &shard_names)?;
        }

        let mut tensors = Vec::with_capacity(found.len());
        for (name, (shard_idx, info, data_start)) in found {
            let dtype =
                DType::from_safetensors(info.dtype).ok_or_else(|| Error::UnsupportedDtype {
                    path: shards[shard_idx].path.clone(),
                    tensor: name.clone(),
                    dtype: format!("{:?}", info.dtype),
                })?;
            let (start, end) = info.data_offsets;
            tensors.push(TensorInfo {
                name,
                dtype,
                shape: info.shape.clone(),
                shard: shard_idx,
                file_offset: data_start + start,
                size_bytes: end - start,
            });
        }
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Checkpoint {
            dir,
            shards,
            tensors,
            by_name,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The path of the shard holding `info` (a tensor of this checkpoint), for errors that name the file.
    pub fn shard_path(&self, info: &TensorInfo) -> &Path {
        &self.shards[info.shard].path
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of tensor `name`.
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        self.info(name).map(|info| self.view_of(info))
    }

    /// The bytes of `info`, which must be an entry of this checkpoint's table (or a copy of one).
    pub fn view_of<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let shard = &self.shards[info.shard];
        TensorView {
            info,
            bytes: &shard.mmap[info.file_offset..info.file_offset + info.size_bytes],
            path: &shard.path,
        }
    }

    /// Decode tensor `name` to f32 (NaN/Inf refused), then [`release`](Self::release) its mapped pages.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.read_f32_into(name, &mut out)?;
        Ok(out)
    }

    /// [`read_f32`](Self::read_f32) into a reused buffer (resized to the tensor).
    pub fn read_f32_into(&self, name: &str, out: &mut Vec<f32>) -> Result<()> {
        let view = self.view(name).ok_or_else(|| Error::MissingTensors {
            dir: self.dir.clone(),
            names: vec![name.to_string()],
        })?;
        view.to_f32_into(out)?;
        self.release(view.info);
        Ok(())
    }

    /// Tell the kernel the mapped pages of `info` are no longer needed, so a streaming export's RSS stays
    /// at about one tensor. Later reads fault the pages back in from the file.
    pub fn release(&self, info: &TensorInfo) {
        let shard = &self.shards[info.shard];
        // SAFETY: MADV_DONTNEED on a read-only, file-backed private mapping drops clean pages only; the
        // contents are re-read from the file on the next access, so no borrowed slice sees changed bytes.
        let _ = unsafe {
            shard.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                info.file_offset,
                info.size_bytes,
            )
        };
    }

    /// Sum of tensor elements.
    pub fn total_params(&self) -> usize {
        self.tensors.iter().map(TensorInfo::numel).sum()
    }

    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.size_bytes).sum()
    }
}

/// Every tensor found in the shards by name: (its shard, its header entry, the shard's data start).
type Found = BTreeMap<String, (usize, safetensors::tensor::TensorInfo, usize)>;

/// The index's `weight_map` must list exactly the shards' tensors, each in the shard that holds it.
fn check_weight_map(
    index_path: &Path,
    map: &BTreeMap<String, String>,
    found: &Found,
    shard_names: &[String],
) -> Result<()> {
    let missing: Vec<_> = map
        .keys()
        .filter(|k| !found.contains_key(*k))
        .cloned()
        .collect();
    let extra: Vec<_> = found
        .keys()
        .filter(|k| !map.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(Error::Index {
            path: index_path.to_path_buf(),
            msg: format!(
                "weight_map disagrees with the shards: listed but in no shard: [{}]; in a shard but not listed: [{}]",
                missing.join(", "),
                extra.join(", ")
            ),
        });
    }
    for (name, (shard_idx, _, _)) in found {
        if map[name] != shard_names[*shard_idx] {
            return Err(Error::Index {
                path: index_path.to_path_buf(),
                msg: format!(
                    "weight_map puts {name} in {}, but it is in {}",
                    map[name], shard_names[*shard_idx]
                ),
            });
        }
    }
    Ok(())
}

fn read_index(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    crate::error::regular_file(path)?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bad = |msg: String| Error::Index {
        path: path.to_path_buf(),
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing `weight_map` object".into()))?;
    let mut weight_map = BTreeMap::new();
    for (k, v) in map {
        let shard = v
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{k:?}] is not a file name")))?;
        weight_map.insert(k.clone(), shard.to_string());
    }
    if weight_map.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    let mut names: Vec<String> = weight_map.values().cloned().collect();
    names.sort();
    names.dedup();
    Ok((names, weight_map))
}

/// "`first` and N more": the tensors `weight_map` places in `shard`, for error messages.
fn placed_in(weight_map: &BTreeMap<String, String>, shard: &str) -> String {
    let mut names = weight_map
        .iter()
        .filter(|(_, s)| *s == shard)
        .map(|(t, _)| t);
    match (names.next(), names.count()) {
        (None, _) => String::new(),
        (Some(first), 0) => first.clone(),
        (Some(first), more) => format!("{first} and {more} more"),
    }
}

/// A shard named by the index must stay inside the model folder: no absolute paths, no `..`, and no symlink
/// that resolves outside it. The one exception is the Hugging Face cache layout, where
/// `<repo>/snapshots/<sha>/<file>` is a symlink to `<repo>/blobs/<etag>` (huggingface_hub `file_download.py`).
fn resolve_shard(
    dir: &Path,
    canonical_dir: &Path,
    index_path: &Path,
    name: &str,
    placed: &str,
) -> Result<PathBuf> {
    let escapes = || Error::ShardEscapes {
        path: index_path.to_path_buf(),
        shard: name.to_string(),
        tensors: placed.to_string(),
    };
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(escapes());
    }
    let path = dir.join(rel);
    let canonical = path.canonicalize().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_err() {
            Error::Index {
                path: index_path.to_path_buf(),
                msg: format!("shard {name} is missing (the index places {placed} in it)"),
            }
        } else {
            Error::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    let cache_blobs = canonical_dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .map(|repo| repo.join("blobs"));
    let in_blobs = cache_blobs.is_some_and(|b| canonical.parent() == Some(b.as_path()));
    if !canonical.starts_with(canonical_dir) && !in_blobs {
        return Err(escapes());
    }
    Ok(path)
}

#[cfg(test)]
mod finite_tests {
    use super::*;

    /// The raw-bit scan agrees with `!is_finite()` of the exact decode, for every 16-bit pattern.
    #[test]
    fn raw_non_finite_scan_matches_the_decoded_values() {
        for dtype in [DType::BF16, DType::F16] {
            let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
            let mut f = vec![0f32; 1 << 16];
            dtype.decode_into(&bytes, &mut f);
            let expected = f.iter().filter(|v| !v.is_finite()).count();
            let first = f.iter().position(|v| !v.is_finite());
            assert_eq!(
                count_non_finite(dtype, &bytes),
                (expected, first),
                "{dtype}"
            );
        }
        let f32s: Vec<u8> = [1.0f32, f32::INFINITY, -0.0, f32::NAN, f32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(count_non_finite(DType::F32, &f32s), (2, Some(1)));
    }
}
