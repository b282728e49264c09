//! Runtime discovery without runtimes: every path that was tried is named, devices are absent with that reason,
//! nothing panics. The loaded libraries are cached per process and the other tests of this binary load them, so
//! the test runs its body in a fresh process of this binary, with the environment pointing nowhere.

use std::process::Command;

use oxport_runner::runtime::{Runtime, find_library};

/// Set in the child process that runs the body.
const CHILD: &str = "OXPORT_TESTS_DISCOVERY_CHILD";

#[test]
fn missing_runtimes_are_reported_with_what_was_tried() {
    if std::env::var_os(CHILD).is_none() {
        let name = format!(
            "{}::missing_runtimes_are_reported_with_what_was_tried",
            module_path!().split_once("::").expect("crate::module").1
        );
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--test-threads=1"])
            .env(CHILD, "1")
            .env("OXPORT_PYTHON", "/nonexistent/bin/python")
            .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0")
            .env_remove("OXPORT_OPENVINO_LIB")
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.contains("test result: ok. 1 passed"),
            "{report}"
        );
        return;
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
