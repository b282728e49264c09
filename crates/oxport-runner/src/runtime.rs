//! Finding the ONNX Runtime and OpenVINO shared libraries: an explicit variable first, else the PyPI wheels of
//! `$OXPORT_PYTHON` (else `python3`), located with `importlib.util.find_spec` so nothing is imported
//! (see `docs/runtimes.md` §2: the wheels ship only versioned names such as `libonnxruntime.so.1.32.0`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Which runtime library to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Runtime {
    OnnxRuntime,
    OpenVino,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::OnnxRuntime => "ONNX Runtime",
            Runtime::OpenVino => "OpenVINO",
        }
    }

    /// The variable that names the library file directly.
    pub fn env_var(self) -> &'static str {
        match self {
            Runtime::OnnxRuntime => "ORT_DYLIB_PATH",
            Runtime::OpenVino => "OXPORT_OPENVINO_LIB",
        }
    }

    /// Python package, its library folder and the library's file-name prefix.
    fn wheel(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Runtime::OnnxRuntime => ("onnxruntime", "capi", "libonnxruntime.so"),
            Runtime::OpenVino => ("openvino", "libs", "libopenvino_c.so"),
        }
    }
}

/// A [`find_library`] error as a message for a runtime-prefixed error (no repeated runtime name).
pub(crate) fn not_found(e: Error) -> String {
    match e {
        Error::LibraryNotFound { tried, .. } => format!("library not found; tried: {tried}"),
        other => other.to_string(),
    }
}

/// The python whose site-packages hold the wheels: `$OXPORT_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("OXPORT_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Locate the shared library of `runtime`, saying what was tried when it is not found.
pub fn find_library(runtime: Runtime) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let var = runtime.env_var();
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("${var}={} (not a file)", p.display()));
    } else {
        tried.push(format!("${var} (unset)"));
    }
    let python = python();
    let (package, sub, prefix) = runtime.wheel();
    match package_dir(&python, package) {
        Ok(dir) => {
            let dir = dir.join(sub);
            match library_in(&dir, prefix) {
                Some(p) => return Ok(p),
                None => tried.push(format!(
                    "{}/{prefix}* via {python} (no such file)",
                    dir.display()
                )),
            }
        }
        Err(why) => tried.push(format!("pip package `{package}` via {python} ({why})")),
    }
    Err(Error::LibraryNotFound {
        runtime: runtime.name(),
        tried: tried.join("; "),
    })
}

/// The package folder of `package` in `python`'s environment, without importing it.
fn package_dir(python: &str, package: &str) -> std::result::Result<PathBuf, String> {
    let script = format!(
        "import importlib.util as u\ns = u.find_spec('{package}')\nprint(s.submodule_search_locations[0] if s else '')"
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err("not installed".into());
    }
    Ok(PathBuf::from(dir))
}

/// The library file in `dir` whose name starts with `prefix` (versioned names such as `.so.1.32.0` sort last,
/// so the unversioned symlink wins when present).
fn library_in(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_versioned_wheel_library() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libonnxruntime.so.1.32.0"), b"").unwrap();
        std::fs::write(dir.path().join("libonnxruntime_providers_shared.so"), b"").unwrap();
        let p = library_in(dir.path(), "libonnxruntime.so").unwrap();
        assert!(p.ends_with("libonnxruntime.so.1.32.0"));
        assert!(library_in(dir.path(), "libopenvino_c.so").is_none());
    }

    #[test]
    fn a_missing_python_is_named_in_the_error() {
        let e = package_dir("/nonexistent/python", "onnxruntime").unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
    }
}
