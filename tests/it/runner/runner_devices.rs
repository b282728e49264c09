//! `oxport devices`: both runtimes load from the PyPI wheels; every device is present or absent with a reason.
//! Needs the wheels: it runs with the `runtimes` feature (`cargo xtask test`); a plain `cargo test` lists it as
//! ignored.

use oxport_runner::devices::{self, Target};

use crate::support::python;

#[test]
#[cfg_attr(
    not(feature = "runtimes"),
    ignore = "needs the runtimes: cargo xtask test"
)]
fn devices_lists_every_runtime_and_device_with_reasons_for_absent_ones() {
    python();
    let runtimes = devices::probe_all();
    assert_eq!(runtimes.len(), 2);
    for r in &runtimes {
        assert!(
            r.error.is_none(),
            "{} did not load: {:?}",
            r.runtime,
            r.error
        );
        let v = r.version.as_deref().unwrap();
        assert!(
            v.starts_with("1.") || v.starts_with("20"),
            "{}: version {v}",
            r.runtime
        );
        for d in &r.devices {
            assert!(!d.detail.is_empty(), "{} has no detail", d.label);
        }
    }
    let find = |label: &str| {
        runtimes
            .iter()
            .flat_map(|r| &r.devices)
            .find(|d| d.label == label)
            .unwrap()
    };
    assert!(find("onnxruntime/cpu").present);
    assert!(find("openvino/CPU").present);
    // CUDA needs onnxruntime-gpu and a GPU; absent, the reason names the provider.
    let cuda = find("onnxruntime/cuda");
    assert!(
        cuda.present || cuda.detail.contains("CUDAExecutionProvider"),
        "{}",
        cuda.detail
    );
    let dml = find("onnxruntime/directml");
    assert!(
        !dml.present && dml.detail.contains("Windows"),
        "{}",
        dml.detail
    );
    // Intel GPU / NPU: named and skipped clearly when OpenVINO does not list them.
    for label in ["openvino/GPU", "openvino/NPU"] {
        let d = find(label);
        assert!(
            d.present || d.detail.contains("available_devices"),
            "{label}: {}",
            d.detail
        );
    }
    let table = devices::table(&runtimes);
    assert!(
        table.contains("onnxruntime 1.") && table.contains("openvino 20"),
        "{table}"
    );
    assert!(runtimes.iter().flat_map(|r| &r.devices).all(|d| {
        let class = d.target.class();
        matches!(d.target, Target::Ort(_) | Target::OpenVino(_)) && !class.is_empty()
    }));
    // Every export target is listed with how it was checked; DirectML and WebGPU say they never ran here.
    for command in [
        "export onnx -e cpu",
        "export onnx -e cuda",
        "export onnx -e dml",
        "export onnx -e webgpu",
        "export openvino",
        "export openvino --npu",
    ] {
        assert!(table.contains(command), "{command} missing:\n{table}");
    }
    assert!(
        table.contains("never on DirectML")
            && table.contains("never on WebGPU")
            && table.contains("never on an NPU")
    );
}
