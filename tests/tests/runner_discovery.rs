//! Runtime discovery without runtimes: every path that was tried is named, devices are absent with that reason,
//! nothing panics. (Own test binary: the loaded libraries are cached per process.)

use oxport_runner::runtime::{Runtime, find_library};

#[test]
fn missing_runtimes_are_reported_with_what_was_tried() {
    // SAFETY: the only test in this binary; set before any runtime lookup.
    unsafe {
        std::env::set_var("OXPORT_PYTHON", "/nonexistent/bin/python");
        std::env::set_var("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0");
        std::env::remove_var("OXPORT_OPENVINO_LIB");
    }
    let e = find_library(Runtime::OnnxRuntime).unwrap_err().to_string();
    assert!(
        e.contains("$ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so.1.32.0 (not a file)"),
        "{e}"
    );
    assert!(e.contains("/nonexistent/bin/python (cannot run"), "{e}");
    let e = find_library(Runtime::OpenVino).unwrap_err().to_string();
    assert!(
        e.contains("$OXPORT_OPENVINO_LIB (unset)") && e.contains("pip package `openvino`"),
        "{e}"
    );

    let runtimes = oxport_runner::devices::probe_all();
    for r in &runtimes {
        let err = r
            .error
            .as_deref()
            .expect("runtime must be reported unavailable");
        assert!(err.contains("library not found; tried:"), "{err}");
        assert!(
            r.devices
                .iter()
                .all(|d| !d.present && d.detail.contains("not loaded")),
            "{:?}",
            r.devices
        );
    }
    let table = oxport_runner::devices::table(&runtimes);
    assert!(
        table.contains("onnxruntime unavailable") && table.contains("openvino unavailable"),
        "{table}"
    );
}
