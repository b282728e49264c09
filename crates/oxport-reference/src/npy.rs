//! A small `.npy` reader (format version 1.0–3.0, little-endian f32 / f64 / i64 / i32, C order), enough for the
//! reference numerics under `fixtures/reference/numerics/` (numpy `lib/format.py` fixes the header layout).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An array read from a `.npy` file, converted to the element type the caller asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Npy {
        path: PathBuf::from(path),
        msg: msg.into(),
    }
}

/// Parse the header; return (descr, shape, data offset).
fn header(path: &Path, bytes: &[u8]) -> Result<(String, Vec<usize>, usize)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "missing \\x93NUMPY magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported format version {v}"))),
    };
    let text = bytes
        .get(start..start + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad(path, "truncated or non-UTF-8 header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = text.find(&format!("'{key}'"))?;
        Some(
            text[at + key.len() + 2..]
                .trim_start()
                .strip_prefix(':')?
                .trim_start(),
        )
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad(path, "header has no descr"))?;
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad(path, "Fortran order is not supported"));
    }
    let shape_text = field("shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad(path, "header has no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, format!("bad dimension {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((descr.to_string(), shape, start + len))
}

fn read<T>(path: &Path, convert: impl Fn(&str, &[u8]) -> Option<Vec<T>>) -> Result<NpyArray<T>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (descr, shape, offset) = header(path, &bytes)?;
    let numel: usize = shape.iter().product();
    let data = convert(&descr, &bytes[offset..])
        .ok_or_else(|| bad(path, format!("unsupported dtype {descr}")))?;
    if data.len() != numel {
        return Err(bad(
            path,
            format!(
                "shape {shape:?} needs {numel} elements, file holds {}",
                data.len()
            ),
        ));
    }
    Ok(NpyArray { shape, data })
}

fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| c.try_into().unwrap())
}

/// Read a floating-point array (`<f4` or `<f8`) as f32.
pub fn read_f32(path: impl AsRef<Path>) -> Result<NpyArray<f32>> {
    read(path.as_ref(), |descr, b| match descr {
        "<f4" => Some(chunks::<4>(b).map(f32::from_le_bytes).collect()),
        "<f8" => Some(
            chunks::<8>(b)
                .map(|c| f64::from_le_bytes(c) as f32)
                .collect(),
        ),
        _ => None,
    })
}

/// Read an integer array (`<i8`, `<i4`) as i64.
pub fn read_i64(path: impl AsRef<Path>) -> Result<NpyArray<i64>> {
    read(path.as_ref(), |descr, b| match descr {
        "<i8" => Some(chunks::<8>(b).map(i64::from_le_bytes).collect()),
        "<i4" => Some(
            chunks::<4>(b)
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn reads_f32_and_i64_with_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.npy");
        let vals: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&f, npy("<f4", "(2, 3)", &vals)).unwrap();
        let a = read_f32(&f).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.5, -2.0, 3.25, 0.0, 7.0, 8.0]);

        let ids: Vec<u8> = [1i64, 8189].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&f, npy("<i8", "(1, 2)", &ids)).unwrap();
        assert_eq!(read_i64(&f).unwrap().data, vec![1, 8189]);
    }

    #[test]
    fn rejects_wrong_dtype_and_truncation_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.npy");
        std::fs::write(&f, npy("<u2", "(1,)", &[0, 0])).unwrap();
        let e = read_f32(&f).unwrap_err().to_string();
        assert!(e.contains("b.npy") && e.contains("<u2"), "{e}");
        std::fs::write(&f, npy("<f4", "(4,)", &[0; 8])).unwrap();
        let e = read_f32(&f).unwrap_err().to_string();
        assert!(e.contains("needs 4 elements"), "{e}");
    }
}
